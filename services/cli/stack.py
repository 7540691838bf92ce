"""``trader up`` and ``trader down``: start and stop the whole stack from the Procfile."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import typer
from rich.console import Console

from core.config import PROJECT_ROOT, ConfigError, load_stack
from services.cli.tables import Col, FitTable

console = Console()
err = Console(stderr=True)

UP_PID_FILE = "trader-up.pid"


def read_procfile(path: Path) -> list[tuple[str, str]]:
    """The (name, command) lines of a Procfile."""
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, cmd = line.split(":", 1)
        entries.append((name.strip(), cmd.strip()))
    return entries


# The Procfile's venue processes and the venue each belongs to: the stack runs one venue (DESIGN 3b).
VENUE_PROCESSES = {"exchange": ("paper", ""), "kis-gateway": ("kis", ""), "kis-sim": ("kis", "kis-sim")}


def stack_entries(procfile: Path = PROJECT_ROOT / "Procfile", kind: str = "paper",
                  kis_server: str = "kis-sim") -> list[tuple[str, str]]:
    """The Procfile's processes for ``broker.kind = kind``: every service, and that venue's processes only.

    Paper: the paper exchange. KIS: the gateway, and the local kis-sim unless
    ``broker.kis.server`` is KIS's own server.
    """
    out = []
    for name, cmd in read_procfile(procfile):
        venue = VENUE_PROCESSES.get(name)
        if venue is not None and (venue[0] != kind or (venue[1] and venue[1] != kis_server)):
            continue
        out.append((name, cmd))
    return out


def up(
    procfile: Path = typer.Option(PROJECT_ROOT / "Procfile", help="The Procfile to start."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG in every process (TRADER_LOG_LEVEL=debug); "
                                 "the default is the stack's log_level, info."),
) -> None:
    """Start the whole stack in the foreground (honcho + Procfile); Ctrl-C or `trader down` stops it.

    ``broker.kind`` picks the venue: the paper exchange (default), or the KIS
    gateway with the local kis-sim (``TRADER_BROKER__KIND=kis``; see the README's
    "Trading through KIS").
    """
    try:
        settings = load_stack()
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2)
    if settings.broker.kind == "kis":
        from services.kis_gateway.safety import start_problems

        problems = start_problems(settings)
        if problems:
            for p in problems:
                err.print(f"[bold red]error:[/] {p}")
            raise typer.Exit(2)
    run = settings.run_path
    (run / "run").mkdir(parents=True, exist_ok=True)
    (run / "logs").mkdir(parents=True, exist_ok=True)
    pid_file = run / "run" / UP_PID_FILE
    if pid_file.exists():
        try:
            other = int(pid_file.read_text().strip())
        except ValueError:
            other = 0
        if other and psutil.pid_exists(other) and other != os.getpid():
            err.print(f"[bold red]error:[/] the stack is already running (pid {other}); stop it with `trader down`")
            raise typer.Exit(1)
    entries = stack_entries(procfile, settings.broker.kind, settings.broker.kis.server)
    venue = "paper exchange" if settings.broker.kind == "paper" else (
        f"KIS {settings.broker.kis.env} through the gateway, server {settings.broker.kis.server}")
    table = FitTable(f"starting the trader stack (venue: {venue})",
                     (Col("process", essential=True), Col("command", essential=True, wrap=True)))
    for name, cmd in entries:
        table.add_row(name, cmd)
    table.show(console)
    console.print(f"run directory: {run}")
    console.print(
        f"dashboard: http://{settings.dashboard.host}:{settings.dashboard.port}/   "
        "(stop with Ctrl-C or `trader down`)"
    )
    pid_file.write_text(str(os.getpid()))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if verbose:
        env["TRADER_LOG_LEVEL"] = "debug"
    honcho = Path(sys.executable).parent / "honcho"
    argv = [str(honcho), "start", "-f", str(procfile), "-d", str(PROJECT_ROOT), *(name for name, _ in entries)]
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)


def _lock_pids(run_dir: Path) -> list[tuple[Path, int]]:
    out = []
    for lock in sorted((run_dir / "run").glob("*.pid")):
        if lock.name == UP_PID_FILE:
            continue
        try:
            text = lock.read_text().strip()
            pid = int(json.loads(text)["pid"]) if text.startswith("{") else int(text)
        except (ValueError, KeyError, OSError, json.JSONDecodeError):
            continue
        out.append((lock, pid))
    return out


def _alive(pid: int) -> bool:
    """Whether a pid is a running process (a zombie waiting for its parent is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _procs(pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in dict.fromkeys(pids):
        try:
            if pid != os.getpid():
                out.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return out


def _stop_group(group: list[psutil.Process], timeout: float) -> int:
    """SIGTERM every process of ``group``, wait, kill what is left; returns how many there were."""
    for proc in group:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    alive = _wait_gone(group, timeout)
    for proc in alive:
        err.print(f"[yellow]warning:[/] pid {proc.pid} did not stop in {timeout:.0f} s; killing it")
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(alive, 5.0)
    return len(group)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited; those still running after ``timeout``.

    One that has exited is gone even while its parent has not reaped it yet (a
    zombie): waiting for its pid to vanish would wait out the whole timeout.
    """
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _alive(p.pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p.pid)]
    return alive


def down(timeout: float = typer.Option(15.0, help="Seconds to wait before killing what is left.")) -> None:
    """Stop the stack cleanly: the supervisor (which stops its agents), any agent left, then the services."""
    try:
        settings = load_stack()
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2)
    run = settings.run_path
    pid_file = run / "run" / UP_PID_FILE
    services = {name for name, _ in read_procfile(PROJECT_ROOT / "Procfile")}

    def owners(which: Callable[[str], bool]) -> list[psutil.Process]:
        return [p for p in _procs([pid for lock, pid in _lock_pids(run) if which(lock.stem)]) if _alive(p.pid)]

    up: list[psutil.Process] = []
    if pid_file.exists():
        try:
            up = _procs([int(pid_file.read_text().strip())])
        except ValueError:
            pass
    if not up and not owners(lambda _name: True):
        console.print("nothing is running")
        pid_file.unlink(missing_ok=True)
        return
    # In order, each phase reading the locks afresh: the supervisor stops its agents (they cancel their
    # orders while the order manager is still there) and restarts nothing after that; then any agent
    # left; then the launcher and the services. Last, whatever still holds a lock.
    stopped = _stop_group(owners(lambda name: name == "supervisor"), timeout)
    stopped += _stop_group(owners(lambda name: name not in services), timeout)
    stopped += _stop_group(up + owners(lambda name: name in services), timeout)
    for _ in range(3):
        left = owners(lambda _name: True)
        if not left:
            break
        stopped += _stop_group(left, timeout)
    time.sleep(0.2)
    # A lock whose owner is gone is stale now; the owner removes its own on a clean stop.
    for lock, pid in _lock_pids(run):
        if not _alive(pid):
            lock.unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)
    console.print(f"stopped {stopped} process(es)")
