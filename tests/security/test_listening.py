"""The default stack: nothing listens beyond loopback, control needs the token, secrets stay secret."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from core.config import PROJECT_ROOT
from tests.fuzz.conftest import CORE_PROCESSES, Stack, stack_env, wait_for

LOOPBACK = {"127.0.0.1", "::1"}
TOKEN_MARKER = "tok-7f3c9a1e-marker"
KEY_MARKER = "appkey-52d8e6b0-marker"
SECRET_MARKER = "appsecret-c41a97f2-marker"
MARKERS = (TOKEN_MARKER, KEY_MARKER, SECRET_MARKER)


@pytest.fixture(scope="module")
def full_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Every core process and the dashboard on the default endpoints, stopped at the end."""
    run_dir = tmp_path_factory.mktemp("sec")
    s = Stack(run_dir, stack_env(run_dir, TRADER_DASHBOARD_TOKEN=TOKEN_MARKER,
                                   TRADER_SECRETS__KIS_APP_KEY=KEY_MARKER, TRADER_SECRETS__KIS_APP_SECRET=SECRET_MARKER))
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


def http(stack: Stack, method: str, path: str, token: str | None = None) -> tuple[int, str]:
    """One request to the stack's dashboard: (status, body)."""
    url = f"http://127.0.0.1:{stack.env['TRADER_DASHBOARD__PORT']}{path}"
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_control_api_refuses_requests_without_the_right_token(full_stack: Stack) -> None:
    wait_for(lambda: listening(full_stack.procs["dashboard"].pid), 60, "the dashboard to listen")
    for path in ("/api/risk/halt", "/api/agents/nobody/kill"):
        assert http(full_stack, "POST", path)[0] == 401
        assert http(full_stack, "POST", path, token="wrong-token")[0] == 401
    assert http(full_stack, "POST", "/api/agents/nobody/kill", token=TOKEN_MARKER)[0] != 401


def test_secrets_from_the_environment_appear_in_no_page_log_or_output(full_stack: Stack) -> None:
    wait_for(lambda: listening(full_stack.procs["dashboard"].pid), 60, "the dashboard to listen")
    seen: list[str] = []
    for path in ("/", "/agents", "/market", "/risk", "/recon", "/config", "/metrics", "/api/state", "/healthz"):
        status, body = http(full_stack, "GET", path)
        seen.append(f"GET {path} {status}\n{body}")
    seen.append(http(full_stack, "POST", "/api/risk/halt", token=TOKEN_MARKER)[1])
    shown = subprocess.run([str(Path(sys.executable).parent / "trader"), "config", "show"], cwd=PROJECT_ROOT,
                           env=full_stack.env, capture_output=True, text=True, timeout=60)
    seen.append(shown.stdout + shown.stderr)
    leaks = [m for m in MARKERS for text in seen if m in text]
    for f in full_stack.run_dir.rglob("*"):
        if f.is_file() and not f.is_socket():
            data = f.read_bytes()
            leaks += [f"{m} in {f}" for m in MARKERS if m.encode() in data]
    assert not leaks, leaks
