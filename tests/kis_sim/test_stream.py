"""KIS.md section 10, WebSocket items, against a running kis-sim with a plain client written here."""

from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.kis_sim.conftest import Server, aes_decrypt, subscribe_msg


def recv_until(ws: ClientConnection, want, timeout_s: float = 10.0):
    """The first message ``want`` accepts (PINGPONG answered on the way as a text echo)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no matching frame")
        msg = ws.recv(timeout=left)
        if msg.startswith("{") and '"PINGPONG"' in msg:
            ws.send(msg)
            continue
        if want(msg):
            return msg


def ack(msg: str) -> dict:
    return json.loads(msg)["body"] if msg.startswith("{") else {}


def test_bad_approval_key_then_subscription_acks(demo: Server) -> None:
    with connect(demo.ws_url + "/tryitout") as ws:
        ws.send(subscribe_msg("no-such-key", "H0STCNT0", "005930"))
        assert ack(recv_until(ws, lambda m: m.startswith("{")))["msg_cd"] == "OPSP0011"
        key = demo.approval()
        ws.send(subscribe_msg(key, "H0STCNT0", "005930"))
        body = ack(recv_until(ws, lambda m: m.startswith("{")))
        assert body["msg_cd"] == "OPSP0000" and len(body["output"]["key"]) == 32 and len(body["output"]["iv"]) == 16
        ws.send(subscribe_msg(key, "H0STCNT0", "005930"))
        assert ack(recv_until(ws, lambda m: m.startswith("{")))["msg_cd"] == "OPSP0002"
        ws.send(subscribe_msg(key, "H0STCNT0", "000660", "2"))
        assert ack(recv_until(ws, lambda m: m.startswith("{")))["msg_cd"] == "OPSP0003"
        ws.send(subscribe_msg(key, "H0STCNT0", "005930", "2"))
        assert ack(recv_until(ws, lambda m: m.startswith("{")))["msg_cd"] == "OPSP0001"
        ws.send(subscribe_msg(key, "H0XXXXX0", "005930"))
        assert ack(recv_until(ws, lambda m: m.startswith("{")))["msg_cd"] == "OPSP8991"
        ws.send("{broken")
        assert ack(recv_until(ws, lambda m: m.startswith("{")))["msg_cd"] == "OPSP9999"


def demo_notice(server: Server) -> str:
    return "H0STCNI9" if server.env == "demo" else "H0STCNI0"


def test_max_41_registrations(real: Server) -> None:
    key = real.approval()
    with connect(real.ws_url) as ws:
        replies = []
        for i in range(42):
            ws.send(subscribe_msg(key, "H0STCNT0", f"{i + 1:06d}"))
            try:
                replies.append(ack(recv_until(ws, lambda m: m.startswith("{")))["msg_cd"])
            except Exception as exc:
                raise AssertionError(f"{replies} {ws.close_code} {ws.close_reason}") from exc
            time.sleep(0.06)  # under the request-flood limit
        assert replies[:41] == ["OPSP0000"] * 41 and replies[41] == "OPSP0008"


def test_one_session_per_appkey(demo: Server) -> None:
    key = demo.approval()
    with connect(demo.ws_url) as first:
        first.send(subscribe_msg(key, "H0STCNT0", "005930"))
        assert ack(recv_until(first, lambda m: m.startswith("{")))["msg_cd"] in ("OPSP0000", "OPSP0002")
        with connect(demo.ws_url) as second:
            second.send(subscribe_msg(key, "H0STCNT0", "000660"))
            body = ack(recv_until(second, lambda m: m.startswith("{")))
            assert body["msg_cd"] == "OPSP8996" and body["rt_cd"] == "9"
            with pytest.raises(ConnectionClosed):
                recv_until(second, lambda m: True, 5)


def test_ticks_47_fields_batched_and_book_63_fields(demo: Server) -> None:
    key = demo.approval()
    with connect(demo.ws_url) as ws:
        ws.send(subscribe_msg(key, "H0STCNT0", "005930"))
        ws.send(subscribe_msg(key, "H0STASP0", "005930"))
        tick = recv_until(ws, lambda m: m.startswith("0|H0STCNT0|") and int(m.split("|")[2]) > 1, 20)
        _, tr, count, payload = tick.split("|", 3)
        fields = payload.split("^")
        assert len(fields) == int(count) * 47 and fields[0] == "005930" and fields[47] == "005930"
        book = recv_until(ws, lambda m: m.startswith("0|H0STASP0|"), 20)
        _, _, count, payload = book.split("|", 3)
        assert len(payload.split("^")) == int(count) * 63


def test_notice_encrypted_26_fields_and_before_the_rest_reply(demo: Server) -> None:
    key = demo.approval()
    with connect(demo.ws_url) as ws:
        ws.send(subscribe_msg(key, "H0STCNI9", demo.creds["hts_id"]))
        body = ack(recv_until(ws, lambda m: m.startswith("{") and "H0STCNI9" in m))
        aes_key, iv = body["output"]["key"], body["output"]["iv"]
        demo.fault("notice-first")
        try:
            odno = demo.order(qty=1).json()["output"]["ODNO"]
            # the acknowledgement was on the wire before the REST reply: it is already waiting here
            frame = recv_until(ws, lambda m: m.startswith("1|H0STCNI9|"), 5)
        finally:
            demo.fault("notice-first", on=False)
        record = aes_decrypt(frame.split("|", 3)[3], aes_key, iv).split("^")
        assert len(record) == 26 and record[0] == demo.creds["hts_id"] and record[2] == odno
        assert (record[12], record[13], record[14]) == ("0", "1", "1")
        fill = recv_until(ws, lambda m: m.startswith("1|H0STCNI9|"), 10)
        record = aes_decrypt(fill.split("|", 3)[3], aes_key, iv).split("^")
        assert record[13] == "2" and int(record[9]) >= 1


def test_wrong_hts_id_drops_without_close_frame(demo: Server) -> None:
    key = demo.approval()
    with connect(demo.ws_url) as ws:
        ws.send(subscribe_msg(key, "H0STCNI9", "someone-else"))
        with pytest.raises(ConnectionClosed) as info:
            recv_until(ws, lambda m: True, 5)
        assert info.value.rcvd is None


def test_pingpong_text_echo_keeps_the_session_silence_closes_it(demo: Server) -> None:
    key = demo.approval()
    with connect(demo.ws_url, ping_interval=None) as ws:
        ws.send(subscribe_msg(key, "H0STCNT0", "005930"))
        seen = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # echoed PINGPONGs: the session stays
            msg = ws.recv(timeout=3)
            if '"PINGPONG"' in msg:
                ws.send(msg)
                seen += 1
        assert seen >= 2
    with connect(demo.ws_url, ping_interval=None) as ws:
        ws.send(subscribe_msg(key, "H0STCNT0", "005930"))
        with pytest.raises(ConnectionClosed):
            while True:  # never answer
                ws.recv(timeout=10)


def test_pong_control_frame_keeps_the_session(demo: Server) -> None:
    key = demo.approval()
    with connect(demo.ws_url, ping_interval=None) as ws:
        ws.send(subscribe_msg(key, "H0STCNT0", "005930"))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=3)
            if '"PINGPONG"' in msg:
                ws.pong(msg.encode())
        ws.send(subscribe_msg(key, "H0STCNT0", "005930"))
        assert ack(recv_until(ws, lambda m: m.startswith("{")))["msg_cd"] == "OPSP0002"


def test_drop_ws_fault_and_weekly_restart(demo: Server) -> None:
    key = demo.approval()
    with connect(demo.ws_url) as ws:
        ws.send(subscribe_msg(key, "H0STCNT0", "005930"))
        recv_until(ws, lambda m: m.startswith("{"))
        demo.fault("drop-ws")
        with pytest.raises(ConnectionClosed):
            recv_until(ws, lambda m: False, 5)
    result = demo.fault("weekly-restart")
    assert result["revoked_tokens"] >= 1
    from tests.kis_sim.conftest import PRICE
    r = demo.get(PRICE, "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"})
    assert r.json()["msg_cd"] == "EGW00121"
    demo.token(fresh=True)


def test_flood_of_frames_is_refused_and_others_are_served(demo: Server) -> None:
    key = demo.approval()
    with connect(demo.ws_url) as ws:
        for _ in range(300):
            try:
                ws.send(subscribe_msg(key, "H0STCNT0", "005930"))
            except ConnectionClosed:
                break
        with pytest.raises((ConnectionClosed, TimeoutError)):
            while True:
                ws.recv(timeout=5)
    assert demo.price()["stck_prpr"]
