"""The simulated order book of one code: the spread, depth and its refill, our impact, volatility interruptions.

Other participants' orders are not kept one by one; the book is drawn around
the last print from what the prints say (``MatchingParams`` holds every
constant):

Touch. The anchor is the last print moved by our own impact (below), on the
tick grid. The spread is ``n`` ticks, ``n = max(1, round(spread_vol_mult x sd x
price x f / tick))``, where ``sd`` is the code's recent per-minute log-return
sd (realised variance of the prints a minute or more apart, decayed with ``volatility_half_life_ns``,
blended with ``prior_minute_sd`` weighted as ``prior_minutes`` of prints) and
``f`` the time-of-day factor ``1 + open_spread_boost e^(-m_open / tau) +
close_spread_boost e^(-m_close / tau)``, minutes since the open and to the
closing auction. The last print traded at the ask after an uptick and at the
bid after a downtick (the tick rule; an unchanged print keeps the side): the
anchor is the ask after an uptick (bid ``n`` ticks below) and the bid after a
downtick (ask ``n`` ticks above). Both stay within the daily limits.

Bar ends. When a 1-minute bar is over (``bar_closed``: the engine's ``on_bar``,
or a feed of prints saying the bar they made is over), the side follows the
tick rule on the bars: the bar's close against the previous bar's close (the
base price before the day's first bar; an unchanged close keeps the side of
the bar before). A market fed whole bars and one fed each bar's prints then
show the same touch once a bar is over, though the prints inside it moved one
and not the other; the next bar's prints move the side by the tick rule again.
The rule looks at nothing but closes already printed.

Depth. Each of ``levels`` levels a side shows ``depth`` shares (``depth_pct``
percent of the recent volume, at least ``min_depth_shares``). Shares our
marketable orders take are missing from the best levels until they refill, at
``refill_pct`` percent of the market's volume rate (recent volume x ln 2 /
``volume_half_life_ns``).

Impact. A marketable order of ours that fills ``q`` shares moves the anchor by
``impact_k x sd x price x sqrt(q / recent volume)`` in its direction; the move
decays with ``impact_half_life_ns`` (below half a tick it moves no price, but
small moves add up). The same
move shifts the prints our resting orders are matched against, so the market
we trade in is the simulated one plus our footprint.

Volatility interruptions (VI). A print (or our order walking the book) that
would trade more than ``dynamic_vi_pct`` percent (KOSPI200 members;
``dynamic_vi_pct_other`` for the rest) from the last trade, or more than
``static_vi_pct`` percent from the last single price (the base price, then the
last auction's), starts a ``vi_ns`` single-price auction: nothing fills
continuously, orders rest, and the first print, order or auction at or after
its end crosses everything at the last price seen (the engine's auction), which
becomes the new single price.

``bar_quotes`` draws the same touch for whole arrays of 1-minute bars, for the
price simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from core.krx import round_to_tick, tick_size, tick_size_array
from core.matching_records import MatchingParams
from core.messages import OrderType, Side

if TYPE_CHECKING:
    from core.matching_records import Order

LN2 = math.log(2.0)
NS_PER_MIN = 60_000_000_000
VI_STATIC, VI_DYNAMIC = "static", "dynamic"
NOTHING_LATE = -1  # a bar's late through price when nothing after its open print reached a side (core.matching)
DEFAULT_PARAMS = MatchingParams()

# the book's own fields of a Market, saved with the engine's state under "books" (the prints' under "markets")
STATE_FIELDS = (
    "taken_ts_ns", "up", "rv", "rv_time_ns", "rv_ref", "rv_ref_ns", "impact_won", "impact_ts_ns", "static_ref", "vi", "vi_until_ns",
    "vi_volume", "bar_close", "bar_up",
)


@dataclass(slots=True)
class Market:
    """The simulated market of one code: last print, recent volume and volatility, the book, our resting orders."""

    code: str
    base_price: int
    lower: int
    upper: int
    last_price: int
    recent_volume: float = 0.0
    volume_ts_ns: int = 0
    bid_taken: float = 0  # shares taken from the best levels and not yet refilled
    ask_taken: float = 0
    taken_ts_ns: int = 0
    up: bool = True  # the last print was an uptick: it traded at the ask
    bar_close: int = 0  # the last bar's close and the side the tick rule on the bars gave it (see bar_closed)
    bar_up: bool = True
    rv: float = 0.0  # decayed sum of squared returns over a minute or more
    rv_time_ns: float = 0.0  # the decayed time they span
    rv_ref: int = 0  # the print the next return is measured from, and when it was
    rv_ref_ns: int = 0
    impact_won: float = 0.0
    impact_ts_ns: int = 0
    static_ref: int = 0  # the last single price
    vi: str = ""
    vi_until_ns: int = 0
    vi_volume: int = 0
    vi_pct: int = 6  # this code's dynamic VI threshold
    vi_up: int = 106  # 100 + vi_pct
    vi_down: int = 94  # 100 - vi_pct
    static_lo: int = 0  # prices below this or above static_hi start a static VI
    static_hi: int = 0
    # a bar within quiet_lo..quiet_hi needs nothing but its print recorded: no VI, nothing of ours resting,
    # no impact, continuous trading; quiet_hi = 0 (busy) sends every bar through the full path, which sets it
    quiet_lo: int = 0
    quiet_hi: int = 0
    bids: list[Order] = field(default_factory=list)
    asks: list[Order] = field(default_factory=list)


_MARKET_RANK = -(10**15)  # sorts resting market orders ahead of every limit


def priority(order: Order) -> tuple[int, int]:
    """Sort key of price-time priority among our resting orders: market orders first, the best price, then time."""
    if order.order_type is OrderType.MARKET:
        return (_MARKET_RANK, order.seq)
    return (-order.price if order.side is Side.BUY else order.price, order.seq)


def new_market(code: str, base_price: int, lower: int, upper: int, kospi200: bool, params: MatchingParams) -> Market:
    """A code's market at the start of a day: the base price as last print and single price."""
    market = Market(code=code, base_price=base_price, lower=lower, upper=upper, last_price=base_price,
                    bar_close=base_price)
    pct = market.vi_pct = params.dynamic_vi_pct if kospi200 else params.dynamic_vi_pct_other
    market.vi_up, market.vi_down = 100 + pct, 100 - pct
    set_single_price(market, base_price, params)
    return market


