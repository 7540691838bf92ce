"""A strategy's state survives a restart: saved, refused when it is not its own, restored, warmed up.

Every strategy's ``save_state`` goes through msgpack and back into a fresh
strategy that then decides exactly as the original would; a state from another
strategy, other params, another version, or bytes that are not a state is
refused with the reason and an alert, and the strategy starts fresh. The
back-tester tears agents down mid-day and starts them again from their saved
state and the recorded bars, and the orders are those of the run left alone.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import state_store
from agents.context import AgentContext, OrderIntent
from agents.state_store import SavedState
from agents.strategy import STRATEGIES, BarData, FlowData, OrderEventData, StateError, Strategy, get_strategy
from backtest.data import MarketData, from_simulator
from backtest.engine import AgentSpec, Backtest, Restart
from tests.agents.conftest import INSTRUMENTS, MINUTE, T0, execute, make_ctx

COMMON, PREF = "005930", "005935"

# Per strategy: codes and params small enough that a few dozen bars make it trade.
CASES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "pair_arbitrage": ([COMMON, PREF], {"sample_bars": 1, "min_samples": 10, "max_samples": 40, "window_half_lives": 1.0,
                                        "max_half_life_days": 10_000.0, "entry_z": 1.0, "exit_z": 0.2, "cost_multiple": 0.0}),
    "foreign_follower": (["000660"], {"entry_share": 0.0001, "hold_share": 0.0}),
    "volatility_tracker": ([COMMON], {"fair_per": 50.0, "warmup": 5, "fast_halflife": 3, "slow_halflife": 12}),
    "volume_trigger": (["035720"], {"lookback": 4, "surge_ratio": 1.5, "min_move": 0.0}),
    "per_valuation": (["005380"], {"low_per": 5.0, "high_per": 7.0, "step_pct": 0.01, "max_steps": 3}),
    "slow_trend": (["000660"], {"window": 30, "eval_every": 2, "t_entry": 0.5, "t_exit": 0.0, "cost_multiple": 0.0}),
    "sma_cross": ([COMMON], {"fast": 2, "slow": 4, "qty": 10}),
}


def test_every_strategy_that_keeps_state_has_a_case_here() -> None:
    # a strategy that keeps nothing (the base class's default) needs no case
    assert {name for name, cls in STRATEGIES.items() if cls.save_state is not Strategy.save_state} == set(CASES)


def bars_for(codes: list[str], steps: list[tuple[int, int]], first: int = 0) -> list[BarData]:
    """One bar per code per minute; each step moves the price (in per mille of the start) and sets the volume."""
    out = []
    for n, code in enumerate(codes):
        price = INSTRUMENTS[code].last_close
        for i, (move, volume) in enumerate(steps):
            price = max(100, price + price * move // 1000)
            if n:  # the second leg moves a little on its own
                price = max(100, price - price * ((i * 7) % 5 - 2) // 1000)
            out.append(BarData(code, T0 + (first + i) * MINUTE, price, price, price, price, volume))
    return sorted(out, key=lambda b: (b.ts_ns, b.code))


def feed(ctx: AgentContext, bars: list[BarData]) -> list[tuple[str, str, int, int]]:
    """Bars (and a flow report every third minute) through the context, executing its orders; returns the orders."""
    sent = []
    for b in bars:
        if (b.ts_ns - T0) // MINUTE % 3 == 0 and b.code == ctx.codes[0]:
            ctx.on_flow(FlowData(b.code, b.ts_ns, b.volume // 2 - 4_000))
        ctx.on_bar(b)
        sent += [(o.side, o.code, o.qty, o.price) for o in execute(ctx) if isinstance(o, OrderIntent)]
    return sent


def windows(ctx: AgentContext, codes: list[str]) -> list[list[list[int]]]:
    return [[column.tolist() for column in ctx.bars(c, 1024)] for c in codes]


def restarted(ctx: AgentContext, saved: SavedState | None, recorded: list[BarData]) -> AgentContext:
    """A new context and strategy around a copy of ``ctx``'s book, resumed from ``saved`` and warmed with ``recorded``."""
    strategy = get_strategy(ctx.strategy.name)(ctx.strategy.params)
    new = AgentContext(ctx.agent_id, ctx.codes, strategy, copy.deepcopy(ctx.portfolio), INSTRUMENTS)
    new.resume_order_seq(*ctx.order_seq())
    new.resume(saved)
    new.queue_warm_up(recorded)
    new.start()
    return new


