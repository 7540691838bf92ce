"""The supervisor process: agents' lifecycle, the stack's health, the close and the day roll.

Binds ROUTER on ``supervisor_rpc`` and answers ``Command``s (the ``trader``
CLI's ``ps``, ``spawn``, ``kill``, ``restart``, ``reload``):

* ``list``                 -> every process and agent: pid, state, uptime, cpu, rss, threads,
                              open files, heartbeat age; for agents sync, position and PnL
* ``spawn {agent_id}``     -> start an agent of the roster (refused with ALREADY_RUNNING, ...)
* ``kill {agent_id}``      -> graceful stop (stop command, SIGTERM, SIGKILL at the timeout),
                              then any order it left open is cancelled through the order manager
* ``restart {agent_id}``   -> kill, then spawn once it has stopped
* ``reload``               -> re-read the roster: start what is new or enabled, stop what is gone
                              or disabled, restart what changed
* ``day_roll {trading_date}`` -> run the day roll now; ``report {trading_date}`` -> its rows
* ``status`` / ``ping``

Every state-changing command is idempotent on its ``command_id``. It follows
``sys.heartbeat.*``, ``md.session`` (closing check, day roll) and ``sys.alert``,
and publishes ``sys.health``.

Alerts reach people through the channels of ``[alerts]`` (Telegram, Discord,
Slack, a generic webhook; see ``alerting`` and docs/alerts.md): every alert on
the bus, and the supervisor's own ones directly (so they still go out when the
bus is down). A heartbeat late by more than ``heartbeat_late_intervals`` is one
``heartbeat_late`` alert; a process not heard from since it started is given
``alerts.startup_grace_s`` first. A service (a lock holder that is not an
agent) whose heartbeat stopped and whose process is gone is one
``process_died`` alert, and ``process_back`` once it is heard from again. Each
on-time day roll ends with a ``day_summary`` alert.

A day's report is final only once the journal stops changing for that day:
every ``REPORT_CHECK_INTERVAL_S`` and whenever a new trading day starts, a
report the journal has moved past (rows of the day written after it) is
rewritten from the journal, so the report always ends up counting what the
journal holds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

from agents.settings import AgentSettings, check_roster
from bus.pidlock import LockOwner, lock_path
from bus.pubsub import Subscriber
from bus.rpc import RequestInfo, RpcClient, RpcServer
from bus.service import Service
from core.config import StackSettings, project_path
from core.instruments import InstrumentError, load_instruments
from core.messages import Alert, AlertLevel, Command, CommandResult, Health, Heartbeat, Message, SessionEvent, SessionPhase, market_closed
from services.supervisor import dayroll
from services.supervisor.alerting import AlertWebhook, ChannelSender, channel_senders, close_all
from services.supervisor.health import HeartbeatBook, pid_alive, process_figures
from services.supervisor.journal import DayJournal
from services.supervisor.parent import AgentParent, ForkedAgent, ParentError, reap_strays, set_child_subreaper
from services.supervisor.policy import RestartPolicy
from services.supervisor.report import AgentStart
from services.supervisor.watcher import RUNNING, STOPPED, STOPPING, AgentWatcher, WatcherEvent, agent_argv, child_env

HEALTH_TOPIC = "sys.health"
ROLL_AFTER_OMS_S = 1.5  # the order manager expires day orders a second after closed; roll after it
REPORT_CHECK_INTERVAL_S = 2.0  # how often reported days are compared with the journal (late rows)
BAD_ARGS = "BAD_ARGS"
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
UNKNOWN_AGENT = "UNKNOWN_AGENT"
AGENT_INVALID = "AGENT_INVALID"
AGENT_DISABLED = "AGENT_DISABLED"
ALREADY_RUNNING = "ALREADY_RUNNING"
NOT_RUNNING = "NOT_RUNNING"
ROSTER_UNREADABLE = "ROSTER_UNREADABLE"
IGNORED_LOCKS = {"trader-up"}
BUS_PROCESS = "bus"  # the proxy: while it is down no heartbeat arrives from anyone
NO_BUS_HEARTBEAT = {"kis-sim"}  # lock holders that publish no sys.heartbeat (kis-sim is KIS's stand-in, off the bus)


class SupervisorService(Service):
    """Operations: the agents' processes, the stack's health, the end of the day."""

    service_name: ClassVar[str] = "supervisor"
    timer_interval_s: ClassVar[float] = 0.5  # how often agents' deaths, due checks and health are looked at
    heartbeat_quiet_topics = (HEALTH_TOPIC,)  # a health report each interval: no news for an idle heartbeat

    def __init__(self, name: str, settings: StackSettings) -> None:
        super().__init__(name, settings)
        sup = settings.supervisor
        self.roster_file = project_path(settings.roster_file)
        self.watchers: dict[str, AgentWatcher] = {}
        self.roster: dict[str, AgentSettings] = {}
        self.roster_problems: list[str] = []
        self.heartbeats = HeartbeatBook(settings.bus.heartbeat_interval_s, sup.heartbeat_late_intervals,
                                        settings.alerts.startup_grace_s)
        self.restart_after_stop: set[str] = set()
        self.check_after_stop: set[str] = set()
        self.pending_orders_check: list[tuple[float, str, str | None]] = []  # (due, why, agent_id)
        self.pending_roll: tuple[float, str] | None = None
        self._session_date = ""  # trading date of the last session event: a new one looks for missed closes
        self.last_roll: dict[str, Any] = {}
        self.session: dict[str, Any] = {}
        self._answers: OrderedDict[str, CommandResult] = OrderedDict()
        self._next_health = 0.0
        self._next_report_check = 0.0
        self.webhook: AlertWebhook | None = None
        self.channels: list[ChannelSender] = []  # the webhook (when configured) and the chat channels
        self.rpc: RpcServer | None = None
        self.sub: Subscriber | None = None
        self.oms: RpcClient | None = None
        self.market_data: RpcClient | None = None
        self.journal: DayJournal | None = None
        self.parent: AgentParent | None = None
        self.subreaper = False
        self._parent_retry_at = 0.0  # after a failure the parent is started again no sooner than this
        self._parent_was_up = False

    # --- set-up ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Sockets, journal, webhook, then the roster's agents (adopted when already running)."""
        assert self.ctx is not None
        bus = self.settings.bus
        self.rpc = RpcServer(self.ctx, self.settings.endpoint("supervisor_rpc"), self.handle_request, name=self.name,
                             linger_ms=bus.linger_ms)
        self.add_socket(self.rpc.socket, self.rpc.handle_ready)
        self.sub = Subscriber(self.ctx, self.settings.endpoint("bus_out"), ["sys.heartbeat.", "md.session", "sys.alert"],
                              rcvhwm=bus.rcvhwm, linger_ms=bus.linger_ms)
        self.add_socket(self.sub.socket, self._on_bus)
        self.oms = RpcClient(self.ctx, self.settings.endpoint("order_manager_rpc"), timeout_ms=bus.rpc_timeout_ms,
                             retries=0, sender=self.name)
        self.market_data = RpcClient(self.ctx, self.settings.endpoint("market_data_rpc"), timeout_ms=bus.rpc_timeout_ms,
                                     retries=0, sender=self.name)
        self.journal = DayJournal(self.settings.run_path)
        self.channels = channel_senders(self.settings.alerts)
        self.webhook = next((ch for ch in self.channels if isinstance(ch, AlertWebhook)), None)
        for ch in self.channels:
            self.log.info("alerts to %s: %s and up%s", ch.name, ch.min_level.value,
                          f", never {sorted(ch.muted_kinds)}" if ch.muted_kinds else "")
        self._start_parent(time.monotonic())
        self.reload(time.monotonic())
        self._expect_services(time.monotonic())

    def teardown(self) -> None:
        """Stop every agent gracefully (they cancel their orders), then close what setup opened."""
        timeout = self.settings.supervisor.kill_timeout_s
        for w in self.watchers.values():
            if w.pid is not None:
                self.log.info("stopping agent %s (pid %s)", w.agent_id, w.pid)
            w.stop(time.monotonic())  # one waiting to be restarted is just stopped: nothing starts from here on
        deadline = time.monotonic() + timeout + 1
        while any(w.state == STOPPING for w in self.watchers.values()) and time.monotonic() < deadline:
            for w in self.watchers.values():
                if w.state == STOPPING:
                    for ev in w.poll(time.monotonic()):
                        self.log.info("%s", ev.text)
            time.sleep(0.02)
        if self.parent is not None:
            self.parent.stop()
        for client in (self.oms, self.market_data):
            if client is not None:
                client.close()
        if self.journal is not None:
            self.journal.close()
        close_all(self.channels, 2.0)

    # --- the roster ------------------------------------------------------------------------

    def read_roster(self) -> tuple[dict[str, AgentSettings], list[str]]:
        """The roster's valid agents by id and every problem found (as text)."""
        try:
            instruments = load_instruments(project_path(self.settings.market.instruments_file))
        except (OSError, InstrumentError) as exc:
            return {}, [f"instrument master: {exc}"]
        report = check_roster(self.roster_file, instruments, self.settings)
        return {a.id: a for a in report.valid_agents}, [str(p) for p in report.problems]

    def _watcher(self, agent_id: str) -> AgentWatcher:
        w = self.watchers.get(agent_id)
        if w is None:
            sup = self.settings.supervisor
            policy = RestartPolicy(sup.restart_backoff_s, sup.restart_backoff_max_s, sup.flap_restarts, sup.flap_window_s)
            w = AgentWatcher(agent_id, agent_argv(sys.executable, agent_id, self.roster_file),
                             self.settings.run_path / "logs" / f"{agent_id}.log", policy, sup.kill_timeout_s,
                             self._ask_stop, env=child_env(), cwd=Path.cwd(), spawner=self._fork_agent,
                             nice=sup.agent_nice)
            self.watchers[agent_id] = w
        return w

    # --- the agents' warm parent -------------------------------------------------------------

    def _start_parent(self, now: float) -> bool:
        """Start the warm parent (when configured); False, with an alert, when it cannot start."""
        sup = self.settings.supervisor
        if not sup.agent_parent:
            return False
        if self.parent is None:
            self.subreaper = set_child_subreaper()
            if not self.subreaper:
                self.log.warning("cannot become the agents' subreaper: forked agents are watched through psutil")
            self.parent = AgentParent(self.settings.run_path / "logs" / "agent-parent.log", child_env(), Path.cwd(),
                                      ready_timeout_s=sup.agent_parent_ready_s)
        try:
            pid = self.parent.start()
        except ParentError as exc:
            self._parent_retry_at = now + sup.agent_parent_retry_s
            self._parent_was_up = False
            self.alert(AlertLevel.WARNING, "agent_parent_failed",
                       f"{exc}; agents start the old way (fork and exec) until it starts again "
                       f"(next try in {sup.agent_parent_retry_s:.0f} s)")
            return False
        self._parent_was_up = True
        self.log.info("agent parent ready (pid %d): agents are forked from it", pid)
        return True

    def _fork_agent(self, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> ForkedAgent | None:
        """An agent forked from the warm parent, or None (no parent: the watcher starts it by fork and exec)."""
        if self.parent is None:
            return None
        now = time.monotonic()
        if not self.parent.alive() and (now < self._parent_retry_at or not self._start_parent(now)):
            return None
        try:
            return self.parent.spawn(argv, log_path, env, cwd, self.settings.supervisor.agent_nice)
        except ParentError as exc:
            self._parent_retry_at = now + self.settings.supervisor.agent_parent_retry_s
            self._parent_was_up = False
            self.alert(AlertLevel.WARNING, "agent_parent_failed", f"{exc}; starting the agent the old way (fork and exec)")
            return None

    def _watch_parent(self, now: float) -> None:
        """A parent that died is started again (its agents are not its children: they keep running)."""
        if self.parent is None:
            return
        if self._parent_was_up and not self.parent.alive():
            self._parent_was_up = False
            self.alert(AlertLevel.WARNING, "agent_parent_died",
                       "the agents' parent process died; its agents keep running; starting a new parent")
            self._start_parent(now)
        elif not self._parent_was_up and now >= self._parent_retry_at and self._parent_retry_at:
            self._parent_retry_at = 0.0
            self._start_parent(now)
        if self.subreaper:
            keep = {w.pid for w in self.watchers.values() if w.pid is not None}
            if self.parent.proc is not None:
                keep.add(self.parent.proc.pid)
            for pid in reap_strays(keep):
                self.log.info("reaped an orphaned process (pid %d)", pid)

    def _lock_owner(self, name: str) -> LockOwner | None:
        """The live holder of ``name``'s pid lock, if any."""
        try:
            owner = LockOwner.parse(lock_path(self.settings.run_path, name).read_text())
        except FileNotFoundError:
            return None
        return owner if owner is not None and owner.is_alive() else None

    def start_agent(self, agent_id: str, now: float) -> tuple[bool, str]:
        """Spawn (or adopt, when it already runs under its lock); (started, why not)."""
        w = self._watcher(agent_id)
        if w.state in (RUNNING, STOPPING) and w.pid is not None:
            return False, f"agent {agent_id} is already running (pid {w.pid}, {w.state})"
        owner = self._lock_owner(agent_id)
        if owner is not None and owner.pid is not None:
            if w.adopt(owner.pid, now):
                self.heartbeats.expect(agent_id, now)
                return False, f"agent {agent_id} is already running (pid {owner.pid}, started outside the supervisor; now watched)"
        w.reset_policy()
        try:
            pid = w.spawn(now)
        except OSError as exc:
            return False, f"cannot start agent {agent_id}: {exc}"
        self.heartbeats.expect(agent_id, now)
        self.log.info("started agent %s (pid %d)", agent_id, pid)
        return True, ""

    def stop_agent(self, agent_id: str, now: float) -> bool:
        """Begin a graceful stop; False when it was not running."""
        w = self.watchers.get(agent_id)
        if w is None:
            return False
        running = w.stop(now)
        self.check_after_stop.add(agent_id)
        if not running:
            self._stopped(agent_id, now)
        return running

    def _stopped(self, agent_id: str, now: float) -> None:
        self.heartbeats.forget(agent_id)
        if agent_id in self.check_after_stop:
            self.check_after_stop.discard(agent_id)
            self.pending_orders_check.append((now, f"after agent {agent_id} stopped", agent_id))
        if agent_id in self.restart_after_stop:
            self.restart_after_stop.discard(agent_id)
            self.start_agent(agent_id, now)

    def _ask_stop(self, agent_id: str) -> None:
        self.publish(f"sys.command.{agent_id}", Command(command_id=f"{self.name}-stop-{agent_id}-{time.time_ns()}",
                                                        name="stop", who=self.name, ts_ns=time.time_ns()))

    def reload(self, now: float) -> dict[str, Any]:
        """Re-read the roster and make the running agents match it."""
        agents, problems = self.read_roster()
        for p in problems:
            if p not in self.roster_problems:
                self.log.warning("roster: %s", p)
        self.roster_problems = problems
        started, stopped, restarted, refused = [], [], [], {}
        for agent_id, w in self.watchers.items():
            new = agents.get(agent_id)
            if w.state == STOPPED:
                continue
            if new is None or not new.enabled:
                if self.stop_agent(agent_id, now):
                    stopped.append(agent_id)
            elif agent_id in self.roster and new != self.roster[agent_id]:
                self.restart_after_stop.add(agent_id)
                self.stop_agent(agent_id, now)
                restarted.append(agent_id)
        self.roster = agents
        for agent_id, a in agents.items():
            if not a.enabled or agent_id in restarted:
                continue
            w = self.watchers.get(agent_id)
            if w is not None and w.state != STOPPED:
                continue
            ok, why = self.start_agent(agent_id, now)
            (started.append(agent_id) if ok else refused.__setitem__(agent_id, why))
        return {"started": started, "stopped": stopped, "restarted": restarted, "refused": refused, "problems": problems}

    # --- the bus ------------------------------------------------------------------------

    def _on_bus(self) -> None:
        assert self.sub is not None
        now = time.monotonic()
        for env in self.sub.drain(2000):
            msg = env.msg
            if isinstance(msg, Heartbeat):
                was_dead = msg.name in self.heartbeats.dead
                if self.heartbeats.record(msg, now):
                    self.log.info("heartbeats of %s are back", msg.name)
                    if was_dead:
                        self.alert(AlertLevel.INFO, "process_back", f"{msg.name} is back (pid {msg.pid})")
            elif isinstance(msg, SessionEvent):
                self._on_session(msg, now)
            elif isinstance(msg, Alert) and msg.source != self.name:  # its own went out when raised
                self._deliver(msg)

    def alert(self, level: AlertLevel | str, kind: str, text: str) -> None:
        """Log and publish an alert, and hand it to the channels at once (not through the bus, which may be down)."""
        self._deliver(Alert(level=AlertLevel(level), source=self.name, kind=kind, text=text, ts_ns=time.time_ns()))
        super().alert(level, kind, text)

    def _deliver(self, alert: Alert) -> None:
        for ch in self.channels:
            ch.offer(alert)

    def _on_session(self, ev: SessionEvent, now: float) -> None:
        self.session = {"phase": ev.phase.value, "trading_date": ev.trading_date, "ts_ns": ev.ts_ns}
        delay = self.settings.supervisor.closing_check_delay_s
        if ev.phase is SessionPhase.CLOSING:
            self.pending_orders_check.append((now + delay, "at the closing auction", None))
        elif ev.phase is SessionPhase.CLOSED:
            self.pending_roll = (now + delay + ROLL_AFTER_OMS_S, ev.trading_date)
        if ev.trading_date and ev.trading_date != self._session_date:
            self._session_date = ev.trading_date
            self._roll_missed_days(ev.trading_date)
            self._rewrite_stale_reports()

    def _roll_missed_days(self, trading_date: str) -> None:
        """Roll each earlier day that has orders but no report: its close came while the supervisor was down."""
        assert self.journal is not None
        pending = self.pending_roll[1] if self.pending_roll is not None else ""
        for day in self.journal.unreported_days(before=trading_date):
            if day != pending:
                self.log.warning("day %s closed without a roll (the supervisor was down): rolling it now", day)
                self.day_roll(day, late=True)

    def _rewrite_stale_reports(self) -> list[str]:
        """Roll again each reported day whose journal rows changed after its report; the days rewritten."""
        assert self.journal is not None
        pending = self.pending_roll[1] if self.pending_roll is not None else ""
        try:
            stale = [d for d in self.journal.stale_reports() if d != pending]
        except sqlite3.Error as exc:
            self.log.warning("cannot compare the daily reports with the journal: %s", exc)
            return []
        for day in stale:
            self.log.warning("rows of %s reached the journal after its report: rewriting the report", day)
            try:
                self.day_roll(day, late=True, rewrite=True)
            except (sqlite3.Error, OSError) as exc:
                self.alert(AlertLevel.ERROR, "report_not_rewritten", f"cannot rewrite the report of {day}: {exc}")
        return stale

    # --- periodic work -------------------------------------------------------------------

    def on_timer(self, now_monotonic: float) -> None:
        """Watch the agents, check heartbeats, run due checks and the roll, publish health."""
        now = now_monotonic
        for agent_id, w in list(self.watchers.items()):
            for ev in w.poll(now):
                self._on_watcher_event(ev, now)
        self._watch_parent(now)
        self._check_heartbeats(now)
        due = [c for c in self.pending_orders_check if c[0] <= now]
        if due:
            self.pending_orders_check = [c for c in self.pending_orders_check if c[0] > now]
            assert self.oms is not None
            for _, why, agent_id in due:
                dayroll.cancel_leftovers(self.oms, self.alert, why, agent_id)
        if self.pending_roll is not None and self.pending_roll[0] <= now:
            _, date = self.pending_roll
            self.pending_roll = None
            self.day_roll(date)
        if now >= self._next_report_check:
            self._next_report_check = now + REPORT_CHECK_INTERVAL_S
            self._rewrite_stale_reports()
        if now >= self._next_health:
            self._next_health = now + self.settings.supervisor.health_interval_s
            self._expect_services(now)
            self.publish(HEALTH_TOPIC, Health(ts_ns=time.time_ns(), rows=tuple(self.rows(now))))

    def _check_heartbeats(self, now: float) -> None:
        """One alert per lateness; for a service, one ``process_died`` once its process is found gone."""
        book = self.heartbeats
        newly = book.newly_late(now)
        if BUS_PROCESS in newly:  # first: a dead bus explains every other silence
            newly.remove(BUS_PROCESS)
            newly.insert(0, BUS_PROCESS)
        for name in newly:
            if self._is_stopped_on_purpose(name):
                book.forget(name)
                continue
            if self._is_agent(name) or not self._report_if_gone(name, now):
                age = book.age(name, now) or 0.0
                text = (f"no heartbeat from {name} for {age:.1f} s" if name in book.seen_at
                        else f"no heartbeat from {name} since it started {age:.1f} s ago")
                if name != BUS_PROCESS and BUS_PROCESS in book.dead:
                    self.log.warning("%s (the bus is down)", text)
                else:
                    self.alert(AlertLevel.WARNING, "heartbeat_late", text)
        for name in sorted(book.late - book.dead):  # late but running when found late: it may die since
            if not self._is_agent(name):
                self._report_if_gone(name, now)

    def _is_agent(self, name: str) -> bool:
        return name in self.watchers or name in self.roster

    def _report_if_gone(self, name: str, now: float) -> bool:
        """Whether the silent service ``name`` is gone; its one ``process_died`` alert when found so."""
        hb = self.heartbeats.last.get(name)
        owner = self._lock_owner(name)
        if owner is not None:
            return False  # its lock's holder still runs: silent, not dead
        pid = hb.pid if hb is not None else None
        if pid is not None and pid_alive(pid):
            return False
        if not self.heartbeats.mark_dead(name):
            return True
        age = self.heartbeats.age(name, now) or 0.0
        try:
            locked = lock_path(self.settings.run_path, name).exists()
        except OSError:
            locked = False
        how = "died (its lock is stale)" if locked else "is gone (its lock was released: it stopped or crashed)"
        self.alert(AlertLevel.ERROR, "process_died",
                   f"process {name} {how}: pid {pid if pid is not None else '?'} no longer runs; "
                   f"last heartbeat {age:.1f} s ago")
        return True

    def _expect_services(self, now: float) -> None:
        """Watch for the heartbeats of each live lock holder not watched yet (a service that just started)."""
        for lock in (self.settings.run_path / "run").glob("*.pid"):
            name = lock.stem
            if name in IGNORED_LOCKS or name in NO_BUS_HEARTBEAT or self._is_agent(name) or self.heartbeats.knows(name):
                continue
            if self._lock_owner(name) is not None:
                self.heartbeats.expect(name, now)

    def _is_stopped_on_purpose(self, name: str) -> bool:
        w = self.watchers.get(name)
        return w is not None and w.state == STOPPED

    def _on_watcher_event(self, ev: WatcherEvent, now: float) -> None:
        if ev.kind in ("died",):
            self.alert(AlertLevel.WARNING, "agent_died", ev.text)
            self.check_after_stop.add(ev.agent_id)
            self.pending_orders_check.append((now, f"after agent {ev.agent_id} died", ev.agent_id))
            self.heartbeats.forget(ev.agent_id)
        elif ev.kind in ("flapping", "restart_failed"):
            self.alert(AlertLevel.ERROR, "agent_flapping", ev.text)
            self.heartbeats.forget(ev.agent_id)
            self.pending_orders_check.append((now, f"after agent {ev.agent_id} stopped flapping", ev.agent_id))
        elif ev.kind == "restarted":
            self.log.info("%s", ev.text)
            self.heartbeats.expect(ev.agent_id, now)
        elif ev.kind == "killed":
            self.alert(AlertLevel.WARNING, "agent_killed", ev.text)
        elif ev.kind == "stopped":
            self.log.info("%s", ev.text)
            self._stopped(ev.agent_id, now)

    def day_roll(self, trading_date: str, *, late: bool = False, rewrite: bool = False) -> dict[str, Any]:
        """Run the day roll for ``trading_date`` (see ``dayroll``) and resync agents that are not in sync.

        ``rewrite``: the day was rolled before and its report is written again (late rows).
        """
        assert self.journal is not None and self.oms is not None and self.market_data is not None
        starts = {a.id: AgentStart(a.cash, {a.all_codes[0]: (a.start_qty, a.start_avg_price)} if a.start_qty else {})
                  for a in self.roster.values()}
        summary = dayroll.run_day_roll(trading_date, self.settings.run_path, self.journal, self.oms, self.market_data,
                                       starts, self.settings.retention.retention_days, self.alert, late=late)
        resynced: list[str] = []
        for agent_id, w in self.watchers.items():
            hb = self.heartbeats.last.get(agent_id)
            if w.state == RUNNING and hb is not None and hb.info.get("sync") != "in_sync":
                self.publish(f"sys.command.{agent_id}", Command(command_id=f"{self.name}-sync-{agent_id}-{time.time_ns()}",
                                                                name="sync", who=self.name, ts_ns=time.time_ns()))
                resynced.append(agent_id)
        summary["resync_requested"] = resynced
        self.last_roll = summary
        self.log.info("day roll %s: %s", trading_date, json.dumps(summary, default=str))
        # the summary of a day's close goes to phones; a report rewritten for late rows is only noted
        self.alert(AlertLevel.INFO, "day_roll" if rewrite else "day_summary",
                   ("report rewritten: " if rewrite else "") + dayroll.summary_text(summary))
        return summary

    # --- health ------------------------------------------------------------------------------

    def rows(self, now: float) -> list[dict[str, Any]]:
        """One row per known process: the services from their locks, then the agents."""
        out: list[dict[str, Any]] = []
        run = self.settings.run_path / "run"
        for lock in sorted(run.glob("*.pid")):
            name = lock.stem
            if name in IGNORED_LOCKS or name in self.watchers or name in self.roster:
                continue
            try:
                owner = LockOwner.parse(lock.read_text())
            except FileNotFoundError:
                continue
            pid = owner.pid if owner is not None else None
            alive = owner is not None and owner.is_alive()
            row = {"name": name, "kind": "service", "pid": pid, "state": "running" if alive else "dead (stale lock)"}
            row.update(self._figures(name, pid if alive else None, now))
            out.append(row)
        for agent_id in sorted(set(self.watchers) | set(self.roster)):
            w = self.watchers.get(agent_id)
            a = self.roster.get(agent_id)
            state = w.state if w is not None else "stopped"
            if a is not None and not a.enabled and state == STOPPED:
                state = "disabled"
            row = {"name": agent_id, "kind": "agent", "pid": w.pid if w else None, "state": state,
                   "restarts": w.restarts if w else 0, "last_exit": w.last_exit if w else None,
                   "forked": bool(w and w.pid is not None and w.forked)}
            row.update(self._figures(agent_id, w.pid if w else None, now))
            hb = self.heartbeats.last.get(agent_id)
            if hb is not None and w is not None and w.pid == hb.pid:
                info = hb.info
                row.update({k: info.get(k) for k in ("sync", "trading", "code", "holding", "cash_won",
                                                       "realized_pnl_won", "unrealized_pnl_won", "open_orders")})
            out.append(row)
        return out

    def _figures(self, name: str, pid: int | None, now: float) -> dict[str, Any]:
        figures: dict[str, Any] = process_figures(pid, now) if pid is not None else {"alive": False}
        age = self.heartbeats.age(name, now)
        figures["heartbeat_age_s"] = None if age is None or pid is None else round(age, 2)
        figures["heartbeat_late"] = name in self.heartbeats.late
        return figures

    def heartbeat_idle(self) -> bool:
        """No session announced yet, or the day's closed: every agent hears this heartbeat."""
        return market_closed(self.session.get("phase"))

    def heartbeat_info(self) -> dict[str, object]:
        """Agents by state, alert delivery figures (the webhook's, each channel's) and the last roll's date."""
        states: dict[str, int] = {}
        for w in self.watchers.values():
            states[w.state] = states.get(w.state, 0) + 1
        parent = {"enabled": self.parent is not None, "pid": self.parent.pid if self.parent else None,
                  "starts": self.parent.starts if self.parent else 0, "subreaper": self.subreaper,
                  "forked_agents": sum(1 for w in self.watchers.values() if w.pid is not None and w.forked)}
        return {"agents": states, "agent_parent": parent, "webhook": self.webhook.counters() if self.webhook else {},
                "alert_channels": {ch.name: ch.counters() for ch in self.channels},
                "last_roll": self.last_roll.get("trading_date", "")}

    # --- commands ----------------------------------------------------------------------------

    def handle_request(self, msg: Message, info: RequestInfo) -> Message:
        """Answer one RPC request (commands only); state-changing ones are idempotent on command_id."""
        if not isinstance(msg, Command):
            return CommandResult(command_id="-", ok=False, reason_code=BAD_ARGS,
                                 error=f"the supervisor serves Command requests, not {type(msg).__name__}")
        if msg.command_id in self._answers:
            return self._answers[msg.command_id]
        answer = self._command(msg, time.monotonic())
        if msg.name in ("spawn", "kill", "restart", "reload", "day_roll"):
            self._answers[msg.command_id] = answer
            if len(self._answers) > 1000:
                self._answers.popitem(last=False)
        return answer

    def _command(self, cmd: Command, now: float) -> CommandResult:
        name, args = cmd.name, cmd.args

        def ok(result: Any) -> CommandResult:
            return CommandResult(command_id=cmd.command_id, ok=True, result=result)

        def no(reason: str, text: str) -> CommandResult:
            return CommandResult(command_id=cmd.command_id, ok=False, reason_code=reason, error=text)

        if name == "list":
            return ok(self.rows(now))
        if name in ("status", "ping"):
            return ok({"pid": os.getpid(), "session": self.session, "last_roll_summary": self.last_roll,
                       "roster_problems": self.roster_problems, **self.heartbeat_info()})
        if name == "reload":
            return ok(self.reload(now))
        if name == "day_roll":
            date = args.get("trading_date") or self.session.get("trading_date")
            if not isinstance(date, str) or len(date) != 8 or not date.isdigit():
                return no(BAD_ARGS, "day_roll needs args {trading_date: YYYYMMDD} (or a session seen on the bus)")
            return ok(self.day_roll(date))
        if name == "report":
            date = args.get("trading_date")
            if not isinstance(date, str):
                return no(BAD_ARGS, "report needs args {trading_date: YYYYMMDD}")
            assert self.journal is not None
            return ok(self.journal.report(date))
        if name not in ("spawn", "kill", "restart"):
            return no(UNKNOWN_COMMAND, f"unknown command {name!r}: list, spawn, kill, restart, reload, day_roll, report, status")
        agent_id = args.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id:
            return no(BAD_ARGS, f"{name} needs args {{agent_id: str}}")
        if name == "kill":
            if not self.stop_agent(agent_id, now):
                return no(NOT_RUNNING, f"agent {agent_id} is not running")
            return ok({"agent_id": agent_id, "state": STOPPING})
        agents, problems = self.read_roster()
        self.roster_problems = problems
        agent = agents.get(agent_id)
        if agent is None:
            mine = [p for p in problems if f"agent {agent_id}:" in p]
            if mine:
                return no(AGENT_INVALID, "; ".join(mine))
            return no(UNKNOWN_AGENT, f"no agent {agent_id!r} in {self.roster_file}")
        if not agent.enabled:
            return no(AGENT_DISABLED, f"agent {agent_id} is disabled in {self.roster_file} (enabled = false)")
        self.roster[agent_id] = agent
        if name == "restart":
            w = self.watchers.get(agent_id)
            if w is not None and w.state in (RUNNING, STOPPING) and w.pid is not None:
                self.restart_after_stop.add(agent_id)
                self.stop_agent(agent_id, now)
                return ok({"agent_id": agent_id, "state": "restarting"})
        started, why = self.start_agent(agent_id, now)
        if not started:
            return no(ALREADY_RUNNING if "already running" in why else "SPAWN_FAILED", why)
        return ok({"agent_id": agent_id, "state": RUNNING, "pid": self.watchers[agent_id].pid})
