"""The back-test engine: the live stack's pure classes wired in one process on a clock driven by the data.

What runs, per agent and per event, is what runs live:

- the strategy class from ``agents.strategies`` unchanged, inside the same
  ``agents.context.AgentContext`` (its book a ``core.portfolio.Portfolio``);
- every order intent goes through ``core.orders.OrderBook`` (create, then the
  pre-trade checks of ``core.risk.check_order`` on the guard's own
  ``RiskView``, then submitted, acknowledged, filled, cancelled or expired);
- ``core.matching.MatchingEngine`` is the venue: the paper exchange's fees,
  dated taxes, tick grid, daily limits, depth and participation;
- each venue event is applied to the order book, the risk view and the agent's
  context, in that order, as the order manager, risk guard and agent runtime
  apply them from the bus.

Time is the data's: bars (and flows) are replayed in strict time order, a flow
before a bar of the same stamp (a bar stamped at its start is complete only a
minute later), bars of one stamp in code order. Each trading day runs the
session events the exchange publishes: ``pre_open`` (day start, base prices =
the previous close, limits), ``open`` (continuous trading), ``closing`` at the
closing auction (agents cancel what is open), the auction bar crossed at its
single price and handed to the agents, then ``closed``: day orders still open
expire (venue, order book and agents), and only then do orders made on the
auction bar reach the venue, refused ``MARKET_CLOSED`` as the live exchange
refuses them (it publishes that bar just before ``closed``, so they arrive
after it); each agent's equity is recorded. Nothing reads a clock
and nothing is random, so the same data gives the same fills to the won.

An order made on the day's last continuous bar (15:19) does not trade. Live,
that bar is published as its minute ends, at 15:20, just before the exchange's
``closing`` event: the order reaches the exchange in the closing auction, and
the agent's own cancel at ``closing`` takes it back before the auction
crosses. The engine does the same (it holds the order for the auction, sends
it at ``closing`` and the agent cancels it), and counts such orders in
``AgentResult.canceled_at_closing``, which the report shows among the
refusals as ``CANCELED_AT_CLOSING``.

``sessions=False`` drops the session rules for comparison with a back-tester
that has none: every bar, the auction's included, is a continuous bar, no
``closing`` reaches the agents (so nothing is cancelled at the close), no order
is held for the auction or refused ``MARKET_CLOSED``, and an order held for the
next bar at a day's end enters at the first bar of the next day. Day orders
still expire at ``closed``. ``costs=CostModel.none()`` charges nothing, the
sell tax included.

When and at what price orders meet bars is the fill model (``backtest.fills``).
A strategy that raises is caught by its context as live; the engine then stops
the run at that bar and returns what it had, with the agent, the bar and the
error in ``BacktestResult.failure``.

``restarts`` tears agents down mid-run and starts them again as the live
runtime does after a crash (``Restart``): a new strategy and context around
the same book, given back the state the agent saved (through its msgpack
form) and the bars recorded so far; bars between the save and the restart are
replayed to it with trading refused. With the save at the restart, the run's
orders are those of the run left alone.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from agents import state_store
from agents.context import HISTORY_BARS, AgentContext, CancelIntent, OrderIntent
from agents.settings import AgentSettings
from agents.strategy import BarData, FillData, FlowData, FundData, OrderEventData, ParamsError, UnknownStrategy, get_strategy
from backtest.data import MarketData
from backtest.fills import DEFAULT_FILL_MODEL, FillModel, intrabar_path, split_volume
from core import krx
from core.costs import DEFAULT_COSTS, CostModel
from core.matching import CancelRefused, Execution, MatchingEngine, MatchingParams, OrderUpdate
from core.messages import OrderStatus, SessionPhase, Side
from core.orders import OrderBook
from core.portfolio import Portfolio
from core.risk import RiskLimits, RiskView, TradingState, check_order, evaluate_loss_limits

NS_PER_MIN = 60_000_000_000
CLOSING_AUCTION_NS = 10 * NS_PER_MIN
PRE_OPEN_NS = 30 * NS_PER_MIN
MAX_CASCADE = 100  # rounds of strategy reactions to fills within one event
# enum member -> its text, without the enum ``.value`` property on the per-fill path
_SIDE_TEXT = {s: s.value for s in Side}
_STATUS_TEXT = {s: s.value for s in OrderStatus}
_SESSION_TEXT = {s: s.value for s in krx.Session}
# order statuses bound to module names for _dispatch: an enum member's class-attribute look-up costs ~90 ns a use
_ACCEPTED, _CANCELED, _REJECTED = OrderStatus.ACCEPTED, OrderStatus.CANCELED, OrderStatus.REJECTED
_NEVER = 2**63  # a time stamp after every event: no flow left
# NamedTuple records built from a tuple, without the Python-level __new__ their constructor runs
_new_record = tuple.__new__
# a day's bar records built in one C-level pass (map over zip), none by the per-bar loop
_make_bar = partial(tuple.__new__, BarData)


class BacktestError(ValueError):
    """A back-test that cannot start: names the agent and key (or data) and why."""

    def __init__(self, where: str, key: str, reason: str) -> None:
        self.where, self.key, self.reason = where, key, reason
        super().__init__(f"{where}: {key}: {reason}")


@dataclass(frozen=True, slots=True)
class Restart:
    """An agent torn down before the first bar at or after ``at_ns`` and started again.

    It comes back with the state it saved before the first bar at or after
    ``saved_ns`` (default: ``at_ns``, a save just before the crash), the way a
    live agent comes back from its last periodic save.
    """

    agent_id: str
    at_ns: int
    saved_ns: int | None = None


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent to back-test: id, strategy, its codes, params and cash (won), optional starting holding."""

    agent_id: str
    strategy: str
    codes: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    cash_won: int = 100_000_000
    start_qty: int = 0
    start_avg_price: int = 0

    @classmethod
    def from_settings(cls, agent: AgentSettings) -> AgentSpec:
        """The spec of a roster entry (``configs/agents.toml``)."""
        return cls(agent.id, agent.strategy, tuple(agent.all_codes), dict(agent.params), agent.cash,
                   agent.start_qty, agent.start_avg_price)