steps = st.lists(st.tuples(st.integers(-25, 25), st.integers(1, 30_000)), min_size=4, max_size=60)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=steps, after=steps)
def test_a_saved_state_goes_through_msgpack_and_the_restored_strategy_decides_as_the_original(
    name: str, before: list[tuple[int, int]], after: list[tuple[int, int]]
) -> None:
    codes, params = CASES[name]
    ctx = make_ctx(name, codes, params=params)
    first = bars_for(codes, before)
    feed(ctx, first)
    saved = state_store.decode(state_store.encode(ctx.save_state()))
    assert saved.state == ctx.strategy.save_state()
    new = restarted(ctx, saved, first)
    assert new.resumed["restored"] is True and new.resumed["replayed_bars"] == 0
    assert new.strategy.save_state() == ctx.strategy.save_state()
    assert new.strategy.state() == ctx.strategy.state()
    assert windows(new, codes) == windows(ctx, codes)
    assert new.flows(codes[0], 1024) == ctx.flows(codes[0], 1024)
    later = bars_for(codes, after, first=len(before))
    assert feed(new, later) == feed(ctx, later)
    assert new.strategy.save_state() == ctx.strategy.save_state()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bars_after_the_save_are_replayed_to_the_strategy_with_trading_refused(name: str) -> None:
    codes, params = CASES[name]
    ctx = make_ctx(name, codes, params=params)
    moves = [((i * 37) % 41 - 20, 1_000 + (i * 7919) % 20_000) for i in range(60)]
    recorded = bars_for(codes, moves)
    cut = len(recorded) // 2
    feed(ctx, recorded[:cut])
    saved = ctx.save_state()
    # the agent went on without trading (its orders refused), then died: its last save is older than its last bar
    ctx._warming = True
    for b in recorded[cut:]:
        ctx.on_bar(b)
    ctx._warming = False
    new = restarted(ctx, saved, recorded)
    assert new.resumed["replayed_bars"] == len(recorded) - cut
    assert new.drain_outbox() == []
    assert new.strategy.save_state() == ctx.strategy.save_state()


def test_an_order_the_strategy_asks_for_during_the_warm_up_is_refused_warming_up() -> None:
    codes, params = ["005380"], {"low_per": 5.0, "high_per": 7.0}
    ctx = make_ctx("per_valuation", codes, params=params)
    saved = ctx.save_state()  # saved before any bar: every recorded bar is newer
    new = AgentContext("t1", codes, get_strategy("per_valuation").from_params(params), ctx.portfolio, INSTRUMENTS)
    new.resume(saved)
    new.queue_warm_up(bars_for(codes, [(0, 10_000)] * 3))
    new.start()
    # PER is below the band on each of them: each asked for a buy step, each was refused (no step taken)
    assert new.resumed["replayed_bars"] == 3 and new.drain_outbox() == []
    assert new.strategy.buy_steps == 0 and new.strategy.per < 5.0  # type: ignore[attr-defined]
    assert new.buy("005380", 1, 200_000).ok, "trading resumes after the warm-up"


def test_per_valuation_restored_while_holding_does_not_buy_its_steps_again() -> None:
    codes, params = ["005380"], {"low_per": 5.0, "high_per": 7.0, "step_pct": 0.3, "max_steps": 4}
    ctx = make_ctx("per_valuation", codes, params=params)
    flat = bars_for(codes, [(0, 10_000)] * 5)
    assert [o[0] for o in feed(ctx, flat[:2])] == ["buy"]
    steps_taken = ctx.strategy.buy_steps  # type: ignore[attr-defined]
    assert steps_taken == 1 and ctx.position("005380") > 0
    new = restarted(ctx, state_store.decode(state_store.encode(ctx.save_state())), flat[:2])
    assert new.strategy.buy_steps == steps_taken  # type: ignore[attr-defined]
    assert feed(new, flat[2:]) == []
    fresh = restarted(ctx, None, flat[:2])  # what an agent without its state did: climb the ladder again
    assert [o[0] for o in feed(fresh, flat[2:])] == ["buy"]


def test_a_per_valuation_step_whose_order_ends_with_nothing_done_is_given_back() -> None:
    codes, params = ["005380"], {"low_per": 5.0, "high_per": 7.0, "step_pct": 0.3, "max_steps": 4}
    ctx = make_ctx("per_valuation", codes, params=params)
    flat = bars_for(codes, [(0, 10_000)] * 3)
    ctx.on_bar(flat[0])
    (refused_step,) = ctx.drain_outbox()
    ctx.on_order_event(OrderEventData(refused_step.client_order_id, "005380", "buy", "rejected", flat[0].ts_ns, 0, 0, "RISK_UNAVAILABLE"))
    assert ctx.strategy.buy_steps == 0  # type: ignore[attr-defined]
    ctx.on_bar(flat[1])
    (again,) = ctx.drain_outbox()
    assert ctx.strategy.buy_steps == 1 and again.client_order_id != refused_step.client_order_id  # type: ignore[attr-defined]
    # the close cancels it unfilled: the step goes back with it, across a save and restore
    ctx.on_order_event(OrderEventData(again.client_order_id, "005380", "buy", "accepted", flat[1].ts_ns))
    new = restarted(ctx, state_store.decode(state_store.encode(ctx.save_state())), flat[:2])
    new.on_order_event(OrderEventData(again.client_order_id, "005380", "buy", "canceled", flat[1].ts_ns))
    assert new.strategy.buy_steps == 0  # type: ignore[attr-defined]


