"""The paper market behind the local KIS server: the paper exchange's venue and clock, and what KIS reports of it.

Reuses the paper world as it is: ``PaperVenue`` (``core.simulator`` prices,
``core.matching`` order matching, the KRX session timetable) and
``MarketClock`` from ``services.exchange``. What this module adds is the
per-code day statistics KIS's quote TRs and real-time records carry (open,
high, low and their times, buyer- and seller-initiated counts and volumes,
1-minute bars built from the trades, the investor-flow history) and the
splitting of each simulated print into several KRX trades (a print of the
simulator stands for a minute's slice of trading; KIS sends one H0STCNT0
record per trade, and a busy stock trades many times a second).

Pure apart from the clock reading the caller passes in (``advance(wall_ns)``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.instruments import Instrument
from core.krx import KST, tick_size
from core.matching import MatchingEngine
from core.messages import Fill, InvestorFlow, OrderEvent, SessionEvent, SessionPhase, Tick
from services.exchange.clock import MarketClock, kst_ns
from services.exchange.venue import PaperVenue

NS_PER_MIN = 60_000_000_000
TICKS_PER_BAR = 240  # the venue's own cap on prints per bar (the simulator draws about 16)


def hhmmss(ts_ns: int) -> str:
    """A market timestamp as KST HHMMSS."""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, KST).strftime("%H%M%S")


@dataclass(slots=True)
class Trade:
    """One KRX trade as KIS reports it (a part of one simulated print)."""

    code: str
    ts_ns: int
    price: int
    qty: int
    buyer_initiated: bool
    auction: bool
    record: str = ""  # its H0STCNT0 record, made only for a code someone subscribed to


@dataclass(slots=True)
class CodeDay:
    """Today's running figures of one code, as the quote TRs and H0STCNT0 show them."""

    code: str
    base: int  # the previous close (the base of today's limits)
    lower: int
    upper: int
    prev_volume: int = 0
    open: int = 0
    high: int = 0
    low: int = 0
    last: int = 0
    open_hms: str = ""
    high_hms: str = ""
    low_hms: str = ""
    volume: int = 0
    value_won: int = 0
    buy_count: int = 0
    sell_count: int = 0
    buy_volume: int = 0
    sell_volume: int = 0
    last_buyer: bool = True
    # 1-minute bars of today's trades: [minute start ns, open, high, low, close, volume, value]
    bars: list[list[int]] = field(default_factory=list)

    def book(self, t: Trade) -> None:
        """Add a trade to the day's figures and its minute bar."""
        hms = hhmmss(t.ts_ns)
        if not self.open:
            self.open = self.high = self.low = t.price
            self.open_hms = self.high_hms = self.low_hms = hms
        if t.price > self.high:
            self.high, self.high_hms = t.price, hms
        if t.price < self.low:
            self.low, self.low_hms = t.price, hms
        self.last = t.price
        self.volume += t.qty
        self.value_won += t.qty * t.price
        self.last_buyer = t.buyer_initiated
        if t.buyer_initiated:
            self.buy_count += 1
            self.buy_volume += t.qty
        else:
            self.sell_count += 1
            self.sell_volume += t.qty
        minute = t.ts_ns - t.ts_ns % NS_PER_MIN
        bars = self.bars
        if bars and bars[-1][0] == minute:
            bar = bars[-1]
            bar[2] = max(bar[2], t.price)
            bar[3] = min(bar[3], t.price)
            bar[4] = t.price
            bar[5] += t.qty
            bar[6] += t.qty * t.price
        else:
            bars.append([minute, t.price, t.price, t.price, t.price, t.qty, t.qty * t.price])

    @property
    def price(self) -> int:
        """The current price (the base before the first trade)."""
        return self.last or self.base

    def sign(self, price: int | None = None) -> str:
        """PRDY_VRSS_SIGN: 1 upper limit, 2 up, 3 unchanged, 4 lower limit, 5 down."""
        p = self.price if price is None else price
        if p >= self.upper:
            return "1"
        if p <= self.lower:
            return "4"
        return "2" if p > self.base else "5" if p < self.base else "3"


@dataclass(slots=True)
class Step:
    """What the market did in one advance."""

    trades: list[Trade] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    order_events: list[OrderEvent] = field(default_factory=list)
    sessions: list[SessionEvent] = field(default_factory=list)
    new_day: bool = False


