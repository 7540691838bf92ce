"""The reconciler process: gathers the three views, runs ``core.reconcile``, heals or halts.

When it runs: at start, every ``reconcile.interval_s`` seconds, soon after a
broker reconnect (the order manager's heartbeat ``connection`` turning
``connected`` again, its ``broker_connection`` alert, or market-data's
``feed_recovered`` alert), and on the RPC ``run`` command.

One run: the order manager's ``journal_state`` first, then the broker's
account, positions, open orders and today's fills (in that order, so an
execution that lands in between shows up as missing in the journal and is
healed, never as a phantom), then each agent's book when reachable
(``GET http://127.0.0.1:<dp>/status``, field ``book.positions``; optional,
``reconcile.agent_books``; agents that do not answer are listed, not
compared). Safe differences are healed through the order manager (Command
``apply_missing_fill`` with the broker's fill, ``resolve_order``) and the
views are gathered again. Differences that need a halt are checked once more
after ``reconcile.confirm_delay_s`` (an order or fill in flight between the two
reads settles by then); if they remain, ``sys.alert`` and Command ``halt`` to
the risk guard (who = "reconciler").

The journal side is the ledger, the book of record kept independently of the
broker: the account's holdings and cash now (openings carried from day to day
plus what followed), each agent's, and the ledger's own consistency (the
account moved as the sum of its agents). Holdings carried overnight are in the
openings and give no difference.

Pending or break: a difference that a second look (``confirm_delay_s`` later)
no longer shows, or shows with other figures, was explained by something in
flight (an order, a fill not yet applied by an agent) and is reported as
``pending``. One that stays the same is a ``break``: alerted once (kind
``recon_break``), kept in every report until it is gone (``recon_break_resolved``)
or booked as a ledger adjustment, and handled once by ``reconcile.break_policy``
(``halt``, or ``reduce`` for reduce-only) when it needs a halt; an agent whose
own book breaks is asked to re-sync. Breaks survive a restart of the
reconciler (they are read back from its latest report).

Every report goes to ``recon_reports`` in the journal and to ``recon.report``.
RPC on ``reconciler_rpc``: Command ``run`` (run now, return the report) and
``latest``.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import httpx

from agents.settings import check_roster
from bus.pubsub import Subscriber
from bus.rpc import RequestInfo, RpcClient, RpcFailure, RpcServer
from bus.service import Service
from core.config import StackSettings, project_path
from core.instruments import InstrumentError, load_instruments
from core.messages import TERMINAL_STATUSES, Alert, AlertLevel, Command, CommandResult, Heartbeat, Message, ReconReport
from core.orders import date_of_client_order_id
from core.reconcile import (
    Action,
    BrokerState,
    Difference,
    DiffClass,
    ReconcileInputError,
    Report,
    broker_state_from_plain,
    journal_state_from_plain,
    reconcile,
)
from services.broker.base import BrokerError, BrokerUnavailable
from services.broker.venue import VenueBroker
from services.reconciler.journal import ReconJournal

RECON_TOPIC = "recon.report"
BUS_TOPICS = ["sys.alert", "sys.heartbeat.order-manager"]
RECONNECT_DELAY_S = 1.0
AGENT_TIMEOUT_S = 0.3
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
UNSUPPORTED_REQUEST = "UNSUPPORTED_REQUEST"


class SourceDown(Exception):
    """A view could not be gathered (the text names the service and how to start it)."""


class DayRollInProgress(SourceDown):
    """The ledger and the broker are on different trading dates for a moment: nothing to compare yet."""


class ReconcilerService(Service):
    """The process around ``core.reconcile``."""

    service_name = "reconciler"
    timer_interval_s = 0.5

    def __init__(self, name: str, settings: StackSettings) -> None:
        super().__init__(name, settings)
        self.cfg = settings.reconcile
        self.journal: ReconJournal | None = None
        self.rpc: RpcServer | None = None
        self.bus: Subscriber | None = None
        self.broker: VenueBroker | None = None
        self.oms: RpcClient | None = None
        self.risk: RpcClient | None = None
        self.agent_ports: dict[str, int] = {}
        self.latest: dict[str, Any] | None = None
        self.breaks: dict[str, dict[str, Any]] = {}  # "kind key" -> the break, while it lasts
        self._waiting: dict[str, tuple[Any, float]] = {}  # pending (WAIT) difference -> (its amount, since when)
        self.runs = 0
        self._next_run = 0.0
        self._broker_was_down = False
        self._oms_broker_state: object = None
        self._http: httpx.Client | None = None  # one client for every run: each new one loads the CA store (~30 ms)
        self._started = time.monotonic()
        self._broker_answered = False  # once it has, a broker that does not answer is a warning at once
        self._last_clean: bool | None = None  # a run as clean as the one before is logged at DEBUG

    # --- start and stop ------------------------------------------------------

    def setup(self) -> None:
        s = self.settings
        try:
            instruments = load_instruments(project_path(s.market.instruments_file))
            roster = check_roster(project_path(s.roster_file), instruments, s)
            for a in roster.valid_agents:
                self.agent_ports[a.id] = a.dp
        except (OSError, InstrumentError) as exc:
            self.log.warning("no roster (agents' books and starting holdings left out): %s", exc)
        self.journal = ReconJournal(s.run_path / "journal.sqlite")
        self.latest = self.journal.latest()
        for b in (self.latest or {}).get("breaks") or []:
            if isinstance(b, dict) and "kind" in b and "key" in b:
                self.breaks[f"{b['kind']} {b['key']}"] = b
        assert self.ctx is not None
        self.broker = VenueBroker(self.ctx, s, sender=self.name)
        self.oms = RpcClient(self.ctx, s.endpoint("order_manager_rpc"), timeout_ms=s.bus.rpc_timeout_ms, retries=1, sender=self.name)
        self.risk = RpcClient(self.ctx, s.endpoint("risk_guard_rpc"), timeout_ms=s.bus.rpc_timeout_ms, retries=1, sender=self.name)
        self.bus = Subscriber(self.ctx, s.endpoint("bus_out"), BUS_TOPICS, rcvhwm=s.bus.rcvhwm, linger_ms=s.bus.linger_ms,
                              heartbeats_from=["order-manager", "market-data"])
        self.add_socket(self.bus.socket, self._on_bus)
        self.rpc = RpcServer(self.ctx, s.endpoint("reconciler_rpc"), self.handle_request, name=self.name, linger_ms=s.bus.linger_ms)
        self.add_socket(self.rpc.socket, self.rpc.handle_ready)
        self._next_run = time.monotonic() + RECONNECT_DELAY_S  # at start, once the others have had a moment

    def teardown(self) -> None:
        for client in (self.broker, self.oms, self.risk):
            if client is not None:
                client.close()
        if self._http is not None:
            self._http.close()
        if self.journal is not None:
            self.journal.close()

    # --- when to run ---------------------------------------------------------------

    def on_timer(self, now_monotonic: float) -> None:
        if now_monotonic >= self._next_run:
            self.run_once("start" if self.runs == 0 else "schedule")

    def _on_bus(self) -> None:
        assert self.bus is not None
        for env in self.bus.drain():
            msg = env.msg
            if isinstance(msg, Alert) and msg.source in ("order-manager", "market-data"):
                text = msg.text.lower()
                if msg.kind == "feed_recovered" or (msg.kind == "broker_connection" and "-> connected" in text):
                    self._soon(f"reconnect ({msg.source}: {msg.kind})")
            elif isinstance(msg, Heartbeat):
                state = msg.info.get("connection")
                if state != self._oms_broker_state:
                    if self._oms_broker_state is not None and str(state).lower() == "connected":
                        self._soon("reconnect (order-manager heartbeat)")
                    self._oms_broker_state = state

    def _soon(self, why: str) -> None:
        self.log.debug("reconciling soon: %s", why)
        self._next_run = min(self._next_run, time.monotonic() + RECONNECT_DELAY_S)

    # --- one run -----------------------------------------------------------------

    def run_once(self, trigger: str) -> dict[str, Any]:
        """Gather, compare, heal what is safe, halt on what is not; returns the report as plain data."""
        self.runs += 1
        self._next_run = time.monotonic() + self.cfg.interval_s
        report_id = f"recon-{time.time_ns()}-{uuid.uuid4().hex[:6]}"
        healed: list[dict[str, Any]] = []
        halted = False
        sources: dict[str, Any] = {}
        pending: list[dict[str, Any]] = []
        try:
            report = self._compare(sources)
            if report.to_heal():
                healed = self._heal(report)
                report = self._compare(sources)
            first = {_diff_id(d): d for d in report.differences if not d.safe_to_heal}
            if first:
                if self.cfg.confirm_delay_s > 0:
                    time.sleep(self.cfg.confirm_delay_s)
                report = self._compare(sources)
            stable = [d for d in report.differences if not d.safe_to_heal and d.action is not Action.WAIT
                      and _same(first.get(_diff_id(d)), d)]
            stable += self._stuck(report.differences)
            pending = [d.to_plain() for d in report.differences if not d.safe_to_heal and d not in stable
                       and _diff_id(d) not in self.breaks]
            present = {_diff_id(d): d for d in report.differences if not d.safe_to_heal}
            halted = self._track_breaks(stable, present)
            plain = report.to_plain()
        except SourceDown as exc:
            plain = {"clean": False, "differences": [], "skipped": [], "error": str(exc)}
            expected = isinstance(exc, DayRollInProgress) or self._venue_starting()  # tried again shortly
            self.log.log(logging.DEBUG if expected else logging.WARNING, "reconciliation could not run: %s", exc)
        breaks = list(self.breaks.values())
        plain["clean"] = bool(plain["clean"]) and not breaks
        result = {"report_id": report_id, "ts_ns": time.time_ns(), "trigger": trigger, **plain,
                  "breaks": breaks, "pending": pending, "healed": healed, "halted": halted, "sources": sources}
        self.latest = result
        assert self.journal is not None
        self.journal.record(result)
        self.publish(RECON_TOPIC, ReconReport(
            report_id=report_id, ts_ns=result["ts_ns"], trigger=trigger, clean=result["clean"],
            differences=tuple(result["differences"]), healed=tuple(healed), halted=halted,
            sources={**sources, **({"error": result["error"]} if "error" in result else {})},
            breaks=tuple(breaks), pending=tuple(pending),
        ))
        routine = (result["clean"] and self._last_clean) or ("error" in result and self._venue_starting())
        self._last_clean = bool(result["clean"])
        self.log.log(logging.DEBUG if routine else logging.INFO, "reconciliation %s (%s): %s", report_id, trigger,
                     "clean" if result["clean"] else f"{len(breaks)} break(s), {len(pending)} pending, "
                     f"{len(result['differences'])} difference(s)")
        return result

    def _venue_starting(self) -> bool:
        """The broker has not answered yet, within ``market_data.venue_start_grace_s`` of the start: still starting."""
        return (not self._broker_answered
                and time.monotonic() - self._started < self.settings.market_data.venue_start_grace_s)

    def _stuck(self, differences: list[Difference]) -> list[Difference]:
        """Differences something in flight explains (WAIT) that have not moved for ``pending_limit_s``: breaks.

        An agent behind the journal that keeps applying fills is pending; one
        whose book has not moved on for that long missed something.
        """
        now = time.monotonic()
        waiting = {_diff_id(d): d for d in differences if d.action is Action.WAIT}
        for key in set(self._waiting) - set(waiting):
            del self._waiting[key]
        stuck = []
        for key, d in waiting.items():
            marker = _amount(d)
            seen = self._waiting.get(key)
            if seen is None or seen[0] != marker:
                self._waiting[key] = (marker, now)
            elif now - seen[1] >= self.cfg.pending_limit_s:
                stuck.append(d)
        return stuck

    def _track_breaks(self, stable: list[Difference], present: dict[str, Difference]) -> bool:
        """Differences seen twice alike are breaks: alert each once, apply the policy once; returns whether it halted.

        A break lasts until its difference is gone from a report (figures
        that move meanwhile keep it a break, with the newest text).
        """
        now = time.time_ns()
        seen = {_diff_id(d): d for d in stable}
        for key in sorted(set(self.breaks) - set(present)):
            gone = self.breaks.pop(key)
            self.alert(AlertLevel.INFO, "recon_break_resolved", f"resolved: {gone['text']}")
        new = [d for key, d in seen.items() if key not in self.breaks]
        for key, d in present.items():
            entry = self.breaks.get(key)
            if entry is not None or key in seen:
                self.breaks[key] = {**d.to_plain(), "first_seen_ns": entry["first_seen_ns"] if entry else now}
        for d in new:
            self.alert(AlertLevel.CRITICAL if d.action is Action.HALT else AlertLevel.ERROR, "recon_break", d.text)
            if d.kind is DiffClass.AGENT_BOOK_DIFFERENCE and d.data.get("agent_id"):
                agent_id = str(d.data["agent_id"])
                self.publish(f"sys.command.{agent_id}", Command(command_id=f"{self.name}-{uuid.uuid4().hex[:12]}",
                                                                name="sync", who=self.name, args={"why": d.text}))
        needing = [d for d in new if d.action is Action.HALT]
        return self._apply_policy(needing) if needing else False

    def _compare(self, sources: dict[str, Any]) -> Report:
        broker_date = self._broker_date()
        raw_journal = self._ask(self.oms, "journal_state", {}, "order manager", "python -m services.order_manager")
        broker = self._broker_state()
        ledger_date = str(raw_journal.get("ledger_date") or "") if isinstance(raw_journal, dict) else ""
        after = self._broker_date()
        stale = [o for o in raw_journal.get("orders") or [] if isinstance(o, dict) and o.get("status") not in TERMINAL
                 and "" < date_of_client_order_id(str(o.get("client_order_id", ""))) < ledger_date]
        if ledger_date and stale:
            self._next_run = min(self._next_run, time.monotonic() + RECONNECT_DELAY_S)
            raise DayRollInProgress(f"the day roll is in progress ({len(stale)} order(s) of an earlier day still open "
                                    "in the journal): compared again shortly")
        if ledger_date and not (ledger_date == broker_date == after):
            # the ledger rolls at the close, the broker's day at its overnight jump: between the two (or when the
            # broker's day changed while the views were read) the two sides count different days
            self._next_run = min(self._next_run, time.monotonic() + RECONNECT_DELAY_S)
            raise DayRollInProgress(f"the day roll is in progress (the ledger is open on {ledger_date}, the broker on "
                                    f"{after or broker_date}): compared again shortly")
        try:
            journal = journal_state_from_plain(raw_journal)
        except ReconcileInputError as exc:
            raise SourceDown(f"the order manager's journal_state is unusable: {exc}") from exc
        books, cash, last_fill, unreachable = self._agent_books()
        sources.update({"broker": "ok", "journal": "ok", "ledger_date": raw_journal.get("ledger_date", ""),
                        "agents_compared": sorted(books), "agents_unreachable": unreachable})
        return reconcile(broker, journal, books, {}, self.cfg.unmanaged, agent_cash=cash, agent_last_fill=last_fill)

    def _broker_date(self) -> str:
        assert self.broker is not None
        try:
            return str(self.broker.ping().get("trading_date") or "")
        except BrokerUnavailable as exc:
            self._broker_was_down = True
            raise SourceDown(f"the broker does not answer ({exc}); start the paper exchange with `python -m services.exchange`") from exc
        except BrokerError as exc:
            raise SourceDown(f"the broker's answer is unusable: {exc}") from exc

    def _broker_state(self) -> BrokerState:
        """The broker's account, holdings, open orders and fills, read in that order and fresh.

        Fresh: the venue reads its sources now, never a reading kept from a
        moment ago, so two looks never see the same readings (the positions
        come from the account's reading). The fills are read last, so that
        every execution in the holdings is among them (one that lands between
        the reads shows on the fills' side only, and is gone at the second look).
        """
        assert self.broker is not None
        try:
            state = broker_state_from_plain(self.broker.account(fresh=True), self.broker.positions(),
                                            [o.model_dump(mode="json") for o in self.broker.open_orders()],
                                            [f.model_dump(mode="json") for f in self.broker.fills_today(fresh=True)])
        except BrokerUnavailable as exc:
            self._broker_was_down = True
            raise SourceDown(f"the broker does not answer ({exc}); start the paper exchange with `python -m services.exchange`") from exc
        except (BrokerError, ReconcileInputError) as exc:
            raise SourceDown(f"the broker's answer is unusable: {exc}") from exc
        if self._broker_was_down:
            self._broker_was_down = False
            self.log.log(logging.INFO if self._broker_answered else logging.DEBUG, "the broker answers again")
        self._broker_answered = True
        return state

    def _agent_books(self) -> tuple[dict[str, dict[str, int]], dict[str, int], dict[str, str], list[str]]:
        books: dict[str, dict[str, int]] = {}
        cash: dict[str, int] = {}
        last_fill: dict[str, str] = {}
        unreachable: list[str] = []
        if not self.cfg.agent_books:
            return books, cash, last_fill, unreachable
        if self._http is None:
            self._http = httpx.Client(timeout=AGENT_TIMEOUT_S, limits=httpx.Limits(max_keepalive_connections=0))
        for agent_id, port in sorted(self.agent_ports.items()):
            try:
                data = self._http.get(f"http://127.0.0.1:{port}/status").json()
                sync = data.get("sync") if isinstance(data, dict) else None
                if isinstance(sync, dict) and sync.get("state") not in (None, "in_sync"):
                    unreachable.append(agent_id)  # rebuilding its book: compared once it is in sync again
                    continue
                book = data.get("book") if isinstance(data, dict) and isinstance(data.get("book"), dict) else data
                held = book.get("positions", {}) if isinstance(book, dict) else None
                books[agent_id] = {str(c): int(v.get("qty", 0) if isinstance(v, dict) else v) for c, v in (held or {}).items()}
                if isinstance(book, dict) and type(book.get("cash_won")) is int:
                    cash[agent_id] = book["cash_won"]
                if isinstance(book, dict) and isinstance(book.get("last_exec_id"), str):
                    last_fill[agent_id] = book["last_exec_id"]
            except (httpx.HTTPError, ValueError, TypeError, AttributeError):
                unreachable.append(agent_id)
        return books, cash, last_fill, unreachable

    def _heal(self, report: Report) -> list[dict[str, Any]]:
        healed = []
        for diff in report.to_heal():
            if diff.data.get("fill") is not None:
                name, args = "apply_missing_fill", dict(diff.data["fill"])
            else:
                name, args = "resolve_order", {"client_order_id": diff.data["client_order_id"]}
            try:
                result = self._ask(self.oms, name, args, "order manager", "python -m services.order_manager")
                healed.append({"kind": diff.kind.value, "key": diff.key, "command": name, "result": result})
                self.alert(AlertLevel.INFO, "recon_healed", f"{diff.text}: healed with {name}")
            except SourceDown as exc:
                healed.append({"kind": diff.kind.value, "key": diff.key, "command": name, "error": str(exc)})
        return healed

    def _apply_policy(self, diffs: list[Difference]) -> bool:
        """Halt (or reduce-only, per ``reconcile.break_policy``) for breaks that mean the firm does not know its exposure."""
        command = "reduce" if self.cfg.break_policy == "reduce" else "halt"
        why = f"reconciliation: {len(diffs)} break(s): " + "; ".join(d.text for d in diffs[:5])
        self.alert(AlertLevel.CRITICAL, "recon_halt", f"{command}: {why}")
        try:
            self._ask(self.risk, command, {"who": self.name, "why": why[:500]}, "risk guard", "python -m services.risk_guard")
        except SourceDown as exc:
            self.alert(AlertLevel.CRITICAL, "recon_halt_failed", f"could not halt trading: {exc}")
            return False
        return True

    def _ask(self, client: RpcClient | None, name: str, args: dict[str, Any], who: str, start: str) -> Any:
        assert client is not None
        try:
            reply = client.call(Command(command_id=f"{self.name}-{uuid.uuid4().hex[:12]}", name=name, args=args, who=self.name),
                                idempotency_key=None)
        except RpcFailure as exc:
            raise SourceDown(f"the {who} is not running ({exc}); start it with `{start}`") from exc
        if not isinstance(reply, CommandResult) or not reply.ok:
            text = reply.error if isinstance(reply, CommandResult) else type(reply).__name__
            raise SourceDown(f"the {who} refused {name}: {text}")
        return reply.result

    # --- RPC -------------------------------------------------------------------

    def handle_request(self, msg: Message, info: RequestInfo) -> Message:
        """``run`` (reconcile now, return the report) and ``latest``."""
        if not isinstance(msg, Command):
            return CommandResult(command_id="-", ok=False, error=f"{type(msg).__name__} is not served here", reason_code=UNSUPPORTED_REQUEST)
        if msg.name == "run":
            return CommandResult(command_id=msg.command_id, ok=True, result=self.run_once(f"command ({msg.who or 'rpc'})"))
        if msg.name == "latest":
            return CommandResult(command_id=msg.command_id, ok=True, result=self.latest)
        return CommandResult(command_id=msg.command_id, ok=False, reason_code=UNKNOWN_COMMAND,
                             error=f"unknown command {msg.name!r}; known: run, latest")

    def heartbeat_info(self) -> dict[str, object]:
        latest = self.latest or {}
        return {"runs": self.runs, "clean": latest.get("clean"), "differences": len(latest.get("differences") or [])}


TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)


def _diff_id(d: Difference) -> str:
    return f"{d.kind.value} {d.key}"


def _same(a: Difference | None, b: Difference) -> bool:
    """The same difference by the same amount (what a second look must show for a break).

    The amount, not the two sides: while the firm trades, both sides of a real
    break move together (a phantom of +3 shares stays +3 as fills come in).
    """
    return a is not None and a.kind is b.kind and a.key == b.key and _amount(a) == _amount(b)


def _amount(d: Difference) -> Any:
    """By how much the two sides differ (the sides themselves when they are not numbers)."""
    mine = d.data.get("agent", d.broker)
    theirs = d.oms
    if isinstance(theirs, dict) and set(theirs) == {"account", "agents"}:
        mine, theirs = theirs["account"], theirs["agents"]
    if type(mine) is int and type(theirs) is int:
        return mine - theirs
    return (mine, theirs)
