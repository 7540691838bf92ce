"""The paper venue's matching engine and accounts: pure, synchronous, fast.

Other participants' orders are not kept one by one; the market is simulated
from the prints it is fed (``on_trade`` ticks, ``on_bar`` bars, ``run_auction``
single prices; a feed of ticks says when a bar of them is over with
``close_bar``). With ``MatchingParams.book`` on (the default) each code has an
order book drawn around the last print (``core.book``: a spread of at least
one tick that widens with volatility and near the open and close, ``levels``
levels of depth a side that refill at a rate tied to volume, our impact, and
volatility interruptions). With it off the touch is the last print on both
sides and nothing else changes. The models, in one place:

Touch and depth (orders that take liquidity). A marketable buy pays the ask
and a sell hits the bid (book off: both at the last print). Each price level,
walking away from the touch one tick at a time, offers ``depth`` shares, where
depth is ``depth_pct`` percent of the recent volume (traded shares decayed with
a half-life of ``volume_half_life_ns``, about a minute and a half of trading at
the default) and at least ``min_depth_shares``. A marketable order fills level
by level (one execution per level) up to its limit price, or up to the daily
limit for a market order; what it took stays taken until it refills (book off:
until the next print), so a second order in the same instant continues where
the first stopped. What remains rests. With the book on, a walk that would
trade past a VI threshold stops there and starts the VI; the filled shares move
the price by the square-root law for a few minutes.

Resting orders (orders that provide liquidity). A resting buy fills when the
market trades through it: a print strictly below the limit fills at the limit.
A print exactly at the limit first works off the queue ahead of the order: the
shares shown at its price when it arrived (none when it improved on the best
price; book off: always one level's depth); only volume beyond that queue
fills. Bars have no price-by-volume: with the book on, a bar that reaches the
limit exactly works off the queue with its volume spread evenly over the ticks
of its range; book off, only a range strictly through the limit fills. A bar's
open is its first print, so with the book on an order that arrived at the
bar's start (after that print, as ``next_open`` back-tests and live orders
reach the venue) meets only what the bar shows traded after it: its high if
above the open, its low if below, its close if the bar has more than one price
(a bar of one price may be that one print: nothing after it is known). Every
print fills at most ``participation_pct`` percent of its volume per side,
shared among our orders in price-time priority (resting market orders first).

Auctions. Orders entered during PRE_OPEN or CLOSING_AUCTION, or during a VI,
rest; no print fills anything outside CONTINUOUS or during a VI.
``run_auction`` crosses every open order of the code at the single price (buys
at or above, sells at or below), the same participation cap on the auction
volume, price then time priority; a VI ends with the same cross at its last
price, capped by the volume printed during it. When continuous trading begins
(``set_session``, an auction run during it, or a VI's end), orders left
marketable against the touch take liquidity as above.

Cash. A limit buy holds ``qty x (price + commission per share, rounded up)``; a
market buy holds the same at the upper limit price. Rounding the commission up
per share means no sequence of partial fills can overdraw cash. A sell may not
exceed holdings less the shares offered by open sells; there is no short
selling. Costs come from ``core.costs.CostModel`` dated by the trading date.
Realised PnL is gross (sale proceeds less the average book cost of the shares
sold); fees and taxes are kept apart.

The engine's class is in three files: this one (accounts, order entry, the
book-off model and what both share), ``core.matching_book`` (matching with the
book on) and ``core.matching_state`` (its state as plain data and back).

The hot path builds small slotted dataclasses, never pydantic models: shells
convert them to ``core.messages`` at their boundary. Market data outside
today's limits (or a bar whose prices are out of order) is ignored: it fills
nothing and moves nothing.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict

from core import book as bk
from core.book import Market, tick_down, tick_up
from core.costs import DEFAULT_COSTS, CostModel
from core.instruments import Instrument
from core.krx import Session, is_on_tick, limit_prices, market_hours, tick_size
from core.matching_book import BookMatching
from core.matching_records import (
    Account,
    AccountView,
    BookQuote,
    CancelRefused,
    EngineChanges,
    Event,
    Execution,
    Holding,
    MatchingParams,
    Order,
    OrderUpdate,
    PositionView,
    Reason,
)
from core.matching_state import STATE_VERSION, EngineState
from core.messages import OrderStatus, OrderType, Side

__all__ = [  # the records live in core.matching_records; callers import them from here
    "Account", "AccountView", "BookQuote", "CancelRefused", "EngineChanges", "Event", "Execution", "Holding", "Order",
    "OrderUpdate", "PositionView", "Reason", "MatchingParams", "MatchingEngine", "STATE_VERSION",
]

_ORDER_SESSIONS = frozenset({Session.PRE_OPEN, Session.CONTINUOUS, Session.CLOSING_AUCTION})
# text -> member and member -> text by dict: the enum call and ``.value`` are slow on the per-order path
_SIDE_OF: dict[str, Side] = {s.value: s for s in Side}
_ORDER_TYPE_OF: dict[str, OrderType] = {t.value: t for t in OrderType}
_TEXT: dict[Side | OrderType, str] = {**{s: s.value for s in Side}, **{t: t.value for t in OrderType}}
# enum members bound to module names: ``Side.BUY`` costs a class-attribute look-up (~90 ns) on every use of the per-order path
_BUY = Side.BUY
_CANCELED = OrderStatus.CANCELED
_CLOSED = Session.CLOSED
_CONTINUOUS = Session.CONTINUOUS
_EXPIRED = OrderStatus.EXPIRED
_FILLED = OrderStatus.FILLED
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_PARTIALLY_FILLED = OrderStatus.PARTIALLY_FILLED
_REJECTED = OrderStatus.REJECTED
_SELL = Side.SELL


# --- the engine --------------------------------------------------------------


class MatchingEngine(BookMatching, EngineState):
    """The paper exchange: accounts, order entry, matching against a simulated market."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        *,
        costs: CostModel = DEFAULT_COSTS,
        params: MatchingParams = MatchingParams(),
    ) -> None:
        self.instruments = dict(instruments)
        self.costs = costs
        self.params = params
        self._params_plain = asdict(params)  # saved with every order: worked out once (params are frozen)
        self._book = params.book
        self._open_ns = self._auction_ns = 0  # today's continuous open and closing-auction start (the book's clock)
        self._decay_dt, self._decay = 0, (1.0, 1.0, 0.0)  # bk.decay_factors of the last gap between bars
        self._tod_ns, self._tod = -1, 1.0  # the time-of-day factor of the spread at one instant
        self.session = _CLOSED
        self.trading_date: dt.date | None = None
        self._markets: dict[str, Market] = {}
        self._accounts: dict[str, Account] = {}
        self._orders: dict[str, Order] = {}  # today's, by broker order id
        self._by_client: dict[str, Order] = {}
        self._fills: list[Execution] = []
        self._order_seq = 0
        self._exec_seq = 0
        # dirty tracking for incremental persistence (take_changes)
        self._changed_orders: dict[str, Order] = {}
        self._fills_reported = 0
        self._new_day = False

    # --- set-up ------------------------------------------------------------

    def open_account(
        self, account_id: str, cash_won: int, positions: Mapping[str, tuple[int, int]] | None = None
    ) -> None:
        """Open an account with cash and starting holdings ``{code: (qty, avg_price)}``.

        Raises ValueError for a duplicate account, negative cash or a bad holding:
        accounts come from validated configuration, not from the order flow.
        """
        if account_id in self._accounts:
            raise ValueError(f"account {account_id!r} is already open")
        if not isinstance(cash_won, int) or cash_won < 0:
            raise ValueError(f"account {account_id!r}: cash must be a non-negative integer won, not {cash_won!r}")
        account = Account(account_id=account_id, cash_won=cash_won)
        for code, (qty, avg_price) in (positions or {}).items():
            if code not in self.instruments:
                raise ValueError(f"account {account_id!r}: holding of unknown code {code!r}")
            if qty < 0 or avg_price < 0:
                raise ValueError(f"account {account_id!r}: holding {code} must have qty and avg_price >= 0")
            if qty:
                account.holdings[code] = Holding(qty=qty, book_cost_won=qty * avg_price)
        self._accounts[account_id] = account

    def start_day(self, trading_date: dt.date, base_prices: Mapping[str, int], now_ns: int = 0) -> list[Event]:
        """Begin a trading day: set base and limit prices, clear yesterday's orders and fills.

        Codes without a positive base price keep yesterday's last price (or the
        master's last close). Orders somehow still open are expired first.
        """
        events = self.expire_day(now_ns)
        self.trading_date = trading_date
        self._orders.clear()
        self._by_client.clear()
        self._fills.clear()
        self._changed_orders.clear()
        self._fills_reported = 0
        self._new_day = True
        self._day_hours(trading_date)
        for code, inst in self.instruments.items():
            base = base_prices.get(code, 0)
            if not isinstance(base, int) or base <= 0:
                old = self._markets.get(code)
                base = old.last_price if old else inst.last_close
            lower, upper = limit_prices(base)
            self._markets[code] = bk.new_market(code, base, lower, upper, inst.kospi200, self.params)
        return events

    def _day_hours(self, trading_date: dt.date) -> None:
        """Today's open and closing-auction start, by the calendar (09:00 and 15:20 KST off it)."""
        try:
            open_ns, close_ns = market_hours(trading_date)
        except ValueError:
            midnight_utc = dt.datetime.combine(trading_date, dt.time(), dt.UTC).timestamp()
            open_ns = int(midnight_utc) * 1_000_000_000  # 09:00 KST is midnight UTC
            close_ns = open_ns + 390 * bk.NS_PER_MIN
        self._open_ns, self._auction_ns = open_ns, close_ns - 10 * bk.NS_PER_MIN
        self._tod_ns = -1

    def set_session(self, session: Session, now_ns: int) -> list[Event]:
        """Enter a trading session; entering CONTINUOUS lets marketable auction leftovers take liquidity."""
        self.session = Session(session)
        events: list[Event] = []
        for market in self._markets.values():
            market.quiet_hi = 0
        if self.session is _CONTINUOUS:
            for market in self._markets.values():
                self._sweep_marketable(market, now_ns, events)
        else:
            for market in self._markets.values():
                market.vi = ""  # the session's own auction (or the close) supersedes a VI
        return events

    # --- order entry -------------------------------------------------------

    def submit(
        self,
        account_id: str,
        client_order_id: str,
        code: str,
        side: str,
        order_type: str,
        qty: int,
        price: int,
        now_ns: int,
        *,
        agent_id: str = "",
    ) -> list[Event]:
        """Enter a new order; returns its acceptance and any fills, or one refusal."""

        def refuse(reason: Reason, text: str) -> list[Event]:
            return [
                OrderUpdate(
                    client_order_id, "", account_id, agent_id, code, str(side), str(order_type),
                    _REJECTED, qty if isinstance(qty, int) else 0,
                    price if isinstance(price, int) else 0, 0, 0, 0, 0, now_ns, reason.value, text,
                )
            ]

        account = self._accounts.get(account_id)
        if account is None:
            return refuse(Reason.UNKNOWN_ACCOUNT, f"no account {account_id!r} at this venue")
        if client_order_id in self._by_client:
            return refuse(Reason.DUPLICATE_CLIENT_ORDER_ID, f"client order id {client_order_id!r} already used today")
        if side not in (_BUY, _SELL):
            return refuse(Reason.INVALID_SIDE, f"side must be buy or sell, not {side!r}")
        if order_type not in (_LIMIT, _MARKET):
            return refuse(Reason.INVALID_ORDER_TYPE, f"order type must be limit or market, not {order_type!r}")
        side_, type_ = _SIDE_OF[side], _ORDER_TYPE_OF[order_type]  # both checked just above
        if code not in self.instruments:
            return refuse(Reason.UNKNOWN_CODE, f"{code!r} is not in the instrument master")
        if type(qty) is not int or qty <= 0:
            return refuse(Reason.INVALID_QUANTITY, f"quantity must be a positive whole number of shares, not {qty!r}")
        if type_ is _LIMIT:
            if type(price) is not int or price <= 0:
                return refuse(Reason.INVALID_PRICE, f"a limit order needs a positive price in won, not {price!r}")
        else:
            price = 0
        market = self._markets.get(code)
        if market is None or self.trading_date is None:
            return refuse(Reason.MARKET_CLOSED, "no trading day has started")
        if self.session not in _ORDER_SESSIONS:
            return refuse(Reason.MARKET_CLOSED, f"no order entry in session {self.session.value}")
        if type_ is _LIMIT:
            if not is_on_tick(price):
                return refuse(Reason.BAD_TICK, f"price {price} is not a multiple of the {tick_size(price)} won tick")
            if not market.lower <= price <= market.upper:
                return refuse(
                    Reason.OUTSIDE_PRICE_LIMITS,
                    f"price {price} outside today's limits {market.lower}-{market.upper}",
                )
        order = Order(
            broker_order_id="", client_order_id=client_order_id, account_id=account_id, agent_id=agent_id,
            code=code, side=side_, order_type=type_, qty=qty, price=price, ts_ns=now_ns, seq=0,
            remaining_qty=qty, updated_ns=now_ns,
        )
        if side_ is _BUY:
            hold = self._reservation(order, market)
            buying_power = account.cash_won - account.cash_on_hold_won
            if hold > buying_power:
                return refuse(Reason.INSUFFICIENT_CASH, f"order needs {hold} won, buying power is {buying_power} won")
            order.reserved_won = hold
            account.cash_on_hold_won += hold
        else:
            held = account.holdings.get(code)
            sellable = (held.qty if held else 0) - account.offered_qty.get(code, 0)
            if qty > sellable:
                return refuse(Reason.INSUFFICIENT_SHARES, f"sell of {qty} exceeds the {sellable} sellable shares")
            account.offered_qty[code] = account.offered_qty.get(code, 0) + qty
        self._order_seq += 1
        order.seq = self._order_seq
        order.broker_order_id = f"{self._order_seq:010d}"
        self._orders[order.broker_order_id] = order
        self._by_client[client_order_id] = order
        self._changed_orders[order.broker_order_id] = order
        events: list[Event] = [self._update(order, now_ns)]
        if self._book:
            self._enter_book(order, market, now_ns, events)
        elif self.session is _CONTINUOUS and self._is_marketable(order, market, now_ns):
            self._take(order, market, now_ns, events)
            order.queue_ahead = 0  # anything left now stands first at its price
        else:
            order.queue_ahead = self._depth(market, now_ns)
        if order.remaining_qty:
            book = market.bids if side_ is _BUY else market.asks
            bisect.insort(book, order, key=bk.priority)
            market.quiet_hi = 0
        return events

    def cancel(self, order_ref: str, qty: int, now_ns: int) -> list[Event]:
        """Cancel ``qty`` shares (0 = all that remains) of an order named by client or broker id."""
        order = self._by_client.get(order_ref) or self._orders.get(order_ref)
        if order is None:
            return [CancelRefused(order_ref, qty, Reason.UNKNOWN_ORDER, f"no order {order_ref!r} today", now_ns)]

        def refuse(reason: Reason, text: str) -> list[Event]:
            return [CancelRefused(order_ref, qty, reason, text, now_ns, order.client_order_id, order.broker_order_id)]

        if not order.is_open:
            return refuse(Reason.ORDER_NOT_OPEN, f"order is {order.status.value}")
        if type(qty) is not int or qty < 0:
            return refuse(Reason.INVALID_QUANTITY, f"cancel quantity must be a whole number >= 0, not {qty!r}")
        if qty > order.remaining_qty:
            return refuse(
                Reason.CANCEL_QTY_EXCEEDS_REMAINING, f"cancel of {qty} exceeds the {order.remaining_qty} remaining"
            )
        cut = qty or order.remaining_qty
        order.updated_ns = now_ns
        self._changed_orders[order.broker_order_id] = order
        if cut == order.remaining_qty:
            self._close(order, _CANCELED)
        else:
            # a reduction keeps the order's place in the queue
            order.canceled_qty += cut
            self._reduce(order, cut)
        return [self._update(order, now_ns)]

    def adjust_account(self, account_id: str, code: str, qty: int, cash_won: int) -> None:
        """Change an account without a fill: holding of ``code`` += ``qty``, cash += ``cash_won``.

        Shares come in at zero cost (the book cost stays, the average falls);
        shares taken out leave with their average book cost. Nothing is
        booked as realised PnL, fees or taxes. Raises ValueError, naming why,
        when the account or code is unknown, an amount is not a whole number,
        or the holding would fall below the shares open sells offer (or below
        zero) or the cash below what open buys hold (or below zero); the
        account is then unchanged.
        """
        account = self._accounts.get(account_id)
        if account is None:
            raise ValueError(f"unknown account {account_id!r}")
        if code not in self.instruments:
            raise ValueError(f"unknown code {code!r}")
        for name, value in (("qty", qty), ("cash_won", cash_won)):
            if type(value) is not int:
                raise ValueError(f"{name} must be a whole number, not {value!r}")
        held = account.holdings.get(code) or Holding()
        new_qty = held.qty + qty
        floor_qty = account.offered_qty.get(code, 0)
        if new_qty < floor_qty:
            raise ValueError(f"holding of {code} would be {new_qty} shares, below the {floor_qty} open sells offer"
                             if floor_qty else f"holding of {code} would be {new_qty} shares (negative)")
        new_cash = account.cash_won + cash_won
        if new_cash < account.cash_on_hold_won:
            raise ValueError(f"cash would be {new_cash} won, below the {account.cash_on_hold_won} open buys hold"
                             if account.cash_on_hold_won else f"cash would be {new_cash} won (negative)")
        if qty < 0:
            held.book_cost_won -= held.book_cost_won if new_qty == 0 else held.book_cost_won * -qty // held.qty
        held.qty = new_qty
        if code not in account.holdings and new_qty:
            account.holdings[code] = held
        account.cash_won = new_cash

    def expire_day(self, now_ns: int) -> list[Event]:
        """Expire every open day order at the close and release what it held."""
        events: list[Event] = []
        for order in self._orders.values():
            if order.is_open:
                order.updated_ns = now_ns
                self._close(order, _EXPIRED, unbook=False)
                events.append(self._update(order, now_ns))
        for market in self._markets.values():
            market.bids.clear()
            market.asks.clear()
        return events

    # --- market data -------------------------------------------------------

    def on_trade(self, code: str, price: int, qty: int, now_ns: int) -> list[Event]:
        """Feed one print; resting orders it trades through (or reaches past their queue) fill."""
        market = self._markets.get(code)
        events: list[Event] = []
        if market is None or not market.lower <= price <= market.upper or qty < 0:
            return events
        if self._book:
            return self._trade_book(market, price, qty, now_ns, events)
        if self.session is _CONTINUOUS and (market.bids or market.asks):
            cap = qty * self.params.participation_pct // 100
            if market.bids:
                self._fill_resting(market, market.bids, price, price, qty, cap, now_ns, events)
            if market.asks:
                self._fill_resting(market, market.asks, price, price, qty, cap, now_ns, events)
        self._printed(market, price, qty, now_ns)
        return events

    def on_bar(self, code: str, o: int, h: int, l: int, c: int, volume: int, now_ns: int) -> list[Event]:  # noqa: E741
        """Feed one bar; resting orders its range trades through fill (a bare touch does not)."""
        market = self._markets.get(code)
        events: list[Event] = []
        # the range checks of lower <= l <= min(o, c) <= max(o, c) <= h <= upper, without min and max calls
        if market is None or volume < 0 or not (market.lower <= l <= o <= h <= market.upper and l <= c <= h):
            return events
        if self._book:
            if not (market.quiet_lo <= l and h <= market.quiet_hi):
                self._bar_book(market, o, h, l, c, volume, now_ns, events)
                bk.bar_closed(market, c)
                return events
            # a quiet bar (bk.record_print inlined, its decay factors cached): the back-tester's per-bar path
            dt = now_ns - market.volume_ts_ns
            if dt > 0:
                if dt != self._decay_dt:
                    self._decay_dt, self._decay = dt, bk.decay_factors(dt, self.params)
                fv, fr, fc = self._decay
                market.recent_volume = market.recent_volume * fv + volume
                market.rv = market.rv * fr
                market.rv_time_ns = market.rv_time_ns * fr + fc
                market.volume_ts_ns = now_ns
            else:
                market.recent_volume += volume
            if now_ns - market.rv_ref_ns >= bk.NS_PER_MIN:
                ref = market.rv_ref
                r = (c - ref) / ref
                market.rv += r * r
                market.rv_ref, market.rv_ref_ns = c, now_ns
            if c != market.last_price:
                market.last_price = c
                # bk.vi_band(market) inlined
                hi, lo = c * market.vi_up // 100, -(-c * market.vi_down // 100)
                market.quiet_hi = hi if hi < market.static_hi else market.static_hi
                market.quiet_lo = lo if lo > market.static_lo else market.static_lo
            # bk.bar_closed(market, c) inlined: the side by the tick rule on the bars
            prev = market.bar_close
            if c != prev:
                market.up = market.bar_up = c > prev
                market.bar_close = c
            else:
                market.up = market.bar_up
            return events
        if self.session is _CONTINUOUS and (market.bids or market.asks):
            cap = volume * self.params.participation_pct // 100
            # a bar has no volume at a price, so no queue is worked off: through only
            if market.bids:
                self._fill_resting(market, market.bids, l, o, 0, cap, now_ns, events)
            if market.asks:
                self._fill_resting(market, market.asks, h, o, 0, cap, now_ns, events)
        # _printed(market, c, volume, now_ns) inlined: this is the back-tester's per-bar path
        recent, since = market.recent_volume, market.volume_ts_ns
        if now_ns > since:
            if recent:
                recent *= 0.5 ** ((now_ns - since) / self.params.volume_half_life_ns)
            market.volume_ts_ns = now_ns
        market.recent_volume = recent + volume
        market.last_price = c
        market.bid_taken = market.ask_taken = 0
        return events

    def close_bar(self, code: str, close: int) -> None:
        """Say that the bar the last prints of ``code`` made is over, closing at ``close``.

        With the book on, its touch then sits where ``on_bar`` leaves it after
        the same bar: on the side the tick rule on the bars gives
        (``core.book.bar_closed``), whatever the prints inside the bar did. It
        prints nothing and fills nothing (a resting order is met by prints, as
        after ``on_bar``). Book off, or a close outside today's limits, it
        changes nothing.
        """
        market = self._markets.get(code)
        if self._book and market is not None and market.lower <= close <= market.upper:
            bk.bar_closed(market, close)

    def run_auction(self, code: str, price: int, volume: int, now_ns: int) -> list[Event]:
        """Cross the code's open orders at one auction price, capped by participation."""
        market = self._markets.get(code)
        events: list[Event] = []
        if market is None or not market.lower <= price <= market.upper or volume < 0:
            return events
        self._cross(market, price, volume, now_ns, events)
        if self._book:
            market.vi = ""
            bk.set_single_price(market, price, self.params)
            bk.record_print(market, price, volume, now_ns, self.params)
            market.bid_taken = market.ask_taken = 0
        else:
            self._printed(market, price, volume, now_ns)
        if self.session is _CONTINUOUS:
            self._sweep_marketable(market, now_ns, events)
        return events

    def _cross(self, market: Market, price: int, volume: int, now_ns: int, events: list[Event]) -> None:
        """The single-price cross: orders at or through ``price``, participation-capped, price then time priority."""
        cap = volume * self.params.participation_pct // 100
        for book in (market.bids, market.asks):
            left = cap
            for order in book:
                if left <= 0:
                    break
                if order.order_type is _LIMIT and (
                    order.price < price if order.side is _BUY else order.price > price
                ):
                    break
                q = min(order.remaining_qty, left)
                left -= q
                self._fill(order, q, price, now_ns, events)
            self._drop_done(book)

    # --- queries -----------------------------------------------------------

    def open_orders(self, account_id: str | None = None, code: str | None = None) -> list[Order]:
        """Today's open orders in entry order, optionally for one account and/or code."""
        return [o for o in self._orders_today(account_id) if o.is_open and (code is None or o.code == code)]

    def orders_today(self, account_id: str | None = None) -> list[Order]:
        """Every order entered today (any state), in entry order."""
        return list(self._orders_today(account_id))

    def fills_today(self, account_id: str | None = None) -> list[Execution]:
        """Today's executions in the order they happened."""
        return [f for f in self._fills if account_id is None or f.account_id == account_id]

    def order_by_client_id(self, client_order_id: str) -> Order | None:
        """Today's order with this client order id, if any."""
        return self._by_client.get(client_order_id)

    def order_by_broker_id(self, broker_order_id: str) -> Order | None:
        """Today's order with this broker order number, if any."""
        return self._orders.get(broker_order_id)

    def last_price(self, code: str) -> int | None:
        """The code's last print (the base price before the first), or None for an unknown code."""
        market = self._markets.get(code)
        return market.last_price if market else None

    def price_limits(self, code: str) -> tuple[int, int] | None:
        """Today's (lower, upper) limit prices of a code, or None if unknown."""
        market = self._markets.get(code)
        return (market.lower, market.upper) if market else None

    def account_ids(self) -> list[str]:
        """The ids of every open account."""
        return list(self._accounts)

    def positions(self, account_id: str) -> dict[str, PositionView]:
        """An account's holdings by code, valued at last prices (empty for an unknown account)."""
        account = self._accounts.get(account_id)
        if account is None:
            return {}
        out: dict[str, PositionView] = {}
        for code, held in account.holdings.items():
            if not held.qty:
                continue
            market = self._markets.get(code)
            last = market.last_price if market else held.avg_price
            out[code] = PositionView(
                code=code, qty=held.qty, avg_price=held.avg_price, book_cost_won=held.book_cost_won,
                sellable_qty=held.qty - account.offered_qty.get(code, 0), last_price=last,
                market_value_won=held.qty * last,
            )
        return out

    def account(self, account_id: str) -> AccountView | None:
        """An account snapshot, or None for an unknown account."""
        acct = self._accounts.get(account_id)
        if acct is None:
            return None
        value = sum(p.market_value_won for p in self.positions(account_id).values())
        return AccountView(
            account_id=account_id, cash_won=acct.cash_won, cash_on_hold_won=acct.cash_on_hold_won,
            buying_power_won=acct.cash_won - acct.cash_on_hold_won, holdings_value_won=value,
            equity_won=acct.cash_won + value, fees_won=acct.fees_won, taxes_won=acct.taxes_won,
            realized_pnl_won=acct.realized_pnl_won,
        )

    # --- matching internals ------------------------------------------------

    def _orders_today(self, account_id: str | None) -> Iterable[Order]:
        return (o for o in self._orders.values() if account_id is None or o.account_id == account_id)

    def _reservation(self, order: Order, market: Market) -> int:
        """Cash a buy holds for what remains: price plus commission rounded up per share."""
        price = order.price if order.order_type is _LIMIT else market.upper
        per_share_fee = -(-price * self.costs.commission_num // self.costs.commission_den)
        return order.remaining_qty * (price + per_share_fee)

    def _depth(self, market: Market, now_ns: int) -> int:
        """Shares offered at each simulated price level, from the decayed recent volume."""
        recent = market.recent_volume
        if recent and now_ns > market.volume_ts_ns:
            recent *= 0.5 ** ((now_ns - market.volume_ts_ns) / self.params.volume_half_life_ns)
        return max(self.params.min_depth_shares, int(recent * self.params.depth_pct / 100))

    def _printed(self, market: Market, price: int, qty: int, now_ns: int) -> None:
        """Record a print: the new last price, the decayed volume, and a refreshed touch."""
        if market.recent_volume and now_ns > market.volume_ts_ns:
            market.recent_volume *= 0.5 ** ((now_ns - market.volume_ts_ns) / self.params.volume_half_life_ns)
        market.recent_volume += qty
        market.volume_ts_ns = max(market.volume_ts_ns, now_ns)
        market.last_price = price
        market.bid_taken = market.ask_taken = 0

    def _is_marketable(self, order: Order, market: Market, now_ns: int) -> bool:
        if order.order_type is _MARKET:
            return True
        if self._book:
            bid, ask = self._touch(market, now_ns)
            return order.price >= ask if order.side is _BUY else order.price <= bid
        if order.side is _BUY:
            return order.price >= market.last_price
        return order.price <= market.last_price

    def _take(self, order: Order, market: Market, now_ns: int, events: list[Event]) -> None:
        """Walk the simulated levels from the touch, filling up to the order's limit."""
        if self._book:
            depth = self._depth(market, now_ns)
            bk.refill(market, now_ns, self.params)
            self._take_book(order, market, now_ns, events, depth, self._sides(market, depth, now_ns))
            return
        depth = self._depth(market, now_ns)
        if order.side is _BUY:
            price, room = bk.past_taken(market.last_price, depth, market.ask_taken, False, market.upper)
        else:
            price, room = bk.past_taken(market.last_price, depth, market.bid_taken, True, market.lower)
        self._walk(order, market, price, room, depth, market.lower, market.upper, now_ns, events)

    def _walk(self, order: Order, market: Market, price: int, room: int, depth: int, band_lo: int, band_hi: int,
              now_ns: int, events: list[Event]) -> tuple[int, int]:
        """Fill level by level from ``price`` (``room`` shares there, ``depth`` beyond) up to the order's limit.

        Stops before a level outside ``band_lo``..``band_hi`` (the VI band).
        Adds what it took to the side's taken depth; returns the shares filled
        and the price it stopped at for the band (0 if it did not).
        """
        buy = order.side is _BUY
        step = tick_up if buy else tick_down
        if order.order_type is _LIMIT:
            limit = order.price
        else:
            limit = market.upper if buy else market.lower
        filled = stopped_at = 0
        while order.remaining_qty and room > 0 and (price <= limit if buy else price >= limit):
            if price > band_hi or price < band_lo:
                stopped_at = price
                break
            q = min(room, order.remaining_qty)
            self._fill(order, q, price, now_ns, events)
            filled += q
            room -= q
            if not room:
                nxt = step(price)
                if nxt == price:
                    break
                price, room = nxt, depth
        if buy:
            market.ask_taken += filled
        else:
            market.bid_taken += filled
        return filled, stopped_at

    def _sweep_marketable(self, market: Market, now_ns: int, events: list[Event]) -> None:
        """Let resting orders that are marketable against the touch take liquidity."""
        for book in (market.bids, market.asks):
            for order in list(book):
                if market.vi or not self._is_marketable(order, market, now_ns):
                    break
                self._take(order, market, now_ns, events)
                order.queue_ahead = 0
                self._changed_orders[order.broker_order_id] = order
            self._drop_done(book)

    def _fill_resting(
        self,
        market: Market,
        book: list[Order],
        through_price: int,
        market_fill_price: int,
        queue_volume: int,
        cap: int,
        now_ns: int,
        events: list[Event],
        late_through: int | None = None,
    ) -> None:
        """Fill a side's resting orders against a print, in price-time priority.

        ``through_price`` is the lowest (for bids) or highest (for asks) price
        traded; an order strictly beyond it fills at its limit, an order exactly
        at it works off its queue with ``queue_volume`` first. Resting market
        orders fill at ``market_fill_price``. ``late_through`` (a bar's, book
        on) stands for ``through_price`` for the limit orders that arrived at
        ``now_ns``, after the bar's open print; ``core.book.NOTHING_LATE`` if nothing
        after it reached this side.
        """
        left = cap
        filled_any = False
        buy_side = book is market.bids
        for order in book:
            if order.order_type is _MARKET:
                q = min(order.remaining_qty, left)
                fill_price = market_fill_price
            else:
                limit = order.price
                if late_through is not None and order.ts_ns >= now_ns:
                    if late_through == bk.NOTHING_LATE:
                        continue
                    diff = limit - late_through if buy_side else late_through - limit
                    if diff < 0:
                        continue  # an older order behind it, at a worse price, may have met the open print
                else:
                    diff = limit - through_price if buy_side else through_price - limit
                    if diff < 0:
                        break
                if diff > 0:
                    q = min(order.remaining_qty, left)
                else:
                    if queue_volume:
                        self._changed_orders[order.broker_order_id] = order
                    if order.queue_ahead >= queue_volume:
                        order.queue_ahead -= queue_volume
                        continue
                    beyond_queue = queue_volume - order.queue_ahead
                    order.queue_ahead = 0
                    q = min(order.remaining_qty, left, beyond_queue)
                fill_price = limit
            if q > 0:
                left -= q
                self._fill(order, q, fill_price, now_ns, events)
                filled_any = True
        if filled_any:
            self._drop_done(book)

    def _fill(self, order: Order, qty: int, price: int, now_ns: int, events: list[Event]) -> None:
        """Book one execution: cash, holdings, costs, the order's progress and its events."""
        account = self._accounts[order.account_id]
        notional = qty * price
        assert self.trading_date is not None  # orders exist only after start_day
        fee, tax = self.costs.order_fill_costs(
            _TEXT[order.side], order.filled_value_won, notional, self.trading_date,
            self.instruments[order.code].market,
        )
        held = account.holdings.get(order.code)
        if held is None:
            held = account.holdings[order.code] = Holding()
        if order.side is _BUY:
            account.cash_won -= notional + fee
            held.qty += qty
            held.book_cost_won += notional
        else:
            account.cash_won += notional - fee - tax
            cost_out = held.book_cost_won if qty == held.qty else held.book_cost_won * qty // held.qty
            held.qty -= qty
            held.book_cost_won -= cost_out
            account.realized_pnl_won += notional - cost_out
        account.fees_won += fee
        account.taxes_won += tax
        order.filled_qty += qty
        order.filled_value_won += notional
        order.updated_ns = now_ns
        self._changed_orders[order.broker_order_id] = order
        if order.remaining_qty == qty:
            self._close(order, _FILLED, unbook=False)
        else:
            order.status = _PARTIALLY_FILLED
            self._reduce(order, qty)
        self._exec_seq += 1
        execution = Execution(
            f"X{self._exec_seq:012d}", order.broker_order_id, order.client_order_id, order.account_id,
            order.agent_id, order.code, order.side, qty, price, fee, tax, now_ns,
        )
        self._fills.append(execution)
        events.append(execution)
        events.append(self._update(order, now_ns))

    def _reduce(self, order: Order, qty: int) -> None:
        """Take ``qty`` off what remains (a fill or a partial cancel) and shrink what it holds."""
        account = self._accounts[order.account_id]
        order.remaining_qty -= qty
        if order.side is _BUY:
            hold = self._reservation(order, self._markets[order.code])
            account.cash_on_hold_won += hold - order.reserved_won
            order.reserved_won = hold
        else:
            account.offered_qty[order.code] -= qty

    def _close(self, order: Order, status: OrderStatus, *, unbook: bool = True) -> None:
        """End an order's life: release everything it held and (optionally) take it off the book."""
        if status is not _FILLED:
            order.canceled_qty += order.remaining_qty  # cancelled or expired shares count alike
        self._reduce(order, order.remaining_qty)
        order.status = status
        self._changed_orders[order.broker_order_id] = order
        if unbook:
            market = self._markets[order.code]
            book = market.bids if order.side is _BUY else market.asks
            book.remove(order)

    @staticmethod
    def _drop_done(book: list[Order]) -> None:
        book[:] = [o for o in book if o.remaining_qty]

    @staticmethod
    def _update(order: Order, now_ns: int) -> OrderUpdate:
        return OrderUpdate(
            order.client_order_id, order.broker_order_id, order.account_id, order.agent_id, order.code,
            _TEXT[order.side], _TEXT[order.order_type], order.status, order.qty, order.price,
            order.filled_qty, order.remaining_qty, order.canceled_qty, order.avg_fill_price, now_ns,
        )