def set_single_price(market: Market, price: int, params: MatchingParams) -> None:
    """Make ``price`` the code's last single price: the reference of the static VI."""
    market.static_ref = price
    market.static_hi = price * (100 + params.static_vi_pct) // 100  # price > hi <=> price*100 > ref*(100+s)
    market.static_lo = -(-price * (100 - params.static_vi_pct) // 100)
    market.quiet_hi = 0


_TICKS: dict[int, int] = {}  # tick_size by price, as the book meets them (a few thousand prices a day)


def tick_of(price: int) -> int:
    """``core.krx.tick_size`` remembered: the book asks it several times an order."""
    tick = _TICKS.get(price)
    if tick is None:
        if len(_TICKS) > 200_000:
            _TICKS.clear()
        tick = _TICKS[price] = tick_size(price)
    return tick


def tick_up(price: int) -> int:
    return price + tick_of(price)


def tick_down(price: int) -> int:
    return price - tick_of(price - 1) if price > 1 else price


def record_print(market: Market, price: int, qty: int, now_ns: int, params: MatchingParams) -> None:
    """A print with the book on: decayed volume and variance, the tick rule's side, the new last price.

    The variance adds the squared return since the print a minute or more
    before, so that prints a second apart inside a bar (and their bounce
    within its range) count as what they add up to over the minute: the same
    per-minute figure whether the market is fed prints or bars. The day's
    first print (after ``new_market``) adds no return: its move from the base
    price is the night's, not a minute's.
    """
    if not market.volume_ts_ns:
        market.volume_ts_ns = market.rv_ref_ns = now_ns
        market.rv_ref = price
        market.recent_volume += qty
        if price != market.last_price:
            market.up = price > market.last_price
            market.last_price = price
        return
    dt = now_ns - market.volume_ts_ns
    if dt > 0:
        fv, fr, fc = decay_factors(dt, params)
        market.recent_volume *= fv
        market.rv *= fr
        market.rv_time_ns = market.rv_time_ns * fr + fc
        market.volume_ts_ns = now_ns
    market.recent_volume += qty
    if now_ns - market.rv_ref_ns >= NS_PER_MIN:
        ref = market.rv_ref
        r = (price - ref) / ref
        market.rv += r * r
        market.rv_ref, market.rv_ref_ns = price, now_ns
    last = market.last_price
    if price != last:
        market.up = price > last
        market.last_price = price


def bar_closed(market: Market, close: int) -> None:
    """A bar that closed at ``close`` is over: the side by the tick rule on the bars (see the module docstring).

    Against the previous bar's close: an uptick puts the last print at the
    ask, a downtick at the bid, an unchanged close keeps the previous bar's
    side, whatever the prints inside the bar did.
    """
    prev = market.bar_close
    if close != prev:
        market.bar_up = close > prev
        market.bar_close = close
    market.up = market.bar_up


def decay_factors(dt_ns: int, params: MatchingParams) -> tuple[float, float, float]:
    """Over a gap of ``dt_ns``: the recent volume's decay, the variance's decay, and the decayed time added."""
    f = 0.5 ** (dt_ns / params.volatility_half_life_ns)
    return 0.5 ** (dt_ns / params.volume_half_life_ns), f, (1.0 - f) * params.volatility_half_life_ns / LN2


def recent_volume(market: Market, now_ns: int, params: MatchingParams) -> float:
    """The decayed recent volume as of ``now_ns``."""
    recent = market.recent_volume
    if recent and now_ns > market.volume_ts_ns:
        recent *= 0.5 ** ((now_ns - market.volume_ts_ns) / params.volume_half_life_ns)
    return recent


def minute_sd(market: Market, params: MatchingParams) -> float:
    """The code's recent per-minute log-return sd: realised variance of its prints blended with the prior."""
    prior_min = params.prior_minutes
    var = (market.rv + params.prior_minute_sd ** 2 * prior_min) / (market.rv_time_ns / NS_PER_MIN + prior_min)
    return math.sqrt(var)


def time_of_day_factor(minutes_from_open: float, minutes_to_auction: float, params: MatchingParams) -> float:
    """How much wider the spread is at this time of day: 1 in the middle of the day, more near the open and close."""
    tau = params.spread_tau_minutes
    m_open = minutes_from_open if minutes_from_open > 0.0 else 0.0
    m_close = minutes_to_auction if minutes_to_auction > 0.0 else 0.0
    return 1.0 + params.open_spread_boost * math.exp(-m_open / tau) + params.close_spread_boost * math.exp(-m_close / tau)


def spread_ticks(price: int, sd: float, tod: float, params: MatchingParams) -> int:
    """The spread in ticks (at least one) for a price, a per-minute sd and a time-of-day factor."""
    n = int(params.spread_vol_mult * sd * price * tod / tick_of(price) + 0.5)
    return max(1, n)


def impact_now(market: Market, now_ns: int, params: MatchingParams) -> float:
    """Our impact on the anchor as of ``now_ns`` (won, signed), decayed (kept to add up; see ``impact_moves``)."""
    imp = market.impact_won
    if imp and now_ns > market.impact_ts_ns:
        imp *= 0.5 ** ((now_ns - market.impact_ts_ns) / params.impact_half_life_ns)
        if -0.01 < imp < 0.01:
            imp = 0.0
        market.impact_won, market.impact_ts_ns = imp, now_ns
    return imp


def impact_moves(market: Market) -> bool:
    """Whether our impact is half a tick or more: below that it moves no price on the grid."""
    imp = market.impact_won
    if -0.5 < imp < 0.5:  # less than half the smallest tick
        return False
    return abs(imp) * 2 >= tick_of(market.last_price)


def add_impact(market: Market, qty: int, buy: bool, now_ns: int, params: MatchingParams) -> None:
    """Move the anchor after our marketable order filled ``qty`` shares (the square-root law)."""
    if qty <= 0:
        return
    volume = recent_volume(market, now_ns, params)
    if volume < params.min_depth_shares:
        volume = float(params.min_depth_shares)
    move = params.impact_k * minute_sd(market, params) * market.last_price * math.sqrt(qty / volume)
    market.impact_won = impact_now(market, now_ns, params) + (move if buy else -move)
    market.impact_ts_ns = max(market.impact_ts_ns, now_ns)
    if impact_moves(market):
        market.quiet_hi = 0


def settle_quiet(market: Market, continuous: bool) -> None:
    """After a print on the full path: let the next bars take the quiet path if nothing needs more."""
    if continuous and not (market.bids or market.asks or market.vi or impact_moves(market)):
        market.quiet_lo, market.quiet_hi = vi_band(market)
    else:
        market.quiet_hi = 0


def shifted(market: Market, price: int, now_ns: int, params: MatchingParams) -> int:
    """A print as our market sees it: moved by our impact, on the grid and within the limits."""
    imp = impact_now(market, now_ns, params) if market.impact_won else 0.0
    if not imp or not impact_moves(market):
        return price
    return min(max(round_to_tick(price + imp), market.lower), market.upper)


def touch_at(market: Market, anchor: int, sd: float, tod: float, params: MatchingParams) -> tuple[int, int]:
    """The best bid and ask around ``anchor``: on the side the last print traded, the other ``n`` ticks away."""
    n = spread_ticks(anchor, sd, tod, params)
    if market.up:
        bid = _steps_down(anchor, n)
        if bid < market.lower:
            return market.lower, _steps_up(market.lower, n)
        return bid, anchor
    ask = _steps_up(anchor, n)
    if ask > market.upper:
        return _steps_down(market.upper, n), market.upper
    return anchor, ask


def past_taken(best: int, depth: int, taken: float, buy_side: bool, limit: int) -> tuple[int, int]:
    """Where one side's shown depth begins once ``taken`` shares are gone from it, and the shares left there.

    Stops at ``limit`` (the daily limit on that side) with no shares left when
    everything up to it was taken.
    """
    taken_i = math.ceil(taken)
    step = tick_down if buy_side else tick_up
    price = best
    for _ in range(taken_i // depth):
        nxt = step(price)
        if nxt == price or (nxt < limit if buy_side else nxt > limit):
            return price, 0
        price = nxt
    return price, depth - taken_i % depth


def sides(market: Market, depth: int, tod: float, now_ns: int, params: MatchingParams) -> tuple[int, int, int, int]:
    """``(bid, bid shares, ask, ask shares)``: each side's first level with shares, and the shares there.

    The touch is drawn around the anchor moved by our impact; shares taken
    from a side are missing from its first levels. On the side our impact
    moved towards, the levels our order walked through are part of that
    move: the side starts at the further of the moved touch and the unmoved
    one past what was taken, so the two do not add up.
    """
    imp = impact_now(market, now_ns, params) if market.impact_won else 0.0
    sd = minute_sd(market, params)
    last = market.last_price
    anchor = min(max(round_to_tick(last + imp), market.lower), market.upper) if impact_moves(market) else last
    bid, ask = touch_at(market, anchor, sd, tod, params)
    bid, bid_room = past_taken(bid, depth, market.bid_taken, True, market.lower) if market.bid_taken else (bid, depth)
    ask, ask_room = past_taken(ask, depth, market.ask_taken, False, market.upper) if market.ask_taken else (ask, depth)
    if imp > 0 and market.ask_taken:
        ask0, room0 = past_taken(touch_at(market, last, sd, tod, params)[1], depth, market.ask_taken, False, market.upper)
        if ask0 > ask:
            ask, ask_room = ask0, room0
    elif imp < 0 and market.bid_taken:
        bid0, room0 = past_taken(touch_at(market, last, sd, tod, params)[0], depth, market.bid_taken, True, market.lower)
        if bid0 < bid:
            bid, bid_room = bid0, room0
    return bid, bid_room, ask, ask_room


def _steps_up(price: int, n: int) -> int:
    for _ in range(n):
        price = tick_up(price)
    return price


def _steps_down(price: int, n: int) -> int:
    for _ in range(n):
        price = tick_down(price)
    return price


def refill(market: Market, now_ns: int, params: MatchingParams) -> None:
    """Bring back taken depth at ``refill_pct`` percent of the market's volume rate since the last look."""
    if now_ns <= market.taken_ts_ns:
        return
    if market.bid_taken or market.ask_taken:
        rate = recent_volume(market, now_ns, params) * LN2 / params.volume_half_life_ns * params.refill_pct / 100
        back = rate * (now_ns - market.taken_ts_ns)
        bid_left, ask_left = market.bid_taken - back, market.ask_taken - back
        market.bid_taken = bid_left if bid_left > 0.0 else 0.0
        market.ask_taken = ask_left if ask_left > 0.0 else 0.0
    market.taken_ts_ns = now_ns


def vi_kind(market: Market, lo: int, hi: int) -> str:
    """The VI that trading over ``lo``..``hi`` would start now, or ""."""
    if hi > market.static_hi or lo < market.static_lo:
        return VI_STATIC
    last, pct = market.last_price, market.vi_pct
    if (hi - last) * 100 > pct * last or (last - lo) * 100 > pct * last:
        return VI_DYNAMIC
    return ""


def vi_band(market: Market) -> tuple[int, int]:
    """The lowest and highest prices that trade now without starting a VI."""
    last = market.last_price
    hi, lo = last * market.vi_up // 100, -(-last * market.vi_down // 100)
    return (lo if lo > market.static_lo else market.static_lo), (hi if hi < market.static_hi else market.static_hi)


def start_vi(market: Market, kind: str, now_ns: int, params: MatchingParams) -> None:
    market.quiet_hi = 0
    market.vi = kind
    market.vi_until_ns = now_ns + params.vi_ns
    market.vi_volume = 0


def side_levels(first: int, first_qty: int, depth: int, n: int, buy_side: bool, limit: int) -> tuple[list[int], list[int]]:
    """Up to ``n`` levels of one side from its first level away from the touch, not past ``limit``."""
    step = tick_down if buy_side else tick_up
    price = first
    px, qty = ([price], [first_qty]) if first_qty > 0 else ([], [])
    while len(px) < n:
        nxt = step(price)
        if nxt == price or (nxt < limit if buy_side else nxt > limit):
            break
        price = nxt
        px.append(price)
        qty.append(depth)
    return px, qty


def _ticks_down(price: npt.NDArray[np.int64], n: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``price`` moved ``n`` ticks down the KRX grid, element by element (a band edge crossed is walked tick by tick)."""
    t = tick_size_array(price - 1)
    out = price - n * t
    off = tick_size_array(out) != t  # the walk left the tick band it started in
    if off.any():
        p, k = price[off], n[off]
        for j in range(int(k.max())):
            more = j < k
            p[more] -= tick_size_array(p[more] - 1)
        out[off] = p
    return out


def _ticks_up(price: npt.NDArray[np.int64], n: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``price`` moved ``n`` ticks up the KRX grid, element by element."""
    t = tick_size_array(price)
    out = price + n * t
    off = tick_size_array(out - 1) != t
    if off.any():
        p, k = price[off], n[off]
        for j in range(int(k.max())):
            more = j < k
            p[more] += tick_size_array(p[more])
        out[off] = p
    return out


def bar_quotes(
    close: npt.ArrayLike,
    minute_sd: npt.ArrayLike,
    minutes_from_open: npt.ArrayLike,
    minutes_to_auction: npt.ArrayLike,
    *,
    prev_close: npt.ArrayLike | None = None,
    lower: npt.ArrayLike | None = None,
    upper: npt.ArrayLike | None = None,
    params: MatchingParams = DEFAULT_PARAMS,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The best bid and ask at each 1-minute bar's close, by the engine's spread rule (without our impact).

    - ``close``: int64 ``[n, bars]``, each code's bar closes on the tick grid, in time order;
    - ``minute_sd``: float64 ``[n, bars]`` (or broadcastable), the per-bar log-return sd the
      simulator used for the bar (its conditional volatility per minute);
    - ``minutes_from_open``: float64 ``[bars]``, minutes from the continuous open (09:00) to
      the bar's close (1 for the 09:00 bar);
    - ``minutes_to_auction``: float64 ``[bars]``, minutes from the bar's close to the start
      of the closing auction (15:20; 0 for the 15:19 bar);
    - ``prev_close``: int64 ``[n]``, the print before the first bar (the base price); the
      side of the first bar is then its tick; without it the first bar counts as an uptick;
    - ``lower``, ``upper``: int64 ``[n]``, the day's limit prices (both or neither).

    The side follows the tick rule (an uptick traded at the ask, a downtick at
    the bid, an unchanged close keeps the side before it). Returns ``(bid,
    ask)``, int64 ``[n, bars]``, on the grid, ``bid < ask``, within the limits.
    """
    c = np.atleast_2d(np.asarray(close, dtype=np.int64))
    sd = np.broadcast_to(np.asarray(minute_sd, dtype=np.float64), c.shape)
    m_open = np.asarray(minutes_from_open, dtype=np.float64)
    m_close = np.asarray(minutes_to_auction, dtype=np.float64)
    tau = params.spread_tau_minutes
    tod = (1.0 + params.open_spread_boost * np.exp(-np.maximum(m_open, 0.0) / tau)
           + params.close_spread_boost * np.exp(-np.maximum(m_close, 0.0) / tau))
    n = np.maximum(1, (params.spread_vol_mult * sd * c * tod / tick_size_array(c) + 0.5).astype(np.int64))
    # the tick rule: the sign of each change, an unchanged close taking the sign before it
    first = c[:, :1] if prev_close is None else np.asarray(prev_close, dtype=np.int64).reshape(-1, 1)
    sign = np.sign(np.diff(c, axis=1, prepend=first))
    if prev_close is None:
        sign[:, 0] = 1
    idx = np.where(sign != 0, np.arange(c.shape[1]), -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    up = np.where(idx >= 0, np.take_along_axis(sign, np.maximum(idx, 0), axis=1) > 0, True)
    bid = np.where(up, _ticks_down(c, n), c)
    ask = np.where(up, c, _ticks_up(c, n))
    if lower is not None and upper is not None:
        # a side pushed past its limit is pinned there and the other side steps out from it
        lo = np.broadcast_to(np.asarray(lower, dtype=np.int64).reshape(-1, 1), c.shape)
        hi = np.broadcast_to(np.asarray(upper, dtype=np.int64).reshape(-1, 1), c.shape)
        pin_low, pin_high = bid < lo, ask > hi
        if pin_low.any() or pin_high.any():
            bid = np.where(pin_low, lo, np.where(pin_high, hi, bid))
            ask = np.where(pin_low, lo, np.where(pin_high, hi, ask))
            for k in range(int(n.max())):
                more = k < n
                a = more & pin_low
                ask[a] += tick_size_array(ask[a])
                b = more & pin_high
                bid[b] -= tick_size_array(bid[b] - 1)
    return bid, ask
