"""The paper market's trading day: the session timetable, market data and matching, driven by market time.

Pure: the caller passes market time in (``advance(now_ns)``) and gets back what
to publish as ``(topic, message)`` pairs. One ``PaperVenue`` owns the price
simulator (``core.simulator``, seeded) and the matching engine
(``core.matching``) and replays each simulated day against the clock:

* 08:30 ``pre_open`` (the engine collects orders for the opening auction);
* 09:00 ``open``: the opening auction crosses at the first print of bar 0, then
  continuous trading; each 1-minute bar is expanded into prints
  (``ticks_from_bar``, deterministic by seed) that are published as
  ``md.tick.<code>`` and fed to the engine, and the bar itself is published on
  ``md.bar.1m.<code>`` when its minute is over, once the engine has heard that
  it is (``close_bar``: the book's touch then stands as a back-test fed the
  whole bar leaves it);
* investor flows on ``md.flow.<code>`` at the provisional times and the close
  (the final report, stamped at the close, before the closing auction);
* 15:20 ``closing`` (orders collect for the closing auction);
* 15:30 the closing auction crosses at the closing price: its print, its
  executions and the auction's 1-minute bar are published first, then
  ``closed``, after which every open day order expires (EXPIRED notices); after
  ``EVENING_NS`` of market time the day is over and the next one can begin.

With the matching engine's order book on, each print's tick carries the book's
best bid and ask, and the book itself (10 levels a side, a VI in force) goes
out on ``md.quote.<code>`` (``Quote``) when its best bid, best ask or VI
changes, at most once per ``QUOTE_INTERVAL_S`` of wall time per code (a VI's
start or end at once).

Prints per bar are capped (``max_ticks_per_bar``) so that a fast clock does not
flood the feed. Engine events become execution notices on ``exec.event``
(OrderEvent) and ``exec.fill`` (Fill); refusals are answers, not notices.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Mapping
from typing import Any

from core.instruments import Instrument
from core.krx import Session, market_hours, tick_size
from core.matching import BookQuote, CancelRefused, Event, Execution, MatchingEngine, Order, OrderUpdate
from core.messages import (
    DayReference,
    Bar,
    Fill,
    Fundamentals,
    InvestorFlow,
    Message,
    OrderEvent,
    OrderStatus,
    SessionEvent,
    SessionPhase,
    Side,
    Tick,
    Quote,
)
from core.simulator import DayBars, MarketSimulator, ticks_from_bar
from core.venue import EXEC_EVENT_TOPIC, EXEC_FILL_TOPIC, SESSION_TOPIC, fundamentals_topic, reference_topic, quote_topic

NS_PER_MIN = 60_000_000_000
PRE_OPEN_NS = 30 * NS_PER_MIN
CLOSING_AUCTION_NS = 10 * NS_PER_MIN
EVENING_NS = 10 * NS_PER_MIN  # market time between the close and the overnight jump
QUOTE_INTERVAL_S = 0.25  # at most four quotes a second per code, in wall time (market time x clock speed)

# Items of the timetable at the same instant run in this order (a flow report stamped at the close
# goes out before the closing auction, as the back-tester hands agents a flow before the bar of its stamp).
_CLOSE_FLOW, _BAR_END, _PHASE, _BAR_START, _TICK, _FLOW = range(6)

_ENGINE_SESSION = {
    SessionPhase.PRE_OPEN: Session.PRE_OPEN,
    SessionPhase.OPEN: Session.CONTINUOUS,
    SessionPhase.CLOSING: Session.CLOSING_AUCTION,
    SessionPhase.CLOSED: Session.CLOSED,
}

Outbound = list[tuple[str, Message]]


def order_event_from_update(u: OrderUpdate) -> OrderEvent:
    """The wire form of an engine order update."""
    return OrderEvent(
        client_order_id=u.client_order_id, agent_id=u.agent_id or "-", code=u.code, side=Side(u.side),
        status=u.status, qty=u.qty, price=u.price, filled_qty=u.filled_qty, remaining_qty=u.remaining_qty,
        avg_fill_price=u.avg_fill_price, broker_order_id=u.broker_order_id, reason_code=u.reason_code,
        reason_text=u.reason_text, ts_ns=u.ts_ns,
    )


def order_event_from_order(o: Order) -> OrderEvent:
    """The wire form of an order's current record."""
    return OrderEvent(
        client_order_id=o.client_order_id, agent_id=o.agent_id or "-", code=o.code, side=o.side, status=o.status,
        qty=o.qty, price=o.price, filled_qty=o.filled_qty, remaining_qty=o.remaining_qty,
        avg_fill_price=o.avg_fill_price, broker_order_id=o.broker_order_id, ts_ns=o.updated_ns or o.ts_ns,
    )


