"""The dashboard's picture of the firm: the latest of everything seen on the bus and over RPC.

``FirmState`` is fed decoded bus envelopes (``apply``) by the bus thread and RPC
answers (``set_rpc``) by the poller thread, and read by the web handlers
(``view``). Time is always passed in (``now_ns``, wall clock, UTC): nothing here
reads a clock, opens a socket or touches a file, so the whole picture can be
built and checked in a unit test.

Every change bumps the version of the section it belongs to (processes, agents,
market, risk, recon, alerts, bus, clock); the live stream sends a browser only
the sections whose version moved since its last push.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.messages import (
    TERMINAL_STATUSES,
    Alert,
    Bar,
    DayReference,
    Fill,
    Fundamentals,
    Heartbeat,
    InvestorFlow,
    OrderEvent,
    OrderStatus,
    SessionEvent,
    Tick,
)
from core.messages import (
    Quote as QuoteMessage,  # this module's own Quote is a board line
)
from core.portfolio import Portfolio
from dashboard.desk import AlertGroups, MarketClock, desk_figures
from dashboard.riskview import recon_view, risk_view, trading_state
from dashboard.venue import (
    GATEWAY,
    NO_BUS_HEARTBEAT,
    VenueConfig,
    gateway_detail,
    service_names,
    venue_view,
)

SECTIONS = ("processes", "agents", "market", "risk", "recon", "alerts", "bus", "clock", "venue", "desk")
STALE_HEARTBEAT_S = 3.0  # a process silent for longer is late (not up)
DEAD_HEARTBEAT_S = 10.0  # ... and silent for longer than this, dead
# Both are for a heartbeat a second; one that announced a longer interval (an idle agent) is held to
# as many of its own intervals.
STARTUP_GRACE_S = 20.0  # a process not heard from yet within this long of the dashboard's start is "starting"
DESK_SAMPLE_S = 5  # one point of the firm's equity curve per this many wall seconds
MAX_DESK_POINTS = 5000
SPARK_POINTS = 60  # the last PnL points of an agent drawn in its grid row
STALE_SUPERVISOR_LIST_S = 6.0  # a process without heartbeats is up while the supervisor's list of it is this fresh
GATEWAY_STATUS = "kis_gateway.status"  # the poller's key for the KIS gateway's status answer
VENUE_INFO_KEYS = ("env", "live", "ready", "stream", "streamed", "polled", "account")
PAPER = VenueConfig()
RATE_WINDOW_S = 5  # bus rates are averaged over this many seconds
MAX_ALERTS = 500
MAX_BARS = 400
MAX_DISCOUNT_POINTS = 2000
MAX_PNL_POINTS = 2000
MAX_AGENT_FILLS = 2000
PREFERRED_PAIR = ("005935", "005930")  # Samsung preferred vs common
NS = 1_000_000_000

# Keys an agent's heartbeat may carry in ``info`` (the agent runtime's status).
AGENT_INFO_KEYS = ("agent_id", "strategy", "book", "code", "codes")


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """One agent of the configured roster (configs/agents.toml)."""

    id: str
    codes: tuple[str, ...]
    strategy: str
    dp: int = 0
    allocation_won: int = 0


@dataclass(slots=True)
class ProcessView:
    """What is known of one process: its last heartbeat and what the supervisor says."""

    name: str
    pid: int = 0
    state: str = "unknown"
    rss_bytes: int = 0
    cpu_pct: float = 0.0
    queue_depth: int = 0
    last_heartbeat_ns: int = 0  # when the dashboard received it (wall clock)
    heartbeat_interval_s: float = 1.0  # what its last heartbeat announced for the next (at least 1 s)
    started_ns: int = 0  # process start time, when known
    info: dict[str, Any] = field(default_factory=dict)
    supervisor_state: str = ""  # what the supervisor's list says (the state of a process without heartbeats)
    supervisor_ns: int = 0  # when that list was received (wall clock)


@dataclass(slots=True)
class AgentView:
    """One agent: roster facts, its process, its book and its orders and fills of the day."""

    id: str
    codes: tuple[str, ...] = ()
    strategy: str = ""
    dp: int = 0
    allocation_won: int = 0
    in_roster: bool = False
    supervisor_state: str = ""
    process: ProcessView | None = None
    reported_book: dict[str, Any] | None = None  # the agent's own book, from its heartbeat
    shadow: Portfolio | None = None  # our book from the fills seen on the bus
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    fills: deque = field(default_factory=lambda: deque(maxlen=MAX_AGENT_FILLS))
    pnl_points: deque = field(default_factory=lambda: deque(maxlen=MAX_PNL_POINTS))


@dataclass(slots=True)
class Quote:
    """The board line of one code."""

    code: str
    name: str = ""
    base_price: int = 0
    last: int = 0
    bid: int = 0
    ask: int = 0
    volume: int = 0
    tick_value_won: int = 0
    tick_qty: int = 0
    ts_ns: int = 0
    foreign_net_qty: int = 0
    institution_net_qty: int = 0
    individual_net_qty: int = 0
    flow_ts_ns: int = 0
    flow_provisional: bool = False
    bid_qty: int = 0  # shares shown at the best bid and ask (md.quote)
    ask_qty: int = 0
    vi: str = ""  # a volatility interruption in force: static or dynamic
    eps: int = 0  # the fundamentals in force (md.fund)
    bps: int = 0
    dps: int = 0
    bars: deque = field(default_factory=lambda: deque(maxlen=MAX_BARS))

    @property
    def vwap(self) -> float:
        """Volume-weighted average price of what the dashboard has seen today."""
        bar_qty = sum(b["volume"] for b in self.bars)
        bar_value = sum(b["value_won"] for b in self.bars)
        if bar_qty and bar_value:
            return bar_value / bar_qty
        return self.tick_value_won / self.tick_qty if self.tick_qty else 0.0


def _age_s(now_ns: int, then_ns: int) -> float | None:
    return round((now_ns - then_ns) / NS, 1) if then_ns else None


def _plain(value: Any) -> Any:
    """A pydantic model or anything else as JSON-ready data."""
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if dump is not None else value


def find_webhook_failures(health: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The webhook delivery failures a ``sys.health`` payload reports (any key naming a webhook)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, val in node.items():
                sub = f"{path}.{key}" if path else str(key)
                if "webhook" in str(key).lower() and val not in (None, 0, "", [], {}):
                    found.append({"where": sub, "detail": val})
                else:
                    walk(val, sub)
        elif isinstance(node, list):
            for i, val in enumerate(node):
                walk(val, f"{path}[{i}]")

    walk(health, "")
    return found


class FirmState:
    """The latest state of the firm, fed from the bus and RPC, read by the web pages."""

    def __init__(
        self,
        roster: Iterable[RosterEntry] = (),
        instrument_names: Mapping[str, str] | None = None,
        base_prices: Mapping[str, int] | None = None,
        venue: VenueConfig = PAPER,
        *,
        started_ns: int = 0,
        opening_realized: Callable[[str], Mapping[str, int]] | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self.started_ns = started_ns  # when the dashboard began watching (wall clock): the start-up grace counts from it
        self._opening_realized = opening_realized  # ledger date -> each book's realised PnL at its opening (the journal)
        self._opening: tuple[str, Mapping[str, int]] = ("", {})
        self.alert_groups = AlertGroups()
        self.clock = MarketClock()  # the market time of what the order manager stamps by the wall clock
        self.desk_points: deque = deque(maxlen=MAX_DESK_POINTS)  # (ts_ns, equity_won, pnl_today_won)
        self._last_desk_sample_ns = 0
        self.versions: dict[str, int] = {s: 0 for s in SECTIONS}
        self.version = 0
        self.venue = venue
        self.processes: dict[str, ProcessView] = {n: ProcessView(n) for n in service_names(venue)}
        self.gateway_info: dict[str, Any] | None = None  # the KIS gateway's last heartbeat info, once seen
        self.agents: dict[str, AgentView] = {}
        self.quotes: dict[str, Quote] = {}
        self.instrument_names = dict(instrument_names or {})
        self.base_prices = dict(base_prices or {})
        self.discount_points: deque = deque(maxlen=MAX_DISCOUNT_POINTS)
        self.session: dict[str, Any] = {}
        self.market_ts_ns = 0
        self.alerts: deque = deque(maxlen=MAX_ALERTS)
        self.alert_counts: Counter[str] = Counter()
        self.health: dict[str, dict[str, Any]] = {}
        self.risk_state: dict[str, Any] = {}
        self.recon_reports: deque = deque(maxlen=50)
        self.rpc: dict[str, dict[str, Any]] = {}
        self.order_status: dict[str, str] = {}  # client_order_id -> latest status
        self.rejects: Counter[str] = Counter()  # reason code -> orders rejected
        self.msg_counts: Counter[str] = Counter()  # topic class -> messages received
        self.rates: dict[str, float] = {}
        self._rate_marks: deque = deque(maxlen=RATE_WINDOW_S + 1)
        self.gaps: Counter[str] = Counter()  # sender -> messages missed
        self.bad_frames: Counter[str] = Counter()  # reason code -> frames dropped
        self.bus_connected_ns = 0
        self.last_bus_ns = 0
        self._listeners: list[Callable[[], None]] = []
        for entry in roster:
            self._agent(entry.id, create=True)
            view = self.agents[entry.id]
            view.codes, view.strategy, view.dp = entry.codes, entry.strategy, entry.dp
            view.allocation_won, view.in_roster = entry.allocation_won, True

    # --- change notification ------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from the mutating thread) after every change."""
        self._listeners.append(listener)

    def _touch(self, *sections: str) -> None:
        self.version += 1
        for s in sections:
            self.versions[s] = self.version

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    # --- feeding ------------------------------------------------------------

    def notify(self) -> None:
        """Tell the listeners the state changed (after a batch applied with ``notify=False``)."""
        self._notify()

    def apply(self, topic: str, sender: str, msg: Any, now_ns: int, *, notify: bool = True) -> None:
        """Take one bus message into the picture (unknown topics are only counted); ``notify=False`` leaves
        telling the listeners to the caller, once for a whole batch."""
        with self._lock:
            self.last_bus_ns = now_ns
            parts = topic.split(".")
            self.msg_counts[".".join(parts[:2])] += 1
            if isinstance(msg, Tick):
                self._on_tick(msg)
                self.clock.mark(now_ns, msg.ts_ns)
            elif isinstance(msg, Bar):
                self._on_bar(msg)
            elif isinstance(msg, InvestorFlow):
                self._on_flow(msg)
            elif isinstance(msg, QuoteMessage):
                self._on_book(msg)
            elif isinstance(msg, Fundamentals):
                q = self._quote(msg.code)
                q.eps, q.bps, q.dps = msg.eps, msg.bps, msg.dps
                self._touch("market")
            elif isinstance(msg, SessionEvent):
                self.session = _plain(msg)
                self.market_ts_ns = max(self.market_ts_ns, msg.ts_ns)
                self._touch("clock")
            elif isinstance(msg, DayReference):  # the venue's base price of the day: the Market page's change
                self.base_prices[msg.code] = msg.base_price
                if msg.code in self.quotes:
                    self.quotes[msg.code].base_price = msg.base_price
                self._touch("market")
            elif isinstance(msg, Heartbeat):
                self._on_heartbeat(topic, msg, now_ns)
            elif isinstance(msg, Alert):
                self.alerts.appendleft(_plain(msg))
                self.alert_counts[msg.level.value] += 1
                self.alert_groups.add(msg.source, msg.kind, msg.level.value, msg.text, msg.ts_ns or now_ns)
                self._touch("alerts")
            elif isinstance(msg, OrderEvent):
                self._on_order_event(msg)
            elif isinstance(msg, Fill):
                self._on_fill(msg)
            elif topic == "sys.health":
                self.health[sender] = {"ts_ns": now_ns, "payload": _plain(msg)}
                self._touch("alerts", "processes")
            elif topic == "risk.state":
                self.risk_state = {"ts_ns": now_ns, "sender": sender, "payload": _plain(msg)}
                self._touch("risk")
            elif topic == "recon.report":
                self.recon_reports.appendleft({"ts_ns": now_ns, "sender": sender, "payload": _plain(msg)})
                self._touch("recon")
        if notify:
            self._notify()

    def on_gap(self, sender: str, topic: str, first: int, last: int) -> None:
        """A subscriber saw messages ``first..last`` of ``sender`` on ``topic`` go missing."""
        with self._lock:
            self.gaps[sender] += last - first + 1
            self._touch("bus")
        self._notify()

    def set_bad_frames(self, counts: Mapping[str, int]) -> None:
        """The subscriber's count of dropped frames by reason."""
        with self._lock:
            if dict(counts) != dict(self.bad_frames):
                self.bad_frames = Counter(counts)
                self._touch("bus")

    def mark_rates(self, now_ns: int) -> None:
        """Record the message counters once a second; rates are averaged over RATE_WINDOW_S."""
        with self._lock:
            self._rate_marks.append((now_ns, Counter(self.msg_counts)))
            first_ns, first = self._rate_marks[0]
            span = (now_ns - first_ns) / NS
            if span > 0:
                self.rates = {k: round((v - first.get(k, 0)) / span, 1) for k, v in self.msg_counts.items()}
            self._touch("bus", "processes", "agents")  # heartbeat ages move with time
            if now_ns - self._last_desk_sample_ns >= DESK_SAMPLE_S * NS:
                self._last_desk_sample_ns = now_ns
                self._sample_desk(now_ns)
        self._notify()

    def set_rpc(self, service: str, ok: bool, result: Any, error: str, now_ns: int) -> None:
        """The outcome of the latest poll of a service's RPC (``service`` like 'risk_guard.status')."""
        with self._lock:
            previous = self.rpc.get(service)
            entry = {"ok": ok, "result": _plain(result), "error": error, "ts_ns": now_ns}
            self.rpc[service] = entry
            if service == "supervisor.list" and ok:
                self._on_supervisor_list(entry["result"])
            changed = previous is None or previous["ok"] != ok or previous["result"] != entry["result"]
            if changed:
                section = {
                    "supervisor": "processes",
                    "risk_guard": "risk",
                    "reconciler": "recon",
                    "order_manager": "agents",
                    "market_data": "market",
                    "kis_gateway": "venue",
                }.get(service.split(".")[0], "processes")
                self._touch(section, "processes")
        if changed:
            self._notify()

    def set_started(self, name: str, started_ns: int) -> None:
        """The start time of a process (looked up from its pid by the shell)."""
        with self._lock:
            proc = self._process_of(name)
            if proc is not None:
                proc.started_ns = started_ns

    # --- internals ------------------------------------------------------------

    def _quote(self, code: str) -> Quote:
        q = self.quotes.get(code)
        if q is None:
            q = self.quotes[code] = Quote(code, self.instrument_names.get(code, ""), self.base_prices.get(code, 0))
        return q

    def _on_tick(self, t: Tick) -> None:
        q = self._quote(t.code)
        q.last, q.ts_ns = t.price, t.ts_ns
        if t.bid:
            q.bid = t.bid
        if t.ask:
            q.ask = t.ask
        if t.cum_volume:
            q.volume = t.cum_volume
        q.tick_value_won += t.price * t.qty
        q.tick_qty += t.qty
        self.market_ts_ns = max(self.market_ts_ns, t.ts_ns)
        if t.code in PREFERRED_PAIR:
            self._sample_discount(t.ts_ns)
        for agent in self.agents.values():
            if t.code in agent.codes and agent.shadow is not None:
                agent.shadow.mark(t.code, t.price)
        self._touch("market", "agents", "clock")

    def _sample_discount(self, ts_ns: int) -> None:
        pref, common = (self.quotes.get(c) for c in PREFERRED_PAIR)
        if pref is None or common is None or not pref.last or not common.last:
            return
        if self.discount_points and ts_ns - self.discount_points[-1][0] < NS:
            return  # one point per market second is plenty for the chart
        self.discount_points.append((ts_ns, round(1 - pref.last / common.last, 5)))

    def _on_bar(self, b: Bar) -> None:
        q = self._quote(b.code)
        row = {
            "ts_ns": b.ts_ns,
            "open": b.open,
            "high": b.high,
            "low": b.low,
            "close": b.close,
            "volume": b.volume,
            "value_won": b.value_won,
        }
        if q.bars and q.bars[-1]["ts_ns"] == b.ts_ns:
            q.bars[-1] = row
        else:
            q.bars.append(row)
        self.market_ts_ns = max(self.market_ts_ns, b.ts_ns)
        self._touch("market")

    def _on_book(self, b: QuoteMessage) -> None:
        q = self._quote(b.code)
        if b.bid_px:
            q.bid, q.bid_qty = b.bid_px[0], b.bid_qty[0]
        if b.ask_px:
            q.ask, q.ask_qty = b.ask_px[0], b.ask_qty[0]
        q.vi = b.vi
        self._touch("market")

    def _on_flow(self, f: InvestorFlow) -> None:
        q = self._quote(f.code)
        q.foreign_net_qty, q.institution_net_qty = f.foreign_net_qty, f.institution_net_qty
        q.individual_net_qty, q.flow_ts_ns, q.flow_provisional = f.individual_net_qty, f.ts_ns, f.provisional
        self._touch("market")

    def _agent(self, agent_id: str, *, create: bool) -> AgentView | None:
        view = self.agents.get(agent_id)
        if view is None and create:
            view = self.agents[agent_id] = AgentView(agent_id)
        return view

    def _process_of(self, name: str) -> ProcessView | None:
        if name in self.processes:
            return self.processes[name]
        agent = self.agents.get(name)
        if agent is not None:
            if agent.process is None:
                agent.process = ProcessView(name)
            return agent.process
        return None

    def _on_heartbeat(self, topic: str, hb: Heartbeat, now_ns: int) -> None:
        name = hb.name
        info = hb.info
        is_agent = name in self.agents or any(k in info for k in AGENT_INFO_KEYS) or topic.startswith("sys.heartbeat.agent.")
        if is_agent and name not in self.processes:
            agent_id = str(info.get("agent_id") or name)
            agent = self._agent(agent_id, create=True)
            assert agent is not None
            if agent.process is None:
                agent.process = ProcessView(agent_id)
            proc = agent.process
            codes = info.get("codes") or ([info["code"]] if info.get("code") else None)
            if codes and not agent.codes:
                agent.codes = tuple(str(c) for c in codes)
            if info.get("strategy") and not agent.strategy:
                agent.strategy = str(info["strategy"])
            if isinstance(info.get("dp"), int) and info["dp"]:
                agent.dp = info["dp"]  # the port the agent serves its page on, roster or not
            book = info.get("book")
            if isinstance(book, Mapping):
                agent.reported_book = dict(book)
                pnl = int(book.get("realized_pnl_won", 0)) + int(book.get("unrealized_pnl_won", 0))
                self._pnl_point(agent, hb.ts_ns, pnl)
            section = "agents"
        else:
            proc = self.processes.setdefault(name, ProcessView(name))
            section = "processes"
        if proc.pid != hb.pid:
            proc.started_ns = 0  # a new process under that name: its start time is looked up again
        proc.pid, proc.state, proc.rss_bytes, proc.cpu_pct = hb.pid, hb.state, hb.rss_bytes, hb.cpu_pct
        proc.queue_depth, proc.last_heartbeat_ns = hb.queue_depth, now_ns
        proc.heartbeat_interval_s = max(1.0, hb.interval_s)
        proc.info = {k: v for k, v in info.items() if k not in ("seqs", "book")}
        self._touch(section)
        if name == GATEWAY:
            venue_info = {k: info[k] for k in VENUE_INFO_KEYS if k in info}
            if venue_info != self.gateway_info:
                self.gateway_info = venue_info
                self._touch("venue")

    def _pnl_point(self, agent: AgentView, ts_ns: int, pnl_won: int) -> None:
        if agent.pnl_points and ts_ns - agent.pnl_points[-1][0] < NS // 2:
            agent.pnl_points[-1] = (ts_ns, pnl_won)
        else:
            agent.pnl_points.append((ts_ns, pnl_won))

    def _on_order_event(self, e: OrderEvent) -> None:
        agent = self._agent(e.agent_id, create=True)
        assert agent is not None
        record = _plain(e)
        agent.orders[e.client_order_id] = record
        previous = self.order_status.get(e.client_order_id)
        self.order_status[e.client_order_id] = e.status.value
        if e.status == OrderStatus.REJECTED and previous != OrderStatus.REJECTED.value:
            self.rejects[e.reason_code or "UNKNOWN"] += 1
        if agent.shadow is not None:
            agent.shadow.on_order_event(e.client_order_id, e.status.value, e.ts_ns)
        if not agent.codes:
            agent.codes = (e.code,)
        self._touch("agents")

    def _on_fill(self, f: Fill) -> None:
        agent = self._agent(f.agent_id, create=True)
        assert agent is not None
        if agent.shadow is None:
            agent.shadow = Portfolio(allocation_won=agent.allocation_won)
        if agent.shadow.on_fill(f.exec_id, f.client_order_id, f.code, f.side.value, f.qty, f.price, f.fee_won, f.tax_won, f.ts_ns):
            agent.fills.append(_plain(f))
            last = self.quotes.get(f.code)
            if last is not None and last.last:
                agent.shadow.mark(f.code, last.last)
            if agent.reported_book is None:
                snap = agent.shadow.snapshot()
                self._pnl_point(agent, f.ts_ns, snap["realized_pnl_won"] + snap["unrealized_pnl_won"])
        if not agent.codes:
            agent.codes = (f.code,)
        self._touch("agents")

    def _on_supervisor_list(self, result: Any) -> None:
        rows: list[tuple[str, dict[str, Any]]] = []
        if isinstance(result, Mapping):
            items = result.get("processes", result.get("agents", result))
            if isinstance(items, Mapping):
                rows = [(str(k), v) for k, v in items.items() if isinstance(v, Mapping)]
            elif isinstance(items, list):
                result = items
        if isinstance(result, list):
            rows = [(str(r.get("id") or r.get("name")), r) for r in result if isinstance(r, Mapping) and (r.get("id") or r.get("name"))]
        for name, row in rows:
            state = str(row.get("state") or row.get("status") or "")
            kind = str(row.get("kind", ""))
            if name in self.processes and kind != "agent":
                proc = self.processes[name]
                if name in NO_BUS_HEARTBEAT:
                    self._on_listed_without_heartbeat(proc, row)
                elif not proc.pid and row.get("pid"):
                    proc.pid = int(row["pid"])
                continue
            agent = self._agent(name, create=kind == "agent" or name in self.agents or "dp" in row or "strategy" in row)
            if agent is None:
                continue
            agent.supervisor_state = state
            if row.get("strategy") and not agent.strategy:
                agent.strategy = str(row["strategy"])
            code = row.get("code") or row.get("codes")
            if code and not agent.codes:
                agent.codes = tuple(code) if isinstance(code, list) else (str(code),)
            if row.get("dp") and not agent.dp:
                agent.dp = int(row["dp"])
        listed = {name for name, _ in rows}
        for name in NO_BUS_HEARTBEAT & (set(self.processes) - listed):
            self._on_listed_without_heartbeat(self.processes[name], {"state": "not running"})
        self._touch("agents")

    def _on_listed_without_heartbeat(self, proc: ProcessView, row: Mapping[str, Any]) -> None:
        """A process that publishes no heartbeat (kis-sim): the supervisor's row is all there is of it."""
        proc.supervisor_state = str(row.get("state") or "")
        proc.supervisor_ns = self.rpc["supervisor.list"]["ts_ns"]
        pid = int(row.get("pid") or 0)
        if pid != proc.pid:
            proc.started_ns = 0
        proc.pid = pid
        proc.cpu_pct = float(row.get("cpu_pct") or 0.0)
        proc.rss_bytes = int(row.get("rss_bytes") or 0)

    # --- reading --------------------------------------------------------------

    def changed_sections(self, seen: Mapping[str, int]) -> list[str]:
        """The sections whose version moved since the versions in ``seen``."""
        with self._lock:
            return [s for s, v in self.versions.items() if v > seen.get(s, -1)]

    def pids(self) -> dict[str, int]:
        """Every known process name (services and agents) with its pid."""
        with self._lock:
            out = {n: p.pid for n, p in self.processes.items() if p.pid}
            out.update({a.id: a.process.pid for a in self.agents.values() if a.process and a.process.pid})
            return out

    def view(self, sections: Iterable[str], now_ns: int) -> dict[str, Any]:
        """The named sections as JSON-ready data, plus the versions they were taken at."""
        with self._lock:
            out: dict[str, Any] = {"now_ns": now_ns, "versions": dict(self.versions)}
            for s in sections:
                out[s] = getattr(self, f"_view_{s}")(now_ns)
            return out

    def _liveness(self, p: ProcessView, age: float | None, now_ns: int) -> str:
        """starting, running, late or dead: what a person needs to know of a process at a glance."""
        if age is None:  # never heard from
            within_grace = not self.started_ns or now_ns - self.started_ns <= STARTUP_GRACE_S * NS
            return "starting" if within_grace else "dead"
        if age <= STALE_HEARTBEAT_S * p.heartbeat_interval_s:
            return "starting" if p.state == "starting" else "running"
        return "late" if age <= DEAD_HEARTBEAT_S * p.heartbeat_interval_s else "dead"

    def _process_row(self, p: ProcessView, now_ns: int) -> dict[str, Any]:
        age = _age_s(now_ns, p.last_heartbeat_ns)
        up = age is not None and age <= STALE_HEARTBEAT_S * p.heartbeat_interval_s
        liveness = self._liveness(p, age, now_ns)
        state = p.state if up else ("down" if p.last_heartbeat_ns else "not seen")
        if p.name in NO_BUS_HEARTBEAT:
            listed = _age_s(now_ns, p.supervisor_ns)
            fresh = listed is not None and listed <= STALE_SUPERVISOR_LIST_S
            up = fresh and p.supervisor_state == "running"
            state = (p.supervisor_state or "not seen") if fresh else ("unknown (no answer from the supervisor)"
                                                                       if p.supervisor_ns else "not seen")
            liveness = "running" if up else ("dead" if fresh else self._liveness(p, None, now_ns))
        log = p.info.get("log") if isinstance(p.info.get("log"), Mapping) else {}
        return {
            "name": p.name,
            "up": up,
            "state": state,
            "liveness": liveness,
            "warnings_1h": int(log.get("warnings_1h") or 0),
            "errors_1h": int(log.get("errors_1h") or 0),
            "last_error": str(log.get("last_error") or ""),
            "pid": p.pid,
            "uptime_s": round((now_ns - p.started_ns) / NS) if p.started_ns and up else None,
            "cpu_pct": round(p.cpu_pct, 1),
            "rss_mb": round(p.rss_bytes / 2**20, 1),
            "queue_depth": p.queue_depth,
            "heartbeat_age_s": age,
            "info": p.info,
        }

    def _view_processes(self, now_ns: int) -> dict[str, Any]:
        rows = [self._process_row(p, now_ns) for p in self.processes.values()]
        venue = self._venue()
        for row in rows:
            row["detail"] = gateway_detail(venue) if row["name"] == GATEWAY else ""
        broker = "unknown"
        for name in ("order-manager", "market-data"):
            info = self.processes[name].info
            for key in ("broker", "connection_state", "broker_connection"):
                if key in info:
                    broker = str(info[key])
                    break
            if broker != "unknown":
                break
        venue_row = self._process_row(self.processes[venue["process"]], now_ns)
        if broker == "unknown":
            broker = f"{venue_row['name']} up" if venue_row["up"] else "no broker heartbeat"
        rpc = {k: {"ok": v["ok"], "error": v["error"], "age_s": _age_s(now_ns, v["ts_ns"])} for k, v in self.rpc.items()}
        return {"rows": rows, "broker": broker, "rpc": rpc}  # sys.health payloads stay in the state (alerts reads them)

    def agent_row(self, a: AgentView, now_ns: int) -> dict[str, Any]:
        """One line of the agent grid."""
        book = a.reported_book
        source = "agent"
        ledger = self._ledger_book(a.id)
        if book is None and ledger is not None:
            book = {"cash_won": ledger["cash_won"], "realized_pnl_won": ledger["realized_pnl_won"],
                    "positions": ledger["positions"]}
            source = "ledger"
        if book is None and a.shadow is not None:
            for code in a.codes:
                q = self.quotes.get(code)
                if q is not None and q.last:
                    a.shadow.mark(code, q.last)
            book = a.shadow.snapshot()
            source = "bus fills"
        code = a.codes[0] if a.codes else ""
        pos = (book or {}).get("positions", {}).get(code, {}) if book else {}
        q = self.quotes.get(code)
        last = int(pos.get("last_price") or 0) or (q.last if q else 0)
        proc = self._process_row(a.process, now_ns) if a.process else None
        open_orders = (
            int(book["open_orders"])
            if book and "open_orders" in book
            else sum(1 for o in a.orders.values() if o["status"] not in {s.value for s in TERMINAL_STATUSES})
        )
        if proc and proc["up"]:
            state = proc["state"]
        else:
            state = a.supervisor_state or (proc["state"] if proc else "not seen")
        cash = book.get("cash_won") if book else (a.allocation_won or None)
        info = a.process.info if a.process else {}
        refused: Counter[str] = Counter()
        for key in ("refused", "refused_own"):
            if isinstance(info.get(key), Mapping):
                refused.update({str(k): int(v) for k, v in info[key].items() if isinstance(v, int)})
        if not refused:  # no count from the agent (an older runtime, or not up): the refusals seen on the bus
            refused.update(str(o.get("reason_code") or "UNKNOWN") for o in a.orders.values() if o.get("status") == "rejected")
        spark = [p[1] for p in list(a.pnl_points)[-SPARK_POINTS:]]
        last_error = str(info.get("last_error") or "") or (proc["last_error"] if proc else "")
        return {
            "id": a.id,
            "code": code,
            "codes": list(a.codes),
            "strategy": a.strategy,
            "state": state,
            "up": bool(proc and proc["up"]),
            "pid": proc["pid"] if proc else 0,
            "dp": a.dp,
            "allocation_won": a.allocation_won,
            "cash_won": cash,
            "holding": pos.get("qty", 0),
            "avg_price": pos.get("avg_price", 0),
            "last_price": last,
            "realized_pnl_won": book.get("realized_pnl_won", 0) if book else 0,
            "unrealized_pnl_won": book.get("unrealized_pnl_won", 0) if book else 0,
            "return_pct": round(100 * float(book.get("return_on_allocation", 0.0)), 3) if book else 0.0,
            "open_orders": open_orders,
            "heartbeat_age_s": proc["heartbeat_age_s"] if proc else None,
            "book_source": source if book else "",
            "liveness": proc["liveness"] if proc else ("dead" if a.supervisor_state in ("flapping", "stopped") else "starting"),
            "warnings_1h": proc["warnings_1h"] if proc else 0,
            "errors_1h": proc["errors_1h"] if proc else 0,
            "last_error": last_error,
            "refusals": dict(refused.most_common()),
            "refusals_total": sum(refused.values()),
            "pnl_today_won": spark[-1] if spark else 0,
            "pnl_spark": spark,
        }

    def _view_agents(self, now_ns: int) -> dict[str, Any]:
        rows = [self.agent_row(a, now_ns) for a in self.agents.values()]
        return {"rows": rows}

    def agent_detail(self, agent_id: str, now_ns: int) -> dict[str, Any] | None:
        """Everything the agent page shows live: the grid line, book, orders, fills, PnL, bars."""
        with self._lock:
            a = self.agents.get(agent_id)
            if a is None:
                return None
            row = self.agent_row(a, now_ns)
            book = a.reported_book or (a.shadow.snapshot() if a.shadow else None)
            q = self.quotes.get(row["code"])
            return {
                "row": row,
                "book": book,
                "orders": sorted(a.orders.values(), key=lambda o: o.get("ts_ns", 0)),
                "fills": list(a.fills),
                "chart_fills": self._on_market_clock(a.fills),
                "pnl": [[self.market_time(t), v] for t, v in a.pnl_points],  # on the bars' clock
                "bars": list(q.bars) if q else [],
                "process": self._process_row(a.process, now_ns) if a.process else None,
            }

    def market_time(self, wall_ns: int) -> int:
        """The market time at wall time ``wall_ns`` (``wall_ns`` itself on a real-time venue)."""
        return self.clock.market_time(wall_ns)

    def _on_market_clock(self, fills: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The fills with ``ts_ns`` on the market clock, as the candles are."""
        return [{**f, "ts_ns": self.market_time(int(f.get("ts_ns") or 0))} for f in fills]

    def _view_market(self, now_ns: int) -> dict[str, Any]:
        rows = []
        for q in sorted(self.quotes.values(), key=lambda q: q.code):
            change = q.last - q.base_price if q.base_price and q.last else 0
            rows.append(
                {
                    "code": q.code,
                    "name": q.name,
                    "last": q.last,
                    "base_price": q.base_price,
                    "change": change,
                    "change_pct": round(100 * change / q.base_price, 2) if q.base_price else 0.0,
                    "bid": q.bid,
                    "ask": q.ask,
                    "volume": q.volume or q.tick_qty,
                    "vwap": round(q.vwap, 1),
                    "foreign_net_qty": q.foreign_net_qty,
                    "institution_net_qty": q.institution_net_qty,
                    "individual_net_qty": q.individual_net_qty,
                    "flow_provisional": q.flow_provisional,
                    "bid_qty": q.bid_qty,
                    "ask_qty": q.ask_qty,
                    "spread": q.ask - q.bid if q.bid and q.ask else None,
                    "vi": q.vi,
                    "per": round(q.last / q.eps, 2) if q.eps > 0 and q.last else None,
                    "pbr": round(q.last / q.bps, 2) if q.bps > 0 and q.last else None,
                    "dividend_yield_pct": round(100 * q.dps / q.last, 2) if q.dps and q.last else None,
                    "ts_ns": q.ts_ns,
                }
            )
        return {"rows": rows, "discount": [list(p) for p in self.discount_points]}

    def _view_risk(self, now_ns: int) -> dict[str, Any]:
        view = risk_view(self.rpc.get("risk_guard.status"), self.risk_state, now_ns)
        return {**view, "bus": self.risk_state, "status": self.rpc.get("risk_guard.status")}  # the raw two, for "raw"

    def _ledger_book(self, agent_id: str) -> dict[str, Any] | None:
        """An agent's book in the ledger (the book of record), as the order manager last answered."""
        entry = self.rpc.get("order_manager.positions")
        if not entry or not entry["ok"] or not isinstance(entry["result"], Mapping):
            return None
        book = (entry["result"].get("agents") or {}).get(agent_id)
        return book if isinstance(book, Mapping) and isinstance(book.get("cash_won"), int) else None

    def _view_recon(self, now_ns: int) -> dict[str, Any]:
        latest = self.rpc.get("reconciler.latest")
        view = recon_view(latest, self.recon_reports, self.rpc.get("order_manager.positions"), now_ns)
        return {**view, "reports": list(self.recon_reports)[:20], "latest": latest}  # the raw answers, for "raw"

    def _view_alerts(self, now_ns: int) -> dict[str, Any]:
        failures = []
        for sender, entry in self.health.items():
            for f in find_webhook_failures(entry["payload"] if isinstance(entry["payload"], Mapping) else {}):
                failures.append({"sender": sender, **f})
        groups = self.alert_groups.rows(now_ns)
        return {"rows": list(self.alerts)[:100], "counts": dict(self.alert_counts), "webhook_failures": failures,
                "groups": groups, "active": sum(1 for g in groups if g["active"])}

    def alert_action(self, action: str, key: str, who: str, minutes: float, now_ns: int) -> dict[str, Any] | None:
        """Acknowledge or mute (``minutes``; 0 unmutes) an alert group; None if there is no such group."""
        with self._lock:
            if action == "ack":
                g = self.alert_groups.acknowledge(key, who)
            else:
                g = self.alert_groups.mute(key, minutes, now_ns)
            if g is None:
                return None
            self._touch("alerts")
            row = g.row(now_ns)
        self._notify()
        return row

    # --- the desk ---------------------------------------------------------------

    def _ledger(self) -> Mapping[str, Any] | None:
        entry = self.rpc.get("order_manager.positions")
        return entry["result"] if entry and entry["ok"] and isinstance(entry["result"], Mapping) else None

    def _opening_of(self, ledger_date: str) -> Mapping[str, int]:
        if not ledger_date or self._opening_realized is None:
            return {}
        if self._opening[0] != ledger_date or not self._opening[1]:  # read again until the opening is written
            self._opening = (ledger_date, self._opening_realized(ledger_date))
        return self._opening[1]

    def _desk(self, now_ns: int) -> dict[str, Any]:
        ledger = self._ledger()
        ledger_date = str((ledger or {}).get("ledger_date") or "")
        last = {code: q.last for code, q in self.quotes.items() if q.last}
        rows = (self.agent_row(a, now_ns) for a in self.agents.values())  # read only without a ledger answer
        figures = desk_figures(ledger, self._opening_of(ledger_date), last, self.instrument_names, rows)
        figures["ledger_date"] = ledger_date
        realized = figures["realized_today_won"]
        figures["pnl_today_won"] = (realized if realized is not None else 0) + figures["unrealized_won"]
        return figures

    def _sample_desk(self, now_ns: int) -> None:
        figures = self._desk(now_ns)
        if not figures["equity_won"]:
            return
        ts = self.market_ts_ns or now_ns
        point = (ts, figures["equity_won"], figures["pnl_today_won"])
        if self.desk_points and self.desk_points[-1][0] >= ts:
            self.desk_points[-1] = (self.desk_points[-1][0], point[1], point[2])
        else:
            self.desk_points.append(point)
        self._touch("desk")

    def _view_desk(self, now_ns: int) -> dict[str, Any]:
        figures = self._desk(now_ns)
        venue = self._venue()
        phase = (self.session or {}).get("phase", "")
        state = trading_state(self.rpc.get("risk_guard.status"), self.risk_state)
        return {**figures, "trading_state": state, "venue": venue.get("label", ""),
                "venue_live": bool(venue.get("live")), "market_ts_ns": self.market_ts_ns, "phase": phase,
                "trading_date": (self.session or {}).get("trading_date", ""),
                "clock_speed": (self.session or {}).get("clock_speed"),
                "curve": [list(p) for p in self.desk_points],
                "processes": Counter(self._process_row(p, now_ns)["liveness"] for p in self.processes.values()),
                "agents": Counter(self._process_row(a.process, now_ns)["liveness"] if a.process else "starting"
                                  for a in self.agents.values())}

    def _view_bus(self, now_ns: int) -> dict[str, Any]:
        return {
            "rates": dict(sorted(self.rates.items())),
            "counts": dict(self.msg_counts),
            "gaps": dict(self.gaps),
            "bad_frames": dict(self.bad_frames),
            "last_message_age_s": _age_s(now_ns, self.last_bus_ns),
        }

    def _view_clock(self, now_ns: int) -> dict[str, Any]:
        return {"session": self.session, "market_ts_ns": self.market_ts_ns}

    def _venue(self) -> dict[str, Any]:
        status = self.rpc.get(GATEWAY_STATUS)
        answer = status["result"] if status and status["ok"] and isinstance(status["result"], Mapping) else None
        return venue_view(self.venue, self.gateway_info, answer)

    def _view_venue(self, now_ns: int) -> dict[str, Any]:
        return self._venue()

    # --- metrics ----------------------------------------------------------------

    def metric_families(self, now_ns: int) -> dict[str, Any]:
        """The raw figures /metrics exposes (read under the lock, formatted by the app)."""
        with self._lock:
            processes = [self._process_row(p, now_ns) for p in self.processes.values()]
            processes += [self._process_row(a.process, now_ns) for a in self.agents.values() if a.process]
            return {
                "processes": processes,
                "agents": [self.agent_row(a, now_ns) for a in self.agents.values()],
                "orders_by_state": dict(Counter(self.order_status.values())),
                "rejects": dict(self.rejects),
                "msg_counts": dict(self.msg_counts),
                "rates": dict(self.rates),
                "gaps": dict(self.gaps),
                "bad_frames": dict(self.bad_frames),
                "alerts": dict(self.alert_counts),
            }
