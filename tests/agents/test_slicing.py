"""Sliced execution: the context works a parent order as child orders over time, each within the agent's limits."""

from __future__ import annotations

from agents.context import AgentContext, CancelIntent, OrderIntent, Refused
from agents.slicing import ParentOrder, ParentStatus
from agents.strategy import OrderEventData
from tests.agents.conftest import MINUTE, T0, bar, execute
from tests.agents.test_refusals import COMMON, listening_ctx


def children(intents: list) -> list[tuple[str, int, int]]:
    return [(o.side, o.qty, o.price) for o in intents if isinstance(o, OrderIntent)]


def step(ctx: AgentContext, i: int, close: int = 70_000, volume: int = 10_000, fill: bool = True) -> list:
    ctx.on_bar(bar(COMMON, i, close, volume))
    return execute(ctx) if fill else ctx.drain_outbox()


def test_twap_sends_one_slice_a_minute_until_the_parent_is_done() -> None:
    ctx = listening_ctx()
    parent = ctx.work(COMMON, "buy", 1_000, twap_minutes=4)
    assert isinstance(parent, ParentOrder) and parent.is_working
    sent = [children(execute(ctx))] + [children(step(ctx, i)) for i in range(1, 6)]
    assert sent == [[("buy", 250, 70_000)]] * 4 + [[], []]
    assert parent.status is ParentStatus.FILLED and parent.filled_qty == ctx.position(COMMON) == 1_000
    assert len(parent.children) == 4 and ctx.working() == []


def test_each_child_is_sized_within_the_per_order_limits_and_the_rest_follows() -> None:
    ctx = listening_ctx()
    parent = ctx.work(COMMON, "buy", 1_000, twap_minutes=2)  # 500 a slice is 35 M won, over the 30 M won per order
    sizes = [q for _, q, _ in children(execute(ctx))]
    for i in range(1, 4):
        sizes += [q for _, q, _ in children(step(ctx, i))]
    assert sizes == [428, 428, 144] and all(q * 70_000 <= 30_000_000 for q in sizes)
    assert parent.status is ParentStatus.FILLED and ctx.strategy.heard == [] and not ctx.refusals.own


def test_volume_participation_follows_the_traded_volume() -> None:
    ctx = listening_ctx(holding=500)
    parent = ctx.work(COMMON, "sell", 500, participation=0.1)
    assert isinstance(parent, ParentOrder) and ctx.drain_outbox() == []  # no volume traded yet
    sent = [children(step(ctx, i, volume=v)) for i, v in enumerate([1_000, 3_000, 500, 10_000], start=1)]
    assert sent == [[("sell", 100, 70_000)], [("sell", 300, 70_000)], [("sell", 50, 70_000)], [("sell", 50, 70_000)]]
    assert parent.status is ParentStatus.FILLED and ctx.position(COMMON) == 0


def test_a_child_left_open_is_cancelled_at_the_next_slice_and_its_rest_goes_with_the_next() -> None:
    ctx = listening_ctx()
    parent = ctx.work(COMMON, "buy", 300, twap_minutes=3)
    [first] = ctx.drain_outbox()  # rests unfilled
    assert isinstance(first, OrderIntent) and first.qty == 100
    ctx.on_order_event(OrderEventData(first.client_order_id, COMMON, "buy", "accepted", ctx.now()))
    [cancel] = step(ctx, 1, fill=False)
    assert isinstance(cancel, CancelIntent) and cancel.client_order_id == first.client_order_id
    ctx.on_order_event(OrderEventData(first.client_order_id, COMMON, "buy", "canceled", ctx.now()))
    assert children(step(ctx, 2)) == [("buy", 300, 70_000)]  # all three slices' worth, now due
    assert parent.status is ParentStatus.FILLED


def test_children_wait_while_the_market_is_beyond_the_parent_limit() -> None:
    ctx = listening_ctx()
    parent = ctx.work(COMMON, "buy", 200, twap_minutes=2, limit_price=69_000)
    assert ctx.drain_outbox() == []
    assert step(ctx, 1, close=69_500) == []
    assert children(step(ctx, 2, close=68_900)) == [("buy", 200, 68_900)]
    assert parent.filled_qty == 200


