"""What a chaos run on kis-sim must still hold: kis-sim's own record and the firm's journal agree, order for order.

``KisSimRecord`` reads kis-sim's store (``kis-sim/kis_sim.sqlite``, read-only):
its KIS orders (``kis_orders``: every order, cancel and revise of the account
by ODNO, with its filled quantity, filled amount and costs), the account's
cash and holdings, and the market's clock. The only thing it takes from the
gateway is the mapping KIS has no field for: which ODNO is which firm order
(``kis-gateway/gateway.sqlite``: ``orders.client_order_id`` <-> ``odno``).
Everything else is compared between KIS and the firm's journal directly, so
a gateway that told the firm something KIS never did is caught.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos.checks import (
    TERMINAL,
    Check,
    Journal,
    MarketClock,
    _read,
    read_market_clock,
)

KIS_ACCOUNT = "kis"  # kis-sim's account in its matching engine (services.kis_sim.orders.ACCOUNT_ID)


def norm_odno(odno: str) -> str:
    """An order number without its zero padding (kis-sim stores ten digits, the gateway none)."""
    return str(odno or "").strip().lstrip("0") or "0"


@dataclass(frozen=True)
class KisOrderRow:
    """One KIS order as kis-sim keeps it (``services.kis_sim.orders.KisOrder``)."""

    odno: str  # without padding
    orgn_odno: str  # the original's, for a cancel or revise ("" for a new order)
    kind: str  # new, revise or cancel
    side: str
    code: str
    ord_dvsn: str
    qty: int
    price: int
    ord_dt: str
    ord_tmd: str
    filled_qty: int
    filled_value_won: int
    costs_won: int
    canceled_qty: int
    rejected_qty: int

    @property
    def remaining_qty(self) -> int:
        return 0 if self.kind == "cancel" else max(0, self.qty - self.filled_qty - self.canceled_qty - self.rejected_qty)

    def describe(self) -> str:
        return f"{self.side} {self.qty} {self.code} @ {self.price or 'market'} at {self.ord_tmd}"


class KisSimRecord:
    """kis-sim's record of the account (orders, cash, holdings, clock) and the gateway's ODNO <-> order map."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "kis-sim" / "kis_sim.sqlite"
        self.gateway_path = run_dir / "kis-gateway" / "gateway.sqlite"

    def poll(self) -> None:
        """Nothing to keep between looks: kis-sim keeps every day's KIS orders itself (about three months)."""

    def clock(self) -> MarketClock | None:
        """kis-sim's trading date, session and market time as last saved (None while unreadable)."""
        return read_market_clock(self.path)

    def account(self) -> tuple[int, dict[str, int]]:
        """The account's cash and holdings (non-zero) in kis-sim's engine: what its balance query answers from."""
        (cash,), = _read(self.path, "SELECT cash_won FROM accounts WHERE account_id = ?", KIS_ACCOUNT)
        held = {code: qty for code, qty in _read(self.path, "SELECT code, qty FROM positions WHERE account_id = ?",
                                                 KIS_ACCOUNT) if qty}
        return int(cash), held

    def orders(self, date: str) -> list[KisOrderRow]:
        """The KIS orders of a trading date (new orders, revises and cancels alike)."""
        if not self.path.exists():
            return []
        rows = _read(self.path, "SELECT odno, orgn_odno, kind, side, code, ord_dvsn, qty, price, ord_dt, ord_tmd, "
                                "filled_qty, filled_value_won, costs_won, canceled_qty, rejected_qty FROM kis_orders "
                                "WHERE ord_dt = ?", date)
        return [KisOrderRow(norm_odno(r[0]), norm_odno(r[1]) if r[1] else "", *r[2:]) for r in rows]

    def gateway_orders(self, date: str) -> dict[str, dict[str, Any]]:
        """The gateway's journal of a date's orders, by client order id (its ``odno`` unpadded, "" if none)."""
        if not self.gateway_path.exists():
            return {}
        rows = _read(self.gateway_path, "SELECT client_order_id, odno, state, reason_code FROM orders "
                                        "WHERE trading_date = ?", date)
        return {c: {"odno": norm_odno(o) if o else "", "state": s, "reason_code": r} for c, o, s, r in rows}


