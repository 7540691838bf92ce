"""An agent knows its limits, and a refused order is a signal: backoffs by reason code, on_refused, one alert per storm."""

from __future__ import annotations

from pathlib import Path

from agents.context import AgentContext, OrderIntent, Refused
from agents.limits import agent_limits
from agents.refusals import BACKING_OFF, Refusal
from agents.strategy import OrderEventData, Strategy
from core.portfolio import Portfolio
from tests.agents.conftest import INSTRUMENTS, MINUTE, T0, bar

COMMON = "005930"  # last close 70,000 in the instrument master
SECOND = 1_000_000_000


class Listener(Strategy):
    """Trades only when told; keeps the refusals it hears."""

    name = "listener"

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[Refusal] = []

    def on_refused(self, ctx: AgentContext, refusal: Refusal) -> None:
        self.heard.append(refusal)


def listening_ctx(cash: int = 100_000_000, risk_file: Path | None = None, holding: int = 0) -> AgentContext:
    book = Portfolio(cash, markets={COMMON: "KOSPI"})
    if holding:
        book.set_start_holding(COMMON, holding, 70_000)
    ctx = AgentContext("t1", [COMMON], Listener(), book, INSTRUMENTS, limits=agent_limits("t1", risk_file))
    ctx.start()
    ctx.on_bar(bar(COMMON, 0, 70_000))
    return ctx


def refuse(ctx: AgentContext, intent: OrderIntent | Refused, reason: str) -> None:
    """The firm refuses an order the context sent, as the order manager's event says."""
    assert isinstance(intent, OrderIntent)
    ctx.drain_outbox()
    ctx.on_order_event(OrderEventData(intent.client_order_id, intent.code, intent.side, "rejected", ctx.now(), 0, 0, reason))


def test_the_context_tells_the_limits_the_risk_guard_reads_for_the_agent(tmp_path: Path) -> None:
    risk = tmp_path / "risk.toml"
    risk.write_text("[order]\nmax_notional_won = 10_000_000\n[open_orders]\nmax_per_agent = 7\n[agents.t1]\nmax_qty_per_order = 120\n")
    ctx = listening_ctx(risk_file=risk, holding=300)
    limits = ctx.limits()
    assert (limits.max_qty_per_order, limits.max_notional_per_order_won, limits.max_open_orders) == (120, 10_000_000, 7)
    assert limits.open_orders == 0 and limits.open_order_room == 7
    assert limits.cash_won == ctx.cash() and limits.sellable == {COMMON: 300}
    assert ctx.max_order_qty(COMMON, "buy", 70_000) == 120  # 10 M won / 70,000 = 142, the override says 120
    assert ctx.max_order_qty(COMMON, "sell", 90_000) == 111  # 10 M won / 90,000
    assert agent_limits("t2", risk).max_qty_per_order == 20_000  # another agent: the firm's default
    assert listening_ctx(risk_file=None).limits().max_notional_per_order_won == 30_000_000  # no file: the guard's defaults


def test_an_order_beyond_a_per_order_limit_is_refused_before_it_goes_out() -> None:
    ctx = listening_ctx()
    got = ctx.buy(COMMON, 500, 70_000)  # 35 M won, over the 30 M won per order
    assert isinstance(got, Refused) and got.reason_code == "NOTIONAL_EXCEEDS_MAX_PER_ORDER"
    assert ctx.drain_outbox() == [] and ctx.refusals.own["NOTIONAL_EXCEEDS_MAX_PER_ORDER"] == 1
    assert ctx.buy(COMMON, 20_001, 1_000).reason_code in ("QTY_EXCEEDS_MAX_PER_ORDER", "OUTSIDE_PRICE_LIMITS")
    assert ctx.buy(COMMON, ctx.max_order_qty(COMMON, "buy", 70_000), 70_000).ok


def test_after_a_refusal_by_size_the_same_shape_is_not_sent_again_that_day() -> None:
    ctx = listening_ctx()
    first = ctx.buy(COMMON, 300, 70_000)
    refuse(ctx, first, "NOTIONAL_EXCEEDS_MAX_PER_ORDER")  # the guard's limit was lowered under the agent
    [heard] = ctx.strategy.heard
    assert (heard.reason_code, heard.qty, heard.price, heard.sent) == ("NOTIONAL_EXCEEDS_MAX_PER_ORDER", 300, 70_000, True)
    ctx.on_bar(bar(COMMON, 30, 70_100))
    again = ctx.buy(COMMON, 300, 70_100)
    assert isinstance(again, Refused) and again.reason_code == BACKING_OFF and ctx.drain_outbox() == []
    assert ctx.refusals.held_back["NOTIONAL_EXCEEDS_MAX_PER_ORDER"] == 1
    assert ctx.buy(COMMON, 299, 70_100).ok  # a smaller order may go
    assert ctx.sell(COMMON, 300, 70_100).reason_code != BACKING_OFF  # the other side is not blocked
    ctx.on_session("closed", T0 + 400 * MINUTE)
    assert ctx.buy(COMMON, 300, 70_100).ok  # a new day: tomorrow's limits and prices are new