class Trade(NamedTuple):
    """One fill of one agent, as the venue charged it (immutable; a NamedTuple is built faster than a frozen dataclass)."""

    agent_id: str
    ts_ns: int
    code: str
    side: str
    qty: int
    price: int
    fee_won: int
    tax_won: int
    client_order_id: str
    exec_id: str


@dataclass(frozen=True, slots=True)
class DayRecord:
    """An agent's book at one close, in won."""

    date: dt.date
    equity_won: int
    cash_won: int
    holdings_value_won: int
    realized_pnl_won: int
    fees_won: int
    taxes_won: int


@dataclass(frozen=True, slots=True)
class StrategyFailure:
    """Where a strategy raised: the agent, the bar being processed and the error."""

    agent_id: str
    code: str
    ts_ns: int
    bar_index: int
    error: str

    def __str__(self) -> str:
        when = dt.datetime.fromtimestamp(self.ts_ns / 1e9, krx.KST).strftime("%Y-%m-%d %H:%M")
        return f"agent {self.agent_id}: strategy error at bar {self.bar_index} ({self.code} {when} KST): {self.error}"


@dataclass(slots=True)
class AgentResult:
    """Everything one agent did in a back-test."""

    agent_id: str
    strategy: str
    codes: tuple[str, ...]
    params: dict[str, Any]
    capital_won: int
    days: list[DayRecord] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    bars_seen: int = 0
    exposed_bars: int = 0
    orders: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # sent orders refused by the risk checks or the venue
    refused_by_agent: Counter[str] = field(default_factory=Counter)  # orders the agent's context refused at its limits
    held_back: Counter[str] = field(default_factory=Counter)  # orders not sent during a backoff, by the reason held
    alerts: list[str] = field(default_factory=list)  # alerts the agent raised (refusal storms, ...), "kind: text"
    canceled_at_closing: int = 0  # orders made on the last continuous bar, taken back by the agent's cancel at closing
    book: dict[str, Any] = field(default_factory=dict)

    @property
    def refusals(self) -> Counter[str]:
        """Every refusal by reason: of sent orders, and of the agent's own at its limits."""
        return self.rejected + self.refused_by_agent


