"""The price simulator: seeded, vectorised 1-minute bars, ticks and foreign flows for many instruments.

One ``MarketSimulator`` steps a universe of instruments through XKRX trading
days, one day per ``next_day()`` call, drawing every random number for all
instruments and minutes of the day at once from one seeded generator: the same
instruments, seed and start date always give the same bars, flows and ticks.

The model, per trading day:

* an overnight gap (market factor x beta plus an idiosyncratic part, Student-t)
  sets the opening auction price;
* 1-minute log returns = beta x market shock + idiosyncratic shock, each with
  GARCH(1,1) variance on Student-t innovations (heavy tails, volatility
  clustering carried across days), scaled by a U-shaped intraday profile with
  spikes at the two auctions, plus rare jumps;
* net buying by investor class, in shares, summing to zero each day (every
  share bought was sold by someone): foreign net buying is persistent and
  chases the previous day's return (``flow_t = a flow_{t-1} + b r_{t-1} +
  noise``); institutions are persistent and lean against the previous day's
  return; individuals take the other side of both. Foreign buying moves the
  price with a lag: yesterday's final foreign figure (published after
  yesterday's close) drifts today's price, so no report of a day reveals that
  day's drift. The running totals are reported provisionally at 09:30, 11:20,
  13:20 and 14:30 and as final at the close;
* a preferred share whose common share is in the universe (005935 and 005930)
  is priced as the common times ``exp(d)``, where the log-discount ``d`` is an
  Ornstein-Uhlenbeck process around ln(1 - 0.17) with a half-life of weeks,
  kept between a 3% and a 25% discount;
* earnings are announced once a quarter per stock, on a day of its own 20 to
  45 days after the quarter's end (EPS the trailing four quarters, BPS, DPS);
  the price is pulled slowly toward its own usual PER times the announced EPS
  (``value_pull``), so an earnings surprise drifts into the price over weeks;
* every price is on the KRX tick grid and inside the day's limits (base =
  previous close);
* volatility interruptions (DOMAIN.md): a minute that closes more than 3 %
  (KOSPI 200 members; 6 % others) from the last trade, or 10 % from the last
  single price, is followed by a 2-minute single-price auction (one price per
  bar, ``DayBars.vi``).

``SimulatorParams.null()`` is the null world: the same volatility, volume and
flows, but none of the effects a strategy could earn from: no flow impact, no
pull toward value, a preferred discount that walks without reverting, and
prices without drift (log returns less half their variance, so a price's
expected value stays where it is and merely holding earns nothing).

Bar layout of a day (381 bars on a normal day, 09:00-15:30 KST): bars
``0 .. M-1`` are the continuous-session minutes starting at the open
(09:00, 09:01, ..., 15:19); bar 0 opens at the opening auction price and its
volume includes the auction's. Bar ``M`` is the closing auction, stamped at the
close (15:30), with one price (open = high = low = close). ``ts_ns`` is each
bar's start, ns UTC. On late-open days (the calendar's 10:00 opens) M follows
the calendar: M = minutes from open to close - 10.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import numpy.typing as npt

from core import krx
from core.book import bar_quotes
from core.instruments import Instrument

if TYPE_CHECKING:  # pandas only where frames are built: the exchange ticks without it
    import pandas as pd

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

NS_PER_MIN = 60_000_000_000
CLOSING_AUCTION_MINUTES = 10
# Intraday provisional foreign-flow estimates, minutes after a 09:00 open.
PROVISIONAL_FLOW_MINUTES = (30, 140, 260, 330)  # 09:30, 11:20, 13:20, 14:30
BAR_COLUMNS = ("ts_ns", "code", "open", "high", "low", "close", "volume", "value_won")
FLOW_COLUMNS = ("ts_ns", "code", "foreign_net_qty", "institution_net_qty", "individual_net_qty", "provisional")
FUNDAMENTAL_COLUMNS = ("ts_ns", "code", "effective_date", "eps", "bps", "dps")
# earnings come out this many calendar days after a quarter's end, a day of each stock's own in the range
ANNOUNCEMENT_LAG_DAYS = (20, 45)
# an announcement is published at 08:00 KST of its trading day, before the pre-open
ANNOUNCEMENT_BEFORE_OPEN_NS = 3_600_000_000_000


@dataclass(frozen=True, slots=True)
class SimulatorParams:
    """Parameters of the price model; the defaults give KOSPI-like stylised facts."""

    daily_vol: float = 0.019  # daily volatility of a beta-1 large cap (before tick rounding)
    overnight_var_share: float = 0.15  # share of daily variance in the opening gap
    market_var_share: float = 0.35  # share of a beta-1 stock's intraday variance from the market
    kosdaq_vol_scale: float = 1.6  # KOSDAQ names are more volatile
    garch_alpha: float = 0.07
    garch_beta: float = 0.925
    student_df: float = 4.0
    jumps_per_day: float = 0.03  # expected jumps per instrument per day
    jump_sd: float = 0.02
    turnover_kospi: float = 0.0025  # daily volume / shares outstanding
    turnover_kosdaq: float = 0.01
    opening_auction_volume_share: float = 0.03
    closing_auction_volume_share: float = 0.07
    flow_persistence: float = 0.6  # a
    flow_feedback: float = 0.35  # b, per daily standard deviation of the previous return
    flow_size: float = 0.05  # foreign net buying of one flow unit, as a share of daily volume
    flow_impact: float = 0.2  # drift of one unit of yesterday's foreign flow over today, in daily standard deviations
    institution_persistence: float = 0.5
    institution_contrarian: float = 0.25  # institutions sell after a rise, per daily standard deviation
    institution_size: float = 0.04  # institutional net buying of one unit, as a share of daily volume
    pref_discount_mean: float = math.log(1 - 0.17)
    pref_half_life_days: float = 15.0
    pref_discount_sd: float = 0.04  # stationary standard deviation of the log-discount
    pref_discount_min: float = 0.03
    pref_discount_max: float = 0.25
    pref_mean_reversion: bool = True  # False: the log-discount is a random walk with the same daily steps
    drift_free: bool = False  # True: log returns lose half their variance, so the expected price stays where it is
    eps_quarterly_sd: float = 0.08
    value_pull: float = 0.01  # share of the log gap to (usual PER x EPS) the price closes per day
    vi_dynamic_pct_kospi200: float = 3.0  # volatility interruptions (DOMAIN.md): a minute's move from the last trade
    vi_dynamic_pct_other: float = 6.0
    vi_static_pct: float = 10.0  # from the last single price (the base, then the last VI's auction)
    vi_minutes: int = 2  # a VI is this many minutes of single-price auction

    @classmethod
    def null(cls) -> SimulatorParams:
        """The null world: no effect a strategy could earn from, the same volatility, volume and flows."""
        return cls(flow_impact=0.0, value_pull=0.0, pref_mean_reversion=False, drift_free=True)


@dataclass(frozen=True, slots=True)
class DayBars:
    """One simulated trading day: 1-minute bars, foreign flows and fundamentals for every instrument.

    Bar arrays are shaped (instruments, bars) in ``codes`` order, int64 won or shares.
    """

    trading_date: dt.date
    codes: tuple[str, ...]
    ts_ns: I64  # (bars,) bar start, ns UTC; the last bar is the closing auction
    open: I64
    high: I64
    low: I64
    close: I64
    volume: I64
    value_won: I64
    base_price: I64  # (instruments,) previous close: the base of today's limits
    lower_limit: I64
    upper_limit: I64
    flow_ts_ns: I64  # (flow reports,) provisional estimates then the final figure at the close
    foreign_net_qty: I64  # (instruments, flow reports) cumulative net buying so far today, shares
    flow_provisional: npt.NDArray[np.bool_]  # (flow reports,)
    eps: I64  # (instruments,) in force today: changes only on an announcement
    bps: I64
    institution_net_qty: I64 | None = None  # (instruments, flow reports), like foreign_net_qty
    individual_net_qty: I64 | None = None  # minus the other two: each report sums to zero
    dps: I64 | None = None  # (instruments,)
    announced: npt.NDArray[np.bool_] | None = None  # (instruments,) True where earnings came out today
    bid: I64 | None = None  # (instruments, bars) the best bid and ask at each bar's close (core.book's spread rule)
    ask: I64 | None = None
    vi: npt.NDArray[np.bool_] | None = None  # (instruments, bars) True for a bar of a VI's single-price auction

    @property
    def announcement_ts_ns(self) -> int:
        """When today's announcements are published: 08:00 KST, before the pre-open."""
        return int(self.ts_ns[0]) - ANNOUNCEMENT_BEFORE_OPEN_NS

    @property
    def closing_price(self) -> I64:
        """The closing auction price of each instrument: tomorrow's base price."""
        return self.close[:, -1]

    def to_frame(self) -> pd.DataFrame:
        """The bars as a long table sorted by code then time, columns ``BAR_COLUMNS``."""
        import pandas as pd

        n, m = self.close.shape
        return pd.DataFrame(
            {
                "ts_ns": np.tile(self.ts_ns, n),
                "code": pd.Categorical(np.repeat(np.array(self.codes), m), categories=sorted(self.codes)),
                "open": self.open.ravel(),
                "high": self.high.ravel(),
                "low": self.low.ravel(),
                "close": self.close.ravel(),
                "volume": self.volume.ravel(),
                "value_won": self.value_won.ravel(),
            }
        )

    def flows_frame(self) -> pd.DataFrame:
        """The investor flow reports as a long table, columns ``FLOW_COLUMNS``."""
        import pandas as pd

        n, k = self.foreign_net_qty.shape
        zero = np.zeros_like(self.foreign_net_qty)
        inst = self.institution_net_qty if self.institution_net_qty is not None else zero
        indiv = self.individual_net_qty if self.individual_net_qty is not None else -self.foreign_net_qty - inst
        return pd.DataFrame(
            {
                "ts_ns": np.tile(self.flow_ts_ns, n),
                "code": pd.Categorical(np.repeat(np.array(self.codes), k), categories=sorted(self.codes)),
                "foreign_net_qty": self.foreign_net_qty.ravel(),
                "institution_net_qty": inst.ravel(),
                "individual_net_qty": indiv.ravel(),
                "provisional": np.tile(self.flow_provisional, n),
            }
        )

    def fundamentals_frame(self, *, every_code: bool = False) -> pd.DataFrame:
        """Today's announcements (or every code's figures in force), columns ``FUNDAMENTAL_COLUMNS``."""
        import pandas as pd

        mask = np.ones(len(self.codes), bool) if every_code or self.announced is None else self.announced
        idx = np.flatnonzero(mask)
        dps = self.dps if self.dps is not None else np.zeros(len(self.codes), np.int64)
        return pd.DataFrame(
            {
                "ts_ns": np.full(len(idx), self.announcement_ts_ns, np.int64),
                "code": pd.Categorical(np.array(self.codes)[idx], categories=sorted(self.codes)),
                "effective_date": [self.trading_date.strftime("%Y%m%d")] * len(idx),
                "eps": self.eps[idx],
                "bps": self.bps[idx],
                "dps": dps[idx],
            }
        )


