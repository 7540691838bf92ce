"""The agents' warm parent (a zygote): agents forked from a process that has imported everything once.

``python -m agents.zygote`` imports the agent runtime, every strategy, the
message models, numpy and msgspec, freezes what it has allocated (so the
garbage collector never writes to the shared pages) and then waits for
requests on its stdin: one JSON line each, ``{"argv", "env", "cwd", "log", "nice"}``.
For each it forks twice: the middle process forks the agent and exits at once,
so the agent is nobody's child here. Under a supervisor that is a child
subreaper (``PR_SET_CHILD_SUBREAPER``) the agent is the supervisor's child from
then on (it reaps it and reads its exit code); elsewhere it belongs to init.
The answer is one JSON line on stdout: ``{"pid": N}`` or ``{"error": "..."}``.

What an agent gets is a fresh process in all that matters: a process group of
its own (``kill -- -PID`` reaches it and nothing else), stdin from /dev/null,
stdout and stderr to its log, no other open file (the zygote's pipes are closed), the environment and working directory of the
request, default signal handlers, its command line as the title ``ps`` and
psutil show (one string: read it with ``bus.pidlock.cmdline_of``), and then ``agents.runtime.main`` creates its ZeroMQ context and
takes its pid lock like any agent started by hand. The zygote itself holds no
ZeroMQ context, no socket, no thread and no file of the stack, so nothing of
the kind can be inherited. Its death touches no agent: they are not its
children.

The agents stay in the zygote's session, and so in its scheduling group. Where
the kernel groups tasks by session (``CONFIG_SCHED_AUTOGROUP``, on in most
desktop and server kernels) a nice value counts only inside its group: an agent
in a session of its own at nice 19 still took as much CPU as the order manager
at nice 0, and a hundred of them waking on one bar kept the back office waiting
(order acknowledgements at 100 agents, p50 36 ms; in one group 11-20 ms). So the
agents share one group, and the zygote gives that group the agents' nice
(``/proc/self/autogroup``): a hundred agents together weigh what one process of
the back office weighs at that nice, and inside the group each runs at it too.

The first line it writes is ``{"ready": pid}`` once the imports are done; a
line it cannot read is answered with an error and changes nothing.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
from typing import Any

READY = "ready"
TITLE_ROOM = 512  # bytes of command line an agent's title can fill (see ``_set_title``)
PRELOAD = (
    "numpy", "msgspec", "msgpack", "pydantic", "psutil", "zmq",
    "core.messages", "core.config", "core.instruments", "core.portfolio",
    "agents.runtime", "agents.strategies", "agents.settings", "agents.limits",
)


def preload() -> None:
    """Import what every agent needs, then freeze the heap so forked agents share it copy-on-write."""
    import importlib
    import pkgutil

    for name in PRELOAD:
        importlib.import_module(name)
    from agents import strategies

    for mod in pkgutil.iter_modules(strategies.__path__):
        importlib.import_module(f"agents.strategies.{mod.name}")
    warm_up()
    gc.collect()
    gc.freeze()


def warm_up() -> None:
    """Run once what every agent runs at start, so the lazy caches it fills (pydantic's validators, the codec's
    tables, ``re`` and ``typing`` caches) are built here and shared, not built again in each agent. The files it
    reads are closed again. What it reads (the stack settings, the instrument master, the roster check) is kept
    for the agents whose own reading would be the same (``agents.warm``)."""
    from agents import warm
    from bus.codec import decode, encode
    from core.config import ConfigError, load_stack
    from core.messages import Heartbeat

    decode(encode("sys.heartbeat.x", "x", 1, Heartbeat(name="x", pid=1, ts_ns=1, info={"a": [1]}), 1))
    try:
        settings = load_stack()
    except ConfigError:
        return
    try:
        warm.keep(warm.read(settings))
    except Exception:  # noqa: BLE001 - a warm-up only: the agents report their own problems
        return


def _child(req: dict[str, Any]) -> int:
    """In the agent process: become a fresh process of its own, then run the agent's main."""
    os.setpgid(0, 0)  # its own process group; the session (the agents' scheduling group) stays the zygote's
    devnull = os.open(os.devnull, os.O_RDONLY)
    log_fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.closerange(3, _max_fd())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    nice = int(req.get("nice", 0))
    if nice:
        os.nice(nice)
    os.environ.clear()
    os.environ.update(req["env"])
    os.chdir(req["cwd"])
    argv: list[str] = list(req["argv"])
    sys.argv = argv[2:] if argv[1:2] == ["-m"] else argv[1:]
    _set_title(argv)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own stdout, kept to the end
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    from agents.runtime import main

    return main(_runtime_args(argv))


