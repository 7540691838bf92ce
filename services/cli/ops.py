"""Operations from the terminal: ``trader ps``, ``spawn``, ``kill``, ``restart``, ``reload``, ``logs``,
``profile`` and ``config check``.

Wire (supervisor ROUTER on ``supervisor_rpc``) and usage:

* ``trader ps [--json]``          -> ``Command(name="list")``: every process and agent
* ``trader spawn ID``             -> ``Command(name="spawn", args={"agent_id": ID})`` (refused when it runs)
* ``trader kill ID [--no-wait]``  -> ``Command(name="kill", ...)``, then waits until the agent has stopped
* ``trader restart ID``           -> ``Command(name="restart", ...)``
* ``trader reload [--json]``      -> ``Command(name="reload")``: the running agents follow the roster again
* ``trader logs NAME [-f]``       -> prints ``<run_dir>/logs/NAME.log`` (follows it with -f)
* ``trader profile NAME [--seconds N]`` -> samples the running NAME in place with py-spy: a flame graph and the
  top functions (``--fresh --profiler cprofile|yappi``: a fresh copy of a stopped NAME instead)
* ``trader ps --watch [--interval S]`` -> the ``ps`` table redrawn in place until Ctrl-C
* ``trader config check [--json]`` -> every configuration problem with file, key and reason (with
  ``broker.kind = "kis"`` the KIS venue's too: credentials, live trading, URLs; never a secret)

State-changing commands carry a fresh ``command_id`` as their idempotency key,
so the RPC retry of a command never acts twice. Exit codes: 0 done, 1 refused
or failed (a service that is down is named with how to start it), 2 bad configuration.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from core.config import (
    PROJECT_ROOT,
    ConfigError,
    StackSettings,
    load_stack,
    stack_config_path,
)
from services.cli.service_call import call, load_settings
from services.cli.tables import Col, FitTable, wide_option

console = Console()
err = Console(stderr=True)

KILL_WAIT_S = 30.0

# Runs ``python -m <module> args...`` under cProfile or yappi and saves pstats-format stats when the module
# exits (the services exit normally on SIGTERM, so the stats are written).
_PROFILE_RUNNER = """
import runpy, signal, sys
out, mode, module, *rest = sys.argv[1:]
sys.argv = [module, *rest]
# A SIGTERM before the module has set up its own handling (still importing) ends the run cleanly too.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if mode == "yappi":
    import yappi
    yappi.set_clock_type("wall")
    yappi.start()
else:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    if mode == "yappi":
        yappi.stop()
        yappi.get_func_stats().save(out, type="pstat")
    else:
        prof.disable()
        prof.dump_stats(out)
"""


def supervisor_call(name: str, args: dict[str, Any] | None = None, timeout_ms: int | None = None) -> Any:
    """One Command to the supervisor; its result, or exit 1 naming the refusal or the service that is down."""
    settings = load_settings()
    return call("supervisor_rpc", name, args, timeout_ms=timeout_ms or max(3000, settings.bus.rpc_timeout_ms),
                settings=settings)

def _mb(n: Any) -> str:
    return f"{n / 1e6:.0f}" if isinstance(n, int) and n > 0 else "-"


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)


PS_COLUMNS = (Col("name", essential=True), Col("kind", essential=True), Col("pid", essential=True, numeric=True),
              Col("state", essential=True), Col("uptime s", numeric=True), Col("cpu %", numeric=True),
              Col("rss MB", numeric=True), Col("uss MB", numeric=True), Col("threads", numeric=True), Col("files", numeric=True),
              Col("hb age s", essential=True, numeric=True), Col("sync"), Col("holding", numeric=True),
              Col("realised", numeric=True), Col("unrealised", numeric=True), Col("open", numeric=True))


def ps_table(rows: list[dict[str, Any]], title: str = "trader processes") -> FitTable:
    """The ``trader ps`` table of the supervisor's rows."""
    table = FitTable(title, PS_COLUMNS)
    for r in rows:
        state = r.get("state", "")
        if r.get("heartbeat_late"):
            state += " (late)"
        table.add_row(r["name"], r["kind"], _cell(r.get("pid")), state, _cell(r.get("uptime_s")), _cell(r.get("cpu_pct")),
                      _mb(r.get("rss_bytes")), _mb(r.get("uss_bytes")), _cell(r.get("threads")), _cell(r.get("open_files")),
                      _cell(r.get("heartbeat_age_s")), _cell(r.get("sync")), _cell(r.get("holding")),
                      _cell(r.get("realized_pnl_won")), _cell(r.get("unrealized_pnl_won")), _cell(r.get("open_orders")))
    return table


