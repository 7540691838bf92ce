"""The market board: the last value of everything the feed said, for late joiners.

Pure and synchronous: the service hands it every market-data message it
forwards, and it keeps the last tick per code, the last N one-minute bars per
code, the last investor flow, book (quote) and fundamentals per code, the last
session event, and per code the
day's running volume and traded value (for VWAP) and the base price (the
previous close) that the day's change is measured against. ``snapshot`` turns
it into plain data (the answer of the ``snapshot`` RPC: the zguide Clone
pattern's state request).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core import krx
from core.messages import Bar, DayReference, Fundamentals, InvestorFlow, Message, Quote, SessionEvent, SessionPhase, Tick

DEFAULT_BARS_KEPT = 390  # one continuous session of one-minute bars


@dataclass(slots=True)
class CodeDay:
    """One code's running figures for its current trading day (KST date of its bars)."""

    day: str = ""  # YYYYMMDD
    volume: int = 0
    value_won: int = 0

    @property
    def vwap(self) -> int | None:
        """The day's volume-weighted average price, whole won, or None before any volume."""
        if self.volume <= 0:
            return None
        return round(self.value_won / self.volume)


@dataclass(slots=True)
class MarketBoard:
    """Last tick, last bars, last flow per code and the last session event."""

    bars_kept: int = DEFAULT_BARS_KEPT
    base_prices: dict[str, int] = field(default_factory=dict)  # previous close per code
    ticks: dict[str, Tick] = field(default_factory=dict)
    bars: dict[str, deque[Bar]] = field(default_factory=dict)
    flows: dict[str, InvestorFlow] = field(default_factory=dict)
    session: SessionEvent | None = None
    days: dict[str, CodeDay] = field(default_factory=dict)
    references: dict[str, DayReference] = field(default_factory=dict)  # the venue's base price and limits per code
    quotes: dict[str, Quote] = field(default_factory=dict)
    fundamentals: dict[str, Fundamentals] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"tick": 0, "bar": 0, "flow": 0, "session": 0,
                                                            "reference": 0, "quote": 0, "fundamentals": 0})

    def apply(self, msg: Message) -> bool:
        """Take one market-data message in; False if it is not market data (ignored)."""
        if isinstance(msg, Tick):
            self.ticks[msg.code] = msg
            self.counts["tick"] += 1
        elif isinstance(msg, Bar):
            self._apply_bar(msg)
            self.counts["bar"] += 1
        elif isinstance(msg, InvestorFlow):
            self.flows[msg.code] = msg
            self.counts["flow"] += 1
        elif isinstance(msg, SessionEvent):
            self._apply_session(msg)
            self.counts["session"] += 1
        elif isinstance(msg, DayReference):
            return self._apply_reference(msg)
        elif isinstance(msg, Quote):
            self.quotes[msg.code] = msg
            self.counts["quote"] += 1
        elif isinstance(msg, Fundamentals):
            return self._apply_fundamentals(msg)
        else:
            return False
        return True

    def _apply_fundamentals(self, fund: Fundamentals) -> bool:
        """A code's figures in force; False when nothing new (the venue's repeat, or an older announcement)."""
        known = self.fundamentals.get(fund.code)
        if known is not None and (
            fund.effective_date < known.effective_date
            or (known.effective_date, known.eps, known.bps, known.dps) == (fund.effective_date, fund.eps, fund.bps, fund.dps)
        ):
            return False
        self.fundamentals[fund.code] = fund
        self.counts["fundamentals"] += 1
        return True

    def _apply_reference(self, ref: DayReference) -> bool:
        """The venue's base price and limits of a code for a day; False when nothing new (a repeat, or stale)."""
        if self.session is not None and ref.trading_date < self.session.trading_date:
            return False
        known = self.references.get(ref.code)
        if known is not None and _reference_key(known) == _reference_key(ref):
            return False
        self.references[ref.code] = ref
        self.base_prices[ref.code] = ref.base_price
        self.counts["reference"] += 1
        return True

    def _apply_bar(self, bar: Bar) -> None:
        kept = self.bars.get(bar.code)
        if kept is None:
            kept = self.bars[bar.code] = deque(maxlen=self.bars_kept)
        if kept and kept[-1].ts_ns == bar.ts_ns:
            kept[-1] = bar  # a corrected bar replaces the one it corrects
        else:
            kept.append(bar)
        day = krx.kst_date(bar.ts_ns).strftime("%Y%m%d")
        running = self.days.get(bar.code)
        if running is None or running.day != day:
            if running is not None and running.day and day > running.day and kept and len(kept) >= 2:
                # The first bar of a new day: yesterday's last close is today's base.
                self.base_prices[bar.code] = kept[-2].close
            running = self.days[bar.code] = CodeDay(day=day)
        running.volume += bar.volume
        running.value_won += bar.value_won if bar.value_won > 0 else bar.close * bar.volume

    def _apply_session(self, event: SessionEvent) -> None:
        previous = self.session
        self.session = event
        if event.phase is SessionPhase.PRE_OPEN and previous is not None and previous.trading_date < event.trading_date:
            # A new trading day: yesterday's last price is today's base price, until the venue says what it is.
            for code, close in self.last_prices().items():
                ref = self.references.get(code)
                if ref is None or ref.trading_date != event.trading_date:
                    self.base_prices[code] = close

    def last_prices(self) -> dict[str, int]:
        """The latest known price per code: the last tick, else the last bar's close."""
        out = {code: bars[-1].close for code, bars in self.bars.items() if bars}
        out.update({code: tick.price for code, tick in self.ticks.items()})
        return out

    def codes(self) -> list[str]:
        """Every code the board knows anything about, sorted."""
        return sorted(set(self.ticks) | set(self.bars) | set(self.flows) | set(self.quotes) | set(self.fundamentals))

    def snapshot(self, codes: Iterable[str] | None = None, *, bars: int | None = None) -> dict[str, Any]:
        """Plain data of the board (JSON-safe), for all codes or only ``codes``.

        ``bars`` limits how many of the latest bars per code are included
        (default: all kept).
        """
        wanted = self.codes() if codes is None else [c for c in codes]
        last = self.last_prices()
        out: dict[str, Any] = {}
        for code in wanted:
            tick = self.ticks.get(code)
            kept = list(self.bars.get(code, ()))
            if bars is not None:
                kept = kept[-bars:] if bars > 0 else []
            flow = self.flows.get(code)
            quote = self.quotes.get(code)
            fund = self.fundamentals.get(code)
            day = self.days.get(code)
            price = last.get(code)
            base = self.base_prices.get(code)
            ref = self.references.get(code)
            today = ref is not None and (self.session is None or ref.trading_date == self.session.trading_date)
            out[code] = {
                "last": price,
                "base_price": base,
                "lower_limit": ref.lower_limit if ref is not None and today else None,
                "upper_limit": ref.upper_limit if ref is not None and today else None,
                "change": price - base if price is not None and base else None,
                "change_pct": round((price - base) / base * 100, 4) if price is not None and base else None,
                "volume": tick.cum_volume if tick is not None and tick.cum_volume else (day.volume if day else 0),
                "vwap": day.vwap if day else None,
                "tick": tick.model_dump(mode="json") if tick is not None else None,
                "bars": [b.model_dump(mode="json") for b in kept],
                "flow": flow.model_dump(mode="json") if flow is not None else None,
                "quote": quote.model_dump(mode="json") if quote is not None else None,
                "bid": quote.bid_px[0] if quote is not None and quote.bid_px else None,
                "ask": quote.ask_px[0] if quote is not None and quote.ask_px else None,
                "fundamentals": fund.model_dump(mode="json") if fund is not None else None,
                "per": round(price / fund.eps, 2) if fund is not None and price and fund.eps > 0 else None,
                "pbr": round(price / fund.bps, 3) if fund is not None and price and fund.bps > 0 else None,
            }
        return {
            "session": self.session.model_dump(mode="json") if self.session is not None else None,
            "codes": out,
        }


def _reference_key(ref: DayReference) -> tuple[str, int, int, int]:
    return ref.trading_date, ref.base_price, ref.lower_limit, ref.upper_limit


def board_from_master(master: Mapping[str, Any], *, bars_kept: int = DEFAULT_BARS_KEPT) -> MarketBoard:
    """A board whose base prices start at the instrument master's last closes."""
    return MarketBoard(bars_kept=bars_kept, base_prices={code: inst.last_close for code, inst in master.items()})


def preferred_discount_pct(snapshot: Mapping[str, Any], preferred: str = "005935", common: str = "005930") -> float | None:
    """How far the preferred share trades below its common share, in percent (None if a price is missing)."""
    codes = snapshot.get("codes", {})
    pref = (codes.get(preferred) or {}).get("last")
    comm = (codes.get(common) or {}).get("last")
    if not pref or not comm:
        return None
    return round((1 - pref / comm) * 100, 2)