# --- refusals -------------------------------------------------------------------


def saved_of(name: str, **change: Any) -> SavedState:
    codes, params = CASES[name]
    ctx = make_ctx(name, codes, params=params)
    feed(ctx, bars_for(codes, [(5, 10_000), (-5, 20_000)] * 6))
    saved = ctx.save_state()
    return state_store.decode(state_store.encode(saved)) if not change else _replace(saved, **change)


def _replace(saved: SavedState, **change: Any) -> SavedState:
    fields = {f: getattr(saved, f) for f in saved.__struct_fields__}
    return SavedState(**{**fields, **change})


def refused(name: str, saved: SavedState | None, refused_reason: str = "") -> AgentContext:
    codes, params = CASES[name]
    strategy = get_strategy(name).from_params(params)
    fresh_state = strategy.save_state()
    ctx = AgentContext("t1", codes, strategy, make_ctx(name, codes, params=params).portfolio, INSTRUMENTS)
    ctx.resume(saved, refused=refused_reason)
    ctx.start()
    assert ctx.resumed["restored"] is False
    assert ctx.strategy.save_state() == fresh_state, "a refused state leaves the strategy fresh"
    alerts = ctx.drain_alerts()
    assert [a.kind for a in alerts] == ["strategy_state_refused"]
    assert ctx.resumed["reason"] in alerts[0].text
    return ctx


def test_a_state_of_another_strategy_is_refused_naming_both() -> None:
    ctx = refused("sma_cross", saved_of("per_valuation"))
    assert "'per_valuation'" in ctx.resumed["reason"] and "'sma_cross'" in ctx.resumed["reason"]


def test_a_state_saved_with_other_params_is_refused() -> None:
    assert "other params" in refused("sma_cross", saved_of("sma_cross", params_hash="0" * 16)).resumed["reason"]


def test_a_state_of_another_version_is_refused() -> None:
    assert "version 99" in refused("per_valuation", saved_of("per_valuation", version=99)).resumed["reason"]


@pytest.mark.parametrize("name, state", [
    ("sma_cross", {"ring": [1, 2]}),
    ("sma_cross", {**saved_of("sma_cross").state, "ring": [1, 2, 3]}),  # the ring does not fit slow = 4
    ("per_valuation", {**saved_of("per_valuation").state, "buy_steps": "two"}),
    ("per_valuation", {**saved_of("per_valuation").state, "extra": 1}),
    ("volume_trigger", {**saved_of("volume_trigger").state, "exits": {"moon": 1}}),
    ("pair_arbitrage", {**saved_of("pair_arbitrage").state, "target": "bonds"}),
])
def test_a_state_that_does_not_fit_its_shape_is_refused_and_the_strategy_starts_fresh(name: str, state: dict[str, Any]) -> None:
    ctx = refused(name, saved_of(name, state=state))
    assert ctx.resumed["reason"]


def test_load_state_raises_state_error_for_a_wrong_shape() -> None:
    with pytest.raises(StateError, match="SmaCrossState"):
        get_strategy("sma_cross")().load_state({"ring": "x"}, 1)
    with pytest.raises(StateError, match="keeps no state"):
        Strategy().load_state({"a": 1}, 1)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_bytes_that_are_not_a_state_are_refused_with_a_reason_never_an_exception(data: bytes) -> None:
    with pytest.raises(state_store.StateFileError):
        state_store.decode(data)


@given(cut=st.integers(0, 10_000))
@settings(max_examples=50, deadline=None)
def test_a_truncated_state_file_is_refused(cut: int) -> None:
    data = state_store.encode(saved_of("sma_cross"))
    cut = cut % len(data)
    with pytest.raises(state_store.StateFileError):
        state_store.decode(data[:cut])


