"""The desk's HTTP side against a running bus: alert groups acknowledged and muted behind the token, the
daily reports of a book from a real journal, and an agent's own status document asked of its status page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agents.status_page import StatusPage
from core.config import load_stack
from core.messages import Alert, AlertLevel, Heartbeat
from dashboard.app import create_app
from services.supervisor.journal import DayJournal
from tests.dashboard.conftest import TOKEN
from tests.dashboard.firm import Firm, wait_until

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(firm: Firm) -> Iterator[TestClient]:
    settings = load_stack(run_dir=str(firm.run_dir), dashboard_token=TOKEN)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as c:
        yield c


def groups(client: TestClient) -> dict[str, dict]:
    return {g["key"]: g for g in client.get("/api/state", params={"sections": "alerts"}).json()["alerts"]["groups"]}


def test_alerts_fold_into_a_group_that_is_acknowledged_and_muted_only_with_the_token(client: TestClient, firm: Firm) -> None:
    pub = firm.publisher()

    def folded() -> bool:
        pub.publish("sys.alert", Alert(level=AlertLevel.WARNING, source="order-manager", kind="broker_connection",
                                       text="reconnecting", ts_ns=time.time_ns()))
        g = groups(client).get("order-manager/broker_connection")
        return bool(g and g["count"] >= 2)

    wait_until(folded, 10, "two alerts folded into one group")
    key = "order-manager/broker_connection"
    assert client.post("/api/alerts/ack", data={"key": key}).status_code == 401
    assert groups(client)[key]["active"]
    res = client.post("/api/alerts/ack", data={"key": key}, headers=AUTH)
    assert res.status_code == 200 and res.json()["result"]["acked"]
    assert not groups(client)[key]["active"]
    res = client.post("/api/alerts/mute", data={"key": key, "minutes": "30"}, headers=AUTH)
    assert res.status_code == 200 and res.json()["result"]["muted"]
    assert client.post("/api/alerts/mute", data={"key": key, "minutes": "soon"}, headers=AUTH).status_code == 422
    assert client.post("/api/alerts/ack", data={"key": "no/such"}, headers=AUTH).status_code == 404
    assert client.post("/api/alerts/forget", data={"key": key}, headers=AUTH).status_code == 404


def test_the_daily_reports_of_a_book_come_oldest_first_with_the_running_total(client: TestClient, firm: Firm) -> None:
    journal = DayJournal(Path(firm.run_dir))
    row = {"orders": 1, "fills": 1, "bought_qty": 1, "sold_qty": 0, "bought_won": 1, "sold_won": 0, "fees_won": 1,
           "taxes_won": 0, "open_orders": 0, "adjusted_qty": 0, "adjusted_won": 0, "end_positions": {}}
    try:
        journal.write_report([{**row, "trading_date": "2026-11-27", "agent_id": "ACCOUNT", "realized_pnl_won": 1_000, "unrealized_pnl_won": 50},
                              {**row, "trading_date": "2026-11-30", "agent_id": "ACCOUNT", "realized_pnl_won": -300, "unrealized_pnl_won": 20},
                              {**row, "trading_date": "2026-11-30", "agent_id": "sma-samsung", "realized_pnl_won": 7, "unrealized_pnl_won": 0}],
                             time.time_ns())
    finally:
        journal.close()
    days = client.get("/api/days").json()["days"]
    assert [(d["trading_date"], d["realized_to_date_won"], d["total_pnl_won"]) for d in days] == [
        ("2026-11-27", 1_000, 1_050), ("2026-11-30", 700, 720)]
    assert [d["total_pnl_won"] for d in client.get("/api/days", params={"agent": "sma-samsung"}).json()["days"]] == [7]
    assert client.get("/api/days", params={"agent": "nobody"}).json()["days"] == []


def test_an_agents_status_document_is_asked_of_its_own_page(client: TestClient, firm: Firm) -> None:
    page = StatusPage(0, "x-agent")
    try:
        page.update({"agent_id": "x-agent", "strategy_state": {"fast": 10, "window": [1, 2, 3]}})
        pub = firm.publisher()

        def seen() -> bool:
            pub.publish("sys.heartbeat.agent.x-agent", Heartbeat(name="x-agent", pid=1, ts_ns=time.time_ns(),
                                                                 info={"agent_id": "x-agent", "code": "005930", "dp": page.port}))
            return client.get("/api/agents/x-agent").status_code == 200

        wait_until(seen, 10, "the agent's heartbeat")
        doc = client.get("/api/agents/x-agent/status").json()
        assert doc["available"] and doc["strategy_state"] == {"fast": 10, "window": [1, 2, 3]}
    finally:
        page.close()
    doc = client.get("/api/agents/x-agent/status").json()
    assert not doc["available"] and f"port {page.port}" in doc["error"]
    assert client.get("/api/agents/nobody/status").status_code == 404
