"""What KIS's real-time WebSocket sends, parsed: trade ticks, order books, execution notices, control JSON.

Pure: text in, records out; no sockets, no clocks. Two kinds of text frame
arrive (KIS.md section 6):

* data, ``<enc>|<tr_id>|<count>|<payload>``: ``count`` records of one layout
  laid end to end, every field ``^``-separated, so a frame of four ticks is
  4 x 47 fields (section 6.5; a parser that reads only the first record loses
  ticks, issue #45). ``enc`` "1" means the payload is base64 of
  AES-256-CBC/PKCS#7 with the key and iv of the subscription's ack;
* control, JSON (first character ``{``): subscription acks with KIS's OPSP
  codes, and the server's PINGPONG heartbeat.

Layouts are told apart by field count, never by configuration: H0STCNT0 has
47 fields since the after-market session (46 before), H0STASP0 63 (59), the
execution notices H0STCNI0 / H0STCNI9 26 (23); section 12.

Anything malformed raises ``StreamBadFrame`` with the TR and the reason, and
nothing else: the stream counts and reports it and goes on.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, Callable, Mapping

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from core.krx import CODE_RE, KST
from core.messages import Side

TICK_TR = "H0STCNT0"  # KRX trade ticks, the same id on both servers
BOOK_TR = "H0STASP0"  # KRX ten-level order book
NOTICE_TRS = {"demo": "H0STCNI9", "real": "H0STCNI0"}  # my orders' and fills' notices; tr_key = HTS id
PINGPONG = "PINGPONG"

TICK_LAYOUTS = (47, 46)
BOOK_LAYOUTS = (63, 59)
NOTICE_LAYOUTS = (26, 23)
BOOK_LEVELS = 10
AES_KEY_CHARS, AES_IV_CHARS = 32, 16
_MAX_DIGITS = 18  # what fits an int64 whatever the digits
_SIDES = {"01": Side.SELL, "02": Side.BUY}


class StreamBadFrame(ValueError):
    """A frame that cannot be read: wrong layout, a number that is not one, a broken cipher text, an unknown TR."""

    def __init__(self, tr_id: str, reason: str) -> None:
        super().__init__(f"{tr_id or '?'}: {reason}")
        self.tr_id = tr_id
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AesKey:
    """The key and iv a notice subscription's ack hands out (32 and 16 ASCII characters, used as UTF-8 bytes)."""

    key: str
    iv: str

    def __post_init__(self) -> None:
        if not (self.key.isascii() and self.iv.isascii()):
            raise StreamBadFrame("", "AES key/iv not ASCII")
        if len(self.key) != AES_KEY_CHARS or len(self.iv) != AES_IV_CHARS:
            raise StreamBadFrame("", f"AES key/iv of {len(self.key)}/{len(self.iv)} characters, not 32/16")


# --- records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TickRecord:
    """One KRX trade (H0STCNT0), the fields the firm uses; prices in won, quantities in shares."""

    code: str
    hhmmss: str  # STCK_CNTG_HOUR, KST
    ts_ns: int  # BSOP_DATE + STCK_CNTG_HOUR as nanoseconds since the epoch (demo clocks can run ahead)
    price: int  # STCK_PRPR
    qty: int  # CNTG_VOL: this trade's shares
    cum_volume: int  # ACML_VOL: the day's shares so far, this trade included
    cum_value_won: int  # ACML_TR_PBMN
    ask1: int  # ASKP1 (0: no offer)
    bid1: int  # BIDP1 (0: no bid)
    open: int
    high: int
    low: int
    trade_side: str  # CCLD_DVSN: "1" buyer-initiated, "5" seller-initiated, "3" auction
    hour_cls: str  # HOUR_CLS_CODE: "0" regular trading; A-D an expected (auction) price
    halted: bool  # TRHT_YN == "Y"
    trading_date: str  # BSOP_DATE, YYYYMMDD
    fields: int  # 47 or 46: the layout it came in