def fill_from_execution(e: Execution) -> Fill:
    """The wire form of an engine execution."""
    return Fill(
        exec_id=e.exec_id, client_order_id=e.client_order_id, agent_id=e.agent_id or "-", code=e.code,
        side=e.side, qty=e.qty, price=e.price, fee_won=e.fee_won, tax_won=e.tax_won,
        broker_order_id=e.broker_order_id, ts_ns=e.ts_ns,
    )


def notices(events: list[Event]) -> Outbound:
    """Execution notices for engine events (acceptances, cancels, expiries, fills; not refusals)."""
    out: Outbound = []
    for ev in events:
        if isinstance(ev, Execution):
            out.append((EXEC_FILL_TOPIC, fill_from_execution(ev)))
        elif isinstance(ev, OrderUpdate) and ev.status is not OrderStatus.REJECTED:
            out.append((EXEC_EVENT_TOPIC, order_event_from_update(ev)))
        elif not isinstance(ev, (OrderUpdate, CancelRefused)):
            raise TypeError(f"unexpected engine event {type(ev).__name__}")
    return out


class PaperVenue:
    """Simulated trading days replayed against market time, with the matching engine in the loop."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        engine: MatchingEngine,
        *,
        seed: int,
        first_day: dt.date,
        max_ticks_per_bar: int = 16,
        clock_speed: float = 1.0,
    ) -> None:
        self.instruments = dict(instruments)
        self.engine = engine
        self.seed = seed
        self.first_day = first_day
        self.max_ticks_per_bar = max(2, max_ticks_per_bar)
        self.clock_speed = clock_speed
        self.sim = MarketSimulator(list(self.instruments.values()), seed, first_day)
        self.days_simulated = 0
        self.day: DayBars | None = None
        self.phase: SessionPhase = SessionPhase.CLOSED
        self.phase_ts_ns = 0  # when the current phase began
        self.now_ns = 0
        self.open_ns = 0
        self.close_ns = 0
        self._heap: list[tuple[int, int, int, Any]] = []
        self._seq = 0
        self._cum_volume: dict[str, int] = {}
        self._feed_engine = True
        self.changed = False  # engine state moved since the caller last cleared it
        self._announced_on: dict[str, str] = {}  # per code: the day its figures in force were announced
        self._quoted: dict[str, tuple[int, int, str]] = {}  # per code: best bid, ask and VI last published
        self._quote_due_ns: dict[str, int] = {}  # per code: the market time before which no new quote goes out
        self._quote_interval_ns = int(QUOTE_INTERVAL_S * max(clock_speed, 0.0) * 1e9)

    # --- days ------------------------------------------------------------------

    @property
    def trading_date(self) -> str:
        """Today's date as YYYYMMDD ("" before the first day)."""
        return self.day.trading_date.strftime("%Y%m%d") if self.day else ""

    @property
    def pre_open_ns(self) -> int:
        """When today's opening auction starts collecting orders."""
        return self.open_ns - PRE_OPEN_NS

    @property
    def day_end_ns(self) -> int:
        """When today is over and the clock may jump to the next trading day."""
        return self.close_ns + EVENING_NS

    def next_pre_open_ns(self) -> int:
        """The next simulated day's pre-open (where the overnight jump lands)."""
        return market_hours(self.sim.next_date)[0] - PRE_OPEN_NS

    def begin_day(self, now_ns: int) -> Outbound:
        """Simulate the next trading day, open it at the engine, and catch up to ``now_ns`` quietly.

        What happened before ``now_ns`` (a start in the middle of the day) is fed
        to the engine as bars and not published, except the current session phase.
        """
        self._next_day()
        assert self.day is not None
        base = {code: int(p) for code, p in zip(self.day.codes, self.day.base_price)}
        self.engine.start_day(self.day.trading_date, base, now_ns)
        self.changed = True
        return self._catch_up(now_ns, feed_engine=True)

    def resume_day(self, days_simulated: int, now_ns: int) -> Outbound:
        """Rebuild the day in progress after a restart (the engine comes restored) and continue at ``now_ns``.

        The simulator is deterministic, so replaying its days gives the same
        prices; nothing before ``now_ns`` is fed to the restored engine again.
        """
        for _ in range(max(0, days_simulated - 1)):
            self._note_announcements(self.sim.next_day())
            self.days_simulated += 1
        self._next_day()
        return self._catch_up(now_ns, feed_engine=False)

    def _note_announcements(self, day: DayBars) -> None:
        """Remember, per code, the day its figures in force were announced (the first day's: the master's)."""
        label = day.trading_date.strftime("%Y%m%d")
        for k, code in enumerate(day.codes):
            if code not in self._announced_on or (day.announced is not None and day.announced[k]):
                self._announced_on[code] = label

    def _next_day(self) -> None:
        day = self.sim.next_day()
        self.days_simulated += 1
        self.day = day
        self._note_announcements(day)
        self.open_ns = int(day.ts_ns[0])
        self.close_ns = int(day.ts_ns[-1])
        self._heap.clear()
        self._cum_volume = {code: 0 for code in day.codes}
        self.phase = SessionPhase.CLOSED
        self._push(self.open_ns - PRE_OPEN_NS, _PHASE, SessionPhase.PRE_OPEN)
        self._push(self.open_ns, _PHASE, SessionPhase.OPEN)
        self._push(self.close_ns - CLOSING_AUCTION_NS, _PHASE, SessionPhase.CLOSING)
        self._push(self.close_ns, _PHASE, SessionPhase.CLOSED)
        last_continuous = len(day.ts_ns) - 1
        for i in range(1, last_continuous):
            self._push(int(day.ts_ns[i]), _BAR_START, i)
        for j, ts in enumerate(day.flow_ts_ns):
            self._push(int(ts), _CLOSE_FLOW if int(ts) == self.close_ns else _FLOW, j)

    def _catch_up(self, now_ns: int, *, feed_engine: bool) -> Outbound:
        self._feed_engine = feed_engine
        try:
            self._run_until(now_ns, quiet=True)
        finally:
            self._feed_engine = True
        self.now_ns = now_ns
        session = self.session_in_force()
        return [] if session is None else [(SESSION_TOPIC, session), *self.references()]

    # --- market time ------------------------------------------------------------

    def advance(self, now_ns: int) -> Outbound:
        """Everything the market does up to ``now_ns``: market data and execution notices, in time order."""
        out = self._run_until(now_ns, quiet=False)
        self.now_ns = max(self.now_ns, now_ns)
        return out

    def next_event_ns(self) -> int:
        """Market time of the next scheduled print, bar, flow or phase change (or the day's end)."""
        return min(self._heap[0][0], self.day_end_ns) if self._heap else self.day_end_ns

    def _run_until(self, now_ns: int, *, quiet: bool) -> Outbound:
        out: Outbound = []
        heap = self._heap
        while heap and heap[0][0] <= now_ns:
            ts, kind, _, payload = heapq.heappop(heap)
            if kind == _TICK:
                self._tick(ts, payload, out)
            elif kind == _BAR_START:
                self._bar_start(payload, now_ns if quiet else None)
            elif kind == _BAR_END:
                self._bar_end(ts, payload, out)
            elif kind == _PHASE:
                self._phase(ts, payload, out, quiet)
            else:
                self._flow(payload, out)
        return [] if quiet else out

    def _push(self, ts: int, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts, kind, self._seq, payload))

    def _engine(self, events: list[Event], out: Outbound) -> None:
        if events:
            self.changed = True
            out.extend(notices(events))

    def _bar_start(self, i: int, skip_until: int | None) -> None:
        """Queue the prints of bar ``i`` (in a quiet catch-up, only those after ``skip_until``)."""
        day = self.day
        assert day is not None
        bar_ts = int(day.ts_ns[i])
        self._push(bar_ts + NS_PER_MIN, _BAR_END, i)
        if skip_until is not None and bar_ts + NS_PER_MIN <= skip_until:
            if self._feed_engine:
                for k, code in enumerate(day.codes):
                    self._engine_bar(k, code, i, bar_ts)
            return
        for k, code in enumerate(day.codes):
            ticks = self._ticks(k, i)
            for ts, price, qty in zip(ticks.ts_ns.tolist(), ticks.price.tolist(), ticks.qty.tolist()):
                if skip_until is None or ts > skip_until:
                    self._push(ts, _TICK, (code, price, qty))

    def _engine_bar(self, k: int, code: str, i: int, ts: int) -> None:
        day = self.day
        assert day is not None
        self.engine.on_bar(
            code, int(day.open[k, i]), int(day.high[k, i]), int(day.low[k, i]), int(day.close[k, i]),
            int(day.volume[k, i]), ts,
        )
        self._cum_volume[code] += int(day.volume[k, i])

    def _ticks(self, k: int, i: int) -> Any:
        day = self.day
        assert day is not None
        return ticks_from_bar(
            day.codes[k], int(day.ts_ns[i]), int(day.open[k, i]), int(day.high[k, i]), int(day.low[k, i]),
            int(day.close[k, i]), int(day.volume[k, i]), self.seed, max_ticks=self.max_ticks_per_bar,
        )

    def _tick(self, ts: int, payload: tuple[str, int, int], out: Outbound) -> None:
        code, price, qty = payload
        self._cum_volume[code] += qty
        # a restored engine has seen every print before its saved time
        events = self.engine.on_trade(code, price, qty, ts) if self._feed_engine else []
        book = self.engine.quote(code, ts, levels=1) if self.engine.params.book else None
        bid, ask = (book.bid, book.ask) if book is not None and book.bid and book.ask else (price, price)
        out.append((f"md.tick.{code}", Tick(code=code, ts_ns=ts, price=price, qty=qty,
                                            cum_volume=self._cum_volume[code], bid=bid, ask=ask)))
        self._engine(events, out)
        if book is not None:
            self._quote_out(code, book, ts, out)

    def _quote_out(self, code: str, touch: BookQuote, ts: int, out: Outbound) -> None:
        """Publish the code's book if its touch or VI changed and the throttle allows (a VI change always)."""
        key = (touch.bid, touch.ask, touch.vi)
        last = self._quoted.get(code)
        if key == last or not (touch.bid and touch.ask):
            return
        if last is not None and last[2] == touch.vi and ts < self._quote_due_ns.get(code, 0):
            return
        book = self.engine.quote(code, ts)
        assert book is not None  # the code was quoted a moment ago
        self._quoted[code] = key
        self._quote_due_ns[code] = ts + self._quote_interval_ns
        out.append((quote_topic(code), Quote(
            code=code, ts_ns=ts, bid_px=book.bid_px, bid_qty=book.bid_qty, ask_px=book.ask_px, ask_qty=book.ask_qty,
            vi=book.vi, vi_until_ns=book.vi_until_ns)))

    def _bar_end(self, ts: int, i: int, out: Outbound) -> None:
        """Bar ``i``'s minute is over: the engine hears it (its book's touch may change), then the bar goes out.

        With the book on, the book goes out before the bar if its touch
        changed, so that an agent ordering on the bar has seen the book its
        order meets.
        """
        day = self.day
        assert day is not None
        book = self.engine.params.book
        for k, code in enumerate(day.codes):
            if self._feed_engine:  # a restored engine has heard the end of every bar before its saved time
                self.engine.close_bar(code, int(day.close[k, i]))
                if book:
                    touch = self.engine.quote(code, ts, levels=1)
                    if touch is not None:
                        self._quote_out(code, touch, ts, out)
            out.append((f"md.bar.1m.{code}", self._bar(k, i)))

    def _bar(self, k: int, i: int) -> Bar:
        day = self.day
        assert day is not None
        return Bar(
            code=day.codes[k], ts_ns=int(day.ts_ns[i]), open=int(day.open[k, i]), high=int(day.high[k, i]),
            low=int(day.low[k, i]), close=int(day.close[k, i]), volume=int(day.volume[k, i]),
            value_won=int(day.value_won[k, i]),
        )

    def _flow(self, j: int, out: Outbound) -> None:
        day = self.day
        assert day is not None
        ts = int(day.flow_ts_ns[j])
        inst, indiv = day.institution_net_qty, day.individual_net_qty
        for k, code in enumerate(day.codes):
            out.append((f"md.flow.{code}", InvestorFlow(
                code=code, ts_ns=ts, foreign_net_qty=int(day.foreign_net_qty[k, j]),
                institution_net_qty=int(inst[k, j]) if inst is not None else 0,
                individual_net_qty=int(indiv[k, j]) if indiv is not None else 0,
                provisional=bool(day.flow_provisional[j]), cumulative=True, trading_date=self.trading_date,
            )))

    def _phase(self, ts: int, phase: SessionPhase, out: Outbound, quiet: bool) -> None:
        day = self.day
        assert day is not None
        self.phase = phase
        self.phase_ts_ns = ts
        engine_out: Outbound = []
        feed = self._feed_engine
        if phase is SessionPhase.OPEN:
            # the opening auction crosses at bar 0's first print, then continuous trading starts
            for k, code in enumerate(day.codes):
                ticks = self._ticks(k, 0)
                if len(ticks.ts_ns) == 0:
                    continue
                price, qty = int(ticks.price[0]), int(ticks.qty[0])
                if feed:
                    self._engine(self.engine.run_auction(code, price, qty, ts), engine_out)
                self._cum_volume[code] += qty
                out.append((f"md.tick.{code}", Tick(code=code, ts_ns=ts, price=price, qty=qty,
                                                    cum_volume=self._cum_volume[code], bid=price, ask=price)))
                for t, p, q in zip(ticks.ts_ns[1:].tolist(), ticks.price[1:].tolist(), ticks.qty[1:].tolist()):
                    self._push(t, _TICK, (code, p, q))
            self._push(ts + NS_PER_MIN, _BAR_END, 0)
        if phase is SessionPhase.CLOSED:
            self._close_day(ts, out)
            return
        out.append((SESSION_TOPIC, self._session_event(phase, ts)))
        if phase is SessionPhase.PRE_OPEN:
            out += self.references()  # the new day's base prices and limits, before its first order
        if feed:
            self._engine(self.engine.set_session(_ENGINE_SESSION[phase], ts), engine_out)
        # notices of the opening auction follow the session event that caused them
        out.extend(engine_out)

    def _close_day(self, ts: int, out: Outbound) -> None:
        """15:30: the closing auction crosses and is published, then the session closes and day orders expire.

        The auction's single-price print, its executions and the 15:30 bar belong
        to the closing auction, so they go out before ``closed``: a recorder that
        writes the day at ``closed`` has the auction bar, and an order made on
        that bar reaches the exchange after the close (refused MARKET_CLOSED, as
        the back-tester refuses it).
        """
        day = self.day
        assert day is not None
        m = len(day.ts_ns) - 1
        feed = self._feed_engine
        for k, code in enumerate(day.codes):
            price, qty = int(day.close[k, m]), int(day.volume[k, m])
            self._cum_volume[code] += qty
            out.append((f"md.tick.{code}", Tick(code=code, ts_ns=ts, price=price, qty=qty,
                                                cum_volume=self._cum_volume[code], bid=price, ask=price)))
            if feed:  # the print, then the executions at it, then the bar the print completes
                self._engine(self.engine.run_auction(code, price, qty, ts), out)
            out.append((f"md.bar.1m.{code}", self._bar(k, m)))
        out.append((SESSION_TOPIC, self._session_event(SessionPhase.CLOSED, ts)))
        if feed:
            self.engine.set_session(Session.CLOSED, ts)
            # the expiries follow the session event that caused them
            self._engine(self.engine.expire_day(ts), out)

    def _session_event(self, phase: SessionPhase, ts: int) -> SessionEvent:
        return SessionEvent(phase=phase, trading_date=self.trading_date, ts_ns=ts, clock_speed=self.clock_speed)

    # --- queries ---------------------------------------------------------------

    def session_in_force(self) -> SessionEvent | None:
        """The current phase as its ``md.session`` event, or None before today's pre-open (nothing to announce)."""
        if self.day is None or (self.phase is SessionPhase.CLOSED and self.now_ns < self.pre_open_ns):
            return None
        return self._session_event(self.phase, self.phase_ts_ns)

    def references(self) -> Outbound:
        """Each code's base price and limits for the day (``md.ref.<code>``) and its fundamentals in force
        (``md.fund.<code>``: EPS, BPS, DPS and the day they were announced); none before the first day."""
        day = self.day
        if day is None:
            return []
        out: Outbound = []
        for k, code in enumerate(day.codes):
            limits, base = self.engine.price_limits(code), int(day.base_price[k])
            if limits is not None and base > 0 and limits[0] > 0:
                out.append((reference_topic(code), DayReference(
                    code=code, trading_date=self.trading_date, ts_ns=self.now_ns, base_price=base,
                    lower_limit=limits[0], upper_limit=limits[1])))
        for k, code in enumerate(day.codes):
            if int(day.bps[k]) > 0:
                out.append((fundamentals_topic(code), Fundamentals(
                    code=code, ts_ns=self.now_ns, effective_date=self._announced_on.get(code, self.trading_date),
                    eps=int(day.eps[k]), bps=int(day.bps[k]), dps=int(day.dps[k]) if day.dps is not None else 0, source="sim")))
        return out

    def session_name(self) -> str:
        """The current phase as announced on ``md.session``."""
        return self.phase.value

    def quote(self, code: str) -> dict[str, int] | None:
        """Last price, the book's best bid and ask, tick size, limits, base price and volume of a code."""
        last = self.engine.last_price(code)
        limits = self.engine.price_limits(code)
        if last is None or limits is None or self.day is None or code not in self.day.codes:
            return None
        base = int(self.day.base_price[self.day.codes.index(code)])
        # the book's touch (with the book off, core.matching's touch sits at the last print)
        book = self.engine.quote(code, self.now_ns, levels=1) if self.engine.params.book else None
        bid, ask = (book.bid, book.ask) if book is not None and book.bid and book.ask else (last, last)
        return {
            "last": last, "bid": bid, "ask": ask, "tick_size": tick_size(last),
            "lower_limit": limits[0], "upper_limit": limits[1], "base_price": base,
            "volume": self._cum_volume.get(code, 0),
        }

