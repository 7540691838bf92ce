"""The KIS WebSocket parsers and the minute bars, pure: KIS's documented examples and the local server's records."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.krx import KST
from core.messages import Side
from services.kis_gateway.bars import MinuteBars
from services.kis_gateway.notices import (
    Ack,
    AesKey,
    BookRecord,
    Control,
    NoticeRecord,
    StreamBadFrame,
    TickRecord,
    kst_ns,
    parse_control,
    parse_message,
)
from services.kis_sim.notices import Notice, encrypt, record

# KIS.md 6.6: the workbook's example H0STCNT0 record (46 fields, before MARKET_CLS_CODE was appended).
TICK_46 = ("005930^093354^71900^5^-100^-0.14^72023.83^72100^72400^71700^71900^71800^1^3052507^219853241700^5105^"
           "6937^1832^84.90^1366314^1159996^1^0.39^20.28^090020^5^-200^090820^5^-500^092619^2^200^20230612^20^N^"
           "65945^216924^1118750^2199206^0.05^2424142^125.92^0^^72100")
TICK_47 = TICK_46 + "^"
# KIS.md 6.7: the workbook's 23-field notice examples (an acknowledgement and its fill).
ACK_23 = ("HTS ID^1234567801^0000002891^^02^0^01^0^136480^0000000001^000000000^094941^0^1^1^06010^000000001^"
          "김한투^하림^10^^하림^")
FILL_23 = ("HTS ID^1234567801^0000002891^^02^0^00^0^136480^0000000001^000003190^094941^0^2^2^06010^000000001^"
           "김한투^하림^10^^하림^000000000")
AES = AesKey("abcdefghijklmnopabcdefghijklmnop", "0123456789abcdef")
KEYS = {"H0STCNI0": AES, "H0STCNI9": AES}


def book_record(code: str = "005930", fields: int = 63) -> str:
    asks = [str(70_100 + 100 * i) for i in range(10)]
    bids = [str(70_000 - 100 * i) for i in range(10)]
    ask_qty = [str(100 + i) for i in range(10)]
    bid_qty = [str(200 + i) for i in range(10)]
    values = [code, "093001", "0", *asks, *bids, *ask_qty, *bid_qty, "1045", "2045", *["0"] * 14]
    return "^".join(values + (["0", "0", "0", ""] if fields == 63 else []))


def notice(fill: bool, *, fields: int = 26, qty: int = 3, price: int = 70_200, order_no: str = "0000000042") -> str:
    n = Notice(order_no=order_no, original_no="", side="02", correction="0", kind="00", condition="0",
               code="005930", qty=qty, price=price, hms="100501", refused=False, fill=fill,
               accept="2" if fill else "1", order_qty=5, order_price=70_300, name="삼성전자")
    return record(n, hts_id="kissim", account="50000000-01", branch="00950", account_name="모의투자", fields=fields)


def frame(tr_id: str, records: list[str], encrypted: bool = False) -> str:
    payload = "^".join(records)
    if encrypted:
        return f"1|{tr_id}|{len(records):03d}|{encrypt(payload, AES.key, AES.iv)}"
    return f"0|{tr_id}|{len(records):03d}|{payload}"


# --- ticks and books -----------------------------------------------------------------------


def test_a_frame_of_four_ticks_gives_all_four() -> None:
    records = parse_message(frame("H0STCNT0", [TICK_47] * 4))
    assert isinstance(records, list) and len(records) == 4
    assert all(isinstance(r, TickRecord) and r.code == "005930" for r in records)


def test_the_46_and_47_field_tick_layouts_are_told_apart_by_count() -> None:
    assert len(TICK_46.split("^")) == 46
    (old,) = parse_message(frame("H0STCNT0", [TICK_46]))
    (new,) = parse_message(frame("H0STCNT0", [TICK_47]))
    assert (old.fields, new.fields) == (46, 47)
    assert old == TickRecord(code="005930", hhmmss="093354", ts_ns=new.ts_ns, price=71900, qty=1, cum_volume=3052507,
                             cum_value_won=219853241700, ask1=71900, bid1=71800, open=72100, high=72400, low=71700,
                             trade_side="1", hour_cls="0", halted=False, trading_date="20230612", fields=46)
    assert old.ts_ns == int(dt.datetime(2023, 6, 12, 9, 33, 54, tzinfo=KST).timestamp()) * 1_000_000_000


def test_the_63_and_59_field_book_layouts() -> None:
    two = parse_message(frame("H0STASP0", [book_record("005930", 63), book_record("000660", 63)]))
    (old,) = parse_message(frame("H0STASP0", [book_record("005930", 59)]))
    assert [b.fields for b in two] == [63, 63] and old.fields == 59 and two[1].code == "000660"
    assert isinstance(old, BookRecord) and old.hhmmss == "093001"
    assert old.asks[0] == 70_100 and old.asks[9] == 71_000 and old.bids[9] == 69_100
    assert old.ask_qty == tuple(range(100, 110)) and old.bid_qty == tuple(range(200, 210))
    assert (old.total_ask_qty, old.total_bid_qty) == (1045, 2045)


# --- execution notices ------------------------------------------------------------------------


def test_a_26_field_notice_is_decrypted_and_read() -> None:
    (ack,) = parse_message(frame("H0STCNI9", [notice(False)], encrypted=True), KEYS)
    (fill,) = parse_message(frame("H0STCNI9", [notice(True)], encrypted=True), KEYS)
    assert isinstance(ack, NoticeRecord) and ack.fields == 26
    assert (ack.cust_id, ack.account, ack.odno, ack.orig_odno, ack.side, ack.code) == (
        "kissim", "5000000001", "42", "", Side.BUY, "005930")
    assert (ack.is_fill, ack.refused, ack.accepted, ack.rctf_cls) == (False, False, "1", "0")
    assert (fill.is_fill, fill.accepted, fill.qty, fill.price, fill.hhmmss) == (True, "2", 3, 70_200, "100501")
    assert (fill.order_qty, fill.order_price, fill.branch, fill.name, fill.exchange) == (
        5, 70_300, "00950", "삼성전자", "1")


def test_the_workbooks_23_field_notices() -> None:
    ack, fill = parse_message(frame("H0STCNI0", [ACK_23, FILL_23], encrypted=True), KEYS)
    assert (ack.fields, fill.fields) == (23, 23)
    assert (ack.odno, ack.side, ack.code, ack.is_fill, ack.qty, ack.order_price) == (
        "2891", Side.BUY, "136480", False, 1, 0)  # ODER_PRC empty in the acknowledgement
    assert (fill.is_fill, fill.qty, fill.price, fill.name, fill.exchange) == (True, 1, 3190, "하림", "")


def test_a_plain_23_field_notice_from_the_local_server() -> None:
    (n,) = parse_message(frame("H0STCNI9", [notice(True, fields=23)]))
    assert (n.fields, n.qty, n.price, n.order_price, n.name) == (23, 3, 70_200, 70_300, "삼성전자")


def test_the_dedupe_key_is_the_same_for_a_repeated_notice_only() -> None:
    (a,) = parse_message(frame("H0STCNI9", [notice(True)], encrypted=True), KEYS)
    (again,) = parse_message(frame("H0STCNI9", [notice(True)], encrypted=True), KEYS)
    (ack,) = parse_message(frame("H0STCNI9", [notice(False)], encrypted=True), KEYS)
    (other,) = parse_message(frame("H0STCNI9", [notice(True, qty=2)], encrypted=True), KEYS)
    (padded,) = parse_message(frame("H0STCNI9", [notice(True, order_no="42")], encrypted=True), KEYS)
    assert a.dedupe_key == again.dedupe_key == padded.dedupe_key
    assert len({a.dedupe_key, ack.dedupe_key, other.dedupe_key}) == 3


# --- control messages -------------------------------------------------------------------------


def ack_json(msg_cd: str, rt_cd: str = "0", output: dict | None = None, tr_id: str = "H0STCNT0",
             msg1: str = "SUBSCRIBE SUCCESS   ") -> str:
    body: dict = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if output is not None:
        body["output"] = output
    return json.dumps({"header": {"tr_id": tr_id, "tr_key": "005930", "encrypt": "N"}, "body": body})


@pytest.mark.parametrize("msg_cd, outcome", [
    ("OPSP0000", Ack.SUBSCRIBED), ("OPSP0002", Ack.SUBSCRIBED), ("OPSP0001", Ack.UNSUBSCRIBED),
    ("OPSP0003", Ack.UNSUBSCRIBED), ("OPSP0008", Ack.LIMIT_REACHED), ("OPSP8996", Ack.APPKEY_IN_USE),
    ("OPSP0011", Ack.APPROVAL_REFUSED), ("OPSP0007", Ack.RETRY_LATER), ("OPSP8991", Ack.REFUSED),
    ("OPSP9999", Ack.REFUSED),
])
def test_subscription_acks_are_classified(msg_cd: str, outcome: Ack) -> None:
    assert parse_control(ack_json(msg_cd)).ack is outcome


def test_a_notice_ack_carries_its_aes_key_and_pingpong_is_a_heartbeat() -> None:
    ack = parse_message(ack_json("OPSP0000", output={"iv": AES.iv, "key": AES.key}, tr_id="H0STCNI9"))
    assert isinstance(ack, Control) and ack.aes == AES and ack.msg1 == "SUBSCRIBE SUCCESS"
    assert (ack.tr_id, ack.tr_key) == ("H0STCNI9", "005930")
    ping = parse_message('{"header":{"tr_id":"PINGPONG","datetime":"20231004160455"}}')
    assert isinstance(ping, Control) and ping.ack is Ack.HEARTBEAT
    assert parse_control(ack_json("OPSP0000")).aes is None  # some acks carry no output


# --- malformed frames -------------------------------------------------------------------------

WRONG_KEY = {"H0STCNI9": AesKey("x" * 32, "y" * 16)}
MALFORMED = {
    "a record too short": (frame("H0STCNT0", [TICK_47[:-8]]), None),
    "a count that is not the records sent": (frame("H0STCNT0", [TICK_47] * 3).replace("|003|", "|002|"), None),
    "a price that is not a number": (frame("H0STCNT0", [TICK_47.replace("^71900^5^", "^71g00^5^", 1)]), None),
    "a negative quantity": (frame("H0STCNT0", [TICK_47.replace("^71800^1^", "^71800^-1^", 1)]), None),
    "a time that is not HHMMSS": (frame("H0STCNT0", [TICK_47.replace("093354", "093360", 1)]), None),
    "a date that is not one": (frame("H0STCNT0", [TICK_47.replace("20230612", "20231312", 1)]), None),
    "a bad stock code": (frame("H0STASP0", [book_record("59-30")]), None),
    "an unknown TR": (frame("H0STXXX0", [TICK_47]), None),
    "an encryption flag that is neither": (frame("H0STCNT0", [TICK_47]).replace("0|", "2|", 1), None),
    "a count that is no number": ("0|H0STCNT0|0x1|" + TICK_47, None),
    "a count of zero": ("0|H0STCNT0|000|" + TICK_47, None),
    "too few bars": ("0|H0STCNT0|001", None),
    "cipher text that is not base64": ("1|H0STCNI9|001|***not base64***", KEYS),
    "cipher text not in whole blocks": ("1|H0STCNI9|001|QUJD", KEYS),
    "the wrong key (bad padding)": (frame("H0STCNI9", [notice(True)], encrypted=True), WRONG_KEY),
    "no key yet": (frame("H0STCNI9", [notice(True)], encrypted=True), {}),
    "a notice of unknown side": (frame("H0STCNI9", [notice(True).replace("^02^0^00^", "^03^0^00^", 1)]), None),
    "a notice with 25 fields": (frame("H0STCNI9", [notice(True).rsplit("^", 1)[0]]), None),
    "control text that is not JSON": ('{"header": ', None),
    "control without a header": ('{"body": {}}', None),
    "an ack without a body": ('{"header": {"tr_id": "H0STCNT0"}}', None),
    "an ack with a short key": (ack_json("OPSP0000", output={"iv": AES.iv, "key": "short"}), None),
    "an ack with a non-ASCII key": (ack_json("OPSP0000", output={"iv": AES.iv, "key": "\ud800" * 32}), None),
    "deeply nested JSON": ('{"a":' + "[" * 100_000, None),
    "neither data nor control": ("hello", None),
    "nothing": ("", None),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_frame_raises_stream_bad_frame(name: str) -> None:
    text, keys = MALFORMED[name]
    with pytest.raises(StreamBadFrame) as info:
        parse_message(text, keys)
    assert info.value.reason


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_raises_stream_bad_frame(text: str) -> None:
    for candidate in (text, "0|H0STCNT0|001|" + text, "1|H0STCNI9|001|" + text, "{" + text):
        try:
            parse_message(candidate, KEYS)
        except StreamBadFrame:
            pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([frame("H0STCNT0", [TICK_47] * 2), frame("H0STASP0", [book_record()]),
                        frame("H0STCNI9", [notice(True)], encrypted=True), ack_json("OPSP0000", output={
                            "iv": AES.iv, "key": AES.key})]),
       st.integers(min_value=0, max_value=10_000), st.text(max_size=3))
def test_a_damaged_frame_parses_or_raises_stream_bad_frame(good: str, at: int, junk: str) -> None:
    i = at % len(good)
    for damaged in (good[:i] + junk + good[i + 1:], good[:i], good[:i] + junk + good[i:]):
        try:
            parse_message(damaged, KEYS)
        except StreamBadFrame:
            pass


# --- minute bars ------------------------------------------------------------------------------

T0 = kst_ns("20260105", "090000")
S = 1_000_000_000


def test_a_bar_is_emitted_when_a_tick_of_a_later_minute_arrives() -> None:
    bars = MinuteBars()
    assert bars.on_tick("005930", T0 + 1 * S, 70_000, 10) == []
    assert bars.on_tick("005930", T0 + 20 * S, 70_500, 5) == []
    assert bars.on_tick("005930", T0 + 40 * S, 69_800, 1) == []
    assert bars.on_tick("005930", T0 + 59 * S, 70_100, 4) == []
    assert bars.on_tick("000660", T0 + 30 * S, 178_000, 2) == []  # another code keeps its own bar
    (bar,) = bars.on_tick("005930", T0 + 61 * S, 70_200, 3)
    assert (bar.code, bar.ts_ns, bar.interval_s) == ("005930", T0, 60)
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (70_000, 70_500, 69_800, 70_100, 20)
    assert bar.value_won == 70_000 * 10 + 70_500 * 5 + 69_800 + 70_100 * 4
    assert bars.open_bar("005930").volume == 3 and bars.open_bar("000660").open == 178_000


def test_flush_emits_a_bar_whose_minute_passed_without_ticks() -> None:
    bars = MinuteBars()
    bars.on_tick("005930", T0 + 5 * S, 70_000, 10)
    bars.on_tick("000660", T0 + 65 * S, 178_000, 2)
    assert bars.flush(T0 + 59 * S) == []
    (first,) = bars.flush(T0 + 60 * S)
    assert (first.code, first.ts_ns, first.volume) == ("005930", T0, 10)
    assert bars.flush(T0 + 90 * S) == [] and bars.open_bar("005930") is None
    (second,) = bars.flush(T0 + 121 * S)
    assert (second.code, second.ts_ns) == ("000660", T0 + 60 * S)


def test_flush_waits_the_grace_for_ticks_still_on_the_wire() -> None:
    bars = MinuteBars(grace_ns=2 * S)
    bars.on_tick("005930", T0 + 5 * S, 70_000, 10)
    assert bars.flush(T0 + 61 * S) == []
    assert len(bars.flush(T0 + 62 * S)) == 1


def test_a_late_tick_is_counted_and_leaves_emitted_bars_alone() -> None:
    bars = MinuteBars()
    bars.on_tick("005930", T0 + 5 * S, 70_000, 10)
    (bar,) = bars.on_tick("005930", T0 + 65 * S, 70_100, 1)
    assert bars.on_tick("005930", T0 + 50 * S, 90_000, 7) == []
    assert bars.late_ticks == 1 and bars.open_bar("005930").high == 70_100 and bar.volume == 10
