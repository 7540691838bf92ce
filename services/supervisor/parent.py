"""The supervisor's side of the agents' warm parent (``agents.zygote``).

``AgentParent`` starts the parent (``python -m agents.zygote``: a child of
the supervisor in a session of its own, its stderr to
``<run_dir>/logs/agent-parent.log``), waits for its ``ready`` line and asks it
for agents: one JSON line per agent over its stdin, the pid back on its
stdout, each with a timeout, so a stuck or dead parent never stalls the
supervisor's loop for longer than that. A parent found dead is started again
on the next request; one that cannot start raises ``ParentError`` with the
reason (the supervisor then starts agents the old way, by fork and exec, and
raises an alert).

An agent forked by the parent is not the parent's child: the supervisor makes
itself a child subreaper (``PR_SET_CHILD_SUBREAPER``, Linux) so the agent is
the supervisor's own child once the parent's middle process has exited;
``ForkedAgent`` then reaps it with ``waitpid`` and gives its exit code, as
``subprocess.Popen`` does for an agent started the old way. Where the
subreaper cannot be set, the agent belongs to init and is watched through
psutil (its exit code is then unknown: -1). ``reap_strays`` collects any other
orphan that the subreaper inherited, leaving the pids the supervisor waits on
itself alone.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from agents.zygote import TITLE_ROOM

PR_SET_CHILD_SUBREAPER = 36
READY_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 5.0


class ParentError(Exception):
    """The agents' parent cannot start or does not answer; the text says why."""


def set_child_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); whether it took."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_strays(keep: set[int]) -> list[int]:
    """Reap every exited child whose pid is not in ``keep`` (orphans the subreaper inherited); their pids."""
    reaped: list[int] = []
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None or info.si_pid in keep or info.si_pid == 0:
            return reaped  # a child we wait on ourselves is first in line: the next pass gets past it once reaped
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        reaped.append(info.si_pid)


class ForkedAgent:
    """An agent the parent forked: ``pid``, ``poll()`` (exit code or None) and ``send_signal``, like ``Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        try:
            self._proc: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self._proc = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # not our child (no subreaper): watch it through psutil
            if self._proc is None or not self._alive():
                self.returncode = -1
            return self.returncode
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def _alive(self) -> bool:
        assert self._proc is not None
        try:
            return self._proc.is_running() and self._proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


class AgentParent:
    """Starts the warm parent when first needed, and forks agents from it."""

    def __init__(self, log_path: Path, env: dict[str, str], cwd: Path, python: str = sys.executable,
                 ready_timeout_s: float = READY_TIMEOUT_S, argv: list[str] | None = None) -> None:
        self.log_path = log_path
        self.cwd = cwd
        self.argv = argv or [python, "-m", "agents.zygote", " " * TITLE_ROOM]
        self.env = {**env, "SPT_NOENV": "1"}
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._buf = b""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def alive(self) -> bool:
        return self.pid is not None

    def start(self) -> int:
        """Start the parent and wait for it to be ready; its pid (raises ParentError)."""
        self.stop()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(self.argv).strip()}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                             env=self.env, cwd=self.cwd, start_new_session=True, close_fds=True)
            except OSError as exc:
                raise ParentError(f"cannot start the agent parent: {exc}") from None
        self._buf = b""
        self.starts += 1
        reply = self._read(self.ready_timeout_s, "to be ready")
        if "ready" not in reply:
            self.stop()
            raise ParentError(f"the agent parent did not start: {reply.get('error', reply)}")
        return int(reply["ready"])

    def spawn(self, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path, nice: int = 0) -> ForkedAgent:
        """Fork one agent (the parent is started first when it is not running); raises ParentError."""
        if not self.alive():
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(argv)} "
                      f"(forked from the agent parent, pid {self.proc.pid})\n".encode())
        line = json.dumps({"argv": argv, "env": env, "cwd": str(cwd), "log": str(log_path), "nice": nice}) + "\n"
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self.stop()
            raise ParentError(f"the agent parent is gone: {exc}") from None
        reply = self._read(REPLY_TIMEOUT_S, "to fork the agent")
        if "pid" not in reply:
            raise ParentError(f"the agent parent could not fork the agent: {reply.get('error', reply)}")
        return ForkedAgent(int(reply["pid"]))

    def _read(self, timeout_s: float, what: str) -> dict[str, Any]:
        """The parent's next JSON line within ``timeout_s`` (raises ParentError; the parent is stopped then)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise ParentError(f"the agent parent did not answer within {timeout_s:.0f} s {what} (log: {self.log_path})")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self.proc.wait(timeout=5)
                self.proc = None
                raise ParentError(f"the agent parent exited (code {code}) before answering {what} (log: {self.log_path})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            return {"error": f"unreadable answer {line[:200]!r}"}
        return reply

    def stop(self, timeout_s: float = 3.0) -> None:
        """End the parent (its stdin closed, then SIGTERM, then SIGKILL); the agents it forked keep running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                proc.send_signal(sig)
                proc.wait(timeout=timeout_s)
                return
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
