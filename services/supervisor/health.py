"""What the supervisor knows about each process: psutil figures and heartbeat ages.

``process_figures`` reads one pid through psutil (cpu, rss, threads, open
files, uptime). ``HeartbeatBook`` is pure: it keeps the last heartbeat of each
process with the monotonic time it arrived and says which ones became late
(older than ``late_intervals`` heartbeat intervals) and which came back. A
process expected but not heard from yet (just started) is not late before
``grace_s`` has passed: its first heartbeat may take a while to come.
``pid_alive`` says whether the pid of a silent process still runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from core.messages import Heartbeat

FIGURES_MAX_AGE_S = 5.0  # a reading this young is reused: psutil reads of a hundred agents each second cost a core
OPEN_FILES_MAX_AGE_S = 30.0  # counting open files walks /proc/<pid>/fd and fdinfo: the costliest figure and the slowest to move
USS_MAX_AGE_S = 30.0  # USS sums /proc/<pid>/smaps_rollup (the kernel walks the page tables): every 30 s
MAX_PIDS_KEPT = 1000

_procs: dict[int, psutil.Process] = {}  # kept so cpu_percent measures since the previous reading
_readings: dict[int, tuple[float, dict[str, Any]]] = {}  # pid -> (monotonic time read, figures)
_open_files: dict[int, tuple[float, int]] = {}  # pid -> (monotonic time counted, open files)
_uss: dict[int, tuple[float, int]] = {}  # pid -> (monotonic time read, unique set size in bytes)


def process_figures(pid: int, now: float | None = None) -> dict[str, Any]:
    """cpu %, rss, uss, threads, open files and uptime of a live pid; ``{"alive": False}`` when it is gone.

    USS (unique set size) is the memory only this process holds: what ending it would give back. An agent
    forked from the agents' parent shares the imported code with it, so its RSS counts pages its USS does not.

    With ``now`` (monotonic seconds) a reading younger than ``FIGURES_MAX_AGE_S``
    is returned again and open files are counted at most every
    ``OPEN_FILES_MAX_AGE_S``; without it every figure is read afresh.
    """
    if now is not None:
        reading = _readings.get(pid)
        if reading is not None and now - reading[0] < FIGURES_MAX_AGE_S and pid_alive(pid):
            return dict(reading[1])
    proc = _procs.get(pid)
    try:
        if proc is None or not proc.is_running():
            proc = _procs[pid] = psutil.Process(pid)
            _open_files.pop(pid, None)  # a reused pid: count the new process's files
            _uss.pop(pid, None)
            if len(_readings) > MAX_PIDS_KEPT:  # pids of processes long gone
                _readings.clear()
                _open_files.clear()
                _uss.clear()
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(pid)
            counted = _open_files.get(pid) if now is not None else None
            if counted is not None and now is not None and now - counted[0] < OPEN_FILES_MAX_AGE_S:
                open_files = counted[1]
            else:
                try:
                    open_files = len(proc.open_files())
                except psutil.AccessDenied:
                    open_files = -1
                if now is not None:
                    _open_files[pid] = (now, open_files)
            uss = _uss.get(pid) if now is not None else None
            if uss is None or now is None or now - uss[0] >= USS_MAX_AGE_S:
                try:
                    uss = (now or 0.0, proc.memory_full_info().uss)
                except psutil.AccessDenied:
                    uss = (now or 0.0, -1)
                if now is not None:
                    _uss[pid] = uss
            figures = {
                "alive": True,
                "cpu_pct": round(proc.cpu_percent(interval=None), 1),
                "rss_bytes": proc.memory_info().rss,
                "uss_bytes": uss[1],
                "threads": proc.num_threads(),
                "open_files": open_files,
                "uptime_s": round(max(0.0, time.time() - proc.create_time()), 1),
            }
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        for known in (_procs, _readings, _open_files, _uss):
            known.pop(pid, None)
        return {"alive": False}
    if now is not None:
        _readings[pid] = (now, figures)
    return dict(figures)


@dataclass(slots=True)
class HeartbeatBook:
    """The last heartbeat of each process and whether it is late; times are monotonic seconds."""

    interval_s: float = 1.0
    late_intervals: float = 3.0
    grace_s: float = 0.0  # how long a process expected but never heard from may stay silent
    last: dict[str, Heartbeat] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)
    expected_since: dict[str, float] = field(default_factory=dict)
    late: set[str] = field(default_factory=set)
    dead: set[str] = field(default_factory=set)  # late ones reported dead (each reported once)

    def record(self, hb: Heartbeat, now: float) -> bool:
        """Keep a heartbeat; True when it ends a lateness (the process is back)."""
        self.last[hb.name] = hb
        self.seen_at[hb.name] = now
        self.expected_since.pop(hb.name, None)
        self.dead.discard(hb.name)
        if hb.name in self.late:
            self.late.discard(hb.name)
            return True
        return False

    def knows(self, name: str) -> bool:
        """Whether ``name`` is watched (heard from, or expected)."""
        return name in self.seen_at or name in self.expected_since

    def mark_dead(self, name: str) -> bool:
        """Note that a late process is gone; True the first time (the one alert of its death)."""
        if name in self.dead:
            return False
        self.dead.add(name)
        return True

    def expect(self, name: str, now: float) -> None:
        """Start waiting for ``name``'s heartbeats from ``now`` (a process just started)."""
        self.expected_since[name] = now
        self.seen_at.pop(name, None)
        self.last.pop(name, None)
        self.late.discard(name)
        self.dead.discard(name)

    def forget(self, name: str) -> None:
        """Stop watching ``name`` (stopped on purpose)."""
        for d in (self.last, self.seen_at, self.expected_since):
            d.pop(name, None)
        self.late.discard(name)
        self.dead.discard(name)

    def age(self, name: str, now: float) -> float | None:
        """Seconds since ``name``'s last heartbeat (or since it was expected), None if unknown."""
        t = self.seen_at.get(name, self.expected_since.get(name))
        return None if t is None else max(0.0, now - t)

    def late_after_s(self, name: str) -> float:
        """How long ``name`` may be silent: ``late_intervals`` of the interval its last heartbeat announced.

        An agent with nothing to tell heartbeats slower and says so; a heartbeat
        without an interval (or a shorter one) is held to the bus's.
        """
        hb = self.last.get(name)
        announced = hb.interval_s if hb is not None else 0.0
        return max(self.interval_s, announced) * self.late_intervals

    def newly_late(self, now: float) -> list[str]:
        """Processes whose heartbeat just became late (each reported once per lateness).

        One never heard from since it was expected is late only past the
        start-up grace as well (``grace_s``).
        """
        first_limit = max(self.interval_s * self.late_intervals, self.grace_s)
        out = []
        for name in set(self.seen_at) | set(self.expected_since):
            if name in self.late:
                continue
            age = self.age(name, now)
            if age is not None and age > (self.late_after_s(name) if name in self.seen_at else first_limit):
                self.late.add(name)
                out.append(name)
        return sorted(out)


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting for its parent is not)."""
    if pid is None or pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True