def test_a_parent_is_cancelled_on_request_and_expires_at_the_close() -> None:
    ctx = listening_ctx()
    parent = ctx.work(COMMON, "buy", 400, twap_minutes=4)
    [child] = ctx.drain_outbox()
    ctx.on_order_event(OrderEventData(child.client_order_id, COMMON, "buy", "accepted", ctx.now()))
    assert ctx.cancel_work(parent.parent_id) and not ctx.cancel_work(parent.parent_id)
    [cancel] = ctx.drain_outbox()
    assert isinstance(cancel, CancelIntent) and parent.status is ParentStatus.CANCELED
    assert step(ctx, 1) == []  # nothing more is sent for it
    other = ctx.work(COMMON, "buy", 400, twap_minutes=60)
    execute(ctx)
    ctx.on_session("closing", T0 + 380 * MINUTE)
    assert other.status is ParentStatus.EXPIRED and other.filled_qty == 6 and ctx.working() == []  # 400 / 60 a minute
    ctx.on_session("closed", T0 + 390 * MINUTE)
    assert ctx.parent(other.parent_id) is None  # parents are of one day


def test_three_refused_children_in_a_row_stop_the_parent_and_the_strategy_hears_each() -> None:
    ctx = listening_ctx()
    parent = ctx.work(COMMON, "buy", 900, twap_minutes=3)
    for i in range(1, 4):
        [child] = ctx.drain_outbox()
        ctx.on_order_event(OrderEventData(child.client_order_id, COMMON, "buy", "rejected", ctx.now(), 0, 0, "SELF_TRADE"))
        ctx.on_timer(ctx.now() + 31_000_000_000 * (2 ** (i - 1)))  # past the backoff on buys of the code
        ctx.on_bar(bar(COMMON, i * 30, 70_000))
    assert parent.status is ParentStatus.CANCELED and "SELF_TRADE" in parent.reason
    assert [r.parent_id for r in ctx.strategy.heard] == [parent.parent_id] * 3


def test_a_parent_that_cannot_be_worked_is_refused_with_the_reason() -> None:
    ctx = listening_ctx(holding=100)
    assert ctx.work(COMMON, "buy", 10).reason_code == "BAD_SCHEDULE"
    assert ctx.work(COMMON, "buy", 10, twap_minutes=5, participation=0.1).reason_code == "BAD_SCHEDULE"
    assert ctx.work(COMMON, "buy", 10, participation=0.9).reason_code == "BAD_SCHEDULE"
    assert ctx.work(COMMON, "buy", 0, twap_minutes=5).reason_code == "BAD_QTY"
    assert ctx.work("000660", "buy", 10, twap_minutes=5).reason_code == "UNKNOWN_CODE"
    assert ctx.work(COMMON, "sell", 101, twap_minutes=5).reason_code == "INSUFFICIENT_HOLDING"
    assert ctx.work(COMMON, "buy", 10_000, twap_minutes=5).reason_code == "INSUFFICIENT_CASH"
    assert isinstance(ctx.work(COMMON, "sell", 60, twap_minutes=5), ParentOrder)
    assert ctx.work(COMMON, "sell", 60, twap_minutes=5).reason_code == "INSUFFICIENT_HOLDING"  # 40 left to offer


def test_trade_sends_one_order_when_it_fits_and_works_it_when_it_does_not() -> None:
    ctx = listening_ctx()
    assert isinstance(ctx.trade(COMMON, "buy", 400, 70_000), OrderIntent)
    execute(ctx)
    worked = ctx.trade(COMMON, "buy", 1_000, 70_000, twap_minutes=3)
    assert isinstance(worked, ParentOrder) and worked.limit_price == 70_000
    assert isinstance(ctx.trade(COMMON, "buy", -1, 70_000), Refused)