def test_a_transient_refusal_holds_every_order_briefly_and_longer_each_time() -> None:
    ctx = listening_ctx()
    t = ctx.now()
    refuse(ctx, ctx.buy(COMMON, 10, 70_000), "BROKER_DISCONNECTED")
    assert ctx.buy(COMMON, 10, 70_000).reason_code == BACKING_OFF
    ctx.on_timer(t + SECOND)  # the first backoff is a second
    refuse(ctx, ctx.buy(COMMON, 10, 70_000), "BROKER_DISCONNECTED")
    ctx.on_timer(t + 2 * SECOND)
    assert ctx.buy(COMMON, 11, 70_000).reason_code == BACKING_OFF  # the second is two
    ctx.on_timer(t + 3 * SECOND)
    intent = ctx.buy(COMMON, 11, 70_000)
    assert intent.ok
    ctx.drain_outbox()
    ctx.on_order_event(OrderEventData(intent.client_order_id, COMMON, "buy", "accepted", ctx.now()))
    assert ctx.refusals.status()["backoffs"] == []  # an accepted order ends it


def test_a_refusal_stamped_by_the_back_offices_wall_clock_backs_off_in_market_time() -> None:
    """The order manager stamps its own refusals with the wall clock, months past a simulated market's time."""
    ctx = listening_ctx()
    t = ctx.now()
    intent = ctx.buy(COMMON, 10, 70_000)
    assert isinstance(intent, OrderIntent)
    ctx.drain_outbox()
    wall = t + 270 * 86_400 * SECOND
    ctx.on_order_event(OrderEventData(intent.client_order_id, COMMON, "buy", "rejected", wall, 0, 0,
                                      "BROKER_DISCONNECTED"))
    assert ctx.buy(COMMON, 10, 70_000).reason_code == BACKING_OFF
    ctx.on_bar(bar(COMMON, 1, 70_000))  # a minute of market time later: the one-second backoff is long over
    assert ctx.buy(COMMON, 10, 70_000).ok


def test_a_refusal_by_the_book_blocks_the_code_and_side_a_while() -> None:
    ctx = listening_ctx()
    t = ctx.now()
    refuse(ctx, ctx.buy(COMMON, 10, 70_000), "POSITION_EXCEEDS_MAX_PER_AGENT")
    assert ctx.buy(COMMON, 5, 69_900).reason_code == BACKING_OFF
    ctx.on_timer(t + 30 * SECOND)
    assert ctx.buy(COMMON, 5, 69_900).ok


def test_market_closed_holds_orders_until_the_session_changes() -> None:
    ctx = listening_ctx()
    refuse(ctx, ctx.buy(COMMON, 10, 70_000), "MARKET_CLOSED")
    assert ctx.buy(COMMON, 10, 70_000).reason_code == BACKING_OFF
    ctx.on_session("open", ctx.now() + SECOND)
    assert ctx.buy(COMMON, 10, 70_000).ok


def test_more_than_a_few_refusals_of_one_reason_in_a_minute_raise_one_alert_naming_agent_and_reason() -> None:
    ctx = listening_ctx()
    t = ctx.now()
    for k in range(8):
        ctx.on_timer(t + k * SECOND)
        assert ctx.buy(COMMON, 1_000, 70_000).reason_code == "NOTIONAL_EXCEEDS_MAX_PER_ORDER"
    [alert] = ctx.drain_alerts()
    assert alert.kind == "refusal_storm" and "t1" in alert.text and "NOTIONAL_EXCEEDS_MAX_PER_ORDER" in alert.text
    ctx.on_timer(t + 3 * MINUTE)  # a quiet minute re-arms it
    for k in range(6):
        ctx.on_timer(t + 3 * MINUTE + k * SECOND)
        ctx.buy(COMMON, 1_000, 70_000)
    assert [a.kind for a in ctx.drain_alerts()] == ["refusal_storm"]
    assert ctx.refusals.storms["NOTIONAL_EXCEEDS_MAX_PER_ORDER"] == 2


def test_a_strategy_without_on_refused_is_not_called_and_its_status_shows_the_refusals() -> None:
    from tests.agents.conftest import make_ctx

    ctx = make_ctx("sma_cross", [COMMON])
    ctx.on_bar(bar(COMMON, 0, 70_000))
    refuse(ctx, ctx.buy(COMMON, 10, 70_000), "SELF_TRADE")
    status = ctx.status()
    assert status["refusals"]["refused"] == {"SELF_TRADE": 1} and status["errors_total"] == 0
    assert status["refusals"]["backoffs"][0]["reason_code"] == "SELF_TRADE"
    assert status["limits"]["max_notional_per_order_won"] == 30_000_000
