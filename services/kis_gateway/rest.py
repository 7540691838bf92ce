"""KIS's REST API for domestic stocks, as the gateway calls it: orders, cancels and the queries, safely.

Synchronous (one ``httpx.Client``), used from the gateway's main loop. Every
call goes through one ``RateLimiter`` (orders before cancels before queries)
and one ``TokenCache``. What happens when a call goes wrong depends on
whether it can act twice:

* an order or a cancel (POST) is never retried: a client timeout, KIS's own
  timeout (EGW00301/EGW00302), a connection dropped after sending, a 5xx KIS
  did not explain, or a reply that cannot be read is ``KisFateUnknown`` (the
  caller reconciles from ``daily_orders``); a connection refused before
  sending is ``KisUnavailable``; EGW00201 is ``KisRateLimited`` (not taken);
  a business refusal is ``KisRejected`` with the firm's reason code;
* a query (GET) is retried a few times on transport errors, 5xx, EGW00201
  (after the limiter's pause) and KIS's transient codes, then is
  ``KisUnavailable``; a refusal is ``KisRejected``; an unreadable 200 is
  ``KisBadReply``;
* EGW00121/EGW00123 (the token refused) on any call: KIS refused before
  acting, so the token is dropped, another issued and the call made once more.

TR ids live in ``TRS`` below, the one table to edit when KIS retires an id
(KIS.md section 4 and 7.1).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx

from core.krx import KST
from services.kis_gateway.auth import TokenCache
from services.kis_gateway.ratelimit import Budget, Kind, RateLimiter
from services.kis_gateway.wire import (
    Balance,
    DailyOrder,
    InvestorDay,
    KisBadReply,
    KisCallError,
    KisFailure,
    KisFateUnknown,
    KisRateLimited,
    KisRejected,
    KisUnavailable,
    OpenOrder,
    PlaceReply,
    Quote,
    Reply,
    balance,
    daily_order,
    investor_days,
    open_order,
    page,
    place_reply,
    quote,
    read_reply,
    refusal_reason,
)

__all__ = ["TRS", "KisBadReply", "KisCallError", "KisFateUnknown", "KisRateLimited", "KisRejected", "KisRest",
           "KisUnavailable", "Tr"]

ORDER_CASH = "/uapi/domestic-stock/v1/trading/order-cash"
ORDER_RVSECNCL = "/uapi/domestic-stock/v1/trading/order-rvsecncl"
DAILY_CCLD = "/uapi/domestic-stock/v1/trading/inquire-daily-ccld"
BALANCE = "/uapi/domestic-stock/v1/trading/inquire-balance"
PSBL_RVSECNCL = "/uapi/domestic-stock/v1/trading/inquire-psbl-rvsecncl"
PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
INVESTOR = "/uapi/domestic-stock/v1/quotations/inquire-investor"


@dataclass(frozen=True, slots=True)
class Tr:
    """One KIS transaction: its path, how it is paced (orders POST, the queries GET), and its id on each server."""

    path: str
    kind: Kind
    demo: str | None  # None: the demo server does not offer it
    real: str

    def id_for(self, env: str) -> str | None:
        return self.demo if env == "demo" else self.real


# The TR ids the gateway uses: the new ids of KIS.md section 4 (the deprecated TTTC0802U/0801U/0803U/8001R are not)
TRS: dict[str, Tr] = {
    "buy": Tr(ORDER_CASH, Kind.ORDER, "VTTC0012U", "TTTC0012U"),
    "sell": Tr(ORDER_CASH, Kind.ORDER, "VTTC0011U", "TTTC0011U"),
    "cancel": Tr(ORDER_RVSECNCL, Kind.CANCEL, "VTTC0013U", "TTTC0013U"),
    "daily_orders": Tr(DAILY_CCLD, Kind.QUERY, "VTTC0081R", "TTTC0081R"),
    "balance": Tr(BALANCE, Kind.QUERY, "VTTC8434R", "TTTC8434R"),
    "open_orders": Tr(PSBL_RVSECNCL, Kind.QUERY, None, "TTTC0084R"),  # demo: none (KIS.md 4.5)
    "price": Tr(PRICE, Kind.QUERY, "FHKST01010100", "FHKST01010100"),
    "investor": Tr(INVESTOR, Kind.QUERY, "FHKST01010900", "FHKST01010900"),
}

GET_ATTEMPTS = 4  # a query is tried at most this many times
RETRY_BACKOFF_S = 0.2  # then 0.4, 0.8 between attempts (EGW00201 waits the limiter's pause instead)
ORDER_WAIT_MAX_S = 2.0  # an order the limiter would hold longer is refused (KisRateLimited), not sent late
MAX_PAGES = 200  # a paged query that goes on longer is a broken cursor
ACCOUNT_RE = re.compile(r"^([0-9]{8})-([0-9]{2})$")
CODE_RE = re.compile(r"^[0-9A-Z]{6,7}$")
# refusals KIS's gateway makes before anything reaches the desk (an order's fate is then known: not taken)
REFUSED_BEFORE_ACTING = frozenset({
    "EGW00101", "EGW00102", "EGW00103", "EGW00104", "EGW00105", "EGW00115", "EGW00116", "EGW00132", "EGW00205",
    "EGW00206", "EGW00208", "EGW02004", "EGW02006", "EGW02007", "EGW2004", "OPSQ0002", "OPSQ9997", "OPSQ9999",
    "MCA00124",
})
# transport errors raised before a byte of the request left: the order's fate is known (not sent)
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol,
            httpx.LocalProtocolError)
_log = logging.getLogger("kis_gateway.rest")
T = TypeVar("T")


def _yyyymmdd(value: dt.date | str) -> str:
    text = value.strftime("%Y%m%d") if isinstance(value, dt.date) else value
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"a date is a datetime.date or YYYYMMDD, not {value!r}")
    return text


class KisRest:
    """The gateway's REST client for one KIS account (``env`` "demo" or "real").

    ``rate_per_s`` 0 paces at KIS's published rate less a margin
    (``ratelimit``); ``clock`` (wall seconds) and ``sleep`` are the only
    time it uses, so a test can move it along with the server's auth clock.
    """

    def __init__(self, rest_url: str, env: str, appkey: str, appsecret: str, account: str, cache_path: Path,
                 rate_per_s: float = 0.0, timeout_s: float = 5.0, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if env not in ("demo", "real"):
            raise ValueError(f"env must be 'demo' or 'real', not {env!r}")
        m = ACCOUNT_RE.match(account)
        if m is None:
            raise ValueError("account must be CANO-ACNT_PRDT_CD: 8 digits, a dash, 2 digits")
        self.env = env
        self._cano, self._product = m.group(1), m.group(2)
        self._appkey, self._appsecret = appkey, appsecret
        self._clock, self._sleep = clock, sleep
        self.counters: Counter[str] = Counter()
        self.limiter = RateLimiter(Budget.for_env(env, rate_per_s))
        self.tokens = TokenCache(cache_path, rest_url, appkey, appsecret, timeout_s=timeout_s, clock=clock,
                                 counters=self.counters)
        self._http = httpx.Client(base_url=rest_url.rstrip("/"), timeout=timeout_s)

    # --- orders ---------------------------------------------------------------------------------

    def place(self, code: str, side: str, qty: int, price: int, order_type: str = "limit") -> PlaceReply:
        """A cash order (``order-cash``): KIS's receipt; raises KisRejected, KisRateLimited, KisFateUnknown or
        KisUnavailable (module docstring)."""
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
        if order_type not in ("limit", "market"):
            raise ValueError(f"order_type must be 'limit' or 'market', not {order_type!r}")
        if not CODE_RE.match(code) or qty <= 0 or price < 0 or (order_type == "limit" and price <= 0):
            raise ValueError(f"bad order {code!r} {qty} @ {price} ({order_type})")
        body = {"CANO": self._cano, "ACNT_PRDT_CD": self._product, "PDNO": code,
                "ORD_DVSN": "00" if order_type == "limit" else "01", "ORD_QTY": str(qty),
                "ORD_UNPR": str(price if order_type == "limit" else 0), "EXCG_ID_DVSN_CD": "KRX"}
        what = f"{side} {code} {qty} @ {price if order_type == 'limit' else 'market'}"
        receipt = self._order(side, body, side, what)
        _log.info("%s %s: ODNO %s", TRS[side].id_for(self.env), what, receipt.odno)
        return receipt

    def cancel(self, odno: str, branch: str, qty: int, all_qty: bool, code: str) -> PlaceReply:
        """Cancel (``order-rvsecncl``, RVSE_CNCL_DVSN_CD 02) ``qty`` of order ``odno``, or all it has left.

        ``branch`` is the order's KRX_FWDG_ORD_ORGNO (its receipt, or
        ``ord_gno_brno`` of the daily query). The receipt is that of the
        cancel order (a new ODNO). Raises as ``place``; "거래소 미접수" (sent
        too soon after the order) is KisRejected with CANCEL_TOO_EARLY.
        """
        if not odno.strip().isdigit() or qty < 0 or (not all_qty and qty <= 0):
            raise ValueError(f"bad cancel of {odno!r} ({qty}, all={all_qty})")
        body = {"CANO": self._cano, "ACNT_PRDT_CD": self._product, "KRX_FWDG_ORD_ORGNO": branch,
                "ORGN_ODNO": odno.strip(), "ORD_DVSN": "00", "RVSE_CNCL_DVSN_CD": "02", "ORD_QTY": str(qty),
                "ORD_UNPR": "0", "QTY_ALL_ORD_YN": "Y" if all_qty else "N", "EXCG_ID_DVSN_CD": "KRX"}
        what = f"cancel {odno} ({code}, {'all' if all_qty else qty})"
        receipt = self._order("cancel", body, None, what)
        _log.info("%s %s: ODNO %s", TRS["cancel"].id_for(self.env), what, receipt.odno)
        return receipt

    def _order(self, name: str, body: dict[str, str], side: str | None, what: str) -> PlaceReply:
        tr_id = self._tr_id(name)
        reply = self._post(name, tr_id, body, side, what)
        try:
            return place_reply(reply)
        except KisBadReply as exc:
            self._bad(exc)
            raise KisFateUnknown(f"{tr_id} {what}: accepted (rt_cd 0) but the receipt is unreadable: "
                                 f"{exc.reason}") from exc

    # --- queries --------------------------------------------------------------------------------

    def daily_orders(self, date_from: dt.date | str, date_to: dt.date | str, code: str = "", odno: str = "", *,
                     unfilled_only: bool = False) -> list[DailyOrder]:
        """The orders, revises and cancels of a date range (oldest first), every page of ``inquire-daily-ccld``.

        KIS lists today's orders here with a delay at times (KIS.md 4.3): it
        is the record to reconcile with, not a real-time feed.
        """
        params = {"CANO": self._cano, "ACNT_PRDT_CD": self._product, "INQR_STRT_DT": _yyyymmdd(date_from),
                  "INQR_END_DT": _yyyymmdd(date_to), "SLL_BUY_DVSN_CD": "00", "PDNO": code, "ORD_GNO_BRNO": "",
                  "ODNO": odno, "CCLD_DVSN": "02" if unfilled_only else "00",
                  "INQR_DVSN": "01",  # oldest first: orders placed while paging land on later pages, not shift them
                  "INQR_DVSN_1": "", "INQR_DVSN_3": "00", "EXCG_ID_DVSN_CD": "KRX"}
        tr_id = self._tr_id("daily_orders")
        rows, _ = self._paged("daily_orders", params, "output1")
        seen: dict[tuple[str, str], DailyOrder] = {}
        for row in rows:
            d = self._parse(daily_order, row, tr_id)
            seen[(d.ord_dt, d.key)] = d  # a row repeated across pages counts once, its latest reading
        return list(seen.values())

    def balance(self) -> Balance:
        """Cash and holdings from every page of ``inquire-balance``."""
        params = {"CANO": self._cano, "ACNT_PRDT_CD": self._product, "AFHR_FLPR_YN": "N", "OFL_YN": "",
                  "INQR_DVSN": "02", "UNPR_DVSN": "01", "FUND_STTL_ICLD_YN": "N", "FNCG_AMT_AUTO_RDPT_YN": "N",
                  "PRCS_DVSN": "00"}
        rows, last = self._paged("balance", params, "output1")
        return self._parse(balance, rows, last)

    def open_orders(self, trading_date: dt.date | str | None = None) -> list[OpenOrder]:
        """The orders that can still be cancelled.

        Real: ``inquire-psbl-rvsecncl``. Demo has no such TR (KIS.md 4.5):
        the unfilled rows of ``trading_date``'s daily orders (default: today
        in Seoul by ``clock``) still working and not themselves cancels.
        """
        if TRS["open_orders"].id_for(self.env) is None:
            day = trading_date or dt.datetime.fromtimestamp(self._clock(), KST).date()
            daily = self.daily_orders(day, day, unfilled_only=True)
            return [OpenOrder.from_daily(d) for d in daily if d.remaining_qty > 0 and not d.canceled]
        params = {"CANO": self._cano, "ACNT_PRDT_CD": self._product, "INQR_DVSN_1": "0", "INQR_DVSN_2": "0"}
        tr_id = self._tr_id("open_orders")
        rows, _ = self._paged("open_orders", params, "output")
        return [o for o in (self._parse(open_order, r, tr_id) for r in rows) if o.open_qty > 0]

    def price(self, code: str) -> Quote:
        """The current price of ``code`` on KRX (``inquire-price``)."""
        reply = self._get("price", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code})
        return self._parse(quote, reply, code)

    def investor(self, code: str) -> list[InvestorDay]:
        """Daily net buying by investor class, newest first (``inquire-investor``; today's only after the close)."""
        reply = self._get("investor", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code})
        return self._parse(investor_days, reply)

    def approval_key(self) -> str:
        """The WebSocket approval key (cached with the token)."""
        return self.tokens.approval_key()

    def drop_approval(self, key: str | None = None) -> None:
        self.tokens.drop_approval(key)

    def close(self) -> None:
        self._http.close()
        self.tokens.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the calls ------------------------------------------------------------------------------

    def _tr_id(self, name: str) -> str:
        tr_id = TRS[name].id_for(self.env)
        if tr_id is None:
            raise KisUnavailable(f"the {self.env} server has no TR for {name}")
        return tr_id

    def _headers(self, tr_id: str, token: str, tr_cont: str = "") -> dict[str, str]:
        return {"content-type": "application/json; charset=utf-8", "authorization": f"Bearer {token}",
                "appkey": self._appkey, "appsecret": self._appsecret, "tr_id": tr_id, "tr_cont": tr_cont,
                "custtype": "P"}

    def _pace(self, kind: Kind, tr_id: str) -> None:
        """Wait for the limiter; an order or cancel it would hold too long is refused instead of sent late."""
        waited = 0.0
        while (wait := self.limiter.acquire(kind, self._clock())) > 0:
            if kind is not Kind.QUERY and waited + wait > ORDER_WAIT_MAX_S:
                self.counters[f"held_back.{tr_id}"] += 1
                _log.warning("%s not sent: the limiter holds calls for %.1f s more (KIS asked to slow down)",
                             tr_id, wait)
                raise KisRateLimited(f"not sent: calls paused for {wait:.1f} s after EGW00201")
            self._sleep(wait)
            waited += wait

    def _failed(self, tr_id: str, f: KisFailure) -> None:
        self.counters[f"failures.{f.msg_cd}"] += 1
        _log.warning("%s failed: %s", tr_id, f)

    def _bad(self, exc: KisBadReply) -> None:
        self.counters[f"bad_replies.{exc.tr_id}"] += 1
        _log.warning("%s bad reply: %s", exc.tr_id, exc.reason)

    def _parse(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except KisBadReply as exc:
            self._bad(exc)
            raise

    def _post(self, name: str, tr_id: str, body: dict[str, str], side: str | None, what: str) -> Reply:
        """Send an order or cancel once (twice only if KIS refused the token, i.e. did nothing)."""
        tr = TRS[name]
        for attempt in (1, 2):
            self._pace(tr.kind, tr_id)
            token = self.tokens.token()
            self.counters["calls"] += 1
            self.counters[f"calls.{tr_id}"] += 1
            try:
                r = self._http.post(tr.path, json=body, headers=self._headers(tr_id, token))
            except NOT_SENT as exc:
                self.counters[f"failures.{tr_id}.not_sent"] += 1
                _log.warning("%s %s not sent: %s: %s", tr_id, what, type(exc).__name__, exc)
                raise KisUnavailable(f"{tr_id} {what} not sent: {type(exc).__name__}: {exc}") from exc
            except httpx.HTTPError as exc:  # sent (perhaps in part), no answer: KIS may have acted
                self.counters[f"failures.{tr_id}.fate_unknown"] += 1
                _log.warning("%s %s fate unknown: %s: %s", tr_id, what, type(exc).__name__, exc)
                raise KisFateUnknown(f"{tr_id} {what}: no answer ({type(exc).__name__}: {exc})") from exc
            try:
                answer = read_reply(tr_id, r.status_code, r.content)
            except KisBadReply as exc:
                self._bad(exc)
                raise KisFateUnknown(f"{tr_id} {what}: unreadable answer: {exc.reason}") from exc
            if isinstance(answer, Reply):
                return answer
            self._failed(tr_id, answer)
            if answer.token_invalid:
                self.tokens.drop(token)
                if attempt == 1:
                    self.counters["token_reissues"] += 1
                    continue
                raise KisUnavailable(f"{tr_id} {what} not sent: the new token was refused too ({answer})")
            if answer.rate_limited:
                self.limiter.penalise(self._clock())
                raise KisRateLimited(answer.msg1 or "초당 거래건수를 초과하였습니다.")
            if answer.http_status >= 500 and answer.msg_cd not in REFUSED_BEFORE_ACTING:
                raise KisFateUnknown(f"{tr_id} {what}: {answer}")
            raise KisRejected(answer.msg_cd, answer.msg1, refusal_reason(answer.msg_cd, answer.msg1, side))
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _get(self, name: str, params: dict[str, str], tr_cont: str = "") -> Reply:
        """A query, retried on transient trouble up to GET_ATTEMPTS times."""
        tr = TRS[name]
        tr_id = self._tr_id(name)
        failures = 0
        token_retried = False
        while True:
            self._pace(tr.kind, tr_id)
            token = self.tokens.token()
            self.counters["calls"] += 1
            self.counters[f"calls.{tr_id}"] += 1
            rate_limited = False
            try:
                r = self._http.get(tr.path, params=params, headers=self._headers(tr_id, token, tr_cont))
            except httpx.HTTPError as exc:
                self.counters[f"failures.{tr_id}.transport"] += 1
                problem = f"{type(exc).__name__}: {exc}"
            else:
                try:
                    answer = read_reply(tr_id, r.status_code, r.content, r.headers.get("tr_cont", ""))
                except KisBadReply as exc:
                    self._bad(exc)
                    if r.status_code < 500:
                        raise  # KIS answered and the answer is unreadable: asking again gives the same
                    problem = f"HTTP {r.status_code}: {exc.reason}"
                else:
                    if isinstance(answer, Reply):
                        return answer
                    self._failed(tr_id, answer)
                    if answer.token_invalid:
                        self.tokens.drop(token)
                        if token_retried:
                            raise KisUnavailable(f"{tr_id}: the new token was refused too ({answer})")
                        token_retried = True
                        self.counters["token_reissues"] += 1
                        continue
                    if answer.rate_limited:
                        rate_limited = True
                        self.limiter.penalise(self._clock())
                    elif not (answer.transient or (answer.http_status >= 500
                                                   and answer.msg_cd not in REFUSED_BEFORE_ACTING)):
                        raise KisRejected(answer.msg_cd, answer.msg1, refusal_reason(answer.msg_cd, answer.msg1))
                    problem = str(answer)
            failures += 1
            if failures >= GET_ATTEMPTS:
                _log.warning("%s gave up after %d attempts: %s", tr_id, failures, problem)
                raise KisUnavailable(f"{tr_id}: {problem} ({failures} attempts)")
            self.counters["retries"] += 1
            _log.info("%s attempt %d failed (%s); retrying", tr_id, failures, problem)
            if not rate_limited:  # EGW00201 waits in _pace, for the limiter's pause
                self._sleep(RETRY_BACKOFF_S * 2 ** (failures - 1))

    def _paged(self, name: str, params: dict[str, str], key: str) -> tuple[list[dict[str, Any]], Reply]:
        """Every page of a paged query (tr_cont "N" and the cursor of the page before): its rows and last reply."""
        tr_id = self._tr_id(name)
        rows: list[dict[str, Any]] = []
        fk = nk = tr_cont = ""
        cursors: set[str] = set()
        for _ in range(MAX_PAGES):
            reply = self._get(name, {**params, "CTX_AREA_FK100": fk, "CTX_AREA_NK100": nk}, tr_cont)
            pg = self._parse(page, reply, key)
            rows += pg.rows
            if not pg.more:
                return rows, reply
            if pg.nk100 in cursors:
                self._bad(bad := KisBadReply(tr_id, f"the cursor {pg.nk100.strip()!r} came back twice"))
                raise bad
            cursors.add(pg.nk100)
            fk, nk, tr_cont = pg.fk100, pg.nk100, "N"
        self._bad(bad := KisBadReply(tr_id, f"more than {MAX_PAGES} pages"))
        raise bad