def kis_status(order: KisOrderRow, canceled_by_us: bool) -> str:
    """Where KIS has an order: filled, rejected, open, canceled (by a cancel order) or expired (by the market)."""
    if order.filled_qty >= order.qty:
        return "filled"
    if order.remaining_qty > 0:
        return "open"
    if order.rejected_qty and not order.filled_qty and order.rejected_qty >= order.qty:
        return "rejected"
    return "canceled" if canceled_by_us else "expired"


# the journal's terminal state each of KIS's states allows: an order KIS still shows open after the close is
# expired (KRX cancels day orders overnight); a remainder the market cancelled (at the close, a market order's
# unfilled part) the gateway reads from the daily orders as cancelled, the order manager at the close as expired
ALLOWED = {"filled": {"filled"}, "rejected": {"rejected"}, "open": {"expired"}, "canceled": {"canceled"},
           "expired": {"expired", "canceled"}}


@dataclass
class DayAtKis:
    """One date's firm orders and KIS orders side by side."""

    mine: dict[str, dict[str, Any]]  # the journal's orders by client order id
    gateway: dict[str, dict[str, Any]]  # the gateway's by client order id
    kis: dict[str, KisOrderRow]  # KIS's new and revised orders by ODNO
    cancels: list[KisOrderRow]  # KIS's cancel orders

    @classmethod
    def read(cls, date: str, journal: Journal, record: KisSimRecord) -> DayAtKis:
        kis_orders = record.orders(date)
        return cls(mine=journal.orders(date), gateway=record.gateway_orders(date),
                   kis={o.odno: o for o in kis_orders if o.kind != "cancel"},
                   cancels=[o for o in kis_orders if o.kind == "cancel"])

    def odno_of(self, coid: str) -> str:
        return (self.gateway.get(coid) or {}).get("odno", "")


def check_orders_match_kis(date: str, journal: Journal, record: KisSimRecord) -> list[Check]:
    """Each firm order that reached KIS is exactly one KIS order, the same order; KIS has no other; states agree."""
    day = DayAtKis.read(date, journal, record)
    still_open = sorted(c for c, o in day.mine.items() if o["status"] not in TERMINAL)
    claimed: dict[str, list[str]] = {}
    lost, mismatched = [], []
    for coid, o in sorted(day.mine.items()):
        odno = day.odno_of(coid)
        boid = norm_odno(o["broker_order_id"]) if o["broker_order_id"] else ""
        if not odno:
            if boid:
                lost.append(f"{coid}: the journal has KIS order {boid}, the gateway no KIS number for it")
            continue
        claimed.setdefault(odno, []).append(coid)
        if boid and boid != odno:
            lost.append(f"{coid}: the journal has KIS order {boid}, the gateway {odno}")
        theirs = day.kis.get(odno)
        if theirs is None:
            lost.append(f"{coid} is KIS order {odno} to the gateway, but KIS has no such order of {date}")
            continue
        if (theirs.code, theirs.side, theirs.qty) != (o["code"], o["side"], o["qty"]) or (
                o["order_type"] == "limit" and theirs.price != o["price"]) or theirs.kind != "new":
            lost.append(f"{coid} ({o['side']} {o['qty']} {o['code']} @ {o['price']}) is KIS order {odno}, "
                        f"which is a {theirs.kind} order: {theirs.describe()}")
            continue
        canceled_by_us = any(c.orgn_odno == odno for c in day.cancels)
        status = kis_status(theirs, canceled_by_us)
        if o["status"] not in ALLOWED[status] or o["filled_qty"] != theirs.filled_qty:
            mismatched.append(f"{coid} (KIS {odno}): journal {o['status']} {o['filled_qty']}, KIS {status} "
                              f"{theirs.filled_qty} of {theirs.qty}")
    doubled = [f"KIS order {odno} is {' and '.join(coids)}" for odno, coids in claimed.items() if len(coids) > 1]
    unclaimed_by = {o.odno for o in day.kis.values()} - set(claimed)
    strays = []
    for odno in sorted(unclaimed_by):
        k = day.kis[odno]
        owner = next((c for c, g in day.gateway.items() if g["odno"] == odno), "")
        like = [c for c, o in day.mine.items() if not day.odno_of(c) and (o["code"], o["side"], o["qty"]) ==
                (k.code, k.side, k.qty)]
        strays.append(f"KIS order {odno} ({k.describe()}, filled {k.filled_qty}) is no firm order"
                      + (f" (the gateway's {owner}, unknown to the journal)" if owner else "")
                      + (f"; firm orders like it KIS never acknowledged to the firm: {like[:4]}" if like else ""))
    foreign_cancels = [f"KIS cancel {c.odno} of order {c.orgn_odno}, which is no firm order"
                       for c in day.cancels if c.orgn_odno not in claimed]
    return [
        Check(f"{date} no order left open after the close", not still_open, ", ".join(still_open[:10])),
        Check(f"{date} each firm order that reached KIS is exactly one KIS order, and KIS has no other "
              f"({len(claimed)} of {len(day.mine)} reached KIS; KIS holds {len(day.kis)} orders, "
              f"{len(day.cancels)} cancels)", not (lost or doubled or strays or foreign_cancels),
              "; ".join(lost[:6] + doubled[:4] + strays[:6] + foreign_cancels[:4])),
        Check(f"{date} every order's terminal state and filled quantity match KIS's", not mismatched,
              "; ".join(mismatched[:10])),
    ]