@dataclass(slots=True)
class BacktestResult:
    """A back-test's outcome: per-agent results, the fill model used, and a failure if the run stopped."""

    fill_model: FillModel
    source: str
    agents: dict[str, AgentResult]
    bars: int
    days: list[dt.date]
    failure: StrategyFailure | None = None
    prices: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # code -> (ts_ns, close)
    costs: CostModel = DEFAULT_COSTS
    sessions: bool = True  # False: run without the session rules (see the module docstring)
    matching_params: MatchingParams = MatchingParams()

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(slots=True)
class _Agent:
    spec: AgentSpec
    ctx: AgentContext
    result: AgentResult
    errors_seen: int = 0


class Backtest:
    """One back-test run: data, agents and the fill model; ``run()`` returns a ``BacktestResult``."""

    def __init__(
        self,
        data: MarketData,
        agents: Sequence[AgentSpec],
        *,
        fill_model: FillModel | str = DEFAULT_FILL_MODEL,
        matching_params: MatchingParams = MatchingParams(),
        risk_limits: RiskLimits | None = None,
        costs: CostModel = DEFAULT_COSTS,
        restarts: Sequence[Restart] = (),
        sessions: bool = True,
    ) -> None:
        try:
            self.fill_model = FillModel(fill_model)
        except ValueError:
            raise BacktestError("fill", "model", f"unknown fill model {fill_model!r}; one of {', '.join(m.value for m in FillModel)}") from None
        if not agents:
            raise BacktestError("agents", "-", "no agent to back-test")
        self.data = data
        self.instruments = data.instruments
        self.costs = costs
        self.sessions = sessions
        self.matching_params = matching_params
        self.limits = risk_limits or RiskLimits()
        self.venue = MatchingEngine(self.instruments, costs=costs, params=matching_params)
        self.oms = OrderBook()
        self.view = RiskView(self.instruments)
        self.state = TradingState.ACTIVE
        self._agents: dict[str, _Agent] = {}
        data_codes = set(data.bars["code"].unique().tolist())
        for spec in agents:
            self._agents[spec.agent_id] = self._build_agent(spec, data_codes)
        self._restarts: list[tuple[int, int, str, Restart]] = []  # (when, 0 save / 1 restart, agent, restart)
        for r in restarts:
            if r.agent_id not in self._agents:
                raise BacktestError("restarts", r.agent_id, "no such agent")
            saved_ns = r.at_ns if r.saved_ns is None else r.saved_ns
            if saved_ns > r.at_ns:
                raise BacktestError("restarts", r.agent_id, "the state cannot be saved after the restart")
            self._restarts += [(saved_ns, 0, r.agent_id, r), (r.at_ns, 1, r.agent_id, r)]
        self._restarts.sort(key=lambda e: e[:3])
        self._saved: dict[Restart, bytes] = {}
        self._pending: dict[str, list[tuple[_Agent, OrderIntent | CancelIntent]]] = {}
        self._delayed = False
        self._now = 0
        self._fills_since_check = False

    def _build_agent(self, spec: AgentSpec, data_codes: set[str]) -> _Agent:
        where = f"agent {spec.agent_id}"
        if spec.agent_id in self._agents:
            raise BacktestError(where, "id", "duplicate agent id")
        try:
            cls = get_strategy(spec.strategy)
        except UnknownStrategy as exc:
            raise BacktestError(where, "strategy", str(exc.args[0])) from None
        problem = cls.check_codes(list(spec.codes))
        if problem:
            raise BacktestError(where, "codes", problem)
        for code in spec.codes:
            if code not in data_codes:
                raise BacktestError(where, "codes", f"no bars for {code} in {self.data.source}")
        try:
            strategy = cls.from_params(dict(spec.params))
        except ParamsError as exc:
            key, reason = exc.problems[0]
            raise BacktestError(where, f"params.{key}", "; ".join(f"{k}: {r}" for k, r in exc.problems)) from None
        if type(spec.cash_won) is not int or spec.cash_won < 0:
            raise BacktestError(where, "cash", f"cash must be whole won >= 0, not {spec.cash_won!r}")
        markets = {c: self.instruments[c].market for c in spec.codes}
        book = Portfolio(allocation_won=spec.cash_won, costs=self.costs, markets=markets)
        holding: dict[str, tuple[int, int]] = {}
        if spec.start_qty:
            problem = book.set_start_holding(spec.codes[0], spec.start_qty, spec.start_avg_price)
            if problem:
                raise BacktestError(where, "start_qty", problem)
            holding[spec.codes[0]] = (spec.start_qty, spec.start_avg_price)
        self.venue.open_account(spec.agent_id, spec.cash_won, holding)
        self.view.add_agent(spec.agent_id, spec.cash_won, holding)
        ctx = AgentContext(spec.agent_id, spec.codes, strategy, book, self.instruments, limits=self.limits.for_agent(spec.agent_id))
        capital = spec.cash_won + spec.start_qty * spec.start_avg_price
        result = AgentResult(spec.agent_id, spec.strategy, spec.codes, dict(strategy.params.model_dump()), capital)
        return _Agent(spec, ctx, result)

    # --- the run -------------------------------------------------------------

    def run(self) -> BacktestResult:
        """Replay the data through the agents; returns what happened (stops at a strategy error)."""
        # The run keeps every order, fill and trade it makes, and reference counting frees the rest
        # (the event records form no cycles): the cyclic collector would only rescan that growing
        # heap, costing a tenth of the run. It is off for the replay and restored after.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._replay()
        finally:
            if collecting:
                gc.enable()

    def _replay(self) -> BacktestResult:
        bars = self.data.bars
        ts = bars["ts_ns"].to_numpy(dtype=np.int64)
        codes = bars["code"].to_numpy()
        cols = [bars[k].to_numpy(dtype=np.int64).tolist() for k in ("open", "high", "low", "close", "volume")]
        o_l, h_l, l_l, c_l, v_l = cols
        ts_l = ts.tolist()
        code_l = codes.tolist()
        day_no = (ts + 9 * 3600 * 10**9) // (86400 * 10**9)
        cut = np.flatnonzero(np.diff(day_no)) + 1
        starts = np.concatenate([[0], cut]).tolist()
        ends = np.concatenate([cut, [len(ts)]]).tolist()
        # investor flows and earnings announcements, merged in time order: what the market says besides bars
        side = self.data.side_events()
        f_ts = [e[0] for e in side]
        f_rec = [e[1] for e in side]
        fi, fn = 0, len(f_ts)

        # per code: the agents trading it, with what the per-bar path touches bound once
        by_code: dict[str, list[tuple[_Agent, AgentContext, Any, dict[str, Any], list[Any], AgentResult]]] = {}
        for agent in self._agents.values():
            for code in agent.spec.codes:
                by_code.setdefault(code, []).append(self._bar_entry(agent))
        for agent in self._agents.values():
            agent.ctx.start()
            self._route(agent, agent.ctx.drain_outbox())
        venue, view_prices = self.venue, self.view.last_prices
        venue_on_bar, venue_on_trade = venue.on_bar, venue.on_trade
        model = self.fill_model
        delayed = model is not FillModel.CLOSE
        intrabar = model is FillModel.INTRABAR
        pending = self._pending
        self._delayed = delayed
        base = {c: p for c, p in self.data.first_base_prices.items()}
        last_close: dict[str, int] = {}
        failure: StrategyFailure | None = None
        days: list[dt.date] = []
        dispatch = self._dispatch
        empty: list[tuple[_Agent, AgentContext, Any, dict[str, Any], list[Any], AgentResult]] = []
        restarts = self._restarts
        next_restart = restarts[0][0] if restarts else _NEVER
        sessions = self.sessions
        flush, route = self._flush, self._route

        for a, b in zip(starts, ends):
            date = krx.kst_date(ts_l[a])
            days.append(date)
            if krx.CALENDAR_START <= date <= krx.CALENDAR_END and krx.is_trading_day(date):
                open_ns, close_ns = krx.market_hours(date)
            else:
                open_ns, close_ns = ts_l[a], ts_l[b - 1] + NS_PER_MIN
            auction_from = close_ns - CLOSING_AUCTION_NS
            last_from = auction_from - NS_PER_MIN  # a bar from here on is published with the auction begun
            self._start_day(date, {**base, **last_close}, min(open_ns, ts_l[a]))
            closing = False
            self._delayed = delayed
            next_flow = f_ts[fi] if fi < fn else _NEVER
            due = min(next_restart, next_flow)  # a restart or a flow: one compare per bar for both
            day_bars = list(map(_make_bar, zip(code_l[a:b], ts_l[a:b], o_l[a:b], h_l[a:b], l_l[a:b], c_l[a:b], v_l[a:b])))
            for i, bar in enumerate(day_bars, a):
                code, t, o, h, lo, c, v = bar
                if t >= due:
                    if t >= next_restart:
                        next_restart = self._restarts_due(t, by_code)
                    if next_flow <= t:
                        while fi < fn and f_ts[fi] <= t:
                            self._side(f_rec[fi])
                            fi += 1
                        next_flow = f_ts[fi] if fi < fn else _NEVER
                    due = min(next_restart, next_flow)
                self._now = t
                if sessions and t >= auction_from:
                    if not closing:
                        self._closing(t)
                        closing = True
                        # live, the auction's bar reaches the agents just before ``closed``, so what
                        # they order on it reaches the venue after the close (see _end_day)
                        self._delayed = True
                    evs = venue.run_auction(code, c, v, t)
                    if evs:
                        dispatch(evs)
                elif delayed:
                    queued = pending.pop(code, None) if pending else None  # most bars: nothing held, no call
                    if intrabar:
                        prints = intrabar_path(o, h, lo, c)
                        parts = split_volume(v)
                        evs = venue_on_trade(code, o, parts[0], t)
                        if evs:
                            dispatch(evs)
                        if queued:
                            flush(queued)
                        for k in (1, 2, 3):
                            evs = venue_on_trade(code, prints[k], parts[k], t)
                            if evs:
                                dispatch(evs)
                    else:
                        if queued:
                            evs = venue_on_trade(code, o, 0, t)
                            if evs:
                                dispatch(evs)
                            flush(queued)
                        evs = venue_on_bar(code, o, h, lo, c, v, t)
                        if evs:
                            dispatch(evs)
                else:
                    evs = venue_on_bar(code, o, h, lo, c, v, t)
                    if evs:
                        dispatch(evs)
                if sessions and not closing and t >= last_from:
                    # live, a bar is published when its minute is over: the last continuous bar reaches the
                    # agents with the closing auction begun, so what they order on it waits for the auction
                    self._delayed = True
                view_prices[code] = c
                for agent, ctx, on_bar, positions, outbox, res in by_code.get(code, empty):
                    on_bar(bar)
                    res.bars_seen += 1
                    pos = positions.get(code)
                    if pos is not None and pos.qty:
                        res.exposed_bars += 1
                    if outbox:
                        route(agent, ctx.drain_outbox())
                    if ctx.errors_total != agent.errors_seen:
                        failure = StrategyFailure(agent.spec.agent_id, code, t, i, ctx.last_error)
                        break
                if failure is not None:
                    break
            if failure is None:
                last_close.update(zip(code_l[a:b], c_l[a:b]))  # each code's last close of the day
                while fi < fn and f_ts[fi] < close_ns:
                    self._side(f_rec[fi])
                    fi += 1
            if sessions and not closing:
                self._closing(max(auction_from, self._now))
            self._end_day(date, max(close_ns, self._now))
            if failure is None:
                failure = self._first_failure(code_l[b - 1], ts_l[b - 1], b - 1)
            if failure is not None:
                break
        return self._result(days, failure, ts, codes, c_l)

    # --- restarts --------------------------------------------------------------

    @staticmethod
    def _bar_entry(agent: _Agent) -> tuple[_Agent, AgentContext, Any, dict[str, Any], list[Any], AgentResult]:
        """What the per-bar path touches of an agent, bound once: its context, on_bar, positions, outbox and result."""
        ctx = agent.ctx
        return agent, ctx, ctx.on_bar, ctx.portfolio.positions, ctx.outbox, agent.result

    def _restarts_due(self, now_ns: int, by_code: dict[str, list[tuple[Any, ...]]]) -> int:
        """Save and restart the agents due by ``now_ns``; returns when the next one is due."""
        restarts = self._restarts
        while restarts and restarts[0][0] <= now_ns:
            _, kind, agent_id, r = restarts.pop(0)
            agent = self._agents[agent_id]
            if kind == 0:
                self._saved[r] = state_store.encode(agent.ctx.save_state())
            else:
                self._restart(agent, state_store.decode(self._saved.pop(r)), now_ns, by_code)
        return restarts[0][0] if restarts else _NEVER

    def _restart(self, agent: _Agent, saved: state_store.SavedState, now_ns: int,
                 by_code: dict[str, list[tuple[Any, ...]]]) -> None:
        """Tear an agent's strategy and context down and start them again as the live runtime does."""
        old, spec = agent.ctx, agent.spec
        strategy = get_strategy(spec.strategy).from_params(dict(spec.params))
        self._collect(agent)
        ctx = AgentContext(spec.agent_id, spec.codes, strategy, old.portfolio, self.instruments, limits=old.agent_limits)
        for code in spec.codes:  # today's limits, as the market-data snapshot gives them live
            if code in self.view.base_prices:
                ctx.set_base_price(code, self.view.base_prices[code])
        ctx.trading_date = old.trading_date
        ctx.resume_order_seq(*old.order_seq())
        bars = self.data.bars
        recorded = bars[(bars["ts_ns"] < now_ns) & bars["code"].isin(list(spec.codes))]
        ctx.queue_warm_up(
            BarData(r.code, r.ts_ns, r.open, r.high, r.low, r.close, r.volume)
            for r in recorded.groupby("code").tail(HISTORY_BARS).itertuples(index=False)
        )
        ctx.resume(saved)
        agent.ctx, agent.errors_seen = ctx, 0
        ctx.start()
        if old.phase is not None:
            ctx.on_session(old.phase, max(ctx.now(), now_ns), old.trading_date)
        for code in spec.codes:
            entries = by_code.get(code, [])
            for n, entry in enumerate(entries):
                if entry[0] is agent:
                    entries[n] = self._bar_entry(agent)
        self._route(agent, ctx.drain_outbox())

    @staticmethod
    def _collect(agent: _Agent) -> None:
        """Move what the agent's context counted (its refusals, backoffs, alerts) into its result."""
        ctx, res = agent.ctx, agent.result
        own, held_back = ctx.refusals.take_counts()
        res.refused_by_agent.update(own)
        res.held_back.update(held_back)
        res.alerts.extend(f"{a.kind}: {a.text}" for a in ctx.drain_alerts())

    # --- sessions --------------------------------------------------------------

    def _start_day(self, date: dt.date, base: Mapping[str, int], open_ns: int) -> None:
        pre_ns = open_ns - PRE_OPEN_NS
        self._now = pre_ns
        day = date.strftime("%Y%m%d")
        prices = {c: int(p) for c, p in base.items() if p > 0}
        self._dispatch(self.venue.start_day(date, prices, pre_ns))
        self.view.roll_day(pre_ns)
        self.view.base_prices.update(prices)
        self.view.last_prices.update(prices)
        for agent in self._agents.values():
            for code in agent.spec.codes:
                if code in prices:
                    agent.ctx.set_base_price(code, prices[code])
        self._dispatch(self.venue.set_session(krx.Session.PRE_OPEN, pre_ns))
        self._session(SessionPhase.PRE_OPEN, pre_ns, day)
        self._now = open_ns
        self._dispatch(self.venue.set_session(krx.Session.CONTINUOUS, open_ns))
        self._session(SessionPhase.OPEN, open_ns, day)

    def _closing(self, now_ns: int) -> None:
        self._now = now_ns
        self._dispatch(self.venue.set_session(krx.Session.CLOSING_AUCTION, now_ns))
        # orders held from the last continuous bar reach the venue in the auction, as they do live,
        # and the agents' cancel at closing takes them back
        held: list[tuple[_Agent, str]] = []
        for code in sorted(self._pending):
            queued = self._pending.pop(code)
            held += [(agent, i.client_order_id) for agent, i in queued if isinstance(i, OrderIntent)]
            self._flush(queued)
        self._session(SessionPhase.CLOSING, now_ns, "")
        orders = self.oms.orders
        for agent, coid in held:
            order = orders.get(coid)
            if order is not None and order.status is OrderStatus.CANCELED:
                agent.result.canceled_at_closing += 1

    def _end_day(self, date: dt.date, close_ns: int) -> None:
        self._now = close_ns
        self._dispatch(self.venue.set_session(krx.Session.CLOSED, close_ns))
        self._dispatch(self.venue.expire_day(close_ns))
        self.oms.expire_open(close_ns)
        self._session(SessionPhase.CLOSED, close_ns, "")
        # orders made on the auction's bars arrive after the close, as they do live: refused MARKET_CLOSED
        # (without session rules, what is held waits for the next bar of its code, the next day's first)
        for code in sorted(self._pending) if self.sessions else ():
            self._flush(self._pending.pop(code))
        for agent in self._agents.values():
            self._collect(agent)
            book = agent.ctx.portfolio
            # finished orders of past days are never looked up again (client order ids carry the date)
            book.forget_finished_orders()
            holdings = book.holdings_value_won()
            agent.result.days.append(
                DayRecord(date, book.cash_won + holdings, book.cash_won, holdings, book.realized_pnl_won,
                          book.fees_won, book.taxes_won)
            )

    def _session(self, phase: SessionPhase, now_ns: int, trading_date: str) -> None:
        was = self._delayed
        self._delayed = False  # orders made at a session change go straight to the venue
        for agent in self._agents.values():
            agent.ctx.on_session(phase, now_ns, trading_date)
            self._route(agent, agent.ctx.drain_outbox())
        self._delayed = was

    def _side(self, record: FlowData | FundData) -> None:
        """An investor-flow report or an earnings announcement, to the agents trading its code."""
        code = record.code
        if record.ts_ns > self._now:
            self._now = record.ts_ns
        flow = type(record) is FlowData
        for agent in self._agents.values():
            if code in agent.spec.codes:
                if flow:
                    agent.ctx.on_flow(record)  # type: ignore[arg-type]
                else:
                    agent.ctx.on_fundamentals(record)  # type: ignore[arg-type]
                self._route(agent, agent.ctx.drain_outbox())

    def _first_failure(self, code: str, ts_ns: int, index: int) -> StrategyFailure | None:
        for agent in self._agents.values():
            if agent.ctx.errors_total != agent.errors_seen:
                return StrategyFailure(agent.spec.agent_id, code, ts_ns, index, agent.ctx.last_error)
        return None

    # --- the order path --------------------------------------------------------

    def _route(self, agent: _Agent, intents: list[OrderIntent | CancelIntent], depth: int = 0) -> None:
        """Send an agent's intents on: now, or held for the next bar under a delayed fill model."""
        if not intents:
            return
        if depth > MAX_CASCADE:
            agent.ctx.log(f"more than {MAX_CASCADE} rounds of orders in reply to fills; the rest were dropped")
            return
        for intent in intents:
            if self._delayed:
                code = intent.code if isinstance(intent, OrderIntent) else self._code_of(intent.client_order_id, agent)
                self._pending.setdefault(code, []).append((agent, intent))
            elif isinstance(intent, OrderIntent):
                self._submit(agent, intent, depth)
            else:
                self._cancel(agent, intent, depth)

    @staticmethod
    def _code_of(client_order_id: str, agent: _Agent) -> str:
        order = agent.ctx.portfolio.orders.get(client_order_id)
        return order.code if order is not None else agent.spec.codes[0]

    def _flush(self, queued: list[tuple[_Agent, OrderIntent | CancelIntent]]) -> None:
        was = self._delayed
        self._delayed = False
        for agent, intent in queued:
            if isinstance(intent, OrderIntent):
                self._submit(agent, intent, 0)
            else:
                self._cancel(agent, intent, 0)
        self._delayed = was

    def _submit(self, agent: _Agent, intent: OrderIntent, depth: int) -> None:
        now = self._now
        coid = intent.client_order_id
        agent.result.orders += 1
        self.oms.create(coid, intent.agent_id, intent.code, intent.side, intent.qty, intent.price, now, intent.order_type)
        decision = check_order(intent, self.view, self.limits, self.state, _SESSION_TEXT[self.venue.session], self.instruments, now)
        if not decision.approved:
            self.oms.reject(coid, decision.reason_code, decision.text, now)
            agent.result.rejected[decision.reason_code] += 1
            agent.ctx.on_order_event(
                OrderEventData(coid, intent.code, intent.side, OrderStatus.REJECTED.value, now, 0, 0, decision.reason_code)
            )
            self._route(agent, agent.ctx.drain_outbox(), depth + 1)
            return
        self.view.on_approved(intent, now)
        self.oms.mark_submitted(coid, now)
        events = self.venue.submit(intent.agent_id, coid, intent.code, intent.side, intent.order_type, intent.qty,
                                   intent.price, now, agent_id=intent.agent_id)
        self._dispatch(events, depth)

    def _cancel(self, agent: _Agent, intent: CancelIntent, depth: int) -> None:
        now = self._now
        out = self.oms.request_cancel(intent.client_order_id, 0, now)
        if out.refused or out.order is None or out.order.is_terminal:
            return  # never reached the venue, or already done
        self._dispatch(self.venue.cancel(intent.client_order_id, 0, now), depth)

    def _dispatch(self, events: list[Any], depth: int = 0) -> None:
        """Apply venue events to the order book, the risk view and the agents, then route their replies."""
        if not events:
            return
        now = self._now
        oms, view, agents = self.oms, self.view, self._agents
        touched: list[_Agent] = []
        fills = False
        for ev in events:
            kind = type(ev)
            if kind is Execution:
                fills = True
                oms.apply_fill(ev.exec_id, ev.qty, ev.price, now, ev.client_order_id, ev.broker_order_id, ev.fee_won, ev.tax_won)
                view.on_fill(ev, now)
                agent = agents[ev.agent_id]
                side = _SIDE_TEXT[ev.side]
                agent.result.trades.append(_new_record(
                    Trade, (ev.agent_id, ev.ts_ns, ev.code, side, ev.qty, ev.price, ev.fee_won, ev.tax_won, ev.client_order_id, ev.exec_id)
                ))
                agent.ctx.on_fill(_new_record(
                    FillData, (ev.exec_id, ev.client_order_id, ev.code, side, ev.qty, ev.price, ev.fee_won, ev.tax_won, ev.ts_ns)
                ))
            elif kind is OrderUpdate:
                status = ev.status
                coid = ev.client_order_id
                if status is _ACCEPTED:
                    oms.ack(coid, ev.broker_order_id, now)
                elif status is _CANCELED:
                    oms.cancel_confirmed(0, now, coid)
                elif status is _REJECTED:
                    oms.reject(coid, ev.reason_code, ev.reason_text, now)
                view.on_order_event(ev, now)
                agent = agents.get(ev.agent_id)
                if agent is None:
                    continue
                if status is _REJECTED:
                    agent.result.rejected[ev.reason_code] += 1
                agent.ctx.on_order_event(_new_record(
                    OrderEventData,
                    (coid, ev.code, ev.side, _STATUS_TEXT[status], ev.ts_ns, ev.filled_qty, ev.remaining_qty, ev.reason_code),
                ))
            elif kind is CancelRefused:
                if ev.client_order_id:
                    oms.cancel_rejected(ev.client_order_id, ev.reason_code.value, ev.reason_text, now)
                continue
            else:
                continue
            if agent not in touched:
                touched.append(agent)
        if fills:
            moved = evaluate_loss_limits(view, self.limits, self.state, now)
            if moved is not None:
                self.state = moved
        for agent in touched:
            if agent.ctx.outbox:
                self._route(agent, agent.ctx.drain_outbox(), depth + 1)

    # --- the result -----------------------------------------------------------

    def _result(self, days: list[dt.date], failure: StrategyFailure | None, ts: np.ndarray, codes: np.ndarray, close: list[int]) -> BacktestResult:
        close_arr = np.asarray(close, dtype=np.int64)
        prices = {}
        for code in sorted(set(codes.tolist())):
            mask = codes == code
            prices[code] = (ts[mask], close_arr[mask])
        for agent in self._agents.values():
            agent.result.book = agent.ctx.portfolio.snapshot()
        return BacktestResult(
            self.fill_model, self.data.source, {a: x.result for a, x in self._agents.items()}, len(ts), days, failure, prices,
            self.costs, self.sessions, self.matching_params,
        )


def run_backtest(
    data: MarketData,
    agents: Sequence[AgentSpec],
    *,
    fill_model: FillModel | str = DEFAULT_FILL_MODEL,
    matching_params: MatchingParams = MatchingParams(),
    risk_limits: RiskLimits | None = None,
    costs: CostModel = DEFAULT_COSTS,
    restarts: Sequence[Restart] = (),
    sessions: bool = True,
) -> BacktestResult:
    """Build and run one back-test (see ``Backtest``)."""
    return Backtest(data, agents, fill_model=fill_model, matching_params=matching_params, risk_limits=risk_limits, costs=costs,
                    restarts=restarts, sessions=sessions).run()
