"""KIS's REST wire format: replies parsed and checked into frozen records, and the errors a call can end in.

Pure: bytes and a status in, records (or a ``KisFailure``) out. The only code
in the firm that reads a KIS body (KIS.md sections 2.2, 4 and 7):

* keys are read case-insensitively (normalised to lower case; ``order-cash``
  answers ``ODNO``, the queries ``odno``), and the documented spelling
  variants are folded into one (``cncl_cfrm_qty`` -> ``cnc_cfrm_qty``,
  ``excg_id_dvsn_Cd`` -> ``excg_id_dvsn_cd``);
* numbers travel as strings (``"0000000001"``, ``"135440.2517"``) and are
  parsed here, to ``int`` won / shares where the firm counts them;
* ``msg1`` is stripped of KIS's fixed-width padding; ODNO keeps its spelling
  (it goes back to KIS as it came) and ``norm_odno`` gives the form to match
  on (demo answers "2696" and "0000002696" for the same order);
* anything malformed (not JSON, HTML from a proxy, a missing field, a number
  that is not a numeric string, a shape KIS does not send) raises
  ``KisBadReply(tr_id, reason)``: nothing else escapes from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

# --- errors ----------------------------------------------------------------------------------


class KisCallError(Exception):
    """A KIS call that did not end with the answer asked for (base of every error below)."""


class KisBadReply(KisCallError):
    """KIS (or something in front of it) answered with a body this module cannot read."""

    def __init__(self, tr_id: str, reason: str) -> None:
        super().__init__(f"{tr_id}: {reason}")
        self.tr_id = tr_id
        self.reason = reason


class KisRejected(KisCallError):
    """The broker answered and refused (a business error such as APBK0919): nothing was done."""

    def __init__(self, msg_cd: str, text: str, reason_code: str) -> None:
        super().__init__(f"{msg_cd} {text} ({reason_code})")
        self.msg_cd = msg_cd
        self.text = text
        self.reason_code = reason_code


class KisRateLimited(KisRejected):
    """An order or cancel KIS refused with EGW00201 (or the limiter held back): not taken, safe to report refused."""

    def __init__(self, text: str = "초당 거래건수를 초과하였습니다.") -> None:
        super().__init__("EGW00201", text, RATE_LIMITED)


class KisFateUnknown(KisCallError):
    """An order or cancel was (perhaps) sent but its answer is unknown: reconcile from the daily query, never resend."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class KisUnavailable(KisCallError):
    """A call that could not be made or answered (nothing sent, or a query that kept failing)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


# --- firm reason codes of a refusal ------------------------------------------------------------

INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
INSUFFICIENT_SHARES = "INSUFFICIENT_SHARES"
MARKET_CLOSED = "MARKET_CLOSED"
BAD_TICK = "BAD_TICK"
OUTSIDE_PRICE_LIMITS = "OUTSIDE_PRICE_LIMITS"
UNKNOWN_CODE = "UNKNOWN_CODE"
UNKNOWN_ORDER = "UNKNOWN_ORDER"
INVALID_QUANTITY = "INVALID_QUANTITY"
INVALID_PRICE = "INVALID_PRICE"
INVALID_ORDER_TYPE = "INVALID_ORDER_TYPE"
ORDER_NOT_OPEN = "ORDER_NOT_OPEN"
CANCEL_QTY_EXCEEDS_REMAINING = "CANCEL_QTY_EXCEEDS_REMAINING"
CANCEL_TOO_EARLY = "CANCEL_TOO_EARLY"  # "거래소 미접수": the exchange has not taken the order yet; retry shortly
RATE_LIMITED = "RATE_LIMITED"
BROKER_REJECTED = "BROKER_REJECTED"  # any other refusal: msg_cd and msg1 say what

# (msg1 keywords, reason), first match wins: APBK0918 alone means market closed, no cash or no shares (KIS.md 4.1)
_KEYWORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("미접수",), CANCEL_TOO_EARLY),
    (("정정취소가능수량", "취소가능수량"), CANCEL_QTY_EXCEEDS_REMAINING),
    (("정정취소할 수량이 없", "취소할 수량이 없", "이미 체결", "이미 취소"), ORDER_NOT_OPEN),
    (("원주문번호", "원주문이 없"), UNKNOWN_ORDER),
    (("장운영시간", "장시작전", "장 시작 전", "장종료", "장 종료", "장마감", "장 마감", "주문가능시간", "거래시간"),
     MARKET_CLOSED),
    (("호가단위",), BAD_TICK),
    (("상하한가", "상한가", "하한가"), OUTSIDE_PRICE_LIMITS),
    (("주문가능금액", "매수가능금액", "증거금", "예수금", "잔액부족", "금액이 부족"), INSUFFICIENT_CASH),
    (("매도가능수량", "잔고수량", "보유수량", "잔고가 부족", "잔고부족"), INSUFFICIENT_SHARES),
    (("종목코드", "주문할 수 없는 종목", "없는 종목"), UNKNOWN_CODE),
    (("주문구분",), INVALID_ORDER_TYPE),
    (("주문단가",), INVALID_PRICE),
    (("주문수량",), INVALID_QUANTITY),
)
_REASON_BY_CODE = {"40570000": MARKET_CLOSED, "EGW00201": RATE_LIMITED}


def refusal_reason(msg_cd: str, msg1: str, side: str | None = None) -> str:
    """The firm's reason code for a KIS refusal, from its code and the keywords of its message.

    "주문가능수량을 초과" (APBK0919) names the quantity the account can order:
    for a sell that is the shares held, for a buy what the cash buys.
    """
    if msg_cd in _REASON_BY_CODE:
        return _REASON_BY_CODE[msg_cd]
    text = msg1.replace(" ", "") if msg1 else ""
    for words, reason in _KEYWORDS:
        if any(w.replace(" ", "") in text for w in words):
            return reason
    if "가능수량" in text:
        return {"sell": INSUFFICIENT_SHARES, "buy": INSUFFICIENT_CASH}.get(side or "", BROKER_REJECTED)
    return BROKER_REJECTED


# --- the envelope ------------------------------------------------------------------------------

TOKEN_CODES = frozenset({"EGW00121", "EGW00122", "EGW00123", "EGW00124", "EGW00125", "EGW00126"})
RATE_CODE = "EGW00201"
TIMEOUT_CODES = frozenset({"EGW00301", "EGW00302"})
# gateway trouble that says nothing about the request itself (KIS.md 5.2; EGW00002 "서버 에러")
TRANSIENT_CODES = frozenset({"EGW00002", "EGW00202", "EGW00203", "EGW00300"})


@dataclass(frozen=True, slots=True)
class KisFailure:
    """An error body: ``rt_cd`` other than "0" with ``msg_cd`` and ``msg1``, or OAuth's ``error_code`` shape."""

    msg_cd: str
    msg1: str
    http_status: int

    @property
    def token_invalid(self) -> bool:
        """The token was refused (invalid, expired, unknown): KIS did nothing; drop it, reissue once, retry once."""
        return self.msg_cd in TOKEN_CODES

    @property
    def rate_limited(self) -> bool:
        return self.msg_cd == RATE_CODE

    @property
    def timed_out(self) -> bool:
        """KIS's own timeout, "직전 거래를 반드시 확인하세요" (check the last transaction): an order's fate is open."""
        return self.msg_cd in TIMEOUT_CODES

    @property
    def transient(self) -> bool:
        """Gateway trouble worth retrying for a query (never for an order: its fate is unknown)."""
        return self.msg_cd in TRANSIENT_CODES or self.msg_cd in TIMEOUT_CODES

    def __str__(self) -> str:
        return f"{self.msg_cd} {self.msg1} (HTTP {self.http_status})"


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful (``rt_cd`` "0") answer: its body with lower-case keys and the response ``tr_cont``."""

    tr_id: str
    msg_cd: str
    msg1: str
    body: Mapping[str, Any]
    tr_cont: str = ""

    @property
    def more(self) -> bool:
        """More pages follow (response ``tr_cont`` F or M; D or E is the last page, KIS.md 4.10)."""
        return self.tr_cont in ("F", "M")


def decode_json(tr_id: str, status: int, content: bytes) -> dict[str, Any]:
    """A body as a JSON object with lower-case keys; KisBadReply for HTML, empty bodies, arrays, bad UTF-8."""
    if not content.strip():
        raise KisBadReply(tr_id, f"empty body (HTTP {status})")
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        head = content[:60].decode("utf-8", errors="replace").replace("\n", " ")
        raise KisBadReply(tr_id, f"not JSON (HTTP {status}): {head!r}") from None
    if not isinstance(body, dict):
        raise KisBadReply(tr_id, f"body is a JSON {type(body).__name__}, not an object (HTTP {status})")
    return lower_keys(body)


def read_reply(tr_id: str, status: int, content: bytes, tr_cont: str = "") -> Reply | KisFailure:
    """Read a ``/uapi`` answer whatever its HTTP status (EGW errors come as 500 with the normal envelope)."""
    body = decode_json(tr_id, status, content)
    if "rt_cd" not in body:
        if "error_code" in body:  # the OAuth shape, seen on /uapi too when the gateway refuses early
            return KisFailure(_text(body, "error_code", tr_id), _text(body, "error_description", tr_id, ""), status)
        raise KisBadReply(tr_id, f"no rt_cd in the body (HTTP {status}); keys {sorted(body)[:8]}")
    rt_cd = _text(body, "rt_cd", tr_id)
    msg_cd = _text(body, "msg_cd", tr_id, "")
    msg1 = _text(body, "msg1", tr_id, "")
    if rt_cd != "0":
        if not msg_cd:
            raise KisBadReply(tr_id, f"rt_cd {rt_cd!r} without msg_cd (HTTP {status})")
        return KisFailure(msg_cd, msg1, status)
    if status >= 400:
        raise KisBadReply(tr_id, f"rt_cd 0 with HTTP {status}")
    return Reply(tr_id, msg_cd, msg1, body, tr_cont.strip())


def read_oauth(what: str, status: int, content: bytes) -> dict[str, Any] | KisFailure:
    """Read an ``/oauth2`` answer: its body, or the failure in either error shape."""
    body = decode_json(what, status, content)
    if "error_code" in body:
        return KisFailure(_text(body, "error_code", what), _text(body, "error_description", what, ""), status)
    if "rt_cd" in body and body.get("rt_cd") != "0":
        return KisFailure(_text(body, "msg_cd", what, "?"), _text(body, "msg1", what, ""), status)
    if status >= 400:
        raise KisBadReply(what, f"HTTP {status} without an error code")
    return body


# --- reading fields ------------------------------------------------------------------------------

MAX_DIGITS = 18  # no quantity or won amount of an account reaches 10**18: a bigger "number" is garbage
_ALIASES = {"cncl_cfrm_qty": "cnc_cfrm_qty"}  # the workbook example's spelling of the doc table's field


def lower_keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping with lower-case keys, the documented spelling variants folded into one."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        k = str(key).lower()
        out[_ALIASES.get(k, k)] = value
    return out


def norm_odno(odno: str) -> str:
    """An order number in the form to match on: no padding, no leading zeros ("0000002696" -> "2696")."""
    s = odno.strip()
    return s.lstrip("0") or ("0" if s else "")


def _text(row: Mapping[str, Any], key: str, tr_id: str, default: str | None = None) -> str:
    value = row.get(key)
    if value is None:
        if default is None:
            raise KisBadReply(tr_id, f"{key} missing")
        return default
    if not isinstance(value, str):
        raise KisBadReply(tr_id, f"{key} is {type(value).__name__}, not a string")
    return value.strip()


def _decimal(row: Mapping[str, Any], key: str, tr_id: str, default: int | None = None) -> Decimal:
    """A number sent as a string; ``default`` stands in for a field that is absent or blank."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip() and default is not None):
        if default is None:
            raise KisBadReply(tr_id, f"{key} missing")
        return Decimal(default)
    if not isinstance(value, str):
        raise KisBadReply(tr_id, f"{key} is {type(value).__name__}, not a numeric string")
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise KisBadReply(tr_id, f"{key} is not a number: {value[:30]!r}") from None
    if not number.is_finite() or number.adjusted() >= MAX_DIGITS:
        raise KisBadReply(tr_id, f"{key} is not a number of a sane size: {value[:30]!r}")
    return number