@dataclass(slots=True)
class _State:
    """What carries from one simulated day to the next."""

    close: I64
    garch_var: F64  # (instruments + 1,) standardised GARCH variance; the last entry is the market
    flow: F64  # foreign flow in flow units (yesterday's, until today's is drawn)
    institution: F64  # institutional flow in flow units
    last_return_z: F64  # previous day's close-to-close return in daily standard deviations
    pref_log_discount: F64  # one per preferred/common pair
    eps: I64
    bps: I64
    dps: I64
    announced_quarter: I64  # (instruments,) year*4 + quarter of the last quarter announced
    last_date: dt.date | None = None


@dataclass(slots=True)
class _Universe:
    """Per-instrument constants derived once from the instrument rows."""

    codes: tuple[str, ...]
    beta: F64
    daily_vol: F64
    daily_volume: F64
    pref_index: I64  # index of each preferred share with its common in the universe
    common_index: I64
    dividend: I64
    vi_dynamic_pct: F64  # a minute's move from the last trade that halts continuous trading (3 % KOSPI 200, 6 % else)
    usual_log_per: F64  # each stock's own PER at the start (log): where value pulls its price
    announcement_lag: I64  # days after a quarter's end each stock announces


class MarketSimulator:
    """A seeded market of many instruments that advances one XKRX trading day per ``next_day()``."""

    def __init__(
        self,
        instruments: Sequence[Instrument],
        seed: int,
        start_date: dt.date,
        params: SimulatorParams | None = None,
    ) -> None:
        if not instruments:
            raise ValueError("the simulator needs at least one instrument")
        codes = tuple(i.code for i in instruments)
        if len(set(codes)) != len(codes):
            raise ValueError("instrument codes must be unique")
        self.params = params or SimulatorParams()
        self.seed = seed
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x5EED])))
        self._universe = self._build_universe(instruments)
        self._next_date = start_date if krx.is_trading_day(start_date) else krx.next_trading_day(start_date)
        n = len(instruments)
        p = self.params
        common_close = np.array([i.last_close for i in instruments], dtype=np.int64)
        u = self._universe
        ratio = common_close[u.pref_index] / common_close[u.common_index]
        lo, hi = math.log(1 - p.pref_discount_max), math.log(1 - p.pref_discount_min)
        first = self._next_date
        self._state = _State(
            close=common_close,
            garch_var=np.ones(n + 1),
            flow=np.zeros(n),
            institution=np.zeros(n),
            last_return_z=np.zeros(n),
            pref_log_discount=np.clip(np.log(ratio), lo, hi) if len(ratio) else np.zeros(0),
            eps=np.array([i.eps for i in instruments], dtype=np.int64),
            bps=np.array([i.bps for i in instruments], dtype=np.int64),
            dps=np.array([i.dividend for i in instruments], dtype=np.int64),
            # what the master holds counts as the last quarter already out on the first day
            announced_quarter=np.array([_last_announced_quarter(first, int(g)) for g in u.announcement_lag], dtype=np.int64),
        )

    @property
    def codes(self) -> tuple[str, ...]:
        """The instrument codes in the order of every array's first axis."""
        return self._universe.codes

    @property
    def next_date(self) -> dt.date:
        """The trading day the next ``next_day()`` call will produce."""
        return self._next_date

    def _build_universe(self, instruments: Sequence[Instrument]) -> _Universe:
        p = self.params
        codes = tuple(i.code for i in instruments)
        # betas and volume are fixed by the instrument, not by the seed, so a universe is stable
        beta = np.empty(len(instruments))
        vol = np.empty(len(instruments))
        volume = np.empty(len(instruments))
        for k, ins in enumerate(instruments):
            h = np.random.Generator(np.random.PCG64(int.from_bytes(ins.code.encode("ascii"), "big")))
            kosdaq = ins.market == "KOSDAQ"
            beta[k] = 1.0 if ins.code == "005930" else float(h.uniform(0.7, 1.3))
            vol[k] = p.daily_vol * (p.kosdaq_vol_scale if kosdaq else 1.0) * float(h.uniform(0.9, 1.2))
            turnover = p.turnover_kosdaq if kosdaq else p.turnover_kospi
            volume[k] = max(ins.shares_outstanding * turnover * float(h.uniform(0.6, 1.4)), 1_000.0)
        lag = np.array(
            [ANNOUNCEMENT_LAG_DAYS[0] + int.from_bytes(c.encode("ascii"), "big") % (ANNOUNCEMENT_LAG_DAYS[1] - ANNOUNCEMENT_LAG_DAYS[0] + 1)
             for c in codes], dtype=np.int64)
        per = np.array([i.last_close / i.eps if i.eps > 0 else 0.0 for i in instruments])
        index = {c: k for k, c in enumerate(codes)}
        pairs = [(k, index[krx.common_of(c)]) for k, c in enumerate(codes) if krx.is_preferred(c) and krx.common_of(c) in index]
        return _Universe(
            codes=codes,
            beta=beta,
            daily_vol=vol,
            daily_volume=volume,
            pref_index=np.array([a for a, _ in pairs], dtype=np.int64),
            common_index=np.array([b for _, b in pairs], dtype=np.int64),
            dividend=np.array([i.dividend for i in instruments], dtype=np.int64),
            vi_dynamic_pct=np.array([p.vi_dynamic_pct_kospi200 if i.kospi200 else p.vi_dynamic_pct_other for i in instruments]),
            usual_log_per=np.where(per > 0, np.log(np.maximum(per, 1e-9)), np.nan),
            announcement_lag=lag,
        )

    # --- one day ---------------------------------------------------------------

    def next_day(self) -> DayBars:
        """Simulate the next trading day for every instrument and advance the market to it."""
        day = self._next_date
        p, u, s, rng = self.params, self._universe, self._state, self._rng
        open_ns, close_ns = krx.market_hours(day)
        m = (close_ns - open_ns) // NS_PER_MIN - CLOSING_AUCTION_MINUTES  # continuous minutes
        n = len(u.codes)
        nb = m + 1

        announced = self._announce(day)

        # yesterday's final foreign flow drifts today; today's flow is drawn from yesterday's flow and return
        lagged_flow = s.flow
        a = p.flow_persistence
        s.flow = a * s.flow + p.flow_feedback * s.last_return_z + math.sqrt(1 - a * a) * rng.standard_normal(n)
        ai = p.institution_persistence
        s.institution = ai * s.institution - p.institution_contrarian * s.last_return_z + math.sqrt(1 - ai * ai) * rng.standard_normal(n)

        vol_profile, volume_profile = _intraday_profiles(m, p)
        sd_intraday = u.daily_vol * math.sqrt(1 - p.overnight_var_share)
        sd_market = p.daily_vol * math.sqrt((1 - p.overnight_var_share) * p.market_var_share)
        sd_idio = sd_intraday * math.sqrt(1 - p.market_var_share)

        # Student-t innovations scaled to unit variance, GARCH(1,1) through the day
        t_scale = math.sqrt((p.student_df - 2) / p.student_df)
        z = rng.standard_t(p.student_df, size=(nb, n + 1)) * t_scale
        shocks = _garch_filter(z, s.garch_var, p.garch_alpha, p.garch_beta)
        unit = vol_profile[:, None]
        returns = (shocks[:, :n] * sd_idio + shocks[:, n : n + 1] * (sd_market * u.beta)) * unit
        jumps = rng.random((nb, n)) < p.jumps_per_day / nb
        returns += np.where(jumps, rng.standard_normal((nb, n)) * p.jump_sd, 0.0)
        if p.drift_free:
            # a log walk's price drifts up by half its variance: take it out, so that holding earns nothing on average
            bar_var = (sd_idio**2 + (sd_market * u.beta) ** 2)[None, :] * (vol_profile**2)[:, None] + p.jumps_per_day / nb * p.jump_sd**2
            returns -= 0.5 * bar_var
        returns += (p.flow_impact * lagged_flow * u.daily_vol) * volume_profile[:, None]
        if p.value_pull:
            # a slow pull toward each stock's usual PER times its EPS in force: earnings surprises drift in
            gap_to_value = np.where(
                np.isfinite(u.usual_log_per) & (s.eps > 0),
                u.usual_log_per + np.log(np.maximum(s.eps, 1)) - np.log(s.close.astype(np.float64)),
                0.0,
            )
            returns += (p.value_pull * gap_to_value) * volume_profile[:, None]

        # overnight gap and the opening auction
        sd_gap = math.sqrt(p.overnight_var_share)
        g = rng.standard_t(p.student_df, size=n + 1) * t_scale * sd_gap
        gap = u.daily_vol * g[:n] * math.sqrt(1 - p.market_var_share) + p.daily_vol * math.sqrt(p.market_var_share) * u.beta * g[n]
        if p.drift_free:
            gap -= 0.5 * p.overnight_var_share * (u.daily_vol**2 * (1 - p.market_var_share) + p.daily_vol**2 * p.market_var_share * u.beta**2)
        base = s.close.astype(np.float64)
        log_path = np.log(base)[None, :] + gap[None, :] + np.cumsum(returns, axis=0)  # (nb, n) close of each bar
        open_log = np.log(base) + gap

        # the preferred leg rides its common share with an OU log-discount
        if len(u.pref_index):
            d_path = self._pref_discount_path(nb)
            log_path[:, u.pref_index] = log_path[:, u.common_index] + d_path
            open_log[u.pref_index] = open_log[u.common_index] + d_path[0]

        lower, upper = krx.limit_prices_array(s.close)
        close_px = _on_grid_within(np.exp(log_path.T), lower, upper)  # (n, nb)
        auction_open = _on_grid_within(np.exp(open_log)[:, None], lower, upper)[:, 0]
        open_px = np.empty_like(close_px)
        open_px[:, 0] = auction_open
        open_px[:, 1:] = close_px[:, :-1]
        open_px[:, -1] = close_px[:, -1]  # the closing auction has one price

        # intra-minute range from the minute's own volatility
        minute_sd = np.sqrt(shocks[:, :n] ** 2 * sd_idio**2 + (shocks[:, n : n + 1] * sd_market * u.beta) ** 2).T * vol_profile[None, :]
        excursion = np.abs(rng.standard_normal((2, n, nb))) * (0.6 * minute_sd)
        hi_body = np.maximum(open_px, close_px)
        lo_body = np.minimum(open_px, close_px)
        high = np.maximum(_on_grid_within(hi_body * np.exp(excursion[0]), lower, upper), hi_body)
        low = np.minimum(_on_grid_within(lo_body * np.exp(-excursion[1]), lower, upper), lo_body)
        high[:, -1] = close_px[:, -1]
        low[:, -1] = close_px[:, -1]
        # (the bar after an auction opens at its price: its open is the auction bar's close)
        vi = _volatility_interruptions(open_px, high, low, close_px, s.close, u.vi_dynamic_pct, p.vi_static_pct, m, p.vi_minutes)

        # volume: U-shaped, busier on volatile minutes and on days with large flows or gaps
        day_activity = np.exp(0.25 * rng.standard_normal(n) + 0.3 * np.abs(s.flow) + 8.0 * np.abs(gap))
        # divide by roughly the mean of that factor (E|x| ~ 0.8 sd) so daily volume stays near its average
        day_activity /= np.exp(0.25**2 / 2 + 0.3 * 0.8 + 8.0 * 0.8 * u.daily_vol * sd_gap)
        intensity = np.abs(returns.T) / np.maximum(minute_sd, 1e-12)
        noise = np.exp(0.35 * rng.standard_normal((n, nb)) - 0.35**2 / 2)
        volume = (u.daily_volume * day_activity)[:, None] * volume_profile[None, :] * noise * (0.5 + 0.4 * np.minimum(intensity, 5.0))
        volume = np.maximum(np.rint(volume), 1).astype(np.int64)
        value_won = volume * (open_px + high + low + close_px) // 4

        ts = open_ns + np.arange(nb, dtype=np.int64) * NS_PER_MIN
        ts[-1] = close_ns

        flow_ts, flow_qty, inst_qty, provisional = self._flow_reports(open_ns, close_ns, m, volume, u)

        # the book's best quotes at each bar's close: a spread that widens with the minute's volatility and
        # near the open and the auction (the closing auction's bar quotes as the session's last minute)
        k_bar = np.arange(nb, dtype=np.float64)
        bid, ask = bar_quotes(close_px, minute_sd, np.minimum(k_bar + 1, m), np.maximum(m - 1 - k_bar, 0.0),
                              prev_close=auction_open, lower=lower, upper=upper)

        closing = close_px[:, -1]
        s.last_return_z = np.log(closing / base) / u.daily_vol
        s.close = closing.copy()
        s.last_date = day
        self._next_date = krx.next_trading_day(day)
        return DayBars(
            trading_date=day,
            codes=u.codes,
            ts_ns=ts,
            open=open_px,
            high=high,
            low=low,
            close=close_px,
            volume=volume,
            value_won=value_won,
            base_price=base.astype(np.int64),
            lower_limit=lower,
            upper_limit=upper,
            flow_ts_ns=flow_ts,
            foreign_net_qty=flow_qty,
            flow_provisional=provisional,
            eps=s.eps.copy(),
            bps=s.bps.copy(),
            institution_net_qty=inst_qty,
            individual_net_qty=-flow_qty - inst_qty,
            dps=s.dps.copy(),
            announced=announced,
            bid=bid,
            ask=ask,
            vi=vi,
        )

    def _pref_discount_path(self, nb: int) -> F64:
        """Today's log-discount of each preferred share for every bar: an OU step bridged through the day."""
        p, s, rng = self.params, self._state, self._rng
        k = len(s.pref_log_discount)
        theta = math.log(2) / p.pref_half_life_days
        decay = math.exp(-theta)
        d0 = s.pref_log_discount
        step = p.pref_discount_sd * math.sqrt(1 - decay * decay) * rng.standard_normal(k)
        d1 = p.pref_discount_mean + (d0 - p.pref_discount_mean) * decay + step if p.pref_mean_reversion else d0 + step
        lo, hi = math.log(1 - p.pref_discount_max), math.log(1 - p.pref_discount_min)
        d1 = np.clip(d1, lo, hi)
        frac = (np.arange(1, nb + 1) / nb)[:, None]
        walk = np.cumsum(rng.standard_normal((nb, k)), axis=0) * (0.004 / math.sqrt(nb))
        bridge = walk - frac * walk[-1]
        s.pref_log_discount = d1
        return np.clip(d0 + (d1 - d0) * frac + bridge, lo, hi)

    def _flow_reports(self, open_ns: int, close_ns: int, m: int, volume: I64, u: _Universe) -> tuple[I64, I64, I64, npt.NDArray[np.bool_]]:
        """Running totals of foreign and institutional net buying at the provisional times and at the close.

        Individuals' figure is minus the sum of these two in every report.
        """
        p, s, rng = self.params, self._state, self._rng
        minutes = [k for k in PROVISIONAL_FLOW_MINUTES if k < m]
        cum_volume = np.cumsum(volume, axis=1)
        share = cum_volume[:, minutes] / cum_volume[:, -1:]  # share of the day's volume traded so far
        ts = np.array([open_ns + k * NS_PER_MIN for k in minutes] + [close_ns], dtype=np.int64)
        provisional = np.array([True] * len(minutes) + [False])

        def reports(daily_net: F64) -> I64:
            noise = rng.standard_normal((len(daily_net), len(minutes))) * 0.15 * np.abs(daily_net)[:, None]
            provisional_qty = daily_net[:, None] * share + noise * np.sqrt(share * (1 - share))
            return np.rint(np.concatenate([provisional_qty, daily_net[:, None]], axis=1)).astype(np.int64)

        foreign = reports(s.flow * p.flow_size * u.daily_volume)
        institution = reports(s.institution * p.institution_size * u.daily_volume)
        return ts, foreign, institution, provisional

    def _announce(self, day: dt.date) -> npt.NDArray[np.bool_]:
        """Earnings of the stocks whose announcement day for the last quarter has come: which announced today.

        EPS (trailing four quarters) grows by a random surprise, BPS by a
        quarter of EPS less dividends, DPS is paid out at the stock's usual
        ratio of EPS.
        """
        s, u = self._state, self._universe
        by_lag = {g: _last_announced_quarter(day, g) for g in set(u.announcement_lag.tolist())}  # a few lags, many codes
        due = np.array([by_lag[g] for g in u.announcement_lag.tolist()], dtype=np.int64)
        announced = due > s.announced_quarter
        if announced.any():
            k = int(announced.sum())
            growth = np.exp(0.01 + self.params.eps_quarterly_sd * self._rng.standard_normal(k))
            eps = s.eps[announced]
            payout = np.where(eps > 0, u.dividend[announced] / np.maximum(eps, 1), 0.0)
            s.bps[announced] = np.maximum(s.bps[announced] + (eps - s.dps[announced]) // 4, 1)
            new_eps = np.rint(eps * growth).astype(np.int64)
            s.eps[announced] = new_eps
            s.dps[announced] = np.maximum(np.rint(np.maximum(new_eps, 0) * payout), 0).astype(np.int64)
            s.announced_quarter[announced] = due[announced]
        return announced


def _volatility_interruptions(open_: I64, high: I64, low: I64, close: I64, base: I64, dynamic_pct: F64,
                              static_pct: float, m: int, minutes: int = 2) -> npt.NDArray[np.bool_]:
    """Volatility interruptions in a day's continuous bars, in place: which bars are a VI's auction.

    A continuous minute whose close moved more than ``dynamic_pct`` percent from
    the last trade before it (the previous close; the opening price for the
    first minute), or more than ``static_pct`` from the last single price (the
    base price, then the last VI's), halts continuous trading: the next
    ``minutes`` bars are a single-price auction, one price (open = high = low
    = close) at which it crosses when it ends, with the minutes' volume. The
    closing auction (bar ``m``) is not touched. Candidates are found for all
    codes at once; only codes with one are walked minute by minute.
    """
    vi = np.zeros(close.shape, dtype=bool)
    cont = close[:, :m].astype(np.float64)
    prev = np.concatenate([open_[:, :1], close[:, : m - 1]], axis=1).astype(np.float64)
    dyn = np.abs(cont / prev - 1.0) * 100.0 > dynamic_pct[:, None]
    static = np.abs(cont / base[:, None] - 1.0) * 100.0 > static_pct
    for i in np.flatnonzero((dyn | static).any(axis=1)):
        ref = float(base[i])
        k = 0
        while k < m:
            last = float(open_[i, 0] if k == 0 else close[i, k - 1])
            c = float(close[i, k])
            if abs(c / last - 1.0) * 100.0 > dynamic_pct[i] or abs(c / ref - 1.0) * 100.0 > static_pct:
                end = min(k + minutes, m - 1)
                if end > k:
                    px = close[i, end]  # the auction crosses where the market is when it ends
                    open_[i, k + 1 : end + 1] = px
                    high[i, k + 1 : end + 1] = px
                    low[i, k + 1 : end + 1] = px
                    close[i, k + 1 : end + 1] = px
                    vi[i, k + 1 : end + 1] = True
                    ref = float(px)
                k = end + 1
            else:
                k += 1
    return vi


def _last_announced_quarter(day: dt.date, lag_days: int) -> int:
    """The latest quarter (year*4 + quarter index) whose results a stock announcing ``lag_days`` after a
    quarter's end has published by ``day``."""
    q = day.year * 4 + (day.month - 1) // 3 - 1  # the quarter before the current one
    while True:
        year, index = divmod(q, 4)
        end = dt.date(year + (index == 3), (index * 3 + 3) % 12 + 1, 1) - dt.timedelta(days=1)
        if end + dt.timedelta(days=lag_days) <= day:
            return q
        q -= 1


def _intraday_profiles(m: int, p: SimulatorParams) -> tuple[F64, F64]:
    """Per-bar volatility (std, summing to one day's variance) and volume shares (summing to 1), U-shaped.

    The opening minute and the closing auction (which absorbs ten minutes of news) spike.
    """
    k = np.arange(m, dtype=np.float64)
    u_shape = 1.0 + 2.0 * np.exp(-k / 12.0) + 0.8 * np.exp(-(m - 1 - k) / 20.0)
    var = np.append(u_shape**2, 10.0 * 1.5**2)  # closing auction: ten minutes at late-session volatility
    vol_profile = np.sqrt(var / var.sum())
    vshape = 1.0 + 2.5 * np.exp(-k / 15.0) + 1.5 * np.exp(-(m - 1 - k) / 25.0)
    cont = vshape / vshape.sum() * (1 - p.opening_auction_volume_share - p.closing_auction_volume_share)
    cont[0] += p.opening_auction_volume_share
    return vol_profile, np.append(cont, p.closing_auction_volume_share)


def _garch_filter(z: F64, var: F64, alpha: float, beta: float) -> F64:
    """GARCH(1,1) shocks for innovations ``z`` (bars x series); updates ``var`` in place to the end state.

    Variance is standardised (unconditional 1): h' = (1 - alpha - beta) + alpha e^2 + beta h.
    """
    omega = 1.0 - alpha - beta
    out = np.empty_like(z)
    h = var.copy()
    for k in range(z.shape[0]):
        e = np.sqrt(h) * z[k]
        out[k] = e
        h = omega + alpha * e * e + beta * h
        np.minimum(h, 50.0, out=h)  # a cap keeps one extreme draw from exploding the variance
    var[:] = h
    return out


def _on_grid_within(prices: F64, lower: I64, upper: I64) -> I64:
    """Round prices (instruments x bars) to the nearest tick, inside each instrument's limits."""
    lo = lower.reshape(-1, *([1] * (prices.ndim - 1)))
    hi = upper.reshape(-1, *([1] * (prices.ndim - 1)))
    return np.clip(krx.round_to_tick_array(prices), lo, hi)


# --- many days at once --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class World:
    """Everything a simulated market said over some days, as long tables (see ``simulate_world``)."""

    bars: pd.DataFrame  # BAR_COLUMNS, sorted by day, code, time
    flows: pd.DataFrame  # FLOW_COLUMNS
    fundamentals: pd.DataFrame  # FUNDAMENTAL_COLUMNS: every code's figures on the first day, then each announcement


def simulate(
    instruments: Sequence[Instrument],
    seed: int,
    start_date: dt.date,
    days: int,
    params: SimulatorParams | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(bars, flows) for a number of trading days: long tables sorted by day, then code, then time."""
    world = simulate_world(instruments, seed, start_date, days, params)
    return world.bars, world.flows


def simulate_world(
    instruments: Sequence[Instrument],
    seed: int,
    start_date: dt.date,
    days: int,
    params: SimulatorParams | None = None,
) -> World:
    """Bars, investor flows and earnings announcements for a number of trading days."""
    import pandas as pd

    sim = MarketSimulator(instruments, seed, start_date, params)
    dates: list[dt.date] = []
    for _ in range(max(days, 0)):
        dates.append(krx.next_trading_day(dates[-1]) if dates else sim.next_date)
    hours = [krx.market_hours(d) for d in dates]
    bars_per_day = [(c - o) // NS_PER_MIN - CLOSING_AUCTION_MINUTES + 1 for o, c in hours]
    n = len(sim.codes)
    categories = sorted(sim.codes)
    code_ids = np.array([categories.index(c) for c in sim.codes], dtype=np.int32)
    # columns are filled day by day in place: no list of days and no big concatenation held in memory
    rows = n * sum(bars_per_day)
    columns = {name: np.empty(rows, dtype=np.int64) for name in ("ts_ns", "open", "high", "low", "close", "volume", "value_won")}
    code_col = np.empty(rows, dtype=np.int32)
    flow_parts: list[tuple[I64, I64, I64, I64, I64, npt.NDArray[np.bool_]]] = []
    fund_parts: list[pd.DataFrame] = []
    at = 0
    for nb in bars_per_day:
        day = sim.next_day()
        fund_parts.append(day.fundamentals_frame(every_code=not fund_parts))
        size = n * nb
        columns["ts_ns"][at : at + size] = np.tile(day.ts_ns, n)
        code_col[at : at + size] = np.repeat(code_ids, nb)
        for name in ("open", "high", "low", "close", "volume", "value_won"):
            columns[name][at : at + size] = getattr(day, name).ravel()
        k = len(day.flow_ts_ns)
        assert day.institution_net_qty is not None and day.individual_net_qty is not None
        flow_parts.append((np.tile(day.flow_ts_ns, n), np.repeat(code_ids, k), day.foreign_net_qty.ravel(),
                           day.institution_net_qty.ravel(), day.individual_net_qty.ravel(), np.tile(day.flow_provisional, n)))
        at += size
    bars = pd.DataFrame(
        {
            "ts_ns": columns["ts_ns"],
            "code": pd.Categorical.from_codes(code_col, categories=categories),
            **{name: columns[name] for name in ("open", "high", "low", "close", "volume", "value_won")},
        },
        copy=False,
    )
    flows = pd.DataFrame(
        {
            "ts_ns": np.concatenate([f[0] for f in flow_parts]) if flow_parts else np.zeros(0, np.int64),
            "code": pd.Categorical.from_codes(
                np.concatenate([f[1] for f in flow_parts]) if flow_parts else np.zeros(0, np.int32), categories=categories
            ),
            "foreign_net_qty": np.concatenate([f[2] for f in flow_parts]) if flow_parts else np.zeros(0, np.int64),
            "institution_net_qty": np.concatenate([f[3] for f in flow_parts]) if flow_parts else np.zeros(0, np.int64),
            "individual_net_qty": np.concatenate([f[4] for f in flow_parts]) if flow_parts else np.zeros(0, np.int64),
            "provisional": np.concatenate([f[5] for f in flow_parts]) if flow_parts else np.zeros(0, bool),
        }
    )
    fundamentals = pd.concat(fund_parts, ignore_index=True) if fund_parts else pd.DataFrame({c: [] for c in FUNDAMENTAL_COLUMNS})
    if fund_parts:
        fundamentals["code"] = fundamentals["code"].astype(str)
    return World(bars, flows, fundamentals)


# --- ticks inside a bar -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ticks:
    """Trade prints inside one bar: parallel arrays of time (ns UTC), price (won) and quantity (shares)."""

    ts_ns: I64
    price: I64
    qty: I64


def ticks_from_bar(
    code: str,
    ts_ns: int,
    open_: int,
    high: int,
    low: int,
    close: int,
    volume: int,
    seed: int,
    interval_s: int = 60,
    max_ticks: int = 60,
) -> Ticks:
    """Expand a bar into trade prints that reproduce it exactly, deterministic by seed, code and time.

    The first print is at the bar's start at the open, the last at the close; the
    high and the low are each printed; quantities sum to the volume; every price
    is on the tick grid. An auction bar (one price) or a bar of one share gives a
    single print. A live feed steps through a bar's prints as market time passes.
    """
    if volume < 1:
        return Ticks(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if not low <= min(open_, close) <= max(open_, close) <= high:
        raise ValueError(f"bar of {code} at {ts_ns} is not a valid OHLC: {open_} {high} {low} {close}")
    if high == low or volume == 1:
        return Ticks(np.array([ts_ns], np.int64), np.array([close], np.int64), np.array([volume], np.int64))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, int.from_bytes(code.encode("ascii"), "big"), ts_ns])))
    must = 2 + (high > max(open_, close)) + (low < min(open_, close))
    n = int(min(volume, max(must, min(max_ticks, 4 + rng.poisson(12)))))
    if n < must:  # too few shares to print every extreme: keep open and close, drop the range
        n = min(volume, 2)
        price = np.array([open_, close][:n], np.int64) if n == 2 else np.array([close], np.int64)
    else:
        frac = np.linspace(0.0, 1.0, n)
        walk = np.cumsum(rng.standard_normal(n))
        bridge = walk - walk[0] - frac * (walk[-1] - walk[0])
        span = max(high - low, 1)
        path = open_ + (close - open_) * frac + bridge * span / max(4.0, math.sqrt(n) * 2.0)
        path = np.clip(path, low, high)
        price = krx.round_to_tick_array(path)
        price = np.clip(price, low, high)
        price[0], price[-1] = open_, close
        inner = rng.permutation(np.arange(1, n - 1))
        slot = 0
        if high > max(open_, close):
            price[inner[slot]] = high
            slot += 1
        if low < min(open_, close):
            price[inner[slot]] = low
    qty = 1 + rng.multinomial(volume - n, np.full(n, 1.0 / n)).astype(np.int64)
    offsets = np.sort(rng.integers(1, interval_s * 1_000_000_000, size=n - 1))
    times = ts_ns + np.concatenate([[0], offsets])
    times = times + np.arange(n)  # strictly increasing even if two offsets coincide
    return Ticks(times.astype(np.int64), price.astype(np.int64), qty)


# --- universes ------------------------------------------------------------------


def synthetic_instruments(count: int, seed: int = 0, first_code: int = 9000) -> list[Instrument]:
    """Made-up instruments (codes 9xxxx0, unlisted on KRX) to scale the simulator beyond the master."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out: list[Instrument] = []
    for k in range(count):
        code = f"{first_code + k:05d}0"
        if len(code) != 6:
            raise ValueError(f"cannot make {count} synthetic codes from {first_code}")
        close = krx.round_to_tick(float(np.exp(rng.uniform(math.log(3_000), math.log(600_000)))))
        kosdaq = bool(rng.random() < 0.4)
        eps = max(int(close / rng.uniform(6, 40)), 1)
        out.append(
            Instrument(
                code=code,
                name=f"Synthetic {k}",
                market="KOSDAQ" if kosdaq else "KOSPI",
                sector="Synthetic",
                shares_outstanding=int(np.exp(rng.uniform(math.log(2e7), math.log(1e9)))),
                eps=eps,
                bps=int(eps * rng.uniform(5, 15)),
                dividend=int(eps * rng.uniform(0, 0.3)),
                last_close=close,
                kospi200=not kosdaq,
            )
        )
    return out


def universe(master: Sequence[Instrument], count: int, seed: int = 0) -> list[Instrument]:
    """The master's instruments topped up with synthetic ones to ``count`` (or the first ``count`` of the master)."""
    rows = list(master)[:count]
    return rows + synthetic_instruments(count - len(rows), seed) if count > len(rows) else rows


__all__ = [
    "BAR_COLUMNS",
    "FLOW_COLUMNS",
    "FUNDAMENTAL_COLUMNS",
    "DayBars",
    "MarketSimulator",
    "SimulatorParams",
    "Ticks",
    "simulate",
    "simulate_world",
    "World",
    "synthetic_instruments",
    "ticks_from_bar",
    "universe",
]