def _runtime_args(argv: list[str]) -> list[str]:
    """The arguments after ``python -m agents.runtime`` (the module is the only one a zygote runs)."""
    if argv[1:3] != ["-m", "agents.runtime"]:
        raise ValueError(f"the agent parent runs agents.runtime only, not {' '.join(argv[1:3])}")
    return argv[3:]


def _set_title(argv: list[str]) -> None:
    """Show ``argv`` as the process's command line (``ps``, psutil); within the room the parent was started with.

    The parent runs with ``SPT_NOENV`` (its environment block is left alone, so ``/proc/<pid>/environ`` stays
    readable) and a last argument of blanks, ``TITLE_ROOM`` long, that the title overwrites.
    """
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(" ".join(argv))


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1024


def fork_agent(req: dict[str, Any]) -> int:
    """Fork the agent of ``req`` twice removed; its pid (raises OSError when the fork fails)."""
    _runtime_args(list(req["argv"]))  # refuse before forking
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:  # the middle process: fork the agent, tell its pid, go
        code = 0
        try:
            os.close(r)
            pid = os.fork()
            if pid == 0:
                os.close(w)
                try:
                    code = _child(req)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:  # noqa: BLE001 - an agent's crash must never return into the zygote's loop
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    try:
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            os.write(w, str(pid).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    try:
        data = b""
        while chunk := os.read(r, 64):
            data += chunk
    finally:
        os.close(r)
        os.waitpid(middle, 0)
    if not data:
        raise OSError("the agent's fork failed")
    return int(data)


def answer(line: str) -> dict[str, Any]:
    """The answer to one request line (never raises)."""
    try:
        req = json.loads(line)
        if not isinstance(req, dict) or not isinstance(req.get("argv"), list) or not isinstance(req.get("env"), dict):
            return {"error": "a request is {argv: [...], env: {...}, cwd: str, log: str}"}
        for key in ("cwd", "log"):
            if not isinstance(req.get(key), str):
                return {"error": f"a request needs {key}: str"}
        nice = req.get("nice", 0)
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            return {"error": f"nice is 0-19, not {nice!r}"}
        group_nice(nice)
        return {"pid": fork_agent(req)}
    except (ValueError, OSError) as exc:
        return {"error": str(exc)}


AUTOGROUP = "/proc/self/autogroup"
_group_nice_set: list[int] = []  # the nice the zygote's scheduling group was given, once it took


def group_nice(nice: int, path: str = AUTOGROUP) -> str | None:
    """Give the zygote's scheduling group (its session's autogroup) the agents' nice; the reason when it did not take.

    Without autogroups (no ``path``) a nice value already counts against every
    process: nothing to do. A write the kernel refuses (an unprivileged user may
    change an autogroup's nice once in 100 ms on the whole machine: EAGAIN) is
    tried again with the next agent, and said on stderr, the parent's log.
    """
    if _group_nice_set and _group_nice_set[0] == nice:
        return None
    try:
        with open(path, "w") as f:
            f.write(str(nice))
    except FileNotFoundError:
        return None
    except OSError as exc:
        text = f"the agents' scheduling group keeps its nice ({path}: {exc.strerror or exc}); tried again with the next agent"
        print(text, file=sys.stderr, flush=True)
        return text
    _group_nice_set[:] = [nice]
    return None


def serve() -> int:
    """Answer requests from stdin until it closes (the supervisor is gone or done with us)."""
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        out.write(json.dumps(answer(line)) + "\n")
        out.flush()
    return 0


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    _set_title([sys.executable, "-m", "agents.zygote"])  # the room argument (blanks for the agents' titles) hidden
    preload()
    if threading.active_count() != 1:  # a thread would not survive the fork in any child: refuse to be a parent
        print(json.dumps({"error": f"{threading.active_count()} threads after the imports"}), flush=True)
        return 1
    print(json.dumps({READY: os.getpid()}), flush=True)
    return serve()


if __name__ == "__main__":
    sys.exit(main())