@dataclass(frozen=True, slots=True)
class BookRecord:
    """One KRX ten-level order book (H0STASP0); level 1 first, 0 where a level is empty."""

    code: str
    hhmmss: str  # BSOP_HOUR, KST
    asks: tuple[int, ...]
    bids: tuple[int, ...]
    ask_qty: tuple[int, ...]
    bid_qty: tuple[int, ...]
    total_ask_qty: int
    total_bid_qty: int
    hour_cls: str
    fields: int  # 63 or 59


@dataclass(frozen=True, slots=True)
class NoticeRecord:
    """One execution notice (H0STCNI0 real / H0STCNI9 demo): an order acknowledgement or a fill.

    ``is_fill`` (CNTG_YN "2") tells them apart. In an acknowledgement ``qty``
    and ``price`` carry the order's quantity and price; only in a fill are
    they the fill's (KIS.md section 6.7). Order numbers are kept without
    their zero padding, as REST replies sometimes send them ("2696").
    """

    cust_id: str  # CUST_ID: the HTS id the notices were subscribed with
    account: str  # ACNT_NO, 10 digits
    odno: str  # ODER_NO
    orig_odno: str  # OODER_NO: the order a revise / cancel acts on ("" for a new order)
    side: Side  # SELN_BYOV_CLS: "01" sell, "02" buy
    rctf_cls: str  # RCTF_CLS: "0" normal, "1" revise, "2" cancel
    order_kind: str  # ODER_KIND: the ORD_DVSN code ("00" on a fill even of a market order)
    order_cond: str  # ODER_COND: "0" none, "1" IOC, "2" FOK
    code: str
    qty: int  # CNTG_QTY
    price: int  # CNTG_UNPR
    hhmmss: str  # STCK_CNTG_HOUR
    refused: bool  # RFUS_YN "1"
    is_fill: bool  # CNTG_YN "2"
    accepted: str  # ACPT_YN: "1" accepted, "2" confirmed, "3" cancelled (IOC / FOK rest)
    branch: str  # BRNC_NO, 5 digits
    order_qty: int  # ODER_QTY
    order_price: int  # ODER_PRC, the last field (0 when empty, as in the workbook's example)
    name: str  # CNTG_ISNM40
    exchange: str  # ORD_EXG_GB: "1" KRX, "2" NXT, "3"/"4" SOR ("" in the 23-field layout)
    fields: int  # 26 or 23

    @property
    def dedupe_key(self) -> tuple[str, bool, str, str, int, int, str]:
        """KIS gives a notice no event id: the same notice twice has the same key (KIS.md section 7.6).

        Two partial fills of one order in the same second, of the same size at
        the same price, share a key as well; only REST's totals tell them apart.
        """
        return (self.odno, self.is_fill, self.accepted, self.hhmmss, self.qty, self.price, self.rctf_cls)


Record = TickRecord | BookRecord | NoticeRecord


# --- control messages ----------------------------------------------------------------------


class Ack(StrEnum):
    """What a control message means for the subscription it answers (KIS.md section 6.3)."""

    SUBSCRIBED = "subscribed"  # OPSP0000, and OPSP0002 "ALREADY IN SUBSCRIBE" (common after a reconnect)
    UNSUBSCRIBED = "unsubscribed"  # OPSP0001, and OPSP0003 "not found": gone either way
    LIMIT_REACHED = "limit_reached"  # OPSP0008 MAX SUBSCRIBE OVER
    RETRY_LATER = "retry_later"  # OPSP0007 / OPSP0009: the server's trouble
    APPROVAL_REFUSED = "approval_refused"  # OPSP0010 / OPSP0011: get a new approval key
    APPKEY_IN_USE = "appkey_in_use"  # OPSP8996: another session holds the app key; do not loop
    REFUSED = "refused"  # anything else: a bad TR id or key, a malformed request
    HEARTBEAT = "heartbeat"  # PINGPONG


_ACKS = {"OPSP0000": Ack.SUBSCRIBED, "OPSP0002": Ack.SUBSCRIBED, "OPSP0001": Ack.UNSUBSCRIBED,
         "OPSP0003": Ack.UNSUBSCRIBED, "OPSP0008": Ack.LIMIT_REACHED, "OPSP0007": Ack.RETRY_LATER,
         "OPSP0009": Ack.RETRY_LATER, "OPSP0010": Ack.APPROVAL_REFUSED, "OPSP0011": Ack.APPROVAL_REFUSED,
         "OPSP8996": Ack.APPKEY_IN_USE}


