"""Foreign follower: it acts on what each report adds to the day's running total, and only once the report is known."""

from __future__ import annotations

from agents.context import OrderIntent
from agents.strategy import BarData, FlowData
from tests.agents.conftest import MINUTE, T0, execute, make_ctx

HYNIX = "000660"
DAY = 86_400_000_000_000
FF = {"entry_share": 0.05, "hold_share": 0.02, "trail_pct": 0.05, "max_hold_days": 5}
REPORT_MINUTES = (30, 140, 260, 330)  # 09:30, 11:20, 13:20, 14:30
CLOSE_MINUTE = 390  # 15:30, the final figure's stamp


def day_bar(day: int, minute: int, close: int = 170_000, volume: int = 10_000) -> BarData:
    ts = T0 + day * DAY + minute * MINUTE
    return BarData(HYNIX, ts, close, close, close, close, volume)


def run_day(ctx, day: int, totals: list[int], final: int | None, close: int = 170_000) -> list[tuple[int, OrderIntent]]:
    """A day of one-minute bars of 10,000 shares with the provisional running totals at their minutes and the final at the close."""
    sent = []
    reports = dict(zip(REPORT_MINUTES, totals))
    for minute in range(CLOSE_MINUTE + 1):
        if minute in reports:
            ctx.on_flow(FlowData(HYNIX, T0 + day * DAY + minute * MINUTE, reports[minute], provisional=True))
            sent += [(minute, o) for o in execute(ctx)]
        if minute == CLOSE_MINUTE and final is not None:
            ctx.on_flow(FlowData(HYNIX, T0 + day * DAY + minute * MINUTE, final, provisional=False))
            sent += [(minute, o) for o in execute(ctx)]
        if minute < 380 or minute == CLOSE_MINUTE:  # the continuous minutes, then the closing auction
            ctx.on_bar(day_bar(day, minute, close))
            sent += [(minute, o) for o in execute(ctx)]
    return [(m, o) for m, o in sent if isinstance(o, OrderIntent)]


def test_a_report_adds_its_change_from_the_previous_report_of_the_day_not_its_running_total() -> None:
    ctx = make_ctx("foreign_follower", [HYNIX], params=FF)
    # running totals 30k, 60k, 90k, 120k: each report adds 30k, the day's total is 120k (not 300k, their sum)
    run_day(ctx, 0, [30_000, 60_000, 90_000, 120_000], final=120_000)
    state = ctx.strategy.state()
    assert state["day_total"] == 120_000
    assert state["last_share"] == 0  # the final added nothing to the 14:30 figure
    assert abs(state["day_share"] - 120_000 / (380 * 10_000)) < 1e-9
    # a new day starts from 0: its first report's change is the report itself
    ctx.on_bar(day_bar(1, 0))
    execute(ctx)
    ctx.on_flow(FlowData(HYNIX, T0 + DAY + 30 * MINUTE, -5_000, provisional=True))
    assert ctx.strategy.state()["day_total"] == -5_000 and ctx.strategy.state()["last_share"] == -5_000 / 10_000


def test_strong_foreign_buying_is_bought_once_known_and_held_while_it_lasts() -> None:
    ctx = make_ctx("foreign_follower", [HYNIX], cash=50_000_000, params=FF)
    # day 0: modest at 14:30 (2.6% of the volume), strong in the final figure (6%) -- published after the close
    sent = run_day(ctx, 0, [20_000, 40_000, 60_000, 85_000], final=228_000)
    assert sent == []  # nothing on the day the figure describes
    sent = run_day(ctx, 1, [50_000, 100_000, 150_000, 200_000], final=250_000)
    [(minute, buy)] = sent[:1]
    assert minute == 0 and buy.side == "buy"  # the next day's first bar
    assert [o.side for _, o in sent] == ["buy"]  # 200k of 3.3M at 14:30 is 6%: kept overnight
    assert ctx.position(HYNIX) == buy.qty > 0
    # day 2: foreigners turn sellers; at 14:30 the day's share is negative: sold at once
    sent = run_day(ctx, 2, [-20_000, -40_000, -60_000, -80_000], final=-90_000)
    assert [(m, o.side) for m, o in sent] == [(330, "sell")] and ctx.position(HYNIX) == 0
    assert ctx.strategy.state()["exits"]["reversal"] == 1


def test_weak_or_selling_flows_are_not_bought() -> None:
    ctx = make_ctx("foreign_follower", [HYNIX], params=FF)
    assert run_day(ctx, 0, [5_000, 10_000, 15_000, 20_000], final=30_000) == []  # 0.8% of the volume
    assert run_day(ctx, 1, [-100_000, -200_000, -300_000, -400_000], final=-500_000) == []
    assert run_day(ctx, 2, [0, 0, 0, 0], final=0) == []
    assert ctx.position(HYNIX) == 0


def test_the_last_provisional_report_is_acted_on_at_once() -> None:
    ctx = make_ctx("foreign_follower", [HYNIX], cash=50_000_000, params=FF)
    sent = run_day(ctx, 0, [50_000, 100_000, 150_000, 200_000], final=None)
    assert [(m, o.side) for m, o in sent] == [(330, "buy")]


def test_a_trailing_stop_sells_a_holding_whose_price_falls() -> None:
    ctx = make_ctx("foreign_follower", [HYNIX], cash=50_000_000, params=FF)
    run_day(ctx, 0, [50_000, 100_000, 150_000, 200_000], final=250_000)
    assert ctx.position(HYNIX) > 0
    sent = []
    for k, close in enumerate([170_000, 168_000, 165_000, 161_000, 160_000]):
        ctx.on_bar(day_bar(1, k, close))
        sent += [o for o in execute(ctx) if isinstance(o, OrderIntent)]
    assert [o.side for o in sent] == ["sell"] and sent[0].price == 161_000
    assert ctx.strategy.state()["exits"]["trailing_stop"] == 1