def check_fills_match_kis(date: str, journal: Journal, record: KisSimRecord) -> list[Check]:
    """Per order, the journal's fills add up to KIS's filled quantity, amount and costs; no execution twice."""
    day = DayAtKis.read(date, journal, record)
    fills = journal.fills(date)
    qty: Counter[str] = Counter()
    value: Counter[str] = Counter()
    costs: Counter[str] = Counter()
    for f in fills:
        qty[f["client_order_id"]] += int(f["qty"])
        value[f["client_order_id"]] += int(f["qty"]) * int(f["price"])
        costs[f["client_order_id"]] += int(f["fee_won"]) + int(f["tax_won"])
    differ = []
    for coid in sorted(set(day.mine) | set(qty)):
        odno = day.odno_of(coid)
        theirs = day.kis.get(odno) if odno else None
        got = (qty[coid], value[coid], costs[coid])
        want = (theirs.filled_qty, theirs.filled_value_won, theirs.costs_won) if theirs else (0, 0, 0)
        if got != want:
            differ.append(f"{coid} (KIS {odno or '-'}): journal fills {got[0]} shares {got[1]:,} won costs {got[2]:,}, "
                          f"KIS {want[0]} shares {want[1]:,} won costs {want[2]:,}")
    counts = Counter(f["exec_id"] for f in fills)
    twice = [f"{e} x{n}" for e, n in counts.items() if n > 1]
    over = [f"{c}: fills {q}, journal filled_qty {day.mine[c]['filled_qty']}" for c, q in qty.items()
            if c in day.mine and q != day.mine[c]["filled_qty"]]
    orphans = [f"fill {f['exec_id']} of {f['client_order_id']}, no order of {date}" for f in fills
               if f["client_order_id"] not in day.mine]
    return [
        Check(f"{date} journal fills equal KIS's filled quantity, amount and costs, order by order "
              f"({len(fills)} fills)", not differ, "; ".join(differ[:8])),
        Check(f"{date} no execution applied twice (journal fills add up to each order's filled quantity)",
              not twice and not over and not orphans, "; ".join(twice[:5] + over[:5] + orphans[:5])),
    ]