@dataclass(frozen=True, slots=True)
class Control:
    """A JSON control message: a subscription's ack (with the AES key of a notice TR) or the PINGPONG."""

    tr_id: str
    tr_key: str
    rt_cd: str
    msg_cd: str
    msg1: str  # stripped of KIS's padding
    aes: AesKey | None

    @property
    def ack(self) -> Ack:
        if self.tr_id == PINGPONG:
            return Ack.HEARTBEAT
        known = _ACKS.get(self.msg_cd)
        if known is not None:
            return known
        if "INVALID APPROVAL" in self.msg1.upper():  # seen with other codes (KIS.md section 6.3)
            return Ack.APPROVAL_REFUSED
        return Ack.REFUSED


def parse_control(text: str) -> Control:
    """A control message from its JSON text."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:  # not JSON, or nested past the parser's depth
        raise StreamBadFrame("", f"control message is not JSON ({type(exc).__name__})") from None
    header = msg.get("header") if isinstance(msg, dict) else None
    if not isinstance(header, dict) or not isinstance(header.get("tr_id"), str):
        raise StreamBadFrame("", "control message without header.tr_id")
    tr_id = header["tr_id"]
    if tr_id == PINGPONG:
        return Control(PINGPONG, "", "", "", "", None)
    body = msg.get("body")
    if not isinstance(body, dict):
        raise StreamBadFrame(tr_id, "control message without a body")
    msg_cd, rt_cd, msg1 = body.get("msg_cd"), body.get("rt_cd"), body.get("msg1", "")
    if not isinstance(msg_cd, str) or not isinstance(rt_cd, str) or not isinstance(msg1, str):
        raise StreamBadFrame(tr_id, "control message without string rt_cd / msg_cd / msg1")
    aes = None
    output = body.get("output")
    if isinstance(output, dict) and ("key" in output or "iv" in output):  # some acks carry no output at all
        key, iv = output.get("key"), output.get("iv")
        if not isinstance(key, str) or not isinstance(iv, str):
            raise StreamBadFrame(tr_id, "ack output key / iv not strings")
        try:
            aes = AesKey(key, iv)
        except StreamBadFrame as exc:
            raise StreamBadFrame(tr_id, exc.reason) from None
    tr_key = header.get("tr_key", "")
    return Control(tr_id, tr_key if isinstance(tr_key, str) else "", rt_cd, msg_cd, msg1.strip(), aes)


# --- data frames ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataFrame:
    """A data frame split at its first three ``|`` (the payload never holds one)."""

    encrypted: bool
    tr_id: str
    count: int
    payload: str


def split_frame(text: str) -> DataFrame:
    """``<enc>|<tr_id>|<count>|<payload>`` into its parts, the count checked."""
    parts = text.split("|", 3)
    if len(parts) != 4:
        raise StreamBadFrame("", "data frame without enc|tr_id|count|payload")
    enc, tr_id, count, payload = parts
    if enc not in ("0", "1"):
        raise StreamBadFrame(tr_id, f"encryption flag {enc[:8]!r}, not 0 or 1")
    if not (count.isascii() and count.isdigit() and len(count) <= 3) or int(count) == 0:
        raise StreamBadFrame(tr_id, f"record count {count[:8]!r}")
    return DataFrame(enc == "1", tr_id, int(count), payload)


def decrypt(cipher_b64: str, aes: AesKey, tr_id: str = "") -> str:
    """The plain text of an encrypted payload: base64, AES-256-CBC with the ack's key and iv, PKCS#7, UTF-8."""
    try:
        raw = base64.b64decode(cipher_b64, validate=True)
    except (binascii.Error, ValueError):
        raise StreamBadFrame(tr_id, "payload is not base64") from None
    if not raw or len(raw) % 16:
        raise StreamBadFrame(tr_id, f"cipher text of {len(raw)} bytes, not whole AES blocks")
    dec = Cipher(algorithms.AES(aes.key.encode("utf-8")), modes.CBC(aes.iv.encode("utf-8"))).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(dec.update(raw) + dec.finalize()) + unpadder.finalize()
        return plain.decode("utf-8")
    except ValueError:  # bad padding, or not UTF-8: the wrong key, or a damaged frame
        raise StreamBadFrame(tr_id, "payload does not decrypt (bad padding or not UTF-8: wrong key?)") from None