def _unhealthy(rows: list[dict[str, Any]]) -> bool:
    return any(r.get("heartbeat_late") or r.get("state") in ("flapping", "dead (stale lock)") for r in rows)


def ps(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts (one listing, not with --watch)."),
    wide: bool = wide_option(),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh the table in place until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between refreshes with --watch."),
) -> None:
    """List every process and agent: pid, state, uptime, cpu, rss and uss, heartbeat age, agents' position and PnL.

    rss counts every page a process maps, shared ones included; uss only the
    memory that is its own (what ending it gives back). Agents forked from the
    agents' warm parent share its imported code, so their uss is far below
    their rss; the sum of the uss column is what the stack really uses.

    The columns that do not fit the terminal are left out and named under the
    table (name, kind, pid, state and heartbeat age always show); --wide shows
    them all. --watch redraws the table every --interval seconds until Ctrl-C
    (exit 0); while the supervisor does not answer, the title says so and the
    watch goes on. Exit 1 when a heartbeat is late or an agent is flapping.

    Examples: `trader ps`, `trader ps --wide`, `trader ps --watch --interval 1`, `trader ps --json | jq .`
    """
    if watch:
        if as_json:
            err.print("[bold red]error:[/] --watch redraws a table; use --json without --watch")
            raise typer.Exit(2)
        _watch(wide, interval)
        return
    rows = supervisor_call("list")
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    ps_table(rows).show(console, wide)
    if _unhealthy(rows):
        raise typer.Exit(1)