def _int(row: Mapping[str, Any], key: str, tr_id: str, default: int | None = None) -> int:
    """A whole number (shares, won): "0000000001" -> 1; "1.5" is malformed."""
    number = _decimal(row, key, tr_id, default)
    if number != number.to_integral_value():
        raise KisBadReply(tr_id, f"{key} is not a whole number: {number}")
    return int(number)


def _won(row: Mapping[str, Any], key: str, tr_id: str, default: int | None = None) -> int:
    """A won amount that KIS may send with decimals ("135440.2517"), rounded half up to whole won."""
    return int(_decimal(row, key, tr_id, default).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _float(row: Mapping[str, Any], key: str, tr_id: str, default: int | None = None) -> float:
    return float(_decimal(row, key, tr_id, default))


def _odno(row: Mapping[str, Any], key: str, tr_id: str, *, required: bool = True) -> str:
    value = _text(row, key, tr_id, None if required else "")
    if (required or value) and not (value.isascii() and value.isdigit()):
        raise KisBadReply(tr_id, f"{key} is not an order number: {value[:20]!r}")
    return value


def _code(row: Mapping[str, Any], key: str, tr_id: str) -> str:
    value = _text(row, key, tr_id)
    if not value or not (value.isascii() and value.isalnum()):
        raise KisBadReply(tr_id, f"{key} is not a stock code: {value[:20]!r}")
    return value


def _side(row: Mapping[str, Any], tr_id: str) -> str:
    code = _text(row, "sll_buy_dvsn_cd", tr_id)
    side = {"02": "buy", "01": "sell"}.get(code)
    if side is None:
        raise KisBadReply(tr_id, f"sll_buy_dvsn_cd {code!r} is neither 01 (sell) nor 02 (buy)")
    return side


def _object(body: Mapping[str, Any], key: str, tr_id: str) -> dict[str, Any]:
    """An output that is one object (or, as balance's output2, a list holding one)."""
    value = body.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        shape = "missing" if value is None else f"a {type(value).__name__}" + (
            f" of {len(value)}" if isinstance(value, list) else "")
        raise KisBadReply(tr_id, f"{key} is {shape}, not an object")
    return lower_keys(value)


def _rows(body: Mapping[str, Any], key: str, tr_id: str) -> list[dict[str, Any]]:
    """An output that is a list of objects (an empty list, or a missing key, when there are none)."""
    value = body.get(key, [])
    if value == "" or value == {}:  # no rows, as some TRs say it
        return []
    if not isinstance(value, list):
        raise KisBadReply(tr_id, f"{key} is a {type(value).__name__}, not a list")
    out = []
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise KisBadReply(tr_id, f"{key}[{i}] is a {type(row).__name__}, not an object")
        out.append(lower_keys(row))
    return out


def _date(row: Mapping[str, Any], key: str, tr_id: str) -> str:
    value = _text(row, key, tr_id)
    if len(value) != 8 or not (value.isascii() and value.isdigit()):
        raise KisBadReply(tr_id, f"{key} is not a YYYYMMDD date: {value[:20]!r}")
    return value


# --- records -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaceReply:
    """KIS's receipt for an order, revise or cancel: its order number, branch (needed to cancel) and time."""

    odno: str  # as KIS sent it: send it back so
    branch: str  # KRX_FWDG_ORD_ORGNO
    ord_tmd: str  # HHMMSS, KST

    @property
    def key(self) -> str:
        return norm_odno(self.odno)


def place_reply(reply: Reply) -> PlaceReply:
    """``order-cash`` / ``order-rvsecncl`` output (keys upper case on the wire)."""
    out = _object(reply.body, "output", reply.tr_id)
    return PlaceReply(_odno(out, "odno", reply.tr_id), _text(out, "krx_fwdg_ord_orgno", reply.tr_id),
                      _text(out, "ord_tmd", reply.tr_id, ""))


@dataclass(frozen=True, slots=True)
class DailyOrder:
    """One row of ``inquire-daily-ccld``: an order, revise or cancel of a day, with its fills so far."""

    ord_dt: str  # YYYYMMDD
    branch: str  # ord_gno_brno
    odno: str
    orgn_odno: str  # "" for a new order; the original for a revise or cancel
    code: str
    side: str  # "buy" / "sell"
    qty: int
    price: int  # ord_unpr; 0 for a market order
    ord_tmd: str
    filled_qty: int  # tot_ccld_qty
    filled_value_won: int  # tot_ccld_amt
    avg_price: int  # avg_prvs, rounded to whole won
    canceled: bool  # cncl_yn "Y": KIS marks the row of a cancel order so
    cancel_confirmed_qty: int  # cnc_cfrm_qty
    remaining_qty: int  # rmn_qty: still working
    rejected_qty: int  # rjct_qty
    order_dvsn: str  # ord_dvsn_cd (00 limit, 01 market, ...)

    @property
    def key(self) -> str:
        return norm_odno(self.odno)

    @property
    def original_key(self) -> str:
        return norm_odno(self.orgn_odno)


def daily_order(row: Mapping[str, Any], tr_id: str) -> DailyOrder:
    return DailyOrder(
        ord_dt=_date(row, "ord_dt", tr_id), branch=_text(row, "ord_gno_brno", tr_id, ""),
        odno=_odno(row, "odno", tr_id), orgn_odno=_odno(row, "orgn_odno", tr_id, required=False),
        code=_code(row, "pdno", tr_id), side=_side(row, tr_id), qty=_int(row, "ord_qty", tr_id),
        price=_won(row, "ord_unpr", tr_id, 0), ord_tmd=_text(row, "ord_tmd", tr_id, ""),
        filled_qty=_int(row, "tot_ccld_qty", tr_id), filled_value_won=_won(row, "tot_ccld_amt", tr_id, 0),
        avg_price=_won(row, "avg_prvs", tr_id, 0), canceled=_text(row, "cncl_yn", tr_id, "N") == "Y",
        cancel_confirmed_qty=_int(row, "cnc_cfrm_qty", tr_id, 0), remaining_qty=_int(row, "rmn_qty", tr_id),
        rejected_qty=_int(row, "rjct_qty", tr_id, 0), order_dvsn=_text(row, "ord_dvsn_cd", tr_id, ""),
    )


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """An order that can still be cancelled: a row of ``inquire-psbl-rvsecncl`` (or of daily-ccld on demo)."""

    branch: str
    odno: str
    orgn_odno: str
    code: str
    side: str
    qty: int
    price: int
    ord_tmd: str
    filled_qty: int
    open_qty: int  # psbl_qty: what a cancel can still take
    order_dvsn: str

    @property
    def key(self) -> str:
        return norm_odno(self.odno)

    @classmethod
    def from_daily(cls, d: DailyOrder) -> OpenOrder:
        """The demo server's stand-in (it has no psbl-rvsecncl, KIS.md 4.5): the daily row's remaining quantity."""
        return cls(d.branch, d.odno, d.orgn_odno, d.code, d.side, d.qty, d.price, d.ord_tmd, d.filled_qty,
                   d.remaining_qty, d.order_dvsn)


def open_order(row: Mapping[str, Any], tr_id: str) -> OpenOrder:
    return OpenOrder(
        branch=_text(row, "ord_gno_brno", tr_id, ""), odno=_odno(row, "odno", tr_id),
        orgn_odno=_odno(row, "orgn_odno", tr_id, required=False), code=_code(row, "pdno", tr_id),
        side=_side(row, tr_id), qty=_int(row, "ord_qty", tr_id), price=_won(row, "ord_unpr", tr_id, 0),
        ord_tmd=_text(row, "ord_tmd", tr_id, ""), filled_qty=_int(row, "tot_ccld_qty", tr_id, 0),
        open_qty=_int(row, "psbl_qty", tr_id), order_dvsn=_text(row, "ord_dvsn_cd", tr_id, ""),
    )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a paged TR: its rows (lower-case keys) and the cursor to the next page, if any."""

    rows: list[dict[str, Any]]
    more: bool
    fk100: str  # passed back verbatim, padding included (KIS.md 4.10)
    nk100: str


def page(reply: Reply, key: str) -> Page:
    """The rows under ``key`` and the cursor; a page that says "more" must carry a cursor to it.

    kis-trader treats ``nk100 == "^^"`` (after stripping) as the end of the
    data (KIS.md section 12); so does this, whatever ``tr_cont`` says.
    """
    tr_id = reply.tr_id
    rows = _rows(reply.body, key, tr_id)
    fk = reply.body.get("ctx_area_fk100", "")
    nk = reply.body.get("ctx_area_nk100", "")
    if not isinstance(fk, str) or not isinstance(nk, str):
        raise KisBadReply(tr_id, "ctx_area_fk100 / ctx_area_nk100 are not strings")
    more = reply.more and nk.strip() != "^^"
    if more and not nk.strip():
        raise KisBadReply(tr_id, f"tr_cont {reply.tr_cont!r} says more follows but ctx_area_nk100 is empty")
    return Page(rows, more, fk, nk)


@dataclass(frozen=True, slots=True)
class Balance:
    """``inquire-balance``: cash, holdings (zero-quantity rows dropped) and the account's totals."""

    cash_won: int  # prvs_rcdl_excc_amt: cash once today's trades settle (D+2), what the firm's books hold
    deposit_won: int  # dnca_tot_amt: the deposit today (D+0), before today's trades settle
    next_day_cash_won: int  # nxdy_excc_amt (D+1)
    positions: dict[str, tuple[int, int]]  # code -> (qty, average purchase price in whole won)
    sellable: dict[str, int]  # code -> ord_psbl_qty
    stocks_value_won: int  # scts_evlu_amt
    total_value_won: int  # tot_evlu_amt


def balance(rows: list[dict[str, Any]], summary_reply: Reply) -> Balance:
    """A balance from every page's ``output1`` rows and the last page's ``output2`` summary.

    One stock may sit on several rows (cash and margin "자기융자"); they are
    added up, the average price weighted by their purchase amounts.
    """
    tr_id = summary_reply.tr_id
    summary = _object(summary_reply.body, "output2", tr_id)
    held: dict[str, list[int]] = {}  # code -> [qty, cost_won, sellable]
    for row in rows:
        qty = _int(row, "hldg_qty", tr_id)
        if qty == 0:
            continue  # sold out, still listed until D+2
        if qty < 0:
            raise KisBadReply(tr_id, f"hldg_qty {qty} is negative")
        code = _code(row, "pdno", tr_id)
        cost = _won(row, "pchs_amt", tr_id, 0) or _won(row, "pchs_avg_pric", tr_id, 0) * qty
        entry = held.setdefault(code, [0, 0, 0])
        entry[0] += qty
        entry[1] += cost
        entry[2] += _int(row, "ord_psbl_qty", tr_id, 0)
    positions = {c: (q, int((Decimal(cost) / q).quantize(Decimal(1), rounding=ROUND_HALF_UP)))
                 for c, (q, cost, _) in held.items()}
    return Balance(
        cash_won=_won(summary, "prvs_rcdl_excc_amt", tr_id), deposit_won=_won(summary, "dnca_tot_amt", tr_id),
        next_day_cash_won=_won(summary, "nxdy_excc_amt", tr_id, 0), positions=positions,
        sellable={c: s for c, (_, _, s) in held.items()}, stocks_value_won=_won(summary, "scts_evlu_amt", tr_id, 0),
        total_value_won=_won(summary, "tot_evlu_amt", tr_id, 0),
    )


@dataclass(frozen=True, slots=True)
class Quote:
    """``inquire-price``: the current price of a stock, its day's limits and a few fundamentals."""

    code: str
    last: int  # stck_prpr
    base: int  # stck_sdpr: the day's reference price (yesterday's close)
    upper: int  # stck_mxpr: the upper price limit
    lower: int  # stck_llam: the lower price limit
    open: int
    high: int
    low: int
    volume: int  # acml_vol
    value_won: int  # acml_tr_pbmn
    tick: int  # aspr_unit
    per: float
    pbr: float
    eps: float
    bps: float
    halted: bool  # temp_stop_yn
    status_code: str  # iscd_stat_cls_code (58 halted, 51 관리, ...; KIS.md 4.7)


def quote(reply: Reply, code: str) -> Quote:
    out = _object(reply.body, "output", reply.tr_id)
    t = reply.tr_id
    q = Quote(
        code=_text(out, "stck_shrn_iscd", t, code) or code, last=_won(out, "stck_prpr", t),
        base=_won(out, "stck_sdpr", t), upper=_won(out, "stck_mxpr", t), lower=_won(out, "stck_llam", t),
        open=_won(out, "stck_oprc", t, 0), high=_won(out, "stck_hgpr", t, 0), low=_won(out, "stck_lwpr", t, 0),
        volume=_int(out, "acml_vol", t, 0), value_won=_won(out, "acml_tr_pbmn", t, 0),
        tick=_int(out, "aspr_unit", t, 0), per=_float(out, "per", t, 0), pbr=_float(out, "pbr", t, 0),
        eps=_float(out, "eps", t, 0), bps=_float(out, "bps", t, 0), halted=_text(out, "temp_stop_yn", t, "N") == "Y",
        status_code=_text(out, "iscd_stat_cls_code", t, ""),
    )
    if q.last <= 0 or q.lower > q.upper:
        raise KisBadReply(t, f"price {q.last} / limits {q.lower}..{q.upper} make no sense")
    return q


@dataclass(frozen=True, slots=True)
class InvestorDay:
    """One day of ``inquire-investor``: net buying by investor class, in shares and in millions of won."""

    date: str  # stck_bsop_date
    close: int
    person_net_qty: int
    foreign_net_qty: int
    institution_net_qty: int
    person_net_mn_won: int  # *_ntby_tr_pbmn: millions of won (UNCONFIRMED unit, KIS.md 4.8)
    foreign_net_mn_won: int
    institution_net_mn_won: int


_INVESTOR_FIELDS = ("prsn_ntby_qty", "frgn_ntby_qty", "orgn_ntby_qty",
                    "prsn_ntby_tr_pbmn", "frgn_ntby_tr_pbmn", "orgn_ntby_tr_pbmn")


def investor_days(reply: Reply) -> list[InvestorDay]:
    """The rows newest first; a row whose figures are blank (today's, before the close) is left out."""
    t = reply.tr_id
    out = []
    for row in _rows(reply.body, "output", t):
        if all(not str(row.get(k) or "").strip() for k in _INVESTOR_FIELDS):
            continue
        nets = [_int(row, k, t, 0) for k in _INVESTOR_FIELDS]
        out.append(InvestorDay(_date(row, "stck_bsop_date", t), _won(row, "stck_clpr", t, 0), *nets))
    return out
