"""KIS's order desk: ``order-cash`` and ``order-rvsecncl`` on top of the paper matching engine.

Pure: market time (ns) and the gateway's wall time (s) are passed in. Each KIS
order (a new order, a revise or a cancel) gets its own ODNO from one counter;
a new or revised order enters the engine with the ODNO as its client order id,
so every engine event names the KIS order it belongs to. A revise is a cancel
of the original's remainder and a new order with a new ODNO (KIS.md section 7,
item 13); a cancel is an order of its own (its ODNO, ``orgn_odno`` the
original) that the daily query lists. Orders are refused as KIS refuses them:
a business refusal (HTTP 200, ``rt_cd`` "1") or an input error.

ORD_DVSN served: 00 limit, 01 market, 03 best (as market), 11 IOC limit and
13 IOC market (the remainder is cancelled at once, ACPT_YN "3"). The other
codes are refused with a message that says so.

Refusal codes: KIS.md documents APBK0918 (shared by several reasons, told
apart by msg1) and APBK0919 (quantity); the codes below use those, and the
msg_cd of "거래소 미접수…" is UNCONFIRMED (kis-trader's tests use APBK0919).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.instruments import Instrument
from core.krx import KST, is_on_tick
from core.matching import CancelRefused, Execution, MatchingEngine, OrderUpdate
from core.messages import Fill, OrderEvent, OrderStatus
from services.kis_sim.flavour import Flavour
from services.kis_sim.market import hhmmss
from services.kis_sim.notices import Notice
from services.kis_sim.replies import KisError, refusal

ACCOUNT_ID = "kis"
SUPPORTED_DVSN = {"00": ("limit", "0"), "01": ("market", "0"), "03": ("market", "0"),
                  "11": ("limit", "1"), "13": ("market", "1")}
TOO_EARLY = "거래소 미접수로 정정취소주문이 불가합니다"

_REASONS = {
    "INSUFFICIENT_CASH": ("APBK0918", "주문가능금액을 초과 했습니다"),
    "INSUFFICIENT_SHARES": ("APBK0919", "주문가능수량을 초과하였습니다"),
    "MARKET_CLOSED": ("APBK0918", "장운영시간이 아닙니다"),
    "BAD_TICK": ("APBK0918", "주문단가가 호가단위에 맞지 않습니다"),
    "OUTSIDE_PRICE_LIMITS": ("APBK0918", "주문단가가 상하한가 범위를 벗어났습니다"),
    "UNKNOWN_CODE": ("APBK0918", "주문할 수 없는 종목입니다"),
    "INVALID_QUANTITY": ("APBK0918", "주문수량을 확인하세요"),
    "INVALID_PRICE": ("APBK0918", "주문단가를 확인하세요"),
}


@dataclass(slots=True)
class KisOrder:
    """One KIS order as the daily query lists it."""

    odno: str
    orgn_odno: str
    kind: str  # "new", "revise" or "cancel"
    side: str  # "buy" or "sell"
    code: str
    ord_dvsn: str
    qty: int
    price: int
    ord_dt: str
    ord_tmd: str
    ts_ns: int
    exchange: str = "KRX"
    condition: str = "0"
    filled_qty: int = 0
    filled_value_won: int = 0
    costs_won: int = 0
    canceled_qty: int = 0  # cancelled, expired or moved to a revise (new/revise); confirmed (cancel)
    rejected_qty: int = 0
    accepted_wall_s: float = 0.0

    @property
    def remaining_qty(self) -> int:
        if self.kind == "cancel":
            return 0
        return max(0, self.qty - self.filled_qty - self.canceled_qty - self.rejected_qty)

    @property
    def side_code(self) -> str:
        return "02" if self.side == "buy" else "01"


ORDER_FIELDS = tuple(f.name for f in fields(KisOrder))


@dataclass(slots=True)
class DeskRules:
    """Knobs of the desk (UNCONFIRMED behaviours default to the stricter reading)."""

    cancel_guard_s: float = 0.1  # a revise/cancel sooner than this after its order: "거래소 미접수"
    accept_empty_branch: bool = False
    unpadded_odno: bool = False  # demo logs show ODNO both padded and not
    demo_min_price_won: int = 1000


def _digits(body: dict[str, Any], key: str, *, required: bool = True, length: int = 19) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise KisError("OPSQ2002", 200, f"ERROR : INPUT INVALID_CHECK_FIELD_LENGTH ({key} 필수)")
        return ""
    if not isinstance(value, str) or not value.isdigit() or len(value) > length:
        raise KisError("OPSQ2002", 200, f"ERROR : INPUT INVALID_CHECK_FIELD_LENGTH ({key})")
    return value


def _text(body: dict[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise KisError("OPSQ2002", 200, f"ERROR : INPUT INVALID_CHECK_FIELD_LENGTH ({key})")
    return value


class OrderDesk:
    """KIS orders of one account, their notices, and their records for the queries."""

    def __init__(self, engine: MatchingEngine, instruments: dict[str, Instrument], flavour: Flavour,
                 cano: str, product_code: str, rules: DeskRules = DeskRules()) -> None:
        self.engine = engine
        self.instruments = instruments
        self.flavour = flavour
        self.cano = cano
        self.product_code = product_code
        self.rules = rules
        self.orders: dict[str, KisOrder] = {}
        self.next_no = 1
        self.sold_out: dict[str, str] = {}  # code -> the trading date its holding went to zero
        self.dirty: set[str] = set()

    # --- the account in the body -------------------------------------------------------

    def check_account(self, body: dict[str, Any]) -> None:
        """Raise OPSQ2000 unless CANO / ACNT_PRDT_CD name this server's account."""
        cano, product = body.get("CANO"), body.get("ACNT_PRDT_CD")
        if cano != self.cano or product != self.product_code:
            raise KisError("OPSQ2000", 200)

    def _odno(self) -> str:
        no = f"{self.next_no:010d}"
        self.next_no += 1
        return no

    def reply_odno(self, odno: str) -> str:
        return odno.lstrip("0") or "0" if self.rules.unpadded_odno else odno

    def find(self, odno: str) -> KisOrder | None:
        """An order by its number, padded or not."""
        return self.orders.get(odno.zfill(10)) if odno.isdigit() else None

    # --- order-cash ------------------------------------------------------------------------

    def place(self, side: str, body: dict[str, Any], now_ns: int, wall_s: float, trading_date: str,
              before_open: bool) -> tuple[dict[str, str], list[Notice]]:
        """A new cash order: the reply's ``output`` and the notices it caused; raises KisError on refusal."""
        self.check_account(body)
        code = _text(body, "PDNO").strip()
        dvsn = _digits(body, "ORD_DVSN", length=2)
        qty = int(_digits(body, "ORD_QTY", length=10))
        price = int(_digits(body, "ORD_UNPR", required=False) or "0")
        exchange = _text(body, "EXCG_ID_DVSN_CD") or "KRX"
        if side == "sell":
            _digits(body, "SLL_TYPE", required=False, length=2)
        if exchange not in self.flavour.exchanges:
            if self.flavour.is_demo:
                raise refusal("90000000", "모의투자는 KRX만 가능합니다")
            raise refusal("APBK0918", f"주문 거래소구분({exchange})을 확인하세요")
        if dvsn not in SUPPORTED_DVSN:
            raise refusal("APBK0918", f"지원하지 않는 주문구분입니다(ORD_DVSN {dvsn}; 00 01 03 11 13 가능)")
        order_type, condition = SUPPORTED_DVSN[dvsn]
        if code not in self.instruments:
            raise refusal(*_REASONS["UNKNOWN_CODE"])
        if qty <= 0:
            raise refusal(*_REASONS["INVALID_QUANTITY"])
        if order_type == "market":
            price = 0
        elif price <= 0:
            raise refusal(*_REASONS["INVALID_PRICE"])
        if self.flavour.is_demo:
            effective = price or (self.engine.last_price(code) or 0)
            if effective < self.rules.demo_min_price_won:
                raise refusal("APBK0918", "모의투자에서는 1,000원 미만 종목을 주문할 수 없습니다")
        order = KisOrder(self._odno(), "", "new", side, code, dvsn, qty, price, trading_date, hhmmss(now_ns),
                         now_ns, exchange, condition, accepted_wall_s=wall_s)
        notices = self._enter(order, order_type, now_ns, before_open)
        return self._output(order), notices

    def _enter(self, order: KisOrder, order_type: str, now_ns: int, before_open: bool) -> list[Notice]:
        events = self.engine.submit(ACCOUNT_ID, order.odno, order.code, order.side, order_type, order.qty,
                                    order.price, now_ns)
        first = events[0]
        assert isinstance(first, OrderUpdate)
        if first.status is OrderStatus.REJECTED:
            self.next_no -= 1  # a refused order gets no number
            if first.reason_code == "MARKET_CLOSED" and before_open and self.flavour.is_demo:
                raise refusal("40570000")
            raise refusal(*_REASONS.get(first.reason_code, ("APBK0918", first.reason_text)))
        self.orders[order.odno] = order
        self.dirty.add(order.odno)
        notices = [self._ack(order, now_ns)]
        notices += self._apply(events[1:], now_ns)
        if order.condition != "0" and order.remaining_qty:
            notices += self._apply(self.engine.cancel(order.odno, 0, now_ns), now_ns, ioc=True)
        return notices

    def _output(self, order: KisOrder) -> dict[str, str]:
        return {"KRX_FWDG_ORD_ORGNO": self.flavour.branch, "ODNO": self.reply_odno(order.odno),
                "ORD_TMD": order.ord_tmd}

    # --- order-rvsecncl ----------------------------------------------------------------------

    def change(self, body: dict[str, Any], now_ns: int, wall_s: float, trading_date: str) -> tuple[
            str, dict[str, str], list[Notice]]:
        """A revise ("01") or cancel ("02"): ("revise"/"cancel", the reply's output, notices); raises KisError."""
        self.check_account(body)
        branch = _text(body, "KRX_FWDG_ORD_ORGNO")
        orgn = _digits(body, "ORGN_ODNO", length=10)
        dvsn = _digits(body, "ORD_DVSN", length=2)
        what = _digits(body, "RVSE_CNCL_DVSN_CD", length=2)
        qty = int(_digits(body, "ORD_QTY", length=10))
        price = int(_digits(body, "ORD_UNPR", length=19))
        all_qty = _text(body, "QTY_ALL_ORD_YN")
        exchange = _text(body, "EXCG_ID_DVSN_CD") or "KRX"
        if what not in ("01", "02"):
            raise KisError("OPSQ2002", 200, "ERROR : INPUT INVALID_CHECK_FIELD_LENGTH (RVSE_CNCL_DVSN_CD)")
        if all_qty not in ("Y", "N"):
            raise KisError("OPSQ2002", 200, "ERROR : INPUT INVALID_CHECK_FIELD_LENGTH (QTY_ALL_ORD_YN)")
        if exchange not in self.flavour.exchanges:
            raise refusal("90000000", "모의투자는 KRX만 가능합니다") if self.flavour.is_demo else refusal(
                "APBK0918", f"주문 거래소구분({exchange})을 확인하세요")
        if branch != self.flavour.branch and not (branch == "" and self.rules.accept_empty_branch):
            raise refusal("APBK0918", "한국거래소전송주문조직번호를 확인하세요")
        original = self.find(orgn)
        if original is None or original.kind == "cancel":
            raise refusal("APBK0918", "원주문번호를 확인하세요")
        if wall_s - original.accepted_wall_s < self.rules.cancel_guard_s:
            raise refusal("APBK0919", TOO_EARLY)
        open_qty = original.remaining_qty
        if open_qty <= 0:
            raise refusal("APBK0918", "정정취소할 수량이 없습니다")
        move = open_qty if all_qty == "Y" else qty
        if move <= 0 or move > open_qty:
            raise refusal("APBK0919", "정정취소가능수량을 초과하였습니다")
        if what == "02":
            return "cancel", *self._cancel(original, move, dvsn, now_ns, wall_s, trading_date)
        return "revise", *self._revise(original, move, dvsn, price, now_ns, wall_s, trading_date)

    def _cancel(self, original: KisOrder, qty: int, dvsn: str, now_ns: int, wall_s: float,
                trading_date: str) -> tuple[dict[str, str], list[Notice]]:
        events = self.engine.cancel(original.odno, 0 if qty == original.remaining_qty else qty, now_ns)
        if isinstance(events[0], CancelRefused):
            raise refusal("APBK0918", "정정취소할 수량이 없습니다")
        cancel = KisOrder(self._odno(), original.odno, "cancel", original.side, original.code, original.ord_dvsn,
                          qty, original.price, trading_date, hhmmss(now_ns), now_ns, original.exchange,
                          accepted_wall_s=wall_s, canceled_qty=qty)
        self.orders[cancel.odno] = cancel
        self.dirty.add(cancel.odno)
        self._apply(events, now_ns)
        return self._output(cancel), [self._ack(cancel, now_ns, confirmed=True)]

    def _revise(self, original: KisOrder, qty: int, dvsn: str, price: int, now_ns: int, wall_s: float,
                trading_date: str) -> tuple[dict[str, str], list[Notice]]:
        if dvsn not in SUPPORTED_DVSN:
            raise refusal("APBK0918", f"지원하지 않는 주문구분입니다(ORD_DVSN {dvsn})")
        order_type, condition = SUPPORTED_DVSN[dvsn]
        price = 0 if order_type == "market" else price
        limits = self.engine.price_limits(original.code)
        if order_type == "limit":
            if price <= 0 or not is_on_tick(price):
                raise refusal(*_REASONS["BAD_TICK"])
            if limits and not limits[0] <= price <= limits[1]:
                raise refusal(*_REASONS["OUTSIDE_PRICE_LIMITS"])
        events = self.engine.cancel(original.odno, 0 if qty == original.remaining_qty else qty, now_ns)
        if isinstance(events[0], CancelRefused):
            raise refusal("APBK0918", "정정취소할 수량이 없습니다")
        self._apply(events, now_ns)
        revised = KisOrder(self._odno(), original.odno, "revise", original.side, original.code, dvsn, qty, price,
                           trading_date, hhmmss(now_ns), now_ns, original.exchange, condition,
                           accepted_wall_s=wall_s)
        try:
            notices = self._enter(revised, order_type, now_ns, False)
        except KisError:
            # the remainder left the book but its new order was refused: the revise acts as a cancel
            self.next_no += 1
            revised.rejected_qty = qty
            self.orders[revised.odno] = revised
            self.dirty.add(revised.odno)
            refused = self._ack(revised, now_ns)
            refused.refused = True
            return self._output(revised), [refused]
        notices[0].correction = "1"
        notices[0].accept = "2"
        return self._output(revised), notices

    # --- engine events ------------------------------------------------------------------------

    def _ack(self, order: KisOrder, now_ns: int, *, confirmed: bool = False) -> Notice:
        correction = {"new": "0", "revise": "1", "cancel": "2"}[order.kind]
        inst = self.instruments.get(order.code)
        return Notice(order.odno, order.orgn_odno, order.side_code, correction, order.ord_dvsn, order.condition,
                      order.code, order.qty, order.price, hhmmss(now_ns), False, False, "2" if confirmed else "1",
                      order.qty, order.price, inst.name if inst else "")

    def _apply(self, events: list[Any], now_ns: int, *, ioc: bool = False) -> list[Notice]:
        """Book engine events into the KIS records; the fill (and IOC-cancel) notices they cause."""
        out: list[Notice] = []
        for ev in events:
            if isinstance(ev, Execution):
                out += self._book_fill(ev.client_order_id, ev.qty, ev.price, ev.fee_won + ev.tax_won, ev.ts_ns)
            elif isinstance(ev, OrderUpdate):
                order = self.orders.get(ev.client_order_id)
                if order is None or ev.canceled_qty == order.canceled_qty:
                    continue
                done = ev.canceled_qty - order.canceled_qty
                order.canceled_qty = ev.canceled_qty
                self.dirty.add(order.odno)
                if ioc:
                    n = self._ack(order, now_ns)
                    n.accept, n.qty = "3", done
                    out.append(n)
        return out

    def _book_fill(self, odno: str, qty: int, price: int, costs_won: int, ts_ns: int) -> list[Notice]:
        order = self.orders.get(odno)
        if order is None:
            return []
        order.filled_qty += qty
        order.filled_value_won += qty * price
        order.costs_won += costs_won
        self.dirty.add(odno)
        n = self._ack(order, ts_ns)
        n.fill, n.accept, n.qty, n.price = True, "2", qty, price
        return [n]

    def apply_market(self, fills: list[Fill], order_events: list[OrderEvent], now_ns: int,
                     trading_date: str) -> list[Notice]:
        """Book what the market did to our orders (fills, expiries); the fill notices."""
        out: list[Notice] = []
        for f in fills:
            out += self._book_fill(f.client_order_id, f.qty, f.price, f.fee_won + f.tax_won, f.ts_ns)
        for ev in order_events:
            order = self.orders.get(ev.client_order_id)
            if order is not None and ev.status is OrderStatus.EXPIRED:
                order.canceled_qty = order.qty - order.filled_qty - order.rejected_qty
                self.dirty.add(order.odno)
        if fills:
            self._note_sold_out(trading_date)
        return out

    def _note_sold_out(self, trading_date: str) -> None:
        held = self.engine.positions(ACCOUNT_ID)
        for order in self.orders.values():
            if order.side == "sell" and order.filled_qty and order.ord_dt == trading_date \
                    and order.code not in held:
                self.sold_out.setdefault(order.code, trading_date)

    def note_desk_fills(self, trading_date: str) -> None:
        """After a REST order whose fills came back at once: remember holdings sold out today."""
        self._note_sold_out(trading_date)

    # --- queries ------------------------------------------------------------------------------

    def orders_between(self, start: str, end: str) -> list[KisOrder]:
        return [o for o in self.orders.values() if start <= o.ord_dt <= end]

    def open_orders(self) -> list[KisOrder]:
        return [o for o in self.orders.values() if o.kind != "cancel" and o.remaining_qty > 0]

    def forget_before(self, trading_date: str, keep_days: int = 100) -> None:
        """Drop records older than about three months (the daily query's reach)."""
        cutoff = (dt.datetime.strptime(trading_date, "%Y%m%d").replace(tzinfo=KST)
                  - dt.timedelta(days=keep_days)).strftime("%Y%m%d")
        for odno in [k for k, o in self.orders.items() if o.ord_dt < cutoff]:
            del self.orders[odno]

    # --- persistence ------------------------------------------------------------------------

    def take_dirty(self) -> list[KisOrder]:
        out = [self.orders[o] for o in self.dirty if o in self.orders]
        self.dirty.clear()
        return out

    def restore(self, rows: list[dict[str, Any]], next_no: int, sold_out: dict[str, str]) -> None:
        for row in rows:
            order = KisOrder(**row)
            self.orders[order.odno] = order
        self.next_no = max(next_no, max((int(o) for o in self.orders), default=0) + 1)
        self.sold_out = dict(sold_out)


def order_row(order: KisOrder) -> tuple[Any, ...]:
    d = asdict(order)
    return tuple(d[f] for f in ORDER_FIELDS)