def test_the_state_file_is_written_atomically_read_back_and_a_corrupt_one_set_aside(tmp_path: Path) -> None:
    path = state_store.state_path(tmp_path, "a1")
    assert state_store.read(path) == (None, "")
    saved = saved_of("volume_trigger")
    state_store.write(path, saved)
    assert state_store.read(path) == (saved, "")
    assert [p.name for p in path.parent.iterdir()] == [state_store.STATE_FILE]
    path.write_bytes(state_store.encode(saved)[:-3])
    again, reason = state_store.read(path)
    assert again is None and str(path) in reason and "not a saved strategy state" in reason
    refused("volume_trigger", None, refused_reason=reason)
    aside = state_store.set_aside(path)
    assert aside is not None and aside.name == state_store.REFUSED_FILE and not path.exists()


def test_a_state_that_is_not_plain_data_cannot_be_encoded() -> None:
    with pytest.raises(TypeError, match="msgpack"):
        state_store.encode(_replace(saved_of("sma_cross"), state={"when": dt.date(2026, 3, 3)}))


# --- the back-tester: a restart mid-day gives the orders of the day left alone ------------------


SPECS = [AgentSpec(f"a-{name}", name, tuple(codes), params, cash_won=100_000_000) for name, (codes, params) in sorted(CASES.items())]


@pytest.fixture(scope="module")
def market() -> MarketData:
    codes = sorted({c for s in SPECS for c in s.codes})
    return from_simulator(codes, 2, 7, INSTRUMENTS, dt.date(2026, 3, 3))


def orders_of(bt: Backtest) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {s.agent_id: [] for s in SPECS}
    for o in bt.oms.orders.values():
        out[o.agent_id].append((o.client_order_id, o.code, o.side.value, o.qty, o.price, o.status.value, o.filled_qty))
    return out


def run(market: MarketData, restarts: list[Restart] = ()) -> Backtest:  # type: ignore[assignment]
    bt = Backtest(market, SPECS, restarts=restarts)
    result = bt.run()
    assert result.ok, result.failure
    return bt


def minute_of(market: MarketData, day: int, hhmm: str) -> int:
    date = market.days[day]
    h, m = map(int, hhmm.split(":"))
    return int(dt.datetime(date.year, date.month, date.day, h, m, tzinfo=dt.timezone(dt.timedelta(hours=9))).timestamp()) * 10**9


def test_agents_torn_down_mid_day_and_started_from_their_state_give_the_orders_of_the_day_left_alone(market: MarketData) -> None:
    alone = orders_of(run(market))
    assert all(alone.values()), f"every agent trades in the scenario: {[a for a, o in alone.items() if not o]}"
    # twice on the first day, once on the second morning (the windows reach back into the first day)
    at = [minute_of(market, 0, "10:17"), minute_of(market, 0, "13:41"), minute_of(market, 1, "09:08")]
    bt = run(market, [Restart(s.agent_id, t) for s in SPECS for t in at])
    assert orders_of(bt) == alone
    assert all(a.ctx.resumed["restored"] for a in bt._agents.values())


def test_a_restart_from_an_older_save_replays_the_bars_since_and_trades_as_left_alone(market: MarketData) -> None:
    alone = orders_of(run(market))
    # per agent, the longest stretch of the first day in which it made no order: saved at its start,
    # restarted at its end (an agent that orders on almost every bar of this market has none and is left out)
    restarts = [r for spec in SPECS if (r := quiet_stretch(market, spec)) is not None]
    assert {"a-per_valuation", "a-sma_cross", "a-slow_trend"} <= {r.agent_id for r in restarts}
    bt = run(market, restarts)
    assert orders_of(bt) == alone
    assert all(bt._agents[r.agent_id].ctx.resumed["replayed_bars"] > 0 for r in restarts)


def quiet_stretch(market: MarketData, spec: AgentSpec) -> Restart | None:
    bt = Backtest(market, [spec])
    bt.run()
    day_open, day_close = minute_of(market, 0, "09:30"), minute_of(market, 0, "15:00")
    made = sorted(o.created_ns for o in bt.oms.orders.values() if day_open < o.created_ns < day_close)
    times = [day_open, *made, day_close]
    gap, start = max((b - a, a) for a, b in zip(times, times[1:]))
    if gap < 6 * MINUTE:
        return None
    return Restart(spec.agent_id, at_ns=start + gap - 2 * MINUTE, saved_ns=start + 2 * MINUTE)


def test_without_its_state_a_restarted_agent_trades_differently(market: MarketData, monkeypatch: pytest.MonkeyPatch) -> None:
    # the proof has teeth: the same restarts, the saved state thrown away
    alone = orders_of(run(market))
    monkeypatch.setattr(AgentContext, "resume", lambda self, saved, refused="": None)
    bt = run(market, [Restart(s.agent_id, minute_of(market, 0, "10:17")) for s in SPECS])
    differ = {a for a, o in orders_of(bt).items() if o != alone[a]}
    assert "a-per_valuation" in differ and len(differ) >= 3, differ

