"""The venue on the dashboard: the grid's venue rows follow broker.kind, the KIS gateway's heartbeat makes the
LIVE banner and its stream line, kis-sim's state comes from the supervisor's list."""

from __future__ import annotations

from core.messages import Heartbeat
from dashboard.state import GATEWAY_STATUS, NS, FirmState
from dashboard.venue import VenueConfig

T0 = 1_760_000_000 * NS
KIS_DEMO_SIM = VenueConfig("kis", "demo", "kis-sim")
KIS_DEMO = VenueConfig("kis", "demo", "kis")


def gateway_heartbeat(**info: object) -> Heartbeat:
    base: dict[str, object] = {"venue": "kis", "env": "demo", "live": False, "ready": True, "stream": "connected",
                               "streamed": 38, "polled": 4, "account": "5000****-01", "seqs": {"x": 1}}
    base.update(info)
    return Heartbeat(name="kis-gateway", pid=4242, ts_ns=T0, info=base)


def rows(state: FirmState, now_ns: int = T0) -> dict[str, dict]:
    return {r["name"]: r for r in state.view(["processes"], now_ns)["processes"]["rows"]}


def venue(state: FirmState) -> dict:
    return state.view(["venue"], T0)["venue"]


def test_a_paper_stack_lists_the_exchange_and_no_kis_process() -> None:
    names = list(rows(FirmState()))
    assert names == ["bus", "exchange", "market-data", "order-manager", "risk-guard", "reconciler", "supervisor",
                     "dashboard"]
    assert venue(FirmState()) == {"kind": "paper", "process": "exchange", "label": "paper exchange", "live": False,
                                  "banner": ""}


def test_heartbeats_land_on_the_rows_named_as_the_processes_name_themselves() -> None:
    s = FirmState()
    s.apply("sys.heartbeat.market-data", "market-data", Heartbeat(name="market-data", pid=7, ts_ns=T0), T0)
    r = rows(s)
    assert r["market-data"]["up"] and "market_data" not in r and len(r) == 8


def test_a_kis_stack_lists_the_gateway_and_kis_sim_when_rehearsing() -> None:
    assert [n for n in rows(FirmState(venue=KIS_DEMO_SIM)) if n.startswith(("kis", "exchange"))] == [
        "kis-gateway", "kis-sim"]
    assert [n for n in rows(FirmState(venue=KIS_DEMO)) if n.startswith(("kis", "exchange"))] == ["kis-gateway"]


def test_a_live_gateway_heartbeat_raises_the_banner_with_the_masked_account() -> None:
    s = FirmState(venue=KIS_DEMO)
    assert venue(s)["banner"] == "" and venue(s)["label"] == "KIS demo"
    s.apply("sys.heartbeat.kis-gateway", "kis-gateway", gateway_heartbeat(env="real", live=True,
                                                                           account="5001****-01"), T0)
    v = venue(s)
    assert v["live"] and v["banner"] == "LIVE — real money — account 5001****-01"
    assert v["label"] == "KIS real"


def test_rehearsing_on_kis_sim_shows_a_quiet_label_and_no_banner() -> None:
    s = FirmState(venue=KIS_DEMO_SIM)
    s.apply("sys.heartbeat.kis-gateway", "kis-gateway", gateway_heartbeat(), T0)
    v = venue(s)
    assert (v["label"], v["live"], v["banner"]) == ("KIS demo via kis-sim", False, "")


def test_a_stack_configured_for_real_money_shows_the_banner_before_the_gateway_reports() -> None:
    v = venue(FirmState(venue=VenueConfig("kis", "real", "kis")))
    assert v["live"] and v["banner"].startswith("LIVE — real money — ") and "not reported" in v["banner"]


def test_the_gateway_row_tells_its_stream_and_how_many_codes_are_streamed_and_polled() -> None:
    s = FirmState(venue=KIS_DEMO_SIM)
    s.apply("sys.heartbeat.kis-gateway", "kis-gateway", gateway_heartbeat(ready=False), T0)
    gw = rows(s)["kis-gateway"]
    assert gw["up"] and gw["detail"] == "stream connected · orders refused until caught up · 38 streamed, 4 polled"
    assert rows(s)["market-data"]["detail"] == ""
    status = {"stream": {"streamed": ["005930", "000660"], "polled": ["035420"]}, "orders_in_doubt": ["a-1"],
              "reduce_only_codes": ["005930"]}
    s.set_rpc(GATEWAY_STATUS, True, status, "", T0)
    v = venue(s)
    assert (v["streamed_codes"], v["polled_codes"]) == (["005930", "000660"], ["035420"])
    assert (v["streamed"], v["polled"]) == (38, 4)  # the heartbeat's counts are the fresher
    assert (v["orders_in_doubt"], v["reduce_only_codes"]) == (["a-1"], ["005930"])


def test_the_venue_section_moves_only_when_the_gateway_reports_something_new() -> None:
    s = FirmState(venue=KIS_DEMO_SIM)
    s.apply("sys.heartbeat.kis-gateway", "kis-gateway", gateway_heartbeat(), T0)
    seen = s.view(["venue"], T0)["versions"]
    s.apply("sys.heartbeat.kis-gateway", "kis-gateway", gateway_heartbeat(seqs={"x": 2}), T0 + NS)
    assert "venue" not in s.changed_sections(seen)
    s.apply("sys.heartbeat.kis-gateway", "kis-gateway", gateway_heartbeat(stream="reconnecting"), T0 + 2 * NS)
    assert "venue" in s.changed_sections(seen)


def test_kis_sim_publishes_no_heartbeat_so_its_state_is_the_supervisors() -> None:
    s = FirmState(venue=KIS_DEMO_SIM)
    assert rows(s)["kis-sim"]["state"] == "not seen"
    listed = [{"name": "kis-sim", "kind": "service", "pid": 99, "state": "running", "cpu_pct": 3.0,
               "rss_bytes": 80 << 20}]
    s.set_rpc("supervisor.list", True, listed, "", T0)
    sim = rows(s, T0 + 2 * NS)["kis-sim"]
    assert (sim["up"], sim["state"], sim["pid"], sim["rss_mb"]) == (True, "running", 99, 80.0)
    assert not rows(s, T0 + 10 * NS)["kis-sim"]["up"]  # the supervisor has not answered since
    s.set_rpc("supervisor.list", True, [], "", T0 + 12 * NS)
    sim = rows(s, T0 + 12 * NS)["kis-sim"]
    assert (sim["up"], sim["state"]) == (False, "not running")
