"""KIS replies read into records, and every malformed one refused as KisBadReply (never another exception)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kis_gateway import wire
from services.kis_gateway.wire import KisBadReply, KisFailure, Reply, norm_odno, read_oauth, read_reply, refusal_reason


def body(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def ok(**outputs: Any) -> Reply:
    answer = read_reply("TR", 200, body({"rt_cd": "0", "msg_cd": "KIOK0510", "msg1": "조회가 완료되었습니다   ",
                                         **outputs}), "D")
    assert isinstance(answer, Reply)
    return answer


CCLD_ROW = {
    "ord_dt": "20261201", "ord_gno_brno": "00950", "odno": "0000000007", "orgn_odno": "", "sll_buy_dvsn_cd": "02",
    "pdno": "005930", "ord_qty": "10", "ord_unpr": "70100", "ord_tmd": "090513", "tot_ccld_qty": "4",
    "avg_prvs": "70100.5", "cncl_yn": "N", "tot_ccld_amt": "280402", "ord_dvsn_cd": "00", "cnc_cfrm_qty": "0",
    "rmn_qty": "6", "rjct_qty": "0", "excg_id_dvsn_cd": "KRX",
}


# --- the envelope -------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, words", [
    (b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
    (b"", "empty body"),
    (b"   \n", "empty body"),
    (b"[1, 2]", "not an object"),
    (b"\xff\xfe\xfa garbage", "not JSON"),
    (b"[" * 100_000, "not JSON"),
    (body({"msg_cd": "KIOK0510"}), "no rt_cd"),
    (body({"rt_cd": 0, "msg_cd": "KIOK0510"}), "rt_cd is int"),
    (body({"rt_cd": "1", "msg1": "??"}), "without msg_cd"),
])
def test_unreadable_envelopes_are_bad_replies(content: bytes, words: str) -> None:
    with pytest.raises(KisBadReply) as err:
        read_reply("VTTC0081R", 502, content)
    assert err.value.tr_id == "VTTC0081R" and words in err.value.reason


def test_error_body_is_a_failure_whatever_the_status_with_msg1_stripped() -> None:
    f = read_reply("FHKST01010100", 500, body({"rt_cd": "1", "msg_cd": "EGW00201",
                                               "msg1": "초당 거래건수를 초과하였습니다.      "}))
    assert f == KisFailure("EGW00201", "초당 거래건수를 초과하였습니다.", 500)
    assert f.rate_limited and not f.token_invalid and not f.transient
    refused = {"rt_cd": "1", "msg_cd": "APBK0919", "msg1": "주문가능수량을 초과하였습니다"}
    business = read_reply("VTTC0012U", 200, body(refused))
    assert isinstance(business, KisFailure) and business.http_status == 200


def test_oauth_error_shape_is_a_failure_on_either_path() -> None:
    text = "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)"
    raw = body({"error_description": text, "error_code": "EGW00133"})
    assert read_oauth("tokenP", 403, raw) == KisFailure("EGW00133", text, 403)
    assert read_reply("VTTC0012U", 403, raw) == read_oauth("tokenP", 403, raw)
    grant = read_oauth("tokenP", 200, body({"access_token": "x.y.z", "expires_in": 86400}))
    assert grant == {"access_token": "x.y.z", "expires_in": 86400}
    with pytest.raises(KisBadReply):
        read_oauth("tokenP", 500, body({"something": "else"}))


@pytest.mark.parametrize("code, flag", [("EGW00121", "token_invalid"), ("EGW00123", "token_invalid"),
                                        ("EGW00301", "timed_out"), ("EGW00302", "timed_out"),
                                        ("EGW00202", "transient"), ("EGW00002", "transient")])
def test_failure_classes(code: str, flag: str) -> None:
    assert getattr(KisFailure(code, "", 500), flag)


def test_a_success_with_an_error_status_is_not_believed() -> None:
    with pytest.raises(KisBadReply, match="rt_cd 0 with HTTP 500"):
        read_reply("VTTC0012U", 500, body({"rt_cd": "0", "msg_cd": "40600000", "msg1": ""}))


# --- refusals and their reasons ------------------------------------------------------------------------


@pytest.mark.parametrize("msg_cd, msg1, side, reason", [
    ("APBK0919", "주문가능수량을 초과하였습니다", "sell", wire.INSUFFICIENT_SHARES),
    ("APBK0919", "주문가능수량을 초과하였습니다", "buy", wire.INSUFFICIENT_CASH),
    ("APBK0918", "주문가능금액을 초과 했습니다", "buy", wire.INSUFFICIENT_CASH),
    ("APBK0918", "장운영시간이 아닙니다", "buy", wire.MARKET_CLOSED),
    ("40570000", "모의투자 장시작전 입니다.", "buy", wire.MARKET_CLOSED),
    ("APBK0918", "주문단가가 호가단위에 맞지 않습니다", "buy", wire.BAD_TICK),
    ("APBK0918", "주문단가가 상하한가 범위를 벗어났습니다", "sell", wire.OUTSIDE_PRICE_LIMITS),
    ("APBK0918", "주문할 수 없는 종목입니다", "buy", wire.UNKNOWN_CODE),
    ("APBK0919", "거래소 미접수로 정정취소주문이 불가합니다", None, wire.CANCEL_TOO_EARLY),
    ("APBK0919", "정정취소가능수량을 초과하였습니다", None, wire.CANCEL_QTY_EXCEEDS_REMAINING),
    ("APBK0918", "정정취소할 수량이 없습니다", None, wire.ORDER_NOT_OPEN),
    ("APBK0918", "원주문번호를 확인하세요", None, wire.UNKNOWN_ORDER),
    ("ZZZZ9999", "처음 보는 거절 사유", "buy", wire.BROKER_REJECTED),
    ("APBK0918", "", "buy", wire.BROKER_REJECTED),
    ("APBK0919", "주문가능수량을 초과하였습니다", None, wire.BROKER_REJECTED),
])
def test_refusal_reasons_by_code_and_keywords(msg_cd: str, msg1: str, side: str | None, reason: str) -> None:
    assert refusal_reason(msg_cd, msg1, side) == reason


def test_rate_limited_is_a_refusal_with_its_own_reason() -> None:
    exc = wire.KisRateLimited()
    assert isinstance(exc, wire.KisRejected) and exc.msg_cd == "EGW00201" and exc.reason_code == wire.RATE_LIMITED


# --- records --------------------------------------------------------------------------------------------


def test_place_reply_reads_upper_and_lower_case_keys() -> None:
    upper = wire.place_reply(ok(output={"KRX_FWDG_ORD_ORGNO": "00950", "ODNO": "2696", "ORD_TMD": "095902"}))
    lower = wire.place_reply(ok(output={"krx_fwdg_ord_orgno": "00950", "odno": "0000002696", "ord_tmd": "095902"}))
    assert upper.odno == "2696" and lower.odno == "0000002696" and upper.key == lower.key == "2696"
    assert upper.branch == "00950" and upper.ord_tmd == "095902"


@pytest.mark.parametrize("output", [
    None, [], {"KRX_FWDG_ORD_ORGNO": "00950", "ORD_TMD": "095902"},
    {"KRX_FWDG_ORD_ORGNO": "00950", "ODNO": 2696, "ORD_TMD": "095902"},
    {"KRX_FWDG_ORD_ORGNO": "00950", "ODNO": "26x6", "ORD_TMD": "095902"},
    {"ODNO": "2696", "ORD_TMD": "095902"},
])
def test_place_reply_without_a_readable_receipt_is_a_bad_reply(output: Any) -> None:
    with pytest.raises(KisBadReply):
        wire.place_reply(ok(output=output))


def test_norm_odno() -> None:
    assert norm_odno("0000002696") == norm_odno("2696") == norm_odno(" 2696 ") == "2696"
    assert norm_odno("0000000000") == "0" and norm_odno("") == ""


def test_daily_order_row_both_spellings_and_rounding() -> None:
    d = wire.daily_order(wire.lower_keys(CCLD_ROW), "VTTC0081R")
    assert (d.side, d.qty, d.price, d.filled_qty, d.avg_price, d.remaining_qty) == ("buy", 10, 70100, 4, 70101, 6)
    assert d.key == "7" and not d.canceled and d.order_dvsn == "00" and d.filled_value_won == 280402
    doc = {k: v for k, v in CCLD_ROW.items() if k not in ("cnc_cfrm_qty", "excg_id_dvsn_cd")}
    doc.update(CNCL_CFRM_QTY="3", excg_id_dvsn_Cd="KRX", cncl_yn="Y", sll_buy_dvsn_cd="01", orgn_odno="0000000005")
    c = wire.daily_order(wire.lower_keys(doc), "VTTC0081R")
    assert c.cancel_confirmed_qty == 3 and c.canceled and c.side == "sell" and c.original_key == "5"


@pytest.mark.parametrize("key, value", [
    ("ord_qty", "1.5"), ("ord_qty", 10), ("ord_qty", "1e999999999"), ("avg_prvs", "1e50"), ("ord_qty", None),
    ("ord_qty", "ten"), ("ord_qty", "NaN"),
    ("sll_buy_dvsn_cd", "03"), ("odno", ""), ("odno", "A123"), ("pdno", ""), ("ord_dt", "2026-12-01"),
    ("rmn_qty", None), ("tot_ccld_qty", ["4"]), ("avg_prvs", {"v": 1}), ("cncl_yn", True),
])
def test_daily_order_row_malformed_field_is_a_bad_reply(key: str, value: Any) -> None:
    row = dict(CCLD_ROW)
    if value is None:
        del row[key]
    else:
        row[key] = value
    with pytest.raises(KisBadReply) as err:
        wire.daily_order(row, "VTTC0081R")
    assert key in err.value.reason


def test_page_cursor_rules() -> None:
    more = read_reply("TR", 200, body({"rt_cd": "0", "msg_cd": "", "msg1": "", "output1": [CCLD_ROW],
                                       "ctx_area_fk100": "a^b".ljust(100), "ctx_area_nk100": "a^7".ljust(100)}), "M")
    assert isinstance(more, Reply)
    pg = wire.page(more, "output1")
    assert pg.more and pg.nk100 == "a^7".ljust(100) and len(pg.rows) == 1  # the cursor goes back verbatim
    end = read_reply("TR", 200, body({"rt_cd": "0", "output1": [], "ctx_area_nk100": " ^^ "}), "M")
    assert isinstance(end, Reply) and not wire.page(end, "output1").more
    broken = read_reply("TR", 200, body({"rt_cd": "0", "output1": [], "ctx_area_nk100": "   "}), "F")
    assert isinstance(broken, Reply)
    with pytest.raises(KisBadReply, match="ctx_area_nk100 is empty"):
        wire.page(broken, "output1")
    with pytest.raises(KisBadReply, match="not a list"):
        wire.page(ok(output1={"odno": "1"}), "output1")
    with pytest.raises(KisBadReply, match=r"output1\[1\]"):
        wire.page(ok(output1=[CCLD_ROW, "x"]), "output1")


BALANCE_SUMMARY = {"dnca_tot_amt": "1000000000", "nxdy_excc_amt": "999297900", "prvs_rcdl_excc_amt": "999297900",
                   "scts_evlu_amt": "702000", "tot_evlu_amt": "999999900"}


def test_balance_adds_rows_of_one_stock_and_drops_zero_rows() -> None:
    rows = [{"pdno": "005930", "hldg_qty": "10", "pchs_amt": "700000", "pchs_avg_pric": "70000.0000",
             "ord_psbl_qty": "10"},
            {"pdno": "005930", "hldg_qty": "5", "pchs_amt": "360000", "pchs_avg_pric": "72000.0000",
             "ord_psbl_qty": "5", "trad_dvsn_name": "자기융자"},
            {"pdno": "000660", "hldg_qty": "0", "pchs_amt": "0", "pchs_avg_pric": "0.0000", "ord_psbl_qty": "0"}]
    for summary in ([BALANCE_SUMMARY], BALANCE_SUMMARY):
        b = wire.balance([wire.lower_keys(r) for r in rows], ok(output2=summary))
        assert b.positions == {"005930": (15, 70667)} and b.sellable == {"005930": 15}
        assert (b.cash_won, b.deposit_won, b.total_value_won) == (999_297_900, 1_000_000_000, 999_999_900)


@pytest.mark.parametrize("summary", [None, [], [BALANCE_SUMMARY, BALANCE_SUMMARY], "x",
                                     {"dnca_tot_amt": "1"}, {**BALANCE_SUMMARY, "prvs_rcdl_excc_amt": 5}])
def test_balance_without_a_readable_summary_is_a_bad_reply(summary: Any) -> None:
    with pytest.raises(KisBadReply):
        wire.balance([], ok(output2=summary))


def test_negative_holding_is_a_bad_reply() -> None:
    with pytest.raises(KisBadReply, match="negative"):
        wire.balance([{"pdno": "005930", "hldg_qty": "-1"}], ok(output2=[BALANCE_SUMMARY]))


QUOTE = {"stck_prpr": "70200", "stck_sdpr": "71000", "stck_mxpr": "92300", "stck_llam": "49700", "aspr_unit": "100",
         "per": "14.18", "eps": "4950.00", "bps": "57930.00", "acml_vol": "662848", "stck_shrn_iscd": "005930"}


def test_quote_and_its_malformed_forms() -> None:
    q = wire.quote(ok(output=QUOTE), "005930")
    assert (q.last, q.base, q.upper, q.lower, q.tick, q.eps) == (70200, 71000, 92300, 49700, 100, 4950.0)
    for broken in ({**QUOTE, "stck_prpr": ""}, {k: v for k, v in QUOTE.items() if k != "stck_mxpr"},
                   {**QUOTE, "stck_llam": "99999"}, {**QUOTE, "per": "n/a"}):
        with pytest.raises(KisBadReply):
            wire.quote(ok(output=broken), "005930")
    with pytest.raises(KisBadReply):
        wire.quote(ok(output=[QUOTE, QUOTE]), "005930")


def test_investor_rows_skip_todays_blank_row() -> None:
    today = {"stck_bsop_date": "20261201", "stck_clpr": "", **{k: "" for k in wire._INVESTOR_FIELDS}}
    past = {"stck_bsop_date": "20261130", "stck_clpr": "71000", "prsn_ntby_qty": "-5", "frgn_ntby_qty": "3",
            "orgn_ntby_qty": "2", "prsn_ntby_tr_pbmn": "-1", "frgn_ntby_tr_pbmn": "0", "orgn_ntby_tr_pbmn": "1"}
    days = wire.investor_days(ok(output=[today, past]))
    assert [(d.date, d.person_net_qty, d.foreign_net_qty) for d in days] == [("20261130", -5, 3)]
    with pytest.raises(KisBadReply):
        wire.investor_days(ok(output={"stck_bsop_date": "20261130"}))


# --- nothing but KisBadReply escapes ----------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
                    | st.sampled_from(["1e999999999", "-0", "0001", "1.5", " 7 ", "Infinity", "^^"]),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12)
FIELDS = sorted({*CCLD_ROW, *QUOTE, *BALANCE_SUMMARY, "output", "output1", "output2", "psbl_qty", "hldg_qty",
                 "ctx_area_nk100", "odno", "ODNO", "KRX_FWDG_ORD_ORGNO"})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_read_as_a_reply_or_a_bad_reply(raw: bytes) -> None:
    with contextlib.suppress(KisBadReply):
        read_reply("TR", 200, raw)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=12))
def test_any_json_object_parses_or_is_a_bad_reply(obj: dict[str, Any]) -> None:
    reply = Reply("TR", "", "", wire.lower_keys(obj), "M")
    parsers = [lambda: wire.place_reply(reply), lambda: wire.daily_order(wire.lower_keys(obj), "TR"),
               lambda: wire.open_order(wire.lower_keys(obj), "TR"), lambda: wire.page(reply, "output1"),
               lambda: wire.balance([wire.lower_keys(obj)], reply), lambda: wire.quote(reply, "005930"),
               lambda: wire.investor_days(reply)]
    for parse in parsers:
        with contextlib.suppress(KisBadReply):
            parse()