class KisMarket:
    """The venue, its clock and the day figures of every code."""

    def __init__(self, instruments: dict[str, Instrument], venue: PaperVenue, clock: MarketClock,
                 trades_per_print: int = 10) -> None:
        self.instruments = instruments
        self.venue = venue
        self.engine: MatchingEngine = venue.engine
        self.clock = clock
        self.trades_per_print = max(1, trades_per_print)
        self.days: dict[str, CodeDay] = {}
        # codes whose trades get their real-time record made as they happen, and who makes it
        self.wanted: set[str] = set()
        self.recorder: Callable[[CodeDay, Trade], str] | None = None
        # investor flows, newest first per code: [date, close, change, sign, foreign net, institution net]
        self.flow_history: dict[str, list[list[Any]]] = {code: [] for code in instruments}
        self._last_flow: dict[str, InvestorFlow] = {}
        self._reset_days()

    @classmethod
    def open(cls, instruments: dict[str, Instrument], engine: MatchingEngine, *, seed: int, first_day: dt.date,
             start_time: str, speed: float, wall_ns: int, trades_per_print: int = 10) -> tuple["KisMarket", Step]:
        """Begin a new paper world on ``first_day`` at ``start_time`` (KST)."""
        venue = PaperVenue(instruments, engine, seed=seed, first_day=first_day, max_ticks_per_bar=TICKS_PER_BAR,
                           clock_speed=speed)
        start_ns = kst_ns(venue.sim.next_date, start_time)
        out = venue.begin_day(start_ns)
        market = cls(instruments, venue, MarketClock(start_ns, wall_ns, speed), trades_per_print)
        market._replay_bars(start_ns)
        return market, market._step(out)

    @classmethod
    def resume(cls, instruments: dict[str, Instrument], engine: MatchingEngine, *, seed: int, first_day: dt.date,
               days_simulated: int, market_ns: int, speed: float, wall_ns: int,
               trades_per_print: int = 10) -> tuple["KisMarket", Step]:
        """Rebuild the day in progress after a restart (the engine comes restored) and continue at ``market_ns``."""
        venue = PaperVenue(instruments, engine, seed=seed, first_day=first_day, max_ticks_per_bar=TICKS_PER_BAR,
                           clock_speed=speed)
        out = venue.resume_day(days_simulated, market_ns)
        market = cls(instruments, venue, MarketClock(market_ns, wall_ns, speed), trades_per_print)
        market._replay_bars(market_ns)
        return market, market._step(out)

    def _replay_bars(self, until_ns: int) -> None:
        """Today's figures after a restart, rebuilt from the simulated bars already over (one trade per price)."""
        day = self.venue.day
        if day is None:
            return
        for k, code in enumerate(day.codes):
            cd = self.days.get(code)
            if cd is None:
                continue
            for i, ts in enumerate(day.ts_ns.tolist()):
                if ts + NS_PER_MIN > until_ns or ts > until_ns:
                    break
                o, h, lo, c, v = (int(day.open[k, i]), int(day.high[k, i]), int(day.low[k, i]),
                                  int(day.close[k, i]), int(day.volume[k, i]))
                if v <= 0:
                    continue
                for price, qty in ((o, 0), (h, 0), (lo, 0), (c, v)):
                    cd.book(Trade(code, ts, price, qty, c >= o, False))

    def _reset_days(self) -> None:
        day = self.venue.day
        old = self.days
        self.days = {}
        for code in self.instruments:
            limits = self.engine.price_limits(code)
            base = int(day.base_price[day.codes.index(code)]) if day is not None else self.instruments[code].last_close
            lower, upper = limits if limits else (base, base)
            prev = old.get(code)
            self.days[code] = CodeDay(code, base, lower, upper, prev_volume=prev.volume if prev else 0)

    # --- time --------------------------------------------------------------------------

    @property
    def now_ns(self) -> int:
        return self.venue.now_ns

    @property
    def trading_date(self) -> str:
        return self.venue.trading_date

    @property
    def phase(self) -> SessionPhase:
        return self.venue.phase

    def advance(self, wall_ns: int) -> Step:
        """Everything the market did up to the clock's reading at ``wall_ns``, rolling to the next day at night."""
        market_ns = self.clock.now(wall_ns)
        step = self._step(self.venue.advance(market_ns))
        if market_ns >= self.venue.day_end_ns:
            self._close_flows()
            landing = self.venue.next_pre_open_ns()
            more = self.venue.begin_day(landing)
            self.clock.jump(landing, wall_ns)
            self._reset_days()
            step.new_day = True
            later = self._step(more)
            step.sessions.extend(later.sessions)
        return step

    def wall_s_until_next_event(self) -> float:
        """Wall seconds until the venue has something to do."""
        return max(0.0, (self.venue.next_event_ns() - self.venue.now_ns) / 1e9 / self.clock.speed)

    # --- the venue's output as KIS sees it ---------------------------------------------------

    def _step(self, out: list[tuple[str, Any]]) -> Step:
        step = Step()
        for topic, msg in out:
            if isinstance(msg, Tick):
                self._split(msg, step.trades)
            elif isinstance(msg, Fill):
                step.fills.append(msg)
            elif isinstance(msg, OrderEvent):
                step.order_events.append(msg)
            elif isinstance(msg, SessionEvent):
                step.sessions.append(msg)
            elif isinstance(msg, InvestorFlow):
                self._last_flow[msg.code] = msg
        return step

    def _split(self, tick: Tick, trades: list[Trade]) -> None:
        """Cut a print into up to ``trades_per_print`` trades (the volume kept), a few milliseconds apart."""
        cd = self.days.get(tick.code)
        if cd is None:
            return
        auction = self.venue.phase is not SessionPhase.OPEN or tick.ts_ns in (self.venue.open_ns, self.venue.close_ns)
        n = 1 if auction else max(1, min(self.trades_per_print, tick.qty))
        base, extra = divmod(tick.qty, n)
        prev = cd.price
        buyer = tick.price > prev or (tick.price == prev and cd.last_buyer)
        for i in range(n):
            t = Trade(tick.code, tick.ts_ns + i * 1_000_000, tick.price, base + (1 if i < extra else 0),
                      buyer if i == 0 else (i % 2 == 0) == buyer, auction)
            cd.book(t)
            if self.recorder is not None and tick.code in self.wanted:
                t.record = self.recorder(cd, t)
            trades.append(t)

    def _close_flows(self) -> None:
        """At the day's end: today's investor-flow row joins the history (KIS shows it only after the close)."""
        for code, cd in self.days.items():
            flow = self._last_flow.get(code)
            if flow is None or not cd.last:
                continue
            self.flow_history[code].insert(0, self.flow_row(code, flow.foreign_net_qty, flow.institution_net_qty))
            del self.flow_history[code][60:]

    def flow_row(self, code: str, foreign_net_qty: int, institution_net_qty: int) -> list[Any]:
        """One day's investor-flow row of a code: [date, close, change, sign, foreign, institution, volume, value]
        (individuals' figure, minus the other two, is the wire's to derive)."""
        cd = self.days[code]
        return [self.trading_date, cd.price, cd.price - cd.base, cd.sign(), foreign_net_qty, institution_net_qty,
                cd.volume, cd.value_won]

    def todays_flow(self, code: str) -> list[Any] | None:
        """Today's final investor-flow row once the market has closed, else None."""
        flow = self._last_flow.get(code)
        if flow is None or flow.provisional or self.venue.phase is not SessionPhase.CLOSED or not self.days[code].last:
            return None
        return self.flow_row(code, flow.foreign_net_qty, flow.institution_net_qty)

    # --- the simulated order book ----------------------------------------------------------------

    def book_levels(self, code: str, levels: int = 10) -> tuple[list[int], list[int], list[int], list[int]]:
        """Ask and bid prices and quantities, ``levels`` each, around the last price.

        The paper market has no other participants' orders (core.matching's
        depth model: the touch sits at the last print, each level offers a
        share of the recent volume); the quantities here follow that model.
        """
        cd = self.days[code]
        price = cd.price
        recent = max(100, (cd.bars[-1][5] if cd.bars else 0) // 10)
        asks, bids, ask_qty, bid_qty = [], [], [], []
        p = price if not cd.last_buyer else price + tick_size(price)
        for i in range(levels):
            asks.append(min(p, cd.upper) if p <= cd.upper else 0)
            ask_qty.append(recent + 37 * i if p <= cd.upper else 0)
            p += tick_size(p)
        p = price - tick_size(price - 1) if cd.last_buyer else price
        for i in range(levels):
            ok = p >= cd.lower and p > 0
            bids.append(p if ok else 0)
            bid_qty.append(recent + 41 * i if ok else 0)
            p -= tick_size(p - 1) if p > 1 else 0
        return asks, bids, ask_qty, bid_qty

    # --- persistence ----------------------------------------------------------------------

    def service_state(self) -> dict[str, Any]:
        """The market's own small state for the store (the engine is saved apart)."""
        v = self.venue
        return {"seed": v.seed, "first_day": v.first_day.isoformat(), "codes": list(v.instruments),
                "days_simulated": v.days_simulated, "market_ns": v.now_ns, "flow_history": self.flow_history}
