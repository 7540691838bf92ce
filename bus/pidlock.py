"""The pid lock that keeps each process of the stack running at most once.

A process takes ``<run_dir>/run/<name>.pid`` before it binds anything: binding an
ipc path that another process holds silently steals the endpoint from it. The
lock is an exclusive ``fcntl.flock`` kept for the life of the process, so the
kernel releases it when the process dies, however it dies. The file records the
holder's pid, start time and command line (JSON) so a refusal can name it, and
so a lock file left behind by a dead process, or naming a pid that now belongs
to another program, is recognised as stale and taken over.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger("bus.pidlock")


class LockHeld(Exception):
    """Another live process holds the lock."""

    def __init__(self, path: Path, pid: int | None, cmdline: list[str], note: str = "") -> None:
        self.path = path
        self.pid = pid
        self.cmdline = cmdline
        who = f"pid {pid}" if pid is not None else "an unknown process"
        cmd = f" ({' '.join(cmdline)})" if cmdline else ""
        super().__init__(f"{path} is held by {who}{cmd}{note}; is it already running?")


@dataclass(frozen=True, slots=True)
class LockOwner:
    """What a lock file says about its holder."""

    pid: int | None
    create_time: float | None
    cmdline: list[str]

    @classmethod
    def parse(cls, text: str) -> LockOwner | None:
        """The owner recorded in a lock file, or None if it is empty or unreadable."""
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return cls(None, None, [])
        if not isinstance(data, dict):
            return cls(None, None, [])
        pid = data.get("pid")
        ct = data.get("create_time")
        cmd = data.get("cmdline")
        return cls(
            pid if isinstance(pid, int) else None,
            float(ct) if isinstance(ct, (int, float)) else None,
            [str(c) for c in cmd] if isinstance(cmd, list) else [],
        )

    def is_alive(self) -> bool:
        """Whether the recorded pid is still the process that wrote the file."""
        if self.pid is None:
            return False
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            started = proc.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        return self.create_time is None or abs(started - self.create_time) < 0.01


def lock_path(run_path: Path, name: str) -> Path:
    """Where the pid lock of process ``name`` lives: ``<run_dir>/run/<name>.pid``."""
    return run_path / "run" / f"{name}.pid"


class PidLock:
    """An exclusive, process-lifetime lock on a pid file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise LockHeld naming the live holder; stale locks are taken over."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                previous = LockOwner.parse(_read_all(fd))
                os.close(fd)
                self._refuse(previous)
            # The holder may have removed the file between our open and flock:
            # then we locked an orphan inode and must start over on the new file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = LockOwner.parse(_read_all(fd))
        if previous is not None:
            if previous.pid is None:
                reason = "left an unreadable file"
            elif psutil.pid_exists(previous.pid) and not previous.is_alive():
                reason = "now belongs to another process (pid reused)"
            else:
                reason = "no longer holds it"
            log.warning("taking over stale lock %s: pid %s %s", self.path, previous.pid, reason)
        me = psutil.Process()
        record = {"pid": me.pid, "create_time": me.create_time(), "cmdline": cmdline_of(me)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and give the lock up."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def owner(self) -> LockOwner | None:
        """What the lock file currently says, if there is one."""
        try:
            return LockOwner.parse(self.path.read_text())
        except FileNotFoundError:
            return None

    def _refuse(self, previous: LockOwner | None) -> None:
        if previous is None:
            raise LockHeld(self.path, None, [])
        if previous.is_alive():
            raise LockHeld(self.path, previous.pid, previous.cmdline)
        # flock says someone holds it, yet the recorded pid is gone: a child that
        # inherited the descriptor keeps it. Refuse, but say what we found.
        raise LockHeld(
            self.path,
            previous.pid,
            previous.cmdline,
            note=" (that pid is gone; a process that inherited its lock still holds it)",
        )

    def __enter__(self) -> PidLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_all(fd: int) -> str:
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode(errors="replace")


def cmdline_of(proc: psutil.Process) -> list[str]:
    """A process's command line as a list, also when it set its title as one string (an agent forked from the
    agents' parent: ``agents.zygote``); raises what ``psutil`` raises."""
    parts = [p for p in proc.cmdline() if p.strip()]
    if len(parts) == 1 and " " in parts[0]:
        parts = parts[0].split()
    return parts
