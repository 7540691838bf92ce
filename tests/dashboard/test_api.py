"""The dashboard's HTTP API against a running bus: state, exports, control, metrics."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from core.config import load_stack
from core.messages import Alert, AlertLevel, Tick
from dashboard.app import create_app
from tests.dashboard.conftest import TOKEN
from tests.dashboard.firm import Firm, wait_until

ROSTER_IDS = {"pair-samsung", "foreign-hynix", "sma-samsung", "volume-kakao"}


@pytest.fixture
def client(firm: Firm) -> Iterator[TestClient]:
    """The dashboard app in this process, its feed threads listening to the firm's bus."""
    settings = load_stack(run_dir=str(firm.run_dir), dashboard_token=TOKEN)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as c:
        yield c


def state(client: TestClient, *sections: str) -> dict:
    return client.get("/api/state", params={"sections": ",".join(sections)}).json()


def process(client: TestClient, name: str) -> dict:
    return next(r for r in state(client, "processes")["processes"]["rows"] if r["name"] == name)


def test_heartbeats_on_the_bus_show_processes_up_and_absent_ones_down(client: TestClient) -> None:
    wait_until(lambda: process(client, "exchange")["up"], 10, "the exchange's heartbeat")
    exchange = process(client, "exchange")
    assert exchange["pid"] > 0 and exchange["rss_mb"] == 50.0 and exchange["heartbeat_age_s"] is not None
    supervisor = process(client, "supervisor")
    assert not supervisor["up"] and supervisor["state"] == "not seen"


def test_every_roster_agent_is_in_the_grid_with_its_reported_book(client: TestClient) -> None:
    def rows() -> dict:
        found = {r["id"]: r for r in state(client, "agents")["agents"]["rows"]}
        return found if all(found.get(i, {}).get("up") for i in ROSTER_IDS) else {}

    found = wait_until(rows, 10, "agent heartbeats")
    hynix = found["foreign-hynix"]
    assert hynix["code"] == "000660" and hynix["strategy"] == "foreign_follower"
    assert hynix["holding"] == 10 and hynix["open_orders"] == 1 and hynix["book_source"] == "agent"


def test_a_tick_published_on_the_bus_becomes_the_board_price(client: TestClient, firm: Firm) -> None:
    pub = firm.publisher()

    def seen() -> bool:
        pub.publish("md.tick.035420", Tick(code="035420", ts_ns=time.time_ns(), price=201_500, qty=3, cum_volume=77))
        rows = {r["code"]: r for r in state(client, "market")["market"]["rows"]}
        return rows.get("035420", {}).get("last") == 201_500

    wait_until(seen, 10, "the NAVER tick on the board")
    naver = next(r for r in state(client, "market")["market"]["rows"] if r["code"] == "035420")
    assert naver["name"] and naver["volume"] == 77 and naver["base_price"] > 0
    assert naver["change"] == 201_500 - naver["base_price"]


def test_alerts_are_listed_with_level_source_and_time(client: TestClient, firm: Firm) -> None:
    pub = firm.publisher()

    def listed() -> bool:
        pub.publish("sys.alert", Alert(level=AlertLevel.ERROR, source="risk_guard", kind="LIMIT", text="daily loss", ts_ns=123))
        return any(a["kind"] == "LIMIT" for a in state(client, "alerts")["alerts"]["rows"])

    wait_until(listed, 10, "the alert")
    alert = next(a for a in state(client, "alerts")["alerts"]["rows"] if a["kind"] == "LIMIT")
    assert (alert["level"], alert["source"], alert["ts_ns"]) == ("error", "risk_guard", 123)


