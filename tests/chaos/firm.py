"""The whole firm for a chaos run: every Procfile process in a private run directory, kept alive like honcho.

The services are started from the Procfile (the supervisor starts the
agents of the roster, ``default``, ``busy`` or a file, copied with free status
ports). The venue is the paper exchange (``venue="paper"``) or, with
``venue="kis-sim"``, the KIS gateway and the local kis-sim behind it
(``broker.kind = "kis"``, kis-sim's REST and WebSocket on free ports, its
market clock at the run's speed). A service that dies is started again by
``keep_alive`` after a short pause, the way honcho or systemd would; agents
are the supervisor's to restart. ``restart_all`` takes the whole stack down
(gracefully, or kill -9 of every process at once, agents included) and
starts it again, as a machine restart would. ``stop`` asks the stack to go
down (``trader down``), then kills whatever is left; ``leftovers`` finds
every process of this run directory (by its environment), so a run can prove
it left no orphan and no lock; ``remove_stale_locks`` clears the locks kill -9
left behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from core.config import PROJECT_ROOT
from services.cli.stack import stack_entries
from tests.ports import free_port

TRADER = str(Path(sys.executable).parent / "trader")
RESTART_PAUSE_S = 0.5  # honcho/systemd-style pause before a dead service is started again
TERMINAL = ("filled", "canceled", "rejected", "expired")
ROSTERS = {"default": PROJECT_ROOT / "configs" / "agents.toml", "busy": PROJECT_ROOT / "configs" / "agents_busy.toml"}
VENUES = ("paper", "kis-sim")
# the process whose clock is the market's, per venue: a graceful restart stops it first
CLOCK_PROCESS = {"paper": "exchange", "kis-sim": "kis-sim"}
KIS_RATE_PER_S = 200  # the gateway's pace against kis-sim (which allows a quarter more): a busy roster at x300


def roster_file(name: str | Path) -> Path:
    """The roster a name stands for: ``default``, ``busy`` or the path of a roster file."""
    if isinstance(name, str) and name in ROSTERS:
        return ROSTERS[name]
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"roster {name!r}: neither {', '.join(ROSTERS)} nor a file")
    return path


def trimmed_roster(source: Path, keep: list[str], target: Path) -> Path:
    """A copy of ``source`` with only the agents whose ids are in ``keep`` (their tables verbatim)."""
    text = source.read_text()
    head, *tables = re.split(r"(?m)^(?=\[\[agents\]\])", text)
    kept = [t for t in tables if (m := re.search(r'(?m)^id\s*=\s*"([^"]+)"', t)) and m.group(1) in keep]
    missing = set(keep) - {re.search(r'(?m)^id\s*=\s*"([^"]+)"', t).group(1) for t in kept}  # type: ignore[union-attr]
    if missing:
        raise ValueError(f"{source}: no agent(s) {sorted(missing)}")
    target.write_text(head + "".join(kept))
    return target


def roster_with_free_ports(source: Path, target: Path) -> dict[str, int]:
    """Copy the roster with each agent's ``dp`` moved to a free port; returns agent id -> port."""
    text = source.read_text()
    ports: dict[str, int] = {}
    out_lines = []
    agent = ""
    for line in text.splitlines():
        m = re.match(r'^id\s*=\s*"([^"]+)"', line)
        if m:
            agent = m.group(1)
        if re.match(r"^dp\s*=", line):
            ports[agent] = free_port()
            line = f"dp = {ports[agent]}"
        out_lines.append(line)
    target.write_text("\n".join(out_lines) + "\n")
    return ports


