"""KIS.md section 10, REST items, driven against a running kis-sim with a plain HTTP client."""

from __future__ import annotations

import os
import signal
import time

import httpx

from tests.kis_sim.conftest import BALANCE, PRICE, Server


def test_missing_bearer_is_egw00205(demo: Server) -> None:
    h = demo.headers("FHKST01010100")
    h["authorization"] = demo.token()  # no "Bearer " prefix
    r = demo.http.get(PRICE, params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}, headers=h)
    assert r.status_code == 500 and r.json()["msg_cd"] == "EGW00205" and r.json()["rt_cd"] == "1"


def test_real_tr_on_demo_is_egw02006_and_unknown_tr_on_real_is_opsq0002(demo: Server, real: Server) -> None:
    r = demo.post("/uapi/domestic-stock/v1/trading/order-cash", "TTTC0012U", {})
    assert r.status_code == 500 and r.json()["msg_cd"] == "EGW02006"
    r = real.post("/uapi/domestic-stock/v1/trading/order-cash", "XXXX0000U", {})
    assert r.status_code == 500 and r.json()["msg_cd"] == "OPSQ0002"
    r = demo.get("/uapi/domestic-stock/v1/trading/inquire-psbl-rvsecncl", "TTTC0084R", {})
    assert r.json()["msg_cd"] == "EGW02006"


def test_cross_environment_appkey(demo: Server, real: Server) -> None:
    h = demo.headers("FHKST01010100")
    h["appkey"], h["appsecret"] = real.creds["appkey"], real.creds["appsecret"]
    r = demo.http.get(PRICE, params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}, headers=h)
    assert r.status_code == 500 and r.json()["msg_cd"] == "EGW02007"
    h = real.headers("FHKST01010100")
    h["appkey"], h["appsecret"] = demo.creds["appkey"], demo.creds["appsecret"]
    r = real.http.get(PRICE, params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}, headers=h)
    assert r.json()["msg_cd"] == "EGW02004"
    bad = demo.http.post("/oauth2/tokenP", json={"grant_type": "client_credentials", "appkey": demo.creds["appkey"],
                                                  "appsecret": "x" * 180})
    assert bad.status_code == 403 and bad.json() == {"error_description": "유효하지 않은 AppSecret입니다.",
                                                     "error_code": "EGW00105"}


def test_token_rules_same_token_egw00133_expiry_and_revocation(demo: Server) -> None:
    first = demo.token(fresh=True)
    again = demo.issue_token()
    assert again.status_code == 403 and again.json()["error_code"] == "EGW00133"
    assert set(again.json()) == {"error_description", "error_code"}
    demo.control("auth-clock", {"advance_s": 3600})
    same = demo.issue_token().json()
    assert same["access_token"] == first and same["token_type"] == "Bearer"
    assert len(same["access_token_token_expired"]) == 19
    demo.control("auth-clock", {"advance_s": 86_400})
    r = demo.get(PRICE, "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"})
    assert r.status_code == 500 and r.json()["msg_cd"] == "EGW00123"
    token = demo.token(fresh=True)
    assert token != first
    r = demo.http.post("/oauth2/revokeP", json={"appkey": demo.creds["appkey"], "appsecret": demo.creds["appsecret"],
                                                "token": token})
    assert r.json() == {"code": 200, "message": "접근토큰 폐기에 성공하였습니다"}
    r = demo.get(PRICE, "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"})
    assert r.json()["msg_cd"] == "EGW00121"
    demo.token(fresh=True)


def test_rate_limit_per_appkey_across_connections(demo: Server) -> None:
    demo.control("settings", {"rate_limit_per_s": 2})
    try:
        clients = [httpx.Client(base_url=demo.base) for _ in range(3)]
        h = demo.headers("FHKST01010100")
        params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
        answers = [c.get(PRICE, params=params, headers=h) for c in clients for _ in range(2)]
        refused = [r for r in answers if r.status_code == 500]
        assert refused, "six calls in well under a second must exceed 2/s"
        assert refused[0].json() == {"rt_cd": "1", "msg_cd": "EGW00201", "msg1": "초당 거래건수를 초과하였습니다."}
        for c in clients:
            c.close()
    finally:
        demo.control("settings", {"rate_limit_per_s": 1000})


