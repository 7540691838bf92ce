"""The paper exchange's phantom fault as a real process: the account changes without a fill, and a restart keeps it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.messages import CancelRequest
from services.broker.base import BrokerError
from tests.services.test_exchange import Exchange, order


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[Exchange]:
    """An exchange of its own in continuous trading (10:00 KST), stopped at the end."""
    ex = Exchange(tmp_path, {"TRADER_CLOCK__SPEED": "60", "TRADER_CLOCK__START_TIME": "10:00",
                             "TRADER_CLOCK__START_DATE": "2026-03-03"})
    try:
        ex.start()
        yield ex
    finally:
        ex.close()


def holding(ex: Exchange, code: str) -> int:
    return int(ex.broker.positions().get(code, {}).get("qty", 0))


def execution_notices_until(sub: Any, client_order_id: str, timeout_s: float = 10.0) -> list[Any]:
    """Every execution notice received up to and including the first one of ``client_order_id``."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        env = sub.recv(100)
        if env is None or not env.topic.startswith("exec."):
            continue
        seen.append(env)
        if env.msg.client_order_id == client_order_id:
            return seen
    raise AssertionError(f"no notice of {client_order_id} within {timeout_s} s; saw {len(seen)} other(s)")


def refused(call: Callable[[], Any]) -> BrokerError:
    with pytest.raises(BrokerError) as caught:
        call()
    return caught.value


def test_phantom_changes_holding_and_cash_without_a_fill_and_survives_kill_9(exchange: Exchange) -> None:
    b = exchange.broker
    cash = b.account()["cash_won"]
    sub = b.subscribe_notices()
    try:
        result = b.fault(kind="phantom", code="000660", qty=3, cash_won=-12345)
        assert result == {"code": "000660", "qty": 3, "cash_won": cash - 12345}
        assert holding(exchange, "000660") == 3
        assert b.account()["cash_won"] == cash - 12345
        assert b.fills_today() == [] and b.orders_today() == []
        # the first notice after the phantom is that of the next order: the phantom published none
        marker = order(code="005930", price=b.quote("005930")["lower_limit"])
        b.place(marker)
        seen = execution_notices_until(sub, marker.client_order_id)
        assert {env.msg.client_order_id for env in seen} == {marker.client_order_id}
        b.cancel(CancelRequest(client_order_id=marker.client_order_id, agent_id="t1"))
    finally:
        sub.close()
    exchange.kill(signal.SIGKILL)
    exchange.start()
    assert holding(exchange, "000660") == 3
    assert b.account()["cash_won"] == cash - 12345
    b.fault(kind="phantom", code="000660", qty=-3, cash_won=12345)
    assert holding(exchange, "000660") == 0
    assert b.account()["cash_won"] == cash


def test_shares_of_a_phantom_come_in_at_zero_cost(exchange: Exchange) -> None:
    b = exchange.broker
    b.fault(kind="phantom", code="005930", qty=10, cash_won=0)
    assert b.positions()["005930"]["avg_price"] == 0
    b.fault(kind="phantom", code="005930", qty=-10, cash_won=0)


def test_phantom_refused_with_a_reason_changes_nothing(exchange: Exchange) -> None:
    b = exchange.broker
    cash = b.account()["cash_won"]
    positions = b.positions()
    cases = {
        "unknown code": dict(code="999999", qty=1, cash_won=0),
        "no code": dict(qty=1, cash_won=0),
        "fractional qty": dict(code="000660", qty=1.5, cash_won=0),
        "qty as text": dict(code="000660", qty="3", cash_won=0),
        "qty as a boolean": dict(code="000660", qty=True, cash_won=0),
        "cash as a float": dict(code="000660", qty=1, cash_won=-1.0),
        "negative holding": dict(code="000660", qty=-1, cash_won=0),
        "negative cash": dict(code="000660", qty=0, cash_won=-cash - 1),
        "unknown argument": dict(code="000660", qty=1, cash_won=0, price=100),
    }
    for what, args in cases.items():
        err = refused(lambda args=args: b.fault(kind="phantom", **args))
        assert err.reason_code == "BAD_FAULT", what
        assert "phantom" in str(err), (what, str(err))
    assert b.account()["cash_won"] == cash
    assert b.positions() == positions


def test_phantom_may_not_take_shares_open_sells_offer(exchange: Exchange) -> None:
    b = exchange.broker
    b.fault(kind="phantom", code="000660", qty=5, cash_won=0)
    q = b.quote("000660")
    b.place(order(code="000660", side="sell", qty=4, price=q["upper_limit"]))
    err = refused(lambda: b.fault(kind="phantom", code="000660", qty=-2, cash_won=0))
    assert err.reason_code == "BAD_FAULT" and "open sells" in str(err)
    b.fault(kind="phantom", code="000660", qty=-1, cash_won=0)
    assert holding(exchange, "000660") == 4