class Firm:
    """The processes of one chaos run and the environment they share."""

    def __init__(self, run_dir: Path, *, speed: float, start_time: str, start_date: str, seed: int,
                 roster: str | Path = "default", retention_days: int = 30, recon_interval_s: float = 10.0,
                 venue: str = "paper") -> None:
        if venue not in VENUES:
            raise ValueError(f"venue {venue!r}: one of {', '.join(VENUES)}")
        self.run_dir = run_dir
        self.venue = venue
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.ports = roster_with_free_ports(roster_file(roster), run_dir / "agents.toml")
        self.env = {
            **os.environ,
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
            "TRADER_RUN_DIR": str(run_dir),
            "TRADER_ROSTER_FILE": str(run_dir / "agents.toml"),
            "TRADER_CLOCK__SPEED": str(speed),
            "TRADER_CLOCK__START_TIME": start_time,
            "TRADER_CLOCK__START_DATE": start_date,
            "TRADER_CLOCK__SEED": str(seed),
            "TRADER_DASHBOARD__PORT": str(free_port()),
            "TRADER_SUPERVISOR__RESTART_BACKOFF_S": "0.2",
            "TRADER_SUPERVISOR__FLAP_RESTARTS": "50",
            "TRADER_SUPERVISOR__KILL_TIMEOUT_S": "4",
            "TRADER_RECONCILE__INTERVAL_S": str(recon_interval_s),
            "TRADER_RETENTION__RETENTION_DAYS": str(retention_days),
        }
        self.kis_rest_url = ""
        if venue == "kis-sim":
            rest, ws = free_port(), free_port()
            self.kis_rest_url = f"http://127.0.0.1:{rest}"
            self.env.update({
                "TRADER_BROKER__KIND": "kis",
                "TRADER_BROKER__KIS__SERVER": "kis-sim",
                "TRADER_BROKER__KIS__REST_URL": self.kis_rest_url,
                "TRADER_BROKER__KIS__WS_URL": f"ws://127.0.0.1:{ws}",
                "TRADER_BROKER__KIS__SIM_SPEED": str(speed),
                "TRADER_BROKER__KIS__RATE_PER_S": str(KIS_RATE_PER_S),
            })
        self.commands = {name: cmd for name, cmd in stack_entries(kind="kis" if venue == "kis-sim" else "paper")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.seen_pids: set[int] = set()
        self.restarts: dict[str, int] = {}
        self._dead_since: dict[str, float] = {}

    # --- services ------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start one Procfile process, its output appended to ``logs/<name>.log``."""
        argv = self.commands[name].split()
        argv[0] = sys.executable if argv[0] == "python" else argv[0]
        with open(self.run_dir / "logs" / f"{name}.log", "ab") as log:
            p = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.procs[name] = p
        self.seen_pids.add(p.pid)

    def start_all(self) -> None:
        """Every process of the Procfile."""
        for name in self.commands:
            self.start(name)

    def restart_all(self, *, graceful: bool) -> tuple[bool, str]:
        """The whole stack down and up again; (whether it went down as asked, what was wrong).

        Graceful: the venue's clock first (the exchange, or kis-sim: the
        market stops with it, so it does not move on while the rest goes
        down), then ``trader down`` for the others, which must leave no
        process and no lock. Otherwise: kill -9 of every process of the run at
        the same moment, locks left behind.
        """
        self._dead_since.clear()
        if graceful:
            clock = self.procs.get(CLOCK_PROCESS[self.venue])
            if clock is not None and clock.poll() is None:
                clock.terminate()
                try:
                    clock.wait(30)
                except subprocess.TimeoutExpired:
                    clock.kill()
            ok, detail = self._down()
        else:
            victims = self.leftovers()
            for proc in victims:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(victims, timeout=10)
            for p in self.procs.values():
                p.poll()
            left = self.leftovers()
            ok, detail = not left, f"left running after kill -9: {[p.pid for p in left]}" if left else ""
        self.kill_everything()  # nothing of the old stack may outlive the restart
        self.start_all()
        return ok, detail

    def kill9(self, name: str) -> int | None:
        """kill -9 one service (its pid only: agents the supervisor started live on); returns the pid."""
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return None
        os.kill(p.pid, signal.SIGKILL)
        return p.pid

    def keep_alive(self, now: float) -> list[str]:
        """Start again each service that died, after the restart pause; returns the names started."""
        started = []
        for name, p in list(self.procs.items()):
            if p.poll() is None:
                self._dead_since.pop(name, None)
                continue
            since = self._dead_since.setdefault(name, now)
            if now - since >= RESTART_PAUSE_S:
                del self._dead_since[name]
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self.start(name)
                started.append(name)
        return started

    # --- agents --------------------------------------------------------------------

    def agent_pid(self, agent_id: str) -> int | None:
        """The pid in an agent's lock file, if it is alive."""
        try:
            pid = int(json.loads((self.run_dir / "run" / f"{agent_id}.pid").read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not psutil.pid_exists(pid):
            return None
        self.seen_pids.add(pid)
        return pid

    def agent_status(self, agent_id: str) -> dict[str, Any] | None:
        """An agent's status page document (``GET /status``), or None when it does not answer."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[agent_id]}/status", timeout=2) as r:
                doc = json.loads(r.read())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    # --- the CLI -------------------------------------------------------------------

    def trader(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``trader`` against this run directory."""
        return subprocess.run([TRADER, *args], cwd=PROJECT_ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    # --- the end -------------------------------------------------------------------

    def leftovers(self) -> list[psutil.Process]:
        """Every live process whose environment names this run directory (the agents included)."""
        found = []
        mine = str(self.run_dir)
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if proc.environ().get("TRADER_RUN_DIR") == mine:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def stop(self) -> tuple[bool, str]:
        """``trader down``, then kill whatever is left; (whether it went down cleanly, what was left)."""
        self._dead_since.clear()
        clean, detail = self._down()
        self.kill_everything()
        return clean, detail

    def _down(self) -> tuple[bool, str]:
        """``trader down``, reaping each service as it exits; (whether it left nothing behind, what it left)."""
        clean = True
        detail = ""
        # like honcho, reap each service as it exits, so that `trader down` sees it gone (not a zombie)
        down = subprocess.Popen([TRADER, "down"], cwd=PROJECT_ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while down.poll() is None and time.monotonic() < deadline:
            for p in self.procs.values():
                p.poll()
            time.sleep(0.1)
        if down.poll() is None:
            down.kill()
            clean, detail = False, "trader down timed out"
        _, stderr = down.communicate()
        if down.returncode != 0 and clean:
            clean, detail = False, f"trader down exited {down.returncode}: {stderr.strip()[-300:]}"
        elif "did not stop" in stderr:
            clean, detail = False, f"trader down had to kill: {stderr.strip()[-300:]}"
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                clean = False
        left = self.leftovers()
        if left:
            clean = False
            detail += f" left running: {[p.pid for p in left]}"
        locks = sorted(p.name for p in (self.run_dir / "run").glob("*.pid"))
        if locks:
            clean = False
            detail += f" locks left: {locks}"
        return clean, detail.strip()

    def remove_stale_locks(self) -> list[str]:
        """Delete the pid locks of this run whose process is gone (kill -9 leaves them); their names."""
        gone = []
        for lock in sorted((self.run_dir / "run").glob("*.pid")):
            try:
                text = lock.read_text().strip()
                pid = int(json.loads(text)["pid"]) if text.startswith("{") else int(text)
            except (OSError, ValueError, KeyError, TypeError):
                pid = 0
            try:
                alive = pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                alive = False
            if not alive:
                lock.unlink(missing_ok=True)
                gone.append(lock.name)
        return gone

    def kill_everything(self) -> None:
        """SIGKILL every process this run started or found (safe to call twice)."""
        # only processes proven ours (their environment names this run directory): a recycled pid is left alone
        for proc in self.leftovers():
            try:
                proc.kill()
            except psutil.Error:
                pass
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
