"""kis-trader (PyPI, MIT, seokhoonj/kis-trader), unchanged but for its base URLs, against a running kis-sim.

kis-trader keeps its two base URLs per environment in one table
(``kis_trader._internal._endpoints``); pointing the "paper" entries at the
local server is the only change. It issues a token, reads a price and the
balance, places an order, cancels another, and decrypts a notice itself.
"""

from __future__ import annotations

import queue
import time

import pytest

from tests.kis_sim.conftest import Server

kis_trader = pytest.importorskip("kis_trader")


@pytest.fixture()
def kis(demo: Server, tmp_path, monkeypatch):
    from kis_trader import KISClient
    from kis_trader._internal import _endpoints

    monkeypatch.setitem(_endpoints._BASE_URL_BY_ENVIRONMENT, "paper", demo.base)
    monkeypatch.setitem(_endpoints._WEBSOCKET_URL_BY_ENVIRONMENT, "paper", demo.ws_url)
    demo.control("auth-clock", {"advance_s": 61})  # its own token issuance: a minute after the last one
    client = KISClient(app_key=demo.creds["appkey"], app_secret=demo.creds["appsecret"],
                       account=demo.creds["account"], environment="paper", hts_id=demo.creds["hts_id"],
                       config_dir=tmp_path, requests_per_second=50)
    yield client
    client.close()


def test_kis_trader_token_price_balance_order_cancel_and_notice(kis, demo: Server) -> None:
    stock = kis.domestic.stock("005930")
    quote = stock.quote()
    assert quote.current_price > 0
    balance = kis.account.domestic.balance()
    assert balance.deposit > 0

    notices: queue.Queue = queue.Queue()
    ws = kis.realtime()
    ws.subscribe(tr_id="H0STCNI9", tr_key=demo.creds["hts_id"], on=notices.put)
    ws.start()
    try:
        deadline = time.monotonic() + 10
        while not demo.control("status")["stream"]["subscriptions"] and time.monotonic() < deadline:
            time.sleep(0.05)  # until the server holds the subscription
        bought = stock.buy(quantity=1)
        assert bought.order_id
        notice = notices.get(timeout=10).data  # kis-trader decrypted and parsed it
        assert notice.symbol == "005930" and notice.customer_id == demo.creds["hts_id"]
        limit = int(demo.price()["stck_llam"])
        resting = stock.buy(quantity=1, limit_price=limit)
        deadline = time.monotonic() + 5
        while True:  # "거래소 미접수" right after the order: a client retries
            try:
                cancelled = kis.orders.cancel(resting.client_order_id)
                break
            except kis_trader.errors.KISError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert cancelled.order_id and cancelled.order_id != resting.order_id
    finally:
        ws.stop()
