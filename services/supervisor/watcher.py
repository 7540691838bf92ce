"""One agent process under the supervisor: start, graceful stop, death and restart (Circus's Watcher).

A child is forked from the agents' warm parent when the watcher has a
``spawner`` that gives one (``services.supervisor.parent``: the agent shares the
parent's imported code and creates its own ZeroMQ context), otherwise started
with ``subprocess.Popen`` (fork + exec, so no ZeroMQ context is ever
inherited); either way in a session of its own, so a signal meant for the
supervisor's terminal never reaches it and stopping it is explicit. Its stdout
and stderr go to ``<run_dir>/logs/<id>.log``. A process found already running
under its lock when the supervisor starts is adopted (watched through its pid).

Stopping is graceful: ask (Command ``stop`` on ``sys.command.<id>``, which the
runtime handles by cancelling its open orders and writing its state), then
SIGTERM after half the kill timeout, then SIGKILL at the timeout. The service
drives everything by calling ``poll(now)`` from its loop; nothing here blocks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from services.supervisor.policy import RestartPolicy

if TYPE_CHECKING:
    from services.supervisor.parent import ForkedAgent

# (argv, log path, env, cwd) -> a forked agent, or None to start it by fork and exec
Spawner = Callable[[list[str], Path, dict[str, str], Path], "ForkedAgent | None"]

RUNNING = "running"
STOPPING = "stopping"
STOPPED = "stopped"
RESTARTING = "restarting"  # died unexpectedly; waiting for its backoff
FLAPPING = "flapping"  # died too often; not restarted until spawned by hand

STABLE_S = 10.0  # a process up this long has its backoff start over


@dataclass(frozen=True, slots=True)
class WatcherEvent:
    """Something that happened to a watched process, for the service to log and alert on."""

    kind: str  # "died", "restarted", "flapping", "stopped", "killed", "restart_failed"
    agent_id: str
    text: str


class AgentWatcher:
    """Starts, watches, stops and restarts one agent process."""

    def __init__(
        self,
        agent_id: str,
        argv: list[str],
        log_path: Path,
        policy: RestartPolicy,
        kill_timeout_s: float,
        ask_stop: Callable[[str], None],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        spawner: Spawner | None = None,
        nice: int = 0,
    ) -> None:
        self.agent_id = agent_id
        self.argv = argv
        self.log_path = log_path
        self.policy = policy
        self.kill_timeout_s = kill_timeout_s
        self.ask_stop = ask_stop
        self.env = env
        self.cwd = cwd
        self.spawner = spawner
        self.nice = nice  # how much nicer than the supervisor the process runs (for one started by fork and exec)
        self.forked = False  # the running process came from the warm parent
        self.state = STOPPED
        self.proc: subprocess.Popen[bytes] | ForkedAgent | None = None
        self.adopted: psutil.Process | None = None
        self.started_at = 0.0
        self.started_wall = 0.0
        self.restarts = 0
        self.last_exit: int | None = None
        self._stop_began = 0.0
        self._termed = False
        self._killed = False
        self._restart_at = 0.0
        self._stable_noted = False

    # --- facts -------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The live process's pid, if there is one."""
        if self.proc is not None:
            return self.proc.pid
        if self.adopted is not None:
            return self.adopted.pid
        return None

    def uptime_s(self, now: float) -> float:
        """Seconds since this process was started (0 when none runs)."""
        return max(0.0, now - self.started_at) if self.pid is not None else 0.0

    def _exit_code(self) -> int | None:
        """The exit code once the process has ended, else None (reaps our own children)."""
        if self.proc is not None:
            return self.proc.poll()
        if self.adopted is not None:
            try:
                if self.adopted.is_running() and self.adopted.status() != psutil.STATUS_ZOMBIE:
                    return None
            except psutil.NoSuchProcess:
                pass
            return -1
        return -1

    # --- actions -----------------------------------------------------------------

    def spawn(self, now: float) -> int:
        """Start the process; returns its pid (raises OSError when it cannot be started)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        forked = self.spawner(self.argv, self.log_path, self.env or child_env(), self.cwd or Path.cwd()) if self.spawner else None
        if forked is not None:
            self.proc, self.forked = forked, True
        else:
            self.proc, self.forked = self._exec(), False
        self.adopted = None
        self.state = RUNNING
        self.started_at, self.started_wall = now, time.time()
        self._stable_noted = False
        return self.proc.pid

    def _exec(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(self.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                # a process group of its own, in the supervisor's session: where the kernel groups tasks by
                # session for the scheduler, a nice value counts only inside the group (see agents.zygote)
                env=self.env, cwd=self.cwd, process_group=0, close_fds=True,
            )
        if self.nice:
            try:
                p = psutil.Process(proc.pid)
                p.nice(p.nice() + self.nice)
            except psutil.Error:
                pass
        return proc

    def adopt(self, pid: int, now: float) -> bool:
        """Watch a process already running as this agent (found under its lock); False if it is gone."""
        try:
            proc = psutil.Process(pid)
            created = proc.create_time()
        except psutil.NoSuchProcess:
            return False
        self.adopted, self.proc, self.forked = proc, None, False
        self.state = RUNNING
        self.started_at = now - max(0.0, time.time() - created)
        self.started_wall = created
        return True

    def stop(self, now: float) -> bool:
        """Begin a graceful stop; False when nothing was running (the watcher is then just stopped)."""
        if self.state in (RESTARTING, FLAPPING) or self.pid is None or self._exit_code() is not None:
            self._clear()
            self.state = STOPPED
            return False
        if self.state != STOPPING:
            self.state = STOPPING
            self._stop_began = now
            self._termed = self._killed = False
            self.ask_stop(self.agent_id)
        return True

    def reset_policy(self) -> None:
        """Give a flapping process a fresh start (a spawn by hand)."""
        self.policy.reset()

    def _signal(self, sig: int) -> None:
        try:
            if self.proc is not None:
                self.proc.send_signal(sig)
            elif self.adopted is not None:
                self.adopted.send_signal(sig)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass

    def _clear(self) -> None:
        self.proc = None
        self.adopted = None

    # --- the loop ------------------------------------------------------------------

    def poll(self, now: float) -> list[WatcherEvent]:
        """Advance the stop, notice deaths, restart when due; returns what happened."""
        events: list[WatcherEvent] = []
        if self.state == RUNNING:
            code = self._exit_code()
            if code is None:
                if not self._stable_noted and now - self.started_at >= STABLE_S:
                    self._stable_noted = True
                    self.policy.on_stable()
                return events
            self.last_exit = code
            self._clear()
            at = self.policy.on_death(now)
            if at is None:
                self.state = FLAPPING
                events.append(WatcherEvent("flapping", self.agent_id,
                                           f"agent {self.agent_id} died {len(self.policy.restarts) + 1} times within "
                                           f"{self.policy.flap_window_s:.0f} s (last exit code {code}); not restarting it"))
            else:
                self.state = RESTARTING
                self._restart_at = at
                events.append(WatcherEvent("died", self.agent_id,
                                           f"agent {self.agent_id} died unexpectedly (exit code {code}); "
                                           f"restarting in {max(0.0, at - now):.1f} s"))
        if self.state == RESTARTING and now >= self._restart_at:
            try:
                pid = self.spawn(now)
            except OSError as exc:
                self.state = FLAPPING
                events.append(WatcherEvent("restart_failed", self.agent_id, f"agent {self.agent_id} cannot be started: {exc}"))
                return events
            self.restarts += 1
            self.policy.on_restart(now)
            events.append(WatcherEvent("restarted", self.agent_id, f"agent {self.agent_id} restarted (pid {pid})"))
        elif self.state == STOPPING:
            code = self._exit_code()
            if code is not None:
                self.last_exit = code
                self._clear()
                self.state = STOPPED
                events.append(WatcherEvent("stopped", self.agent_id, f"agent {self.agent_id} stopped (exit code {code})"))
            elif not self._killed and now - self._stop_began >= self.kill_timeout_s:
                self._killed = True
                self._signal(signal.SIGKILL)
                events.append(WatcherEvent("killed", self.agent_id,
                                           f"agent {self.agent_id} did not stop within {self.kill_timeout_s:.1f} s; killed"))
            elif not self._termed and now - self._stop_began >= self.kill_timeout_s / 2:
                self._termed = True
                self._signal(signal.SIGTERM)
        return events

    def stop_now(self, timeout_s: float) -> int | None:
        """Stop synchronously (the supervisor's own shutdown): ask, SIGTERM, SIGKILL; returns the exit code."""
        if self.pid is None:
            return None
        start = time.monotonic()
        self.stop(start)
        while self.state == STOPPING:
            self.poll(time.monotonic())
            if self.state == STOPPING:
                time.sleep(0.02)
            if time.monotonic() - start > timeout_s + 2:
                break
        return self.last_exit


def agent_argv(python: str, agent_id: str, roster_file: Path) -> list[str]:
    """The command line of an agent process."""
    return [python, "-m", "agents.runtime", "--id", agent_id, "--roster", str(roster_file)]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours (TRADER_* settings included), unbuffered output."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env