def parse_records(frame: DataFrame, aes: AesKey | None = None) -> list[Record]:
    """Every record of a data frame (decrypted with ``aes`` if it is encrypted)."""
    tr_id = frame.tr_id
    reader = _READERS.get(tr_id)
    if reader is None:
        raise StreamBadFrame(tr_id, "unknown TR")
    parse, layouts = reader
    text = frame.payload
    if frame.encrypted:
        if aes is None:
            raise StreamBadFrame(tr_id, "encrypted frame before its subscription's key (notice before the ack)")
        text = decrypt(text, aes, tr_id)
    fields = text.split("^")
    per_record, rest = divmod(len(fields), frame.count)
    if rest or per_record not in layouts:
        raise StreamBadFrame(tr_id, f"{len(fields)} fields for {frame.count} record(s); a record has "
                                    f"{' or '.join(map(str, layouts))}")
    return [parse(fields[i:i + per_record], per_record) for i in range(0, len(fields), per_record)]


def parse_message(text: str, keys: Mapping[str, AesKey] | None = None) -> Control | list[Record]:
    """Any text frame: a ``Control`` for JSON, the records of a data frame (``keys``: AES key per TR id)."""
    if text.startswith("{"):
        return parse_control(text)
    if text[:1] in ("0", "1"):
        frame = split_frame(text)
        return parse_records(frame, (keys or {}).get(frame.tr_id))
    raise StreamBadFrame("", f"frame starts with {text[:1]!r}, neither data (0/1) nor control ({{)")


# --- field readers ------------------------------------------------------------------------


def _int(tr_id: str, name: str, text: str, *, empty: bool = False) -> int:
    """A zero-padded unsigned integer field; ``empty`` lets an empty field read as 0."""
    if not text and empty:
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        raise StreamBadFrame(tr_id, f"{name} {text[:20]!r} is not a number")
    return int(text)


def _hhmmss(tr_id: str, text: str) -> str:
    if len(text) != 6 or not (text.isascii() and text.isdigit()) or text[:2] > "23" or text[2:4] > "59" \
            or text[4:] > "59":
        raise StreamBadFrame(tr_id, f"time {text[:12]!r} is not HHMMSS")
    return text


def _code(tr_id: str, text: str) -> str:
    if not CODE_RE.match(text):
        raise StreamBadFrame(tr_id, f"stock code {text[:12]!r}")
    return text


@lru_cache(maxsize=64)
def _midnight_ns(tr_id: str, yyyymmdd: str) -> int:
    try:
        day = dt.datetime.strptime(yyyymmdd, "%Y%m%d").replace(tzinfo=KST)
    except ValueError:
        raise StreamBadFrame(tr_id, f"date {yyyymmdd[:12]!r} is not YYYYMMDD") from None
    return int(day.timestamp()) * 1_000_000_000


def kst_ns(yyyymmdd: str, hhmmss: str, tr_id: str = "") -> int:
    """A KST date and time of day as nanoseconds since the epoch (UTC)."""
    t = _hhmmss(tr_id, hhmmss)
    seconds = int(t[:2]) * 3600 + int(t[2:4]) * 60 + int(t[4:])
    return _midnight_ns(tr_id, yyyymmdd) + seconds * 1_000_000_000


def _tick(f: list[str], n: int) -> TickRecord:
    tr = TICK_TR
    hhmmss = _hhmmss(tr, f[1])
    return TickRecord(
        code=_code(tr, f[0]), hhmmss=hhmmss, ts_ns=kst_ns(f[33], hhmmss, tr), price=_int(tr, "STCK_PRPR", f[2]),
        qty=_int(tr, "CNTG_VOL", f[12]), cum_volume=_int(tr, "ACML_VOL", f[13]),
        cum_value_won=_int(tr, "ACML_TR_PBMN", f[14], empty=True), ask1=_int(tr, "ASKP1", f[10], empty=True),
        bid1=_int(tr, "BIDP1", f[11], empty=True), open=_int(tr, "STCK_OPRC", f[7], empty=True),
        high=_int(tr, "STCK_HGPR", f[8], empty=True), low=_int(tr, "STCK_LWPR", f[9], empty=True),
        trade_side=f[21], hour_cls=f[43], halted=f[35] == "Y", trading_date=f[33], fields=n,
    )