def test_order_reply_codes_and_business_refusal(demo: Server, real: Server) -> None:
    r = demo.order(qty=1)
    body = r.json()
    assert r.status_code == 200 and body["msg_cd"] == "40600000" and body["msg1"].startswith("모의투자 매수")
    out = body["output"]
    assert out["KRX_FWDG_ORD_ORGNO"] == "00950" and len(out["ODNO"]) == 10 and len(out["ORD_TMD"]) == 6
    r = real.order(qty=1)
    assert r.json()["msg_cd"] == "APBK0013" and r.json()["output"]["KRX_FWDG_ORD_ORGNO"] == "06010"
    r = demo.order(side="sell", qty=10_000_000)
    assert r.status_code == 200 and r.json()["rt_cd"] == "1" and r.json()["msg_cd"].startswith("APBK")
    r = demo.order(qty=1, price=500, code="005930")
    assert r.json()["rt_cd"] == "1"  # demo: under 1,000 won


def test_cancel_too_early_then_cancel_and_revise_give_new_odno(demo: Server) -> None:
    low = int(demo.price()["stck_llam"])
    odno = demo.order(qty=3, price=low).json()["output"]["ODNO"]
    early = demo.change(odno, "02")
    assert early.json()["rt_cd"] == "1" and early.json()["msg1"] == "거래소 미접수로 정정취소주문이 불가합니다"
    deadline = time.monotonic() + 5
    while True:  # the order reaches the exchange shortly: retry as a client would
        revised = demo.change(odno, "01", qty=0, price=low + 100)
        if revised.json()["rt_cd"] == "0" or time.monotonic() > deadline:
            break
    new_odno = revised.json()["output"]["ODNO"]
    assert revised.json()["rt_cd"] == "0" and new_odno != odno
    cancel = demo.change(new_odno, "02")
    while cancel.json()["rt_cd"] != "0" and time.monotonic() < deadline:
        cancel = demo.change(new_odno, "02")
    assert cancel.json()["msg_cd"] == "40600000" and cancel.json()["output"]["ODNO"] not in (odno, new_odno)
    empty = demo.change(odno, "02", branch="")
    assert empty.json()["rt_cd"] == "1"


def test_order_timeout_and_drop_after_acceptance(demo: Server) -> None:
    before = len(demo.ccld().json()["output1"])
    demo.fault("order-timeout", count=1)
    r = demo.order(qty=1)
    assert r.status_code == 500 and r.json()["msg_cd"] == "EGW00301"
    demo.fault("order-drop", count=1)
    try:
        demo.order(qty=1)
        raise AssertionError("the connection should have been dropped")
    except httpx.HTTPError:
        pass
    demo.http = httpx.Client(base_url=demo.base, timeout=10)
    rows = demo.ccld().json()["output1"]
    assert len(rows) >= before + 2  # both orders were accepted: the client must reconcile


def test_paging_lowercase_tr_cont_padded_cursors_page_sizes(demo: Server) -> None:
    for _ in range(16):
        demo.order(qty=1)
    first = demo.ccld()
    assert first.headers["tr_cont"] == "M" and len(first.json()["output1"]) == 15
    body = first.json()
    assert len(body["ctx_area_nk100"]) == 100 and len(body["ctx_area_fk100"]) == 100
    seen = {r["odno"] for r in body["output1"]}
    pages = 1
    while body and first.headers["tr_cont"] == "M":
        first = demo.ccld("N", body["ctx_area_fk100"].strip(), body["ctx_area_nk100"].strip())
        body = first.json()
        assert not seen & {r["odno"] for r in body["output1"]}
        seen |= {r["odno"] for r in body["output1"]}
        pages += 1
    assert first.headers["tr_cont"] == "D" and pages >= 2
    row = body["output1"][-1] if body["output1"] else {}
    assert "cnc_cfrm_qty" in row and "excg_id_dvsn_cd" in row


def test_real_page_size_and_psbl_rvsecncl(real: Server) -> None:
    r = real.ccld()
    assert r.headers["tr_cont"] in ("D", "M") and len(r.json()["output1"]) <= 100
    r = real.get("/uapi/domestic-stock/v1/trading/inquire-psbl-rvsecncl", "TTTC0084R",
                 {"CANO": real.cano, "ACNT_PRDT_CD": "01", "CTX_AREA_FK100": "", "CTX_AREA_NK100": "",
                  "INQR_DVSN_1": "0", "INQR_DVSN_2": "0"})
    assert r.json()["rt_cd"] == "0" and isinstance(r.json()["output"], list)


