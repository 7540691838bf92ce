"""Pre-trade risk checks: one test per reason code, states, rate windows, loss limits, config."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import krx
from core.config import ConfigError
from core.instruments import load_instruments
from core.messages import Fill, OrderEvent, OrderRequest, OrderStatus, OrderType, Side
from core.orders import Order
from core.risk import (
    Position,
    Reason,
    RiskLimits,
    RiskView,
    TradingState,
    agents_over_loss_limit,
    check_cancel,
    check_order,
    evaluate_loss_limits,
    load_risk_limits,
    parse_risk_limits,
)

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTS = load_instruments(ROOT / "configs" / "instruments.csv")
T0 = 1_700_000_000_000_000_000
SEC = 1_000_000_000
SAMSUNG = "005930"  # last close 71,000: tick 100, limits 49,700-92,300


def _order(coid: str = "a1-1", agent: str = "a1", side: str = "buy", qty: int = 10, price: int = 71_000,
           code: str = SAMSUNG, order_type: str = "limit") -> Order:
    return Order(coid, agent, code, Side(side) if side in ("buy", "sell") else side,  # type: ignore[arg-type]
                 OrderType(order_type), qty, price)


def _view() -> RiskView:
    view = RiskView(INSTRUMENTS)
    view.add_agent("a1", 100_000_000)
    view.add_agent("a2", 100_000_000, {SAMSUNG: (1_000, 70_000)})
    return view


def _check(order: Order, view: RiskView | None = None, limits: RiskLimits | None = None,
           state: TradingState = TradingState.ACTIVE, session: str = "continuous", now_ns: int = T0):
    return check_order(order, view or _view(), limits or RiskLimits(), state, session, INSTRUMENTS, now_ns)


def _limits(**sections: object) -> RiskLimits:
    return parse_risk_limits(sections)


BIG_ORDERS = _limits(order={"max_notional_won": 1_000_000_000, "max_qty": 1_000_000})


def test_a_plain_order_is_approved() -> None:
    decision = _check(_order())
    assert decision.approved and decision.reason_code == ""


def test_an_order_request_message_is_checked_too() -> None:
    request = OrderRequest(client_order_id="a1-1", agent_id="a1", code=SAMSUNG, side=Side.BUY, qty=10, price=71_000)
    assert _check(request).approved  # type: ignore[arg-type]


@pytest.mark.parametrize(("order", "reason"), [
    (_order(qty=0), Reason.INVALID_QUANTITY),
    (_order(qty=-5), Reason.INVALID_QUANTITY),
    (_order(price=0), Reason.INVALID_PRICE),
    (_order(price=-100), Reason.INVALID_PRICE),
    (_order(side="short"), Reason.INVALID_SIDE),
    (_order(agent="nobody"), Reason.UNKNOWN_AGENT),
    (_order(code="999990"), Reason.UNKNOWN_CODE),
    (_order(price=71_050), Reason.BAD_TICK),
    (_order(price=93_000), Reason.OUTSIDE_PRICE_LIMITS),
    (_order(price=49_000), Reason.OUTSIDE_PRICE_LIMITS),
    (_order(price=76_000), Reason.FAT_FINGER),
    (_order(qty=25_000, price=1_000, code=SAMSUNG), Reason.OUTSIDE_PRICE_LIMITS),
])
def test_bad_requests_are_refused_with_their_reason(order: Order, reason: Reason) -> None:
    decision = _check(order)
    assert not decision.approved and decision.reason_code == reason
    assert decision.text


def test_market_order_skips_price_checks_and_is_valued_at_the_upper_limit() -> None:
    assert _check(_order(price=0, order_type="market")).approved
    # 400 x 92,300 (upper limit) = 36,920,000 > 30,000,000 per order
    decision = _check(_order(qty=400, price=0, order_type="market"))
    assert decision.reason_code == Reason.NOTIONAL_EXCEEDS_MAX_PER_ORDER


def test_halted_refuses_every_new_order() -> None:
    assert _check(_order(), state=TradingState.HALTED).reason_code == Reason.TRADING_STATE_HALTED
    sell = _order(agent="a2", side="sell", qty=10)
    assert _check(sell, state=TradingState.HALTED).reason_code == Reason.TRADING_STATE_HALTED


def test_reducing_allows_only_sells_within_holdings() -> None:
    view = _view()
    assert _check(_order(), view, state=TradingState.REDUCING).reason_code == Reason.TRADING_STATE_REDUCING
    everything = _order(agent="a2", side="sell", qty=1_000)
    assert _check(everything, view, BIG_ORDERS, state=TradingState.REDUCING).approved
    too_many = _order(agent="a2", side="sell", qty=1_001)
    assert _check(too_many, view, BIG_ORDERS, state=TradingState.REDUCING).reason_code == Reason.TRADING_STATE_REDUCING


def test_blocked_or_suspended_codes_are_not_tradable() -> None:
    assert _check(_order(), limits=_limits(blocked_codes=[SAMSUNG])).reason_code == Reason.NOT_TRADABLE
    view = _view()
    view.suspended_codes.add(SAMSUNG)
    assert _check(_order(), view).reason_code == Reason.NOT_TRADABLE
    assert _check(_order(code="000660", price=178_000), view).approved


@pytest.mark.parametrize("session", ["pre_open", "continuous", "closing_auction", "after_hours", "open", "closing"])
def test_sessions_that_take_orders(session: str) -> None:
    assert _check(_order(), session=session).approved


def test_closed_market_refuses() -> None:
    assert _check(_order(), session="closed").reason_code == Reason.MARKET_CLOSED


def test_fat_finger_band_follows_the_last_price() -> None:
    view = _view()
    view.on_price(SAMSUNG, 80_000, T0)
    assert _check(_order(price=83_000), view).approved
    assert _check(_order(price=71_000), view).reason_code == Reason.FAT_FINGER
    wide = _limits(order={"fat_finger_pct": 20})
    assert _check(_order(price=71_000), view, wide).approved


def test_max_qty_per_order() -> None:
    limits = _limits(order={"max_qty": 100})
    assert _check(_order(qty=100), limits=limits).approved
    assert _check(_order(qty=101), limits=limits).reason_code == Reason.QTY_EXCEEDS_MAX_PER_ORDER


def test_max_notional_per_order() -> None:
    assert _check(_order(qty=422)).approved  # 29,962,000 won
    assert _check(_order(qty=423)).reason_code == Reason.NOTIONAL_EXCEEDS_MAX_PER_ORDER


def test_per_agent_overrides_replace_the_defaults() -> None:
    limits = _limits(agents={"a1": {"max_qty_per_order": 5}})
    assert _check(_order(qty=6), limits=limits).reason_code == Reason.QTY_EXCEEDS_MAX_PER_ORDER
    assert _check(_order(agent="a2", qty=6), limits=limits).approved


def test_insufficient_cash_counts_pending_buys() -> None:
    view = RiskView(INSTRUMENTS)
    view.add_agent("a1", 9_940_000)
    first = _order("a1-1", qty=100)  # 7,100,000 won + 1,065 won commission reserve
    assert _check(first, view).approved
    view.on_approved(first, T0)
    second = _order("a1-2", qty=40)  # 2,840,000 won: fits the cash only without the commission reserve
    decision = _check(second, view, now_ns=T0 + 1)
    assert decision.reason_code == Reason.INSUFFICIENT_CASH
    assert _check(_order("a1-3", qty=30), view, now_ns=T0 + 1).approved


def test_insufficient_shares_counts_pending_sells() -> None:
    view = _view()
    assert _check(_order("a1-1", agent="a1", side="sell", qty=1), view).reason_code == Reason.INSUFFICIENT_SHARES
    first = _order("a2-1", agent="a2", side="sell", qty=700)
    assert _check(first, view, BIG_ORDERS).approved
    view.on_approved(first, T0)
    over = _order("a2-2", agent="a2", side="sell", qty=301)
    assert _check(over, view, BIG_ORDERS).reason_code == Reason.INSUFFICIENT_SHARES
    assert _check(_order("a2-3", agent="a2", side="sell", qty=300), view, BIG_ORDERS).approved


def test_position_limit_per_agent_in_shares_and_won() -> None:
    view = _view()
    by_qty = _limits(position={"max_qty_per_agent": 1_010})
    assert _check(_order(agent="a2", qty=10), view, by_qty).approved
    assert _check(_order(agent="a2", qty=11), view, by_qty).reason_code == Reason.POSITION_EXCEEDS_MAX_PER_AGENT
    by_value = _limits(position={"max_notional_per_agent_won": 71_710_000})  # 1,000 x 71,000 held
    assert _check(_order(agent="a2", qty=10), view, by_value).approved
    assert _check(_order(agent="a2", qty=11), view, by_value).reason_code == Reason.POSITION_EXCEEDS_MAX_PER_AGENT


def test_position_limit_per_code_is_firm_wide() -> None:
    view = _view()
    limits = _limits(position={"max_qty_per_code": 1_100})
    pending = _order("a1-1", qty=60)
    view.on_approved(pending, T0)
    assert _check(_order("a1-2", qty=40), view, limits).approved
    assert _check(_order("a1-2", qty=41), view, limits).reason_code == Reason.POSITION_EXCEEDS_MAX_PER_CODE


def test_too_many_open_orders() -> None:
    view = _view()
    limits = _limits(open_orders={"max_per_agent": 2}, rate={"max_per_agent": 100, "max_account": 100})
    for i in range(2):
        order = _order(f"a1-{i}", qty=1)
        assert _check(order, view, limits).approved
        view.on_approved(order, T0)
    assert _check(_order("a1-9", qty=1), view, limits).reason_code == Reason.TOO_MANY_OPEN_ORDERS


def test_rate_limit_per_agent_uses_a_sliding_window() -> None:
    view = _view()
    limits = _limits(rate={"window_s": 1.0, "max_per_agent": 3, "max_account": 100})
    for i, t in enumerate((T0, T0 + SEC // 2, T0 + SEC * 9 // 10)):
        order = _order(f"a1-{i}", qty=1)
        assert _check(order, view, limits, now_ns=t).approved
        view.on_approved(order, t)
    late = T0 + SEC - 1
    assert _check(_order("a1-9", qty=1), view, limits, now_ns=late).reason_code == Reason.RATE_LIMIT_EXCEEDED
    # the window is (now - 1 s, now]: the first order has left it one second after it was sent
    assert _check(_order("a1-9", qty=1), view, limits, now_ns=T0 + SEC).approved


def test_rate_limit_for_the_whole_account() -> None:
    view = _view()
    view.add_agent("a3", 100_000_000)
    limits = _limits(rate={"max_per_agent": 10, "max_account": 2})
    view.on_approved(_order("a1-1", qty=1), T0)
    view.on_approved(_order("a3-1", agent="a3", qty=1), T0)
    decision = _check(_order("a1-2", qty=1), view, limits, now_ns=T0 + 1)
    assert decision.reason_code == Reason.RATE_LIMIT_EXCEEDED and "account" in decision.text


def test_self_trade_against_another_agents_order_is_refused() -> None:
    view = _view()
    resting_sell = _order("a2-1", agent="a2", side="sell", qty=10, price=71_000)
    view.on_approved(resting_sell, T0)
    assert _check(_order("a1-1", price=71_000), view).reason_code == Reason.SELF_TRADE
    assert _check(_order("a1-1", price=70_900), view).approved
    assert _check(_order("a1-1", price=0, order_type="market"), view).reason_code == Reason.SELF_TRADE


def test_daily_loss_limit_of_an_agent_allows_only_reducing_sells() -> None:
    view = _view()
    view.on_price(SAMSUNG, 64_000, T0)  # a2 loses 7,000,000 won on 1,000 shares
    assert _check(_order(agent="a2", qty=1, price=64_000), view).reason_code == Reason.DAILY_LOSS_LIMIT
    assert _check(_order(agent="a2", side="sell", qty=100, price=64_000), view).approved
    assert _check(_order(agent="a1", qty=1, price=64_000), view).approved
    assert agents_over_loss_limit(view, RiskLimits()) == ["a2"]
    halt = _limits(loss={"agent_breach_state": "HALTED"})
    sell = _order(agent="a2", side="sell", qty=100, price=64_000)
    assert _check(sell, view, halt).reason_code == Reason.DAILY_LOSS_LIMIT


def test_account_loss_limit_moves_the_trading_state() -> None:
    view = _view()
    limits = _limits(loss={"daily_loss_limit_account_won": 5_000_000, "account_breach_state": "REDUCING"})
    assert evaluate_loss_limits(view, limits, TradingState.ACTIVE, T0) is None
    view.on_price(SAMSUNG, 65_000, T0)  # 1,000 x -5,000 won
    assert evaluate_loss_limits(view, limits, TradingState.ACTIVE, T0) is TradingState.REDUCING
    assert evaluate_loss_limits(view, limits, TradingState.REDUCING, T0) is None
    assert evaluate_loss_limits(view, limits, TradingState.HALTED, T0) is None  # never loosens


def test_realised_loss_counts_after_fills_with_costs() -> None:
    view = _view()
    fill = Fill(exec_id="E1", client_order_id="a2-1", agent_id="a2", code=SAMSUNG, side=Side.SELL,
                qty=1_000, price=66_000, fee_won=9_372, tax_won=132_000)
    view.on_fill(fill, T0)
    view.on_fill(fill, T0)  # the same execution twice counts once
    book = view.agents["a2"]
    assert view.position_qty("a2", SAMSUNG) == 0
    assert book.realised_pnl_won == -4_000_000 - 9_372 - 132_000
    limits = _limits(loss={"daily_loss_limit_account_won": 4_000_000})
    view.on_price(SAMSUNG, 80_000, T0)  # nothing held any more: only the realised loss remains
    assert evaluate_loss_limits(view, limits, TradingState.ACTIVE, T0) is TradingState.HALTED


def test_order_events_and_fills_keep_pending_quantities_right_in_either_order() -> None:
    view = _view()
    order = _order("a1-1", qty=100)
    view.on_approved(order, T0)
    fill = Fill(exec_id="E1", client_order_id="a1-1", agent_id="a1", code=SAMSUNG, side=Side.BUY, qty=40, price=71_000)
    event = OrderEvent(client_order_id="a1-1", agent_id="a1", code=SAMSUNG, side=Side.BUY,
                       status=OrderStatus.PARTIALLY_FILLED, qty=100, price=71_000, filled_qty=40, remaining_qty=60)
    view.on_order_event(event, T0 + 1)
    view.on_fill(fill, T0 + 2)
    assert view.pending_qty("a1", SAMSUNG, "buy") == 60
    assert view.position_qty("a1", SAMSUNG) == 40
    done = OrderEvent(client_order_id="a1-1", agent_id="a1", code=SAMSUNG, side=Side.BUY,
                      status=OrderStatus.CANCELED, qty=100, price=71_000, filled_qty=40)
    view.on_order_event(done, T0 + 3)
    assert view.pending_qty("a1", SAMSUNG, "buy") == 0 and view.open_orders == {}


def test_a_retried_request_for_an_approved_order_is_approved_again() -> None:
    view = _view()
    limits = _limits(rate={"max_per_agent": 1})
    order = _order("a1-1", qty=1)
    view.on_approved(order, T0)
    assert _check(order, view, limits, now_ns=T0 + 1).approved


def test_cancels_always_pass() -> None:
    view = _view()
    for state in TradingState:
        assert check_cancel("a1-1", view, state, T0).approved


def test_the_shipped_config_loads() -> None:
    limits = load_risk_limits(ROOT / "configs" / "risk.toml")
    assert limits.rate.max_account < 20  # below the broker's real-account API limit
    assert limits.loss.account_breach_state is TradingState.HALTED


def test_config_errors_name_file_key_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "risk.toml"
    bad.write_text('[order]\nmax_qty = -1\n[loss]\naccount_breach_state = "PANIC"\n[rate]\nburst = 3\n')
    with pytest.raises(ConfigError) as err:
        load_risk_limits(bad)
    keys = {key for _, key, _ in err.value.problems}
    assert {"order.max_qty", "loss.account_breach_state", "rate.burst"} <= keys
    assert all(file == str(bad) for file, _, _ in err.value.problems)
    assert "order.max_qty" in str(err.value)


def test_config_that_is_not_toml_or_missing_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "risk.toml"
    broken.write_text("[order\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_risk_limits(broken)
    with pytest.raises(ConfigError, match="file not found"):
        load_risk_limits(tmp_path / "missing.toml")


def test_check_order_takes_any_order_like_object() -> None:
    order = SimpleNamespace(client_order_id="a1-1", agent_id="a1", code=SAMSUNG, side="buy",
                            order_type="limit", qty=10, price=71_000)
    assert _check(order).approved  # type: ignore[arg-type]


# --- running totals ------------------------------------------------------------

HYNIX = "000660"
CODES = (SAMSUNG, HYNIX)
STATUSES = (OrderStatus.NEW, OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED,
            OrderStatus.CANCEL_PENDING, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED,
            OrderStatus.EXPIRED)

# an order of the scenario: (agent, code, side, market, qty, ticks below or above the last price)
order_specs = st.tuples(st.sampled_from(("a1", "a2")), st.sampled_from(CODES), st.sampled_from(("buy", "sell")),
                        st.booleans(), st.integers(1, 50), st.integers(-3, 3))
# what happens next, to order i of the scenario
steps = st.one_of(
    st.tuples(st.just("approve"), st.integers(0, 5)),
    st.tuples(st.just("event"), st.integers(0, 5), st.sampled_from(STATUSES), st.integers(0, 50), st.integers(0, 50)),
    st.tuples(st.just("fill"), st.integers(0, 5), st.integers(0, 7), st.integers(1, 20)),
    st.tuples(st.just("again"),),  # the previous step delivered twice
)


def _recomputed(view: RiskView) -> dict[str, object]:
    """Every running total of the view, recomputed by walking its open orders."""
    by_agent: Counter[tuple[str, str, str]] = Counter()
    by_code: Counter[tuple[str, str]] = Counter()
    buy_won: Counter[str] = Counter()
    prices: dict[tuple[str, str], Counter[int]] = {}
    market: Counter[tuple[str, str]] = Counter()
    for o in view.open_orders.values():
        if o.remaining_qty == 0:
            continue
        by_agent[(o.agent_id, o.code, o.side)] += o.remaining_qty
        by_code[(o.code, o.side)] += o.remaining_qty
        if o.side == "buy":
            buy_won[o.agent_id] += o.remaining_qty * o.price
        if o.market:
            market[(o.code, o.side)] += 1
        else:
            prices.setdefault((o.code, o.side), Counter())[o.price] += 1
    best = {key: (max(c) if key[1] == "buy" else min(c)) for key, c in prices.items()}
    return {"by_agent": dict(by_agent), "by_code": dict(by_code),
            "buy_won": {a: buy_won.get(a, 0) for a in view.agents},
            "levels": {k: dict(c) for k, c in prices.items()}, "market": dict(+market), "best": best}


def _running(view: RiskView) -> dict[str, object]:
    """The same figures as the view keeps them."""
    return {"by_agent": dict(view.pending_by_agent), "by_code": dict(view.pending_by_code),
            "buy_won": {a: b.pending_buy_won for a, b in view.agents.items()},
            "levels": {k: dict(lv.counts) for k, lv in view.levels.items() if lv.counts},
            "market": {k: lv.market for k, lv in view.levels.items() if lv.market},
            "best": {k: lv.best() for k, lv in view.levels.items() if lv.counts}}


@settings(max_examples=300, deadline=None)
@given(st.lists(order_specs, min_size=6, max_size=6), st.lists(steps, max_size=40))
def test_running_totals_always_equal_a_walk_over_the_open_orders(specs: list, script: list) -> None:
    view = _view()
    view.agents["a1"].positions[HYNIX] = Position(500, 170_000)
    orders = []
    for i, (agent, code, side, market, qty, ticks) in enumerate(specs):
        last = INSTRUMENTS[code].last_close
        price = 0 if market else last + ticks * krx.tick_size(last)
        orders.append(_order(f"{agent}-{i}", agent, side, qty, price, code, "market" if market else "limit"))
    previous = None
    for n, step in enumerate(script):
        if step[0] == "again":
            step = previous
            if step is None:
                continue
        previous = step
        order = orders[step[1]]
        now = T0 + n
        if step[0] == "approve":
            view.on_approved(order, now)
        elif step[0] == "event":
            _, _, status, filled, remaining = step
            filled = min(filled, order.qty)
            remaining = 0 if status in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED,
                                        OrderStatus.EXPIRED) else min(remaining, order.qty - filled)
            view.on_order_event(OrderEvent(client_order_id=order.client_order_id, agent_id=order.agent_id,
                                           code=order.code, side=order.side, status=status, qty=order.qty,
                                           price=order.price, filled_qty=filled, remaining_qty=remaining), now)
        else:  # a fill, perhaps before the order's events, perhaps a repeated execution id
            _, _, exec_n, qty = step
            view.on_fill(Fill(exec_id=f"E{step[1]}-{exec_n}", client_order_id=order.client_order_id,
                              agent_id=order.agent_id, code=order.code, side=order.side, qty=qty,
                              price=order.price or 71_000), now)
        assert _running(view) == _recomputed(view), f"after step {n}: {step}"
        for agent in view.agents:
            for code in CODES:
                for side in ("buy", "sell"):
                    assert view.pending_qty(agent, code, side) == sum(
                        o.remaining_qty for o in view.agents[agent].open_orders.values() if o.code == code and o.side == side)


def test_self_trade_check_finds_the_crossing_order_among_many_resting_ones() -> None:
    view = _view()
    limits = _limits(open_orders={"max_per_agent": 1_000}, rate={"max_per_agent": 1_000, "max_account": 1_000})
    for i in range(200):  # resting buys of a1 from 69,000 down, one per tick
        view.on_approved(_order(f"a1-{i}", "a1", "buy", 1, 69_000 - 100 * i), T0)
    assert _check(_order("a2-1", "a2", "sell", 1, 69_100), view, limits).approved
    refused = _check(_order("a2-2", "a2", "sell", 1, 68_500), view, limits)
    assert refused.reason_code == Reason.SELF_TRADE and "a1-0 of a1 (buy @ 69000)" in refused.text
    for i in range(6):  # the best bids canceled: the best is now 68,400, so 68,500 passes
        view.on_order_event(OrderEvent(client_order_id=f"a1-{i}", agent_id="a1", code=SAMSUNG, side=Side.BUY,
                                       status=OrderStatus.CANCELED, qty=1, price=69_000 - 100 * i), T0 + 1)
    assert _check(_order("a2-3", "a2", "sell", 1, 68_500), view, limits).approved
    assert _check(_order("a2-4", "a2", "sell", 1, 68_400), view, limits).reason_code == Reason.SELF_TRADE
    assert view.pending_qty("a1", SAMSUNG, "buy") == 194 and view.pending_code_qty(SAMSUNG, "buy") == 194


def test_a_sell_fill_seen_before_its_buy_fill_leaves_the_view_whole() -> None:
    view = RiskView(INSTRUMENTS)
    view.add_agent("a1", 100_000_000)

    def fill(exec_id: str, side: Side) -> Fill:
        return Fill(exec_id=exec_id, client_order_id=f"a1-{exec_id}", agent_id="a1", code="005930",
                    side=side, qty=20, price=71_000)

    view.on_fill(fill("E1", Side.SELL), 1)  # the notices of two fills arrived out of order
    view.on_fill(fill("E2", Side.BUY), 2)
    position = view.agents["a1"].positions["005930"]
    assert (position.qty, position.avg_price) == (0, 0)
    view.on_fill(fill("E3", Side.BUY), 3)
    assert (position.qty, position.avg_price) == (20, 71_000)