@pytest.mark.parametrize("path", ["/api/agents/sma-samsung/kill", "/api/agents/sma-samsung/spawn", "/api/risk/halt", "/api/risk/resume"])
def test_control_without_the_token_is_refused(client: TestClient, path: str) -> None:
    assert client.post(path).status_code == 401
    assert client.post(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post(path, data={"token": "wrong"}).status_code == 401


def test_control_with_the_token_reaches_for_the_service_and_reports_it_down(client: TestClient) -> None:
    # No supervisor and no risk guard run in this firm: the action fails fast with a reason.
    for path, form in (("/api/agents/sma-samsung/kill", None), ("/api/risk/halt", {"token": TOKEN})):
        headers = None if form else {"Authorization": f"Bearer {TOKEN}"}
        res = client.post(path, headers=headers, data=form)
        assert res.status_code == 503
        assert res.json()["reason_code"].startswith("RPC_")


def test_services_that_do_not_answer_rpc_are_shown_as_unavailable(client: TestClient) -> None:
    wait_until(lambda: "supervisor.list" in state(client, "processes")["processes"]["rpc"], 10, "the first RPC poll")
    rpc = state(client, "processes")["processes"]["rpc"]
    assert rpc["supervisor.list"]["ok"] is False and "no server" in rpc["supervisor.list"]["error"]
    assert state(client, "risk")["risk"]["trading_state"] == "unknown"


def test_exports_follow_the_grid_sort_and_filter(client: TestClient) -> None:
    wait_until(lambda: any(r["up"] for r in state(client, "agents")["agents"]["rows"]), 10, "agents")
    params = {"sort": "cash_won", "desc": "1", "f_strategy": "volume"}
    lines = client.get("/api/agents.csv", params=params).text.strip().splitlines()
    assert lines[0].startswith("id,code,strategy,state,cash_won")
    ids = [line.split(",")[0] for line in lines[1:]]
    assert set(ids) == {"volume-kakao", "volume-ecoprobm"}
    cash = [int(line.split(",")[4]) for line in lines[1:]]
    assert cash == sorted(cash, reverse=True)
    book = load_workbook(io.BytesIO(client.get("/api/agents.xlsx", params=params).content))
    sheet = book.active
    assert [c.value for c in sheet[1]][:3] == ["id", "code", "strategy"]
    assert sorted(sheet.cell(row=r, column=1).value for r in (2, 3)) == sorted(ids)
    assert isinstance(sheet.cell(row=2, column=5).value, int)


def test_metrics_expose_processes_agents_and_bus_rates(client: TestClient) -> None:
    wait_until(lambda: 'trader_bus_rate_per_second{topic="md.tick"}' in client.get("/metrics").text, 10, "bus rates")
    text = client.get("/metrics").text
    assert 'trader_process_up{process="exchange"} 1.0' in text
    assert 'trader_process_up{process="supervisor"} 0.0' in text
    assert 'trader_agent_holding{agent="foreign-hynix",code="000660"} 10.0' in text
    assert client.get("/healthz").text.startswith("ok")


def test_configuration_page_masks_the_token(client: TestClient) -> None:
    page = client.get("/config").text
    assert TOKEN not in page and "********" in page and "bus_out" in page


def test_every_page_renders(client: TestClient) -> None:
    wait_until(lambda: any(r["up"] for r in state(client, "agents")["agents"]["rows"]), 10, "agents")
    for path in ("/", "/agents", "/agents/pair-samsung", "/market", "/risk", "/recon", "/config"):
        res = client.get(path)
        assert res.status_code == 200, path
        assert "new EventSource" in res.text  # the live script is inlined: no second request
    assert client.get("/agents/no-such-agent").status_code == 404


def test_a_reconciliation_run_needs_the_token_and_shows_as_the_newest_run(client: TestClient, firm: Firm) -> None:
    firm.start("reconciler", "services.reconciler")  # no broker in this firm: the run says it could not reach it
    assert client.post("/api/recon/run").status_code == 401
    assert client.post("/api/recon/run", headers={"Authorization": "Bearer wrong"}).status_code == 401

    def run() -> dict | None:
        res = client.post("/api/recon/run", headers={"Authorization": f"Bearer {TOKEN}"})
        return res.json()["result"] if res.status_code == 200 else None

    report = wait_until(run, 20, "the reconciler to answer a run")
    assert report["trigger"] == "command (dashboard)" and "broker does not answer" in report["error"]

    def newest() -> dict | None:
        history = state(client, "recon")["recon"]["history"]
        return history[0] if history and history[0]["report_id"] == report["report_id"] else None

    line = wait_until(newest, 10, "the run in the dashboard's history")
    assert line["result"] == "could not run" and line["breaks"] == 0 and line["duration_ms"] is not None