def test_balance_and_buying_power(demo: Server) -> None:
    demo.order(qty=2)
    params = {"CANO": demo.cano, "ACNT_PRDT_CD": "01", "AFHR_FLPR_YN": "N", "OFL_YN": "", "INQR_DVSN": "02",
              "UNPR_DVSN": "01", "FUND_STTL_ICLD_YN": "N", "FNCG_AMT_AUTO_RDPT_YN": "N", "PRCS_DVSN": "00",
              "CTX_AREA_FK100": "", "CTX_AREA_NK100": ""}
    body = demo.get(BALANCE, "VTTC8434R", params, tr_cont="").json()
    assert body["msg_cd"] == "KIOK0510" and body["msg1"].endswith(" ")
    rows = body["output1"]
    assert rows and all(isinstance(v, str) for v in rows[0].values()) and rows[0]["trad_dvsn_name"] == "현금"
    assert isinstance(body["output2"], list) and len(body["output2"]) == 1
    r = demo.get("/uapi/domestic-stock/v1/trading/inquire-psbl-order", "VTTC8908R",
                 {"CANO": demo.cano, "ACNT_PRDT_CD": "01", "PDNO": "005930", "ORD_UNPR": "70000", "ORD_DVSN": "00",
                  "CMA_EVLU_AMT_ICLD_YN": "N", "OVRS_ICLD_YN": "N"})
    assert int(r.json()["output"]["max_buy_qty"]) > 0


def test_inquire_price_has_82_fields_as_strings_and_lowercase_query_names(demo: Server) -> None:
    r = demo.get(PRICE, "FHKST01010100", {"fid_cond_mrkt_div_code": "J", "fid_input_iscd": "005930"})
    out = r.json()["output"]
    assert len(out) == 82 and all(isinstance(v, str) for v in out.values())
    for key in ("per", "eps", "bps", "stck_mxpr", "stck_llam", "aspr_unit"):
        assert out[key]


def test_minute_bars_at_most_30_newest_first_filtered_by_hour(demo: Server) -> None:
    params = {"FID_ETC_CLS_CODE": "", "FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930",
              "FID_INPUT_HOUR_1": "090300", "FID_PW_DATA_INCU_YN": "N"}
    body = demo.get("/uapi/domestic-stock/v1/quotations/inquire-time-itemchartprice", "FHKST03010200", params).json()
    hours = [r["stck_cntg_hour"] for r in body["output2"]]
    assert 0 < len(hours) <= 30 and hours == sorted(hours, reverse=True) and max(hours) <= "090300"
    params["FID_INPUT_HOUR_1"] = "235959"
    assert len(demo.get("/uapi/domestic-stock/v1/quotations/inquire-time-itemchartprice", "FHKST03010200",
                        params).json()["output2"]) <= 30


def test_investor_flows_have_no_row_for_today_before_the_close(demo: Server) -> None:
    body = demo.get("/uapi/domestic-stock/v1/quotations/inquire-investor", "FHKST01010900",
                    {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}).json()
    today = demo.control("status")["trading_date"]
    assert body["rt_cd"] == "0" and all(r["stck_bsop_date"] != today for r in body["output"])


def test_bad_input_gets_kis_codes_and_the_server_keeps_serving(demo: Server) -> None:
    h = demo.headers("VTTC0012U")
    r = demo.http.post("/uapi/domestic-stock/v1/trading/order-cash", content=b"{not json", headers=h)
    assert r.status_code == 500 and r.json()["msg_cd"] == "OPSQ9997"
    r = demo.post("/uapi/domestic-stock/v1/trading/order-cash", "VTTC0012U", {"CANO": demo.cano})
    assert r.json()["rt_cd"] == "1"
    r = demo.http.post("/uapi/domestic-stock/v1/trading/order-cash", json={"CANO": 1}, headers=h)
    assert r.json()["rt_cd"] == "1"
    h.pop("tr_id")
    r = demo.http.get(PRICE, headers=h)
    assert r.json()["msg_cd"] == "OPSQ9999"
    r = demo.http.get("/uapi/nowhere", headers=h)
    assert r.status_code == 404 and r.json()["msg_cd"] == "MCA00124"
    r = demo.http.post("/uapi/domestic-stock/v1/trading/order-cash", content=b"x" * 200_000,
                       headers=demo.headers("VTTC0012U"))
    assert r.status_code == 413 and r.json()["msg_cd"] == "EGW00101"
    r = demo.http.post("/oauth2/tokenP", content=b"[")
    assert r.status_code == 403 and "error_code" in r.json()
    assert demo.price()["stck_prpr"]