def _levels(tr: str, name: str, f: list[str], start: int) -> tuple[int, ...]:
    return tuple(_int(tr, f"{name}{i + 1}", f[start + i], empty=True) for i in range(BOOK_LEVELS))


def _book(f: list[str], n: int) -> BookRecord:
    # 0 code, 1 BSOP_HOUR, 2 HOUR_CLS_CODE, 3-12 ASKP1-10, 13-22 BIDP1-10, 23-32 ASKP_RSQN1-10,
    # 33-42 BIDP_RSQN1-10, 43 TOTAL_ASKP_RSQN, 44 TOTAL_BIDP_RSQN, then expected-price fields;
    # the 63-field layout appends the mid price, its quantity and class, and MARKET_CLS_CODE.
    tr = BOOK_TR
    return BookRecord(
        code=_code(tr, f[0]), hhmmss=_hhmmss(tr, f[1]), asks=_levels(tr, "ASKP", f, 3), bids=_levels(tr, "BIDP", f, 13),
        ask_qty=_levels(tr, "ASKP_RSQN", f, 23), bid_qty=_levels(tr, "BIDP_RSQN", f, 33),
        total_ask_qty=_int(tr, "TOTAL_ASKP_RSQN", f[43], empty=True),
        total_bid_qty=_int(tr, "TOTAL_BIDP_RSQN", f[44], empty=True), hour_cls=f[2], fields=n,
    )


def _notice_reader(tr: str) -> Callable[[list[str], int], NoticeRecord]:
    def _notice(f: list[str], n: int) -> NoticeRecord:
        # Fields 0-17 are the same in both layouts; 26 adds ORD_COND_PRC, ORD_EXG_GB, POPUP_YN and
        # FILLER after ACNT_NAME, and both end CRDT_CLS, CRDT_LOAN_DATE, CNTG_ISNM40, ODER_PRC.
        side = _SIDES.get(f[4])
        if side is None:
            raise StreamBadFrame(tr, f"SELN_BYOV_CLS {f[4][:8]!r}, not 01 or 02")
        for name, value, allowed in (("RCTF_CLS", f[5], "012"), ("RFUS_YN", f[12], "01"), ("CNTG_YN", f[13], "12"),
                                     ("ACPT_YN", f[14], "123")):
            if len(value) != 1 or value not in allowed:
                raise StreamBadFrame(tr, f"{name} {value[:8]!r}, not one of {', '.join(allowed)}")
        orig_odno = str(_int(tr, "OODER_NO", f[3])) if f[3] else ""
        return NoticeRecord(
            cust_id=f[0], account=f[1], odno=str(_int(tr, "ODER_NO", f[2])), orig_odno=orig_odno, side=side,
            rctf_cls=f[5], order_kind=f[6], order_cond=f[7], code=_code(tr, f[8]), qty=_int(tr, "CNTG_QTY", f[9]),
            price=_int(tr, "CNTG_UNPR", f[10], empty=True), hhmmss=_hhmmss(tr, f[11]), refused=f[12] == "1",
            is_fill=f[13] == "2", accepted=f[14], branch=f[15], order_qty=_int(tr, "ODER_QTY", f[16], empty=True),
            order_price=_int(tr, "ODER_PRC", f[n - 1], empty=True), name=f[n - 2], exchange=f[19] if n == 26 else "",
            fields=n,
        )
    return _notice


_READERS: dict[str, tuple[Callable[[list[str], int], Any], tuple[int, ...]]] = {
    TICK_TR: (_tick, TICK_LAYOUTS),
    BOOK_TR: (_book, BOOK_LAYOUTS),
    **{tr: (_notice_reader(tr), NOTICE_LAYOUTS) for tr in NOTICE_TRS.values()},
}
