"""With the default configuration nothing in the stack listens beyond loopback."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

from tests.fuzz.conftest import CORE_PROCESSES, Stack, stack_env, wait_for

LOOPBACK = {"127.0.0.1", "::1"}


@pytest.fixture(scope="module")
def full_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Every core process and the dashboard on the default endpoints, stopped at the end."""
    run_dir = tmp_path_factory.mktemp("sec")
    s = Stack(run_dir, stack_env(run_dir, TRADER_DASHBOARD_TOKEN="listening-test-token"))
    try:
        for module in CORE_PROCESSES:
            s.start(module)
        s.start("dashboard")
        s.wait_running(list(CORE_PROCESSES.values()))
        yield s
    finally:
        s.stop()


def listening(pid: int) -> list[tuple[str, int]]:
    """The TCP addresses a process (and its children) listens on."""
    proc = psutil.Process(pid)
    found = []
    for p in [proc, *proc.children(recursive=True)]:
        for conn in p.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                found.append((conn.laddr.ip, conn.laddr.port))
    return found


def test_every_listening_socket_is_on_loopback_or_a_unix_socket(full_stack: Stack) -> None:
    # The dashboard serves HTTP: wait until it listens so the check covers it.
    wait_for(lambda: listening(full_stack.procs["dashboard"].pid), 60, "the dashboard to listen")
    full_stack.assert_alive()
    exposed = {name: [a for a in listening(p.pid) if a[0] not in LOOPBACK] for name, p in full_stack.procs.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"
    unix = [c for p in full_stack.procs.values() for c in psutil.Process(p.pid).net_connections(kind="unix")]
    assert unix, "the bus endpoints are ipc (unix) sockets by default"