def test_hashkey_echoes_body(demo: Server) -> None:
    r = demo.http.post("/uapi/hashkey", json={"CANO": demo.cano},
                       headers={"appkey": demo.creds["appkey"], "appsecret": demo.creds["appsecret"]})
    assert r.json()["BODY"] == {"CANO": demo.cano} and len(r.json()["HASH"]) == 64


def test_random_500s_and_rest_silence(demo: Server) -> None:
    demo.fault("random-500", fraction=1.0)
    r = demo.get(PRICE, "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"})
    assert r.status_code == 500 and r.json()["rt_cd"] == "1"
    demo.fault("rest-silence", seconds=0.5)
    try:
        demo.http.get(PRICE, headers=demo.headers("FHKST01010100"), timeout=0.2)
        raise AssertionError("a silent server must not answer")
    except httpx.TimeoutException:
        pass
    demo.fault("clear")
    demo.http = httpx.Client(base_url=demo.base, timeout=10)
    assert demo.price()["stck_prpr"]


def test_state_survives_a_restart(tmp_path_factory) -> None:
    server = Server(tmp_path_factory.mktemp("restart"), "--rate-limit", "1000", "--start-time", "09:05")
    try:
        odno = server.order(qty=1).json()["output"]["ODNO"]
        token = server.token()
        server.stop()
        server.start()
        server._token = token  # the token survives too
        rows = server.ccld().json()["output1"]
        assert odno in {r["odno"] for r in rows}
        assert server.order(qty=1).json()["output"]["ODNO"] > odno
    finally:
        server.stop()


def _holding_and_cash(server: Server, code: str) -> tuple[int, int]:
    params = {"CANO": server.cano, "ACNT_PRDT_CD": "01", "AFHR_FLPR_YN": "N", "OFL_YN": "", "INQR_DVSN": "02",
              "UNPR_DVSN": "01", "FUND_STTL_ICLD_YN": "N", "FNCG_AMT_AUTO_RDPT_YN": "N", "PRCS_DVSN": "00",
              "CTX_AREA_FK100": "", "CTX_AREA_NK100": ""}
    body = server.get(BALANCE, "VTTC8434R", params, tr_cont="").json()
    held = {r["pdno"]: int(r["hldg_qty"]) for r in body["output1"]}
    return held.get(code, 0), int(body["output2"][0]["nxdy_excc_amt"])


def test_a_phantom_changes_the_balance_without_an_order_and_is_saved_before_the_reply(tmp_path_factory) -> None:
    server = Server(tmp_path_factory.mktemp("phantom"), "--rate-limit", "1000", "--start-time", "09:05")
    try:
        qty, cash = _holding_and_cash(server, "000660")
        reply = server.fault("phantom", code="000660", qty=3, cash_won=-12345)
        assert reply["phantom"] == {"code": "000660", "qty": qty + 3, "cash_won": cash - 12345}
        assert _holding_and_cash(server, "000660") == (qty + 3, cash - 12345)
        assert server.ccld().json()["output1"] == []  # no order, no fill explains it
        token = server.token()
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)  # kill -9 right after the reply: the change was on disk
        server.proc.wait(5)
        server.stop()
        server.start()
        server._token = token
        assert _holding_and_cash(server, "000660") == (qty + 3, cash - 12345)
        server.fault("clear")  # a phantom is no fault in force: clear leaves it
        assert _holding_and_cash(server, "000660") == (qty + 3, cash - 12345)
        for bad in ({"code": "000660", "qty": 1.5}, {"code": "999999", "qty": 1}, {"code": "000660", "qty": -10**6},
                    {"code": "000660", "price": 1}):
            r = server.http.post("/kis-sim/fault", json={"name": "phantom", **bad})
            assert r.status_code == 400 and "phantom" in r.json()["error"], (bad, r.text)
        assert _holding_and_cash(server, "000660") == (qty + 3, cash - 12345)
    finally:
        server.stop()