def _watch(wide: bool, interval: float) -> None:
    """``ps --watch``: the table redrawn in place (one table after another when the output is no terminal)."""
    from rich.live import Live

    from services.cli.service_call import ServiceError, ask

    settings = load_settings()
    timeout_ms = max(500, min(settings.bus.rpc_timeout_ms, int(interval * 1000)))
    rows: list[dict[str, Any]] = []

    def frame() -> FitTable:
        nonlocal rows
        stamp = time.strftime("%H:%M:%S")
        try:
            rows = ask("supervisor_rpc", "list", timeout_ms=timeout_ms, retries=0, settings=settings)
            title = f"trader processes at {stamp} (every {interval:g} s, Ctrl-C stops)"
        except ServiceError as exc:
            why = "not answering" if exc.down else exc.text.split("\n")[0]
            shown = " (last answer below)" if rows else ""
            title = f"[bold red]supervisor {why}[/] at {stamp}{shown}; retrying every {interval:g} s (Ctrl-C stops)"
        return ps_table(rows, title)

    try:
        if not console.is_terminal:  # a pipe or a file: no cursor to move back, so each refresh follows the last
            while True:
                frame().show(console, wide)
                console.file.flush()
                time.sleep(interval)
        with Live(console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                live.update(frame().renderable(console, wide), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


def spawn(agent_id: str = typer.Argument(..., help="The agent's id in the roster.")) -> None:
    """Start an agent of the roster (refused when it is already running)."""
    result = supervisor_call("spawn", {"agent_id": agent_id})
    console.print(f"agent {agent_id} started (pid {result.get('pid')})")


def _agent_row(agent_id: str) -> dict[str, Any] | None:
    return next((r for r in supervisor_call("list") if r["name"] == agent_id), None)


def kill(
    agent_id: str = typer.Argument(..., help="The agent's id."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the agent has stopped."),
) -> None:
    """Stop an agent gracefully: it cancels its open orders and writes its state (SIGKILL after a timeout)."""
    supervisor_call("kill", {"agent_id": agent_id})
    if not wait:
        console.print(f"agent {agent_id} is stopping")
        return
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        row = _agent_row(agent_id)
        if row is None or row.get("state") in ("stopped", "disabled"):
            console.print(f"agent {agent_id} stopped (exit code {_cell(row.get('last_exit') if row else None)})")
            return
        time.sleep(0.1)
    err.print(f"[bold red]error:[/] agent {agent_id} has not stopped within {KILL_WAIT_S:.0f} s")
    raise typer.Exit(1)


def restart(agent_id: str = typer.Argument(..., help="The agent's id.")) -> None:
    """Stop an agent gracefully and start it again."""
    result = supervisor_call("restart", {"agent_id": agent_id})
    console.print(f"agent {agent_id}: {result.get('state')}")


def reload(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Re-read the roster: start new or enabled agents, stop removed or disabled ones, restart changed ones.

    Prints what was started, stopped and restarted, an agent that could not be
    started with the reason, and every roster problem (on stderr; the valid
    entries still apply).

    Example: edit configs/agents.toml (say enabled = false), then `trader reload`
    """
    result = supervisor_call("reload")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for key in ("started", "stopped", "restarted"):
        console.print(f"{key}: {', '.join(result[key]) or '-'}")
    for agent_id, why in result.get("refused", {}).items():
        console.print(f"not started: {agent_id}: {why}")
    for p in result.get("problems", []):
        err.print(f"[yellow]roster problem:[/] {p}")


def logs(
    name: str = typer.Argument(..., help="A process or agent name (its log is <run_dir>/logs/NAME.log)."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing what is appended."),
    lines: int = typer.Option(50, "-n", "--lines", help="How many of the last lines to print first."),
) -> None:
    """Print one process's log (follow it with -f)."""
    folder = load_settings().run_path / "logs"
    path = folder / f"{name}.log"
    if not path.exists():
        known = sorted(p.stem for p in folder.glob("*.log")) if folder.is_dir() else []
        err.print(f"[bold red]error:[/] no log {path}" + (f"; logs there: {', '.join(known)}" if known else ""))
        raise typer.Exit(1)
    with open(path, "rb") as f:
        tail = f.read().splitlines()[-lines:] if lines > 0 else []
        for line in tail:
            print(line.decode(errors="replace"))
        sys.stdout.flush()
        while follow:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.2)


# --- profile ---------------------------------------------------------------------------------


def _command_of(name: str, settings: StackSettings) -> list[str] | None:
    """The argv that runs process ``name``: a Procfile line, or an agent of the roster."""
    from services.cli.stack import read_procfile

    for proc_name, cmd in read_procfile(PROJECT_ROOT / "Procfile"):
        if proc_name == name:
            argv = cmd.split()
            return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    roster = Path(settings.roster_file)
    roster = roster if roster.is_absolute() else PROJECT_ROOT / roster
    try:
        import tomllib

        ids = {a.get("id") for a in tomllib.loads(roster.read_text()).get("agents", [])}
    except (OSError, ValueError):
        ids = set()
    if name in ids:
        return [sys.executable, "-m", "agents.runtime", "--id", name, "--roster", str(roster)]
    return None


EXIT_PROFILE_FAILED, EXIT_UNKNOWN_NAME, EXIT_NOT_RUNNING, EXIT_NOT_PERMITTED = 1, 2, 3, 4
PROFILERS = ("cprofile", "yappi")
PTRACE_HELP = ("py-spy may not read another process's memory here (ptrace). Run it as root (sudo env \"PATH=$PATH\" "
               "trader profile ...), give it CAP_SYS_PTRACE (in a container: --cap-add SYS_PTRACE), or allow "
               "tracing with `sudo sysctl kernel.yama.ptrace_scope=0`")


def _fail_profile(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def _running_pid(name: str, settings: StackSettings) -> tuple[bool, int | None]:
    """Whether ``name`` has a lock file, and the pid of its live owner (None when it is not running)."""
    from bus.pidlock import LockOwner, lock_path

    path = lock_path(settings.run_path, name)
    try:
        owner = LockOwner.parse(path.read_text())
    except OSError:
        return False, None
    return True, owner.pid if owner is not None and owner.is_alive() else None


def _py_spy() -> str | None:
    import shutil

    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def top_functions(folded: str) -> tuple[int, list[tuple[str, int, int]]]:
    """py-spy's raw (folded) stacks -> (samples, [(function, own samples, total samples)], most own time first).

    A line is ``frame;frame;...;leaf COUNT``, outermost frame first; a function's
    own samples are those where it is the leaf, its total those where it is
    anywhere on the stack (once per stack, however deep it recurses).
    """
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
    ranked = sorted(total, key=lambda f: (-own.get(f, 0), -total[f], f))
    return samples, [(f, own.get(f, 0), total[f]) for f in ranked]


def profile(
    name: str = typer.Argument(..., help="A Procfile process (e.g. order-manager) or an agent id."),
    seconds: int = typer.Option(10, "--seconds", min=1, help="How long to sample (or, with --fresh, to run)."),
    top: int = typer.Option(25, "--top", min=1, help="How many functions to print."),
    rate: int = typer.Option(100, "--rate", min=1, help="Samples per second (py-spy)."),
    idle: bool = typer.Option(False, "--idle", help="Count threads that wait (on a socket, a lock, a sleep) too."),
    out: Path | None = typer.Option(None, "--out", help="The flame graph's file (default <run_dir>/profiles/NAME-TIME.svg)."),
    fresh: bool = typer.Option(False, "--fresh", help="Instead of attaching: run a fresh copy of NAME (it must be stopped) under --profiler."),
    profiler: str = typer.Option("cprofile", "--profiler", help="With --fresh: cprofile, or yappi (for asyncio code; pip install yappi)."),
    wide: bool = wide_option(),
) -> None:
    """Profile a RUNNING process in place with py-spy: a flame graph (SVG) and its top functions.

    py-spy samples the process's stacks from outside for --seconds without
    pausing or restarting it (its pid stays the same); the flame graph and the
    raw stacks are kept under <run_dir>/profiles/, and the functions with the
    most samples are printed (own = the function itself was running, total = it
    or what it called). A process that mostly waits shows few samples: --idle
    counts waiting threads too.

    --fresh keeps the old way: NAME must be stopped (`trader kill ID` for an
    agent), a fresh copy runs under cProfile (or yappi) for --seconds, and the
    pstats are printed and kept.

    Exit codes: 0 done; 1 the profiler failed (or took no sample: try --idle); 2 unknown NAME or bad option;
    3 NAME is not running (or, with --fresh, is running); 4 py-spy may not attach (ptrace not permitted).

    Examples: `trader profile order-manager --seconds 5`, `trader profile sma-a --idle --top 10`,
    `trader profile exchange --fresh --profiler cprofile --seconds 20`
    """
    settings = load_settings()
    argv = _command_of(name, settings)
    has_lock, pid = _running_pid(name, settings)
    if argv is None and not has_lock:
        from services.cli.stack import read_procfile

        known = [n for n, _ in read_procfile(PROJECT_ROOT / "Procfile")]
        _fail_profile(f"{name!r} is neither a Procfile process ({', '.join(known)}) nor an agent of the roster "
                      f"(`trader agents` lists them)", EXIT_UNKNOWN_NAME)
    if profiler not in PROFILERS:
        _fail_profile(f"--profiler must be {' or '.join(PROFILERS)}, not {profiler!r}", EXIT_UNKNOWN_NAME)
    folder = settings.run_path / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if fresh:
        if pid is not None:
            _fail_profile(f"{name} is running (pid {pid}): profile it in place without --fresh, or stop it first "
                          f"(`trader kill {name}` for an agent)", EXIT_NOT_RUNNING)
        _profile_fresh(name, argv, seconds, profiler, top, folder / f"{name}-{stamp}-{profiler}.prof")
        return
    if pid is None:
        start = f"`trader spawn {name}`" if argv and "agents.runtime" in argv else "`trader up`"
        _fail_profile(f"{name} is not running (no live process holds {settings.run_path / 'run' / (name + '.pid')}); "
                      f"start it with {start}, or profile a fresh copy with --fresh", EXIT_NOT_RUNNING)
    assert pid is not None
    spy = _py_spy()
    if spy is None:
        _fail_profile("py-spy is not installed (pip install py-spy)", EXIT_PROFILE_FAILED)
    assert spy is not None
    svg = out if out is not None else folder / f"{name}-{stamp}.svg"
    svg.parent.mkdir(parents=True, exist_ok=True)
    raw = svg.with_suffix(".folded.txt")
    common = ["--pid", str(pid), "--duration", str(seconds), "--rate", str(rate), "--nonblocking",
              *(["--idle"] if idle else [])]
    console.print(f"sampling {name} (pid {pid}) for {seconds} s with py-spy; it keeps running ...")
    # Two samplers side by side: one draws the flame graph, one writes the raw stacks the summary is made of.
    # Neither pauses the process (--nonblocking), so they do not get in each other's way.
    runs = [subprocess.Popen([spy, "record", *common, "--format", fmt, "--output", str(path), *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for fmt, path, extra in (("flamegraph", svg, []), ("raw", raw, ["--function"]))]
    outputs: list[tuple[str, str]] = []
    try:
        try:
            outputs = [run.communicate(timeout=seconds + 60) for run in runs]
        except KeyboardInterrupt:  # Ctrl-C reached py-spy too: it stops and writes what it sampled, shown below
            outputs = [run.communicate(timeout=30) for run in runs]
    except subprocess.TimeoutExpired:
        _fail_profile(f"py-spy did not finish sampling {name} (pid {pid}) in time", EXIT_PROFILE_FAILED)
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    for run, (stdout, stderr) in zip(runs, outputs):
        text = (stderr or stdout or "").strip()
        if run.returncode != 0 and ("permission denied" in text.lower() or "operation not permitted" in text.lower()):
            _fail_profile(f"cannot attach to {name} (pid {pid}): permission denied. {PTRACE_HELP}", EXIT_NOT_PERMITTED)
    samples, ranked = top_functions(raw.read_text()) if runs[1].returncode == 0 and raw.exists() else (0, [])
    if runs[1].returncode == 0 and not samples:  # py-spy draws no flame graph of no sample
        _fail_profile(f"no sample of {name} (pid {pid}) in {seconds} s: every thread was waiting (on a socket, a lock, "
                      "a sleep) the whole time; --idle counts waiting threads too", EXIT_PROFILE_FAILED)
    for run, (stdout, stderr) in zip(runs, outputs):
        if run.returncode != 0:
            if not _running_pid(name, settings)[1]:
                _fail_profile(f"{name} (pid {pid}) stopped while it was sampled", EXIT_NOT_RUNNING)
            lines = (stderr or stdout or "").strip().splitlines()
            why = next((line for line in lines if line.startswith("Error")), lines[0] if lines else f"exit code {run.returncode}")
            _fail_profile(f"py-spy could not sample {name} (pid {pid}): {why}", EXIT_PROFILE_FAILED)
    if not svg.exists():
        _fail_profile(f"py-spy wrote no flame graph of {name} (pid {pid})", EXIT_PROFILE_FAILED)
    table = FitTable(f"top functions of {name} (pid {pid}), {samples} sample(s) in {seconds} s",
                     (Col("own %", essential=True, numeric=True), Col("total %", essential=True, numeric=True),
                      Col("own", numeric=True), Col("total", numeric=True), Col("function", essential=True, wrap=True)))
    for frame, own, total in ranked[:top]:
        table.add_row(f"{100 * own / samples:.1f}", f"{100 * total / samples:.1f}", str(own), str(total), frame)
    table.show(console, wide)
    console.print(f"flame graph: {svg}", soft_wrap=True)
    console.print(f"raw stacks: {raw}", soft_wrap=True)


def _profile_fresh(name: str, argv: list[str] | None, seconds: int, profiler: str, top: int, out: Path) -> None:
    """``--fresh``: run NAME's command under cProfile (or yappi) for ``seconds`` and print the top functions."""
    if argv is None or argv[1:2] != ["-m"]:
        _fail_profile(f"cannot profile a fresh copy of {name}: only a Procfile line or an agent of the roster "
                      "that runs `python -m module`", EXIT_UNKNOWN_NAME)
    assert argv is not None
    if profiler == "yappi":
        try:
            import yappi  # noqa: F401
        except ImportError:
            _fail_profile("yappi is not installed (pip install yappi); use --profiler cprofile", EXIT_PROFILE_FAILED)
    runner = [sys.executable, "-c", _PROFILE_RUNNER, str(out), profiler, *argv[2:]]
    console.print(f"running a fresh copy of {name} under {profiler} for {seconds} s ...")
    proc = subprocess.Popen(runner, cwd=PROJECT_ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(seconds)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not out.exists():
        _fail_profile(f"no profile was written (exit code {proc.returncode}); see `trader logs {name}`", EXIT_PROFILE_FAILED)
    import pstats

    pstats.Stats(str(out)).sort_stats("cumulative").print_stats(top)
    console.print(f"profile kept in {out}", soft_wrap=True)  # a path stays whole for copying


# --- config check ---------------------------------------------------------------------------------


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _writable(path: Path) -> str:
    """Why ``path`` (a folder, maybe not made yet) cannot be written; '' when it can."""
    p = path
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a folder"
    return "" if os.access(p, os.W_OK | os.X_OK) else f"{p} is not writable"


def _stack_running(settings: StackSettings) -> bool:
    from bus.pidlock import LockOwner

    for lock in (settings.run_path / "run").glob("*.pid"):
        try:
            owner = LockOwner.parse(lock.read_text())
        except OSError:
            continue
        if owner is not None and owner.is_alive():
            return True
    return False


# KIS credentials are secrets (DESIGN 8): these keys of the stack file name one, wherever they sit.
KIS_SECRET_KEYS = {
    "": ("kis_app_key", "kis_app_secret", "kis_account", "kis_hts_id"),
    "secrets": ("kis_app_key", "kis_app_secret"),
    "broker.kis": ("app_key", "appkey", "app_secret", "appsecret", "secret", "account", "hts_id"),
}
KIS_SECRET_ENV = {"kis_app_key": "TRADER_KIS_APP_KEY", "app_key": "TRADER_KIS_APP_KEY", "appkey": "TRADER_KIS_APP_KEY",
                  "kis_app_secret": "TRADER_KIS_APP_SECRET", "app_secret": "TRADER_KIS_APP_SECRET",
                  "appsecret": "TRADER_KIS_APP_SECRET", "secret": "TRADER_KIS_APP_SECRET",
                  "kis_account": "TRADER_KIS_ACCOUNT", "account": "TRADER_KIS_ACCOUNT",
                  "kis_hts_id": "TRADER_KIS_HTS_ID", "hts_id": "TRADER_KIS_HTS_ID"}
KIS_URL_SCHEMES = {"rest_url": ("http", "https"), "ws_url": ("ws", "wss")}
CREDENTIALS_SOURCE = "environment (or .env)"


def _read_raw_toml(path: Path) -> dict[str, Any]:
    """The stack file as written ({} when missing or not TOML: load_stack names that problem)."""
    from core.config import _read_toml

    try:
        return _read_toml(path)
    except (OSError, ConfigError):
        return {}


def kis_secrets_in_file(stack_file: str, data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A KIS key, secret, account or HTS id written in the stack file: named, never shown."""
    problems = []
    for section, keys in KIS_SECRET_KEYS.items():
        table: Any = data
        for part in section.split(".") if section else ():
            table = table.get(part) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            continue
        for key in keys:
            if key in table:
                where = f"{section}.{key}" if section else key
                why = f"a KIS credential belongs in the environment or .env ({KIS_SECRET_ENV[key]}), never in the file"
                problems.append((stack_file, where, why))
    return problems


def _kis_url_problem(url: str, schemes: tuple[str, ...], other_env: str, other_url: str) -> str:
    """Why ``url`` is no base URL of one of ``schemes``, or is KIS's server of the other env ('' when fine)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port >= 0
    except ValueError:
        port_ok = False
    if not port_ok:
        return f"{url!r} has a port that is not a number from 0 to 65535"
    if parts.scheme not in schemes:
        return f"{url!r} must start with {' or '.join(s + '://' for s in schemes)}"
    if not parts.hostname:
        return f"{url!r} names no host"
    if parts.query or parts.fragment:
        return f"{url!r}: a base URL takes no query or fragment"
    if parts.netloc == urlsplit(other_url).netloc:
        return f"{url!r} is KIS's {other_env} server: say env = {other_env!r} if that is meant"
    return ""


def kis_problems(settings: StackSettings, stack_file: str, environ: dict[str, str]) -> list[tuple[str, str, str]]:
    """Why the KIS gateway could not trade, or would trade other than meant, with these settings."""
    from core.config import KIS_URLS
    from services.kis_gateway.safety import LIVE_ENV

    kis = settings.broker.kis
    problems = [(CREDENTIALS_SOURCE, var, why) for var, why in settings.kis_credential_problems()]
    if kis.env == "real" and (environ.get(LIVE_ENV) or settings.live) != "yes":
        why = (f"\"real\" trades real money, and {LIVE_ENV}=yes is not set: the gateway refuses to start "
               f"(set {LIVE_ENV}=yes to mean it, or use env = \"demo\")")
        problems.append((stack_file, "broker.kis.env", why))
    other = "demo" if kis.env == "real" else "real"
    for i, (name, schemes) in enumerate(KIS_URL_SCHEMES.items()):
        url = getattr(kis, name)
        why = _kis_url_problem(url, schemes, other, KIS_URLS[other][i]) if url else ""
        if why:
            problems.append((stack_file, f"broker.kis.{name}", why))
    return problems


def check_configs() -> list[tuple[str, str, str]]:
    """Every problem of the configuration set as (file, key, reason); empty when clean."""
    from agents.settings import check_roster
    from core.instruments import InstrumentError, load_instruments
    from core.krx import is_valid_code_syntax
    from core.risk import load_risk_limits

    stack_file = str(stack_config_path())
    in_file = kis_secrets_in_file(stack_file, _read_raw_toml(Path(stack_file)))
    try:
        settings = load_stack()
    except ConfigError as exc:
        named = {key for _, key, _ in in_file}
        return in_file + [p for p in exc.problems if p[1] not in named]
    problems: list[tuple[str, str, str]] = list(in_file)
    if settings.broker.kind == "kis":
        problems += kis_problems(settings, stack_file, dict(os.environ))

    def path_of(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else PROJECT_ROOT / q

    # endpoints: distinct, tcp ports distinct and free, ipc folders writable
    running = _stack_running(settings)
    seen: dict[str, str] = {}
    ports: dict[int, str] = {settings.dashboard.port: "dashboard.port"}
    for name, raw in settings.endpoints:
        ep = settings.endpoint(name)
        if ep in seen:
            problems.append((stack_file, f"endpoints.{name}", f"same endpoint as endpoints.{seen[ep]}: {ep}"))
        seen.setdefault(ep, name)
        if ep.startswith("tcp://"):
            tail = ep.rsplit(":", 1)[-1]
            if tail.isdigit():
                port = int(tail)
                if port in ports and ports[port] != f"endpoints.{name}":
                    problems.append((stack_file, f"endpoints.{name}", f"port {port} is also used by {ports[port]}"))
                ports.setdefault(port, f"endpoints.{name}")
                if not running and not _port_free("127.0.0.1", port):
                    problems.append((stack_file, f"endpoints.{name}", f"port {port} is already in use by another program"))
        elif ep.startswith("ipc://"):
            why = _writable(Path(ep.removeprefix("ipc://")).parent)
            if why:
                problems.append((stack_file, f"endpoints.{name}", why))
    if not running and not _port_free(settings.dashboard.host, settings.dashboard.port):
        problems.append((stack_file, "dashboard.port", f"port {settings.dashboard.port} is already in use by another program"))
    why = _writable(settings.run_path)
    if why:
        problems.append((stack_file, "run_dir", why))
    from bus.security import curve_problems

    problems += [(stack_file, key, reason) for key, reason in curve_problems(settings)]

    # instruments
    instruments_file = path_of(settings.market.instruments_file)
    try:
        instruments = load_instruments(instruments_file)
    except (OSError, InstrumentError) as exc:
        problems.append((str(instruments_file), "-", str(exc)))
        instruments = {}
    for code in instruments:
        if not is_valid_code_syntax(code):
            problems.append((str(instruments_file), code, "not a valid KRX code"))
    for code in settings.market.codes:
        if instruments and code not in instruments:
            problems.append((stack_file, "market.codes", f"{code!r} is not in the instrument master"))

    # roster
    roster = check_roster(path_of(settings.roster_file), instruments, settings)
    for p in roster.problems:
        problems.append((p.file, f"agents.{p.agent_id}.{p.key}" if p.agent_id != "-" else p.key, p.reason))
    if not running:
        for a in roster.valid_agents:
            if a.enabled and not _port_free("127.0.0.1", a.dp):
                problems.append((roster.file, f"agents.{a.id}.dp", f"port {a.dp} is already in use by another program"))

    # risk limits
    risk_file = path_of(settings.risk_file)
    try:
        limits = load_risk_limits(risk_file)
    except ConfigError as exc:
        problems.extend(exc.problems)
    else:
        ids = {a.id for a in roster.valid_agents}
        for agent_id in limits.agents:
            if ids and agent_id not in ids:
                problems.append((str(risk_file), f"agents.{agent_id}", "no such agent in the roster"))
        for code in limits.blocked_codes:
            if instruments and code not in instruments:
                problems.append((str(risk_file), "blocked_codes", f"{code!r} is not in the instrument master"))
    return problems


def config_check(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Check stack.toml, the roster, risk.toml, the instruments and, with broker.kind = "kis", the KIS venue
    (credentials, live trading, URLs); exit 0 only when clean. No secret is ever printed."""
    problems = check_configs()
    if as_json:
        print(json.dumps([{"file": f, "key": k, "reason": r} for f, k, r in problems], indent=2))
    elif problems:
        table = FitTable(f"{len(problems)} configuration problem(s)", (
            Col("file", essential=True, wrap=True), Col("key", essential=True), Col("reason", essential=True, wrap=True)))
        for f, k, r in problems:
            table.add_row(f, k, r)
        table.show(console)
    else:
        console.print("configuration is clean")
    if problems:
        raise typer.Exit(1)
