"""The matching engine's trading against the order book (``MatchingParams.book`` on).

``BookMatching`` is the half of ``core.matching.MatchingEngine`` (which
inherits it) that meets the book of ``core.book``: prints and bars with
volatility interruptions and our impact, a new order taking from the bid or
ask or resting behind the shares shown at its price, and the book's levels as
a quote. The engine calls these only with the book on; the rules are in the
docstrings of ``core.matching`` and ``core.book``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import book as bk
from core.book import Market
from core.krx import Session, tick_size
from core.matching_records import BookQuote, Event, Order
from core.messages import OrderType, Side

# enum members bound to module names: ``Side.BUY`` costs a class-attribute look-up (~90 ns) on every use of the per-order path
_BUY = Side.BUY
_CONTINUOUS = Session.CONTINUOUS
_MARKET = OrderType.MARKET

if TYPE_CHECKING:
    from core.matching import MatchingEngine


class BookMatching:
    """Matching against the order book (mixed into ``MatchingEngine``)."""

    def _trade_book(self: MatchingEngine, market: Market, price: int, qty: int, now_ns: int, events: list[Event]) -> list[Event]:
        """``on_trade`` with the book on: a VI in force, or started by this print, fills nothing."""
        params = self.params
        market.quiet_hi = 0  # the next bar's VI checks start from this print: the full path
        if self.session is _CONTINUOUS:
            if market.vi and self._held_by_vi(market, price, qty, now_ns, events):
                return events
            kind = bk.vi_kind(market, price, price)
            if kind:
                bk.record_print(market, price, qty, now_ns, params)
                bk.start_vi(market, kind, now_ns, params)
                return events
            if market.bids or market.asks:
                seen = bk.shifted(market, price, now_ns, params)
                cap = qty * params.participation_pct // 100
                if market.bids:
                    self._fill_resting(market, market.bids, seen, seen, qty, cap, now_ns, events)
                if market.asks:
                    self._fill_resting(market, market.asks, seen, seen, qty, cap, now_ns, events)
        bk.record_print(market, price, qty, now_ns, params)
        bk.settle_quiet(market, self.session is _CONTINUOUS)
        return events

    def _bar_book(
        self: MatchingEngine, market: Market, o: int, h: int, l: int, c: int, volume: int, now_ns: int, events: list[Event],
    ) -> None:
        """``on_bar`` with the book on: a bar that reaches a VI threshold fills up to it, then the VI starts.

        The side of the touch at the bar's end is the caller's (``bk.bar_closed``).
        """
        params = self.params
        if self.session is not _CONTINUOUS:
            bk.record_print(market, c, volume, now_ns, params)
            return
        if market.vi and self._held_by_vi(market, c, volume, now_ns, events):
            return
        if market.impact_won:
            bk.impact_now(market, now_ns, params)  # decayed
        last, pct = market.last_price, market.vi_pct
        if h > market.static_hi or l < market.static_lo:
            kind = bk.VI_STATIC
        elif (h - last) * 100 > pct * last or (last - l) * 100 > pct * last:
            kind = bk.VI_DYNAMIC
        else:
            kind = ""
        if market.bids or market.asks:
            # what the bar shows traded after its open print (for the orders that arrived after it):
            # its low if below the open, its high if above, its close if it has more than one price
            late_lo = l if l < o else (c if h > l else 0)
            late_hi = h if h > o else (c if h > l else 0)
            if kind:
                band_lo, band_hi = bk.vi_band(market)
                o, h, l = min(max(o, band_lo), band_hi), min(h, band_hi), max(l, band_lo)
                if late_lo:
                    late_lo = min(max(late_lo, band_lo), band_hi)
                if late_hi:
                    late_hi = min(max(late_hi, band_lo), band_hi)
            if market.impact_won:
                o, h, l = (bk.shifted(market, o, now_ns, params), bk.shifted(market, h, now_ns, params),
                           bk.shifted(market, l, now_ns, params))
                if late_lo:
                    late_lo = bk.shifted(market, late_lo, now_ns, params)
                if late_hi:
                    late_hi = bk.shifted(market, late_hi, now_ns, params)
            cap = volume * params.participation_pct // 100
            # the volume at one price of the range: spread evenly over its ticks
            at_price = volume // (1 + (h - l) // tick_size(l)) if h > l else volume
            if market.bids:
                self._fill_resting(market, market.bids, l, o, at_price, cap, now_ns, events, late_lo or bk.NOTHING_LATE)
            if market.asks:
                self._fill_resting(market, market.asks, h, o, at_price, cap, now_ns, events, late_hi or bk.NOTHING_LATE)
        bk.record_print(market, c, volume, now_ns, params)
        if kind:
            bk.start_vi(market, kind, now_ns, params)
        else:
            bk.settle_quiet(market, True)

    def _held_by_vi(self: MatchingEngine, market: Market, price: int, qty: int, now_ns: int,
                    events: list[Event]) -> bool:
        """A print during a VI: True if the VI holds it (recorded, its volume counted for the cross).

        A print at or after the VI's end first ends it (the cross), and is then
        held only if the cross's leftovers walked into a new one.
        """
        if now_ns >= market.vi_until_ns:
            self._end_vi(market, now_ns, events)
            if not market.vi:
                return False
        else:
            market.vi_volume += qty
        bk.record_print(market, price, qty, now_ns, self.params)
        return True

    def _end_vi(self: MatchingEngine, market: Market, now_ns: int, events: list[Event]) -> None:
        """End a VI: cross at its last price with the volume printed during it, then trade on."""
        price, volume = market.last_price, market.vi_volume
        market.vi, market.vi_until_ns, market.vi_volume = "", 0, 0
        self._cross(market, price, volume, now_ns, events)
        bk.set_single_price(market, price, self.params)
        market.bid_taken = market.ask_taken = 0
        if self.session is _CONTINUOUS:
            self._sweep_marketable(market, now_ns, events)

    def quote(self: MatchingEngine, code: str, now_ns: int, levels: int | None = None) -> BookQuote | None:
        """The code's book as of ``now_ns``: up to ``levels`` (default ``params.levels``) levels a side.

        Book off, both sides start at the last price, where the engine fills
        either side. None for an unknown code.
        """
        market = self._markets.get(code)
        if market is None:
            return None
        n = self.params.levels if levels is None else levels
        depth = self._depth(market, now_ns)
        if self._book:
            bk.refill(market, now_ns, self.params)
            bid, bid_room, ask, ask_room = self._sides(market, depth, now_ns)
        else:
            bid, bid_room = bk.past_taken(market.last_price, depth, market.bid_taken, True, market.lower)
            ask, ask_room = bk.past_taken(market.last_price, depth, market.ask_taken, False, market.upper)
        bid_px, bid_qty = bk.side_levels(bid, bid_room, depth, n, True, market.lower)
        ask_px, ask_qty = bk.side_levels(ask, ask_room, depth, n, False, market.upper)
        return BookQuote(code, now_ns, bid_px, bid_qty, ask_px, ask_qty, market.vi, market.vi_until_ns)

    def _sides(self: MatchingEngine, market: Market, depth: int, now_ns: int) -> tuple[int, int, int, int]:
        """The book's first level a side with shares now, and the shares there (book on; ``bk.sides``)."""
        if now_ns != self._tod_ns:
            self._tod_ns, self._tod = now_ns, bk.time_of_day_factor(
                (now_ns - self._open_ns) / bk.NS_PER_MIN, (self._auction_ns - now_ns) / bk.NS_PER_MIN, self.params)
        return bk.sides(market, depth, self._tod, now_ns, self.params)

    def _touch(self: MatchingEngine, market: Market, now_ns: int) -> tuple[int, int]:
        """The book's best bid and ask now (book on)."""
        bk.refill(market, now_ns, self.params)
        bid, _, ask, _ = self._sides(market, self._depth(market, now_ns), now_ns)
        return bid, ask

    def _enter_book(self: MatchingEngine, order: Order, market: Market, now_ns: int, events: list[Event]) -> None:
        """A new order meets the book: it takes what is marketable, and what rests learns its queue.

        The queue ahead is the level shown at its price, none if it betters
        the best price on its side (it stands first at a new level).
        """
        if market.vi and now_ns >= market.vi_until_ns:
            self._end_vi(market, now_ns, events)
        depth = self._depth(market, now_ns)
        if self.session is not _CONTINUOUS or market.vi:
            order.queue_ahead = 0 if order.order_type is _MARKET else depth
            return
        bk.refill(market, now_ns, self.params)
        sides = self._sides(market, depth, now_ns)
        price = order.price
        if order.order_type is _MARKET or (price >= sides[2] if order.side is _BUY else price <= sides[0]):
            self._take_book(order, market, now_ns, events, depth, sides)
            order.queue_ahead = 0  # anything left now stands first at its price
        else:
            order.queue_ahead = 0 if sides[0] < price < sides[2] else depth

    def _take_book(self: MatchingEngine, order: Order, market: Market, now_ns: int, events: list[Event],
                   depth: int, sides: tuple[int, int, int, int]) -> None:
        """``_take`` with the book on: from the bid or ask, less what has not refilled, up to a VI threshold.

        ``depth`` and ``sides`` are ``_depth`` and ``_sides`` of the market now (after ``bk.refill``).
        """
        bid, bid_room, ask, ask_room = sides
        buy = order.side is _BUY
        band_lo, band_hi = bk.vi_band(market)
        price, room = (ask, ask_room) if buy else (bid, bid_room)
        filled, stopped_at = self._walk(order, market, price, room, depth, band_lo, band_hi, now_ns, events)
        if stopped_at:
            bk.start_vi(market, bk.vi_kind(market, stopped_at, stopped_at) or bk.VI_DYNAMIC, now_ns, self.params)
        bk.add_impact(market, filled, buy, now_ns, self.params)
