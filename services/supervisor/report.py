"""The daily report: per agent and for the account, what the day's orders and fills add up to (pure).

Holdings and PnL come from the ledger (the book of record: each book's opening
and closing of the day); the day's activity from the order journal's rows
(orders and fills, plain dicts as the journal stores them). Without the
ledger, figures come from the rows and the roster's allocations and starting holdings.
Each agent's book is rebuilt with ``core.portfolio.Portfolio.rebuild`` (the
same book the agent keeps) from every retained row up to the end of the day,
and once more up to the day before: the day's realised PnL is the difference.
Unrealised PnL is valued at the closing prices given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.ledger import ACCOUNT as LEDGER_ACCOUNT
from core.portfolio import Portfolio

ACCOUNT = "ACCOUNT"  # the report row that adds up every agent
OPEN_STATUSES = frozenset({"new", "submitted", "accepted", "partially_filled", "cancel_pending"})  # counted open

REPORT_COLUMNS = (
    "trading_date", "agent_id", "orders", "fills", "bought_qty", "sold_qty", "bought_won", "sold_won",
    "fees_won", "taxes_won", "realized_pnl_won", "unrealized_pnl_won", "open_orders", "adjusted_qty", "adjusted_won",
    "end_positions",
)


@dataclass(frozen=True, slots=True)
class AgentStart:
    """What the roster says an agent started with."""

    cash_won: int
    start_holding: Mapping[str, tuple[int, int]]  # code -> (qty, avg_price)


@dataclass(frozen=True, slots=True)
class _Order:
    client_order_id: str
    code: str
    side: str
    qty: int
    price: int
    status: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class _Fill:
    exec_id: str
    client_order_id: str
    code: str
    side: str
    qty: int
    price: int
    fee_won: int
    tax_won: int
    ts_ns: int


def _order(row: Mapping[str, Any]) -> _Order:
    return _Order(row["client_order_id"], row["code"], row["side"], int(row["qty"]), int(row["price"]),
                  row["status"], int(row.get("created_ns", row.get("ts_ns", 0))))


def _fill(row: Mapping[str, Any]) -> _Fill:
    return _Fill(row["exec_id"], row["client_order_id"], row["code"], row["side"], int(row["qty"]), int(row["price"]),
                 int(row["fee_won"]), int(row["tax_won"]), int(row["ts_ns"]))


def _book(start: AgentStart, orders: list[Mapping[str, Any]], fills: list[Mapping[str, Any]]) -> Portfolio:
    return Portfolio.rebuild(start.cash_won, dict(start.start_holding), [_order(o) for o in orders],
                             [_fill(f) for f in fills])


def daily_report(
    trading_date: str,
    orders: Iterable[Mapping[str, Any]],
    fills: Iterable[Mapping[str, Any]],
    starts: Mapping[str, AgentStart],
    closing_prices: Mapping[str, int],
    ledger_day: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per agent active on or holding after ``trading_date``, then the ACCOUNT row.

    With ``ledger_day`` (the order manager's ``ledger_day``: each book's
    opening and closing of the date) the holdings and PnL are the ledger's:
    realised today = closing realised - opening realised, end positions = the
    closing's; ``orders`` and ``fills`` then only count the day's activity.
    Without it every book is rebuilt from ``orders`` and ``fills``: the journal
    rows of every retained day up to and including ``trading_date``.
    """
    if ledger_day is not None and ledger_day.get("opening"):
        return _ledger_report(trading_date, orders, fills, starts, closing_prices, ledger_day)
    by_agent: dict[str, tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]] = {}
    for o in orders:
        if o["trading_date"] <= trading_date:
            by_agent.setdefault(o["agent_id"], ([], []))[0].append(o)
    for f in fills:
        if f["trading_date"] <= trading_date:
            by_agent.setdefault(f["agent_id"], ([], []))[1].append(f)
    rows: list[dict[str, Any]] = []
    for agent_id in sorted(set(by_agent) | set(starts)):
        agent_orders, agent_fills = by_agent.get(agent_id, ([], []))
        start = starts.get(agent_id, AgentStart(0, {}))
        end = _book(start, agent_orders, agent_fills)
        before = _book(start, [o for o in agent_orders if o["trading_date"] < trading_date],
                       [f for f in agent_fills if f["trading_date"] < trading_date])
        for code, price in closing_prices.items():
            if code in end.positions and price > 0:
                end.mark(code, price)
        day_orders = [o for o in agent_orders if o["trading_date"] == trading_date]
        day_fills = [f for f in agent_fills if f["trading_date"] == trading_date]
        rows.append({
            **_activity(trading_date, agent_id, day_orders, day_fills),
            "realized_pnl_won": end.realized_pnl_won - before.realized_pnl_won,
            "unrealized_pnl_won": end.unrealized_pnl_won(),
            "adjusted_qty": 0,
            "adjusted_won": 0,
            "end_positions": {code: {"qty": p.qty, "avg_price": round(p.avg_price)}
                              for code, p in sorted(end.positions.items()) if p.qty},
        })
    rows.append(account_row(trading_date, rows))
    return rows




def _ledger_report(
    trading_date: str,
    orders: Iterable[Mapping[str, Any]],
    fills: Iterable[Mapping[str, Any]],
    starts: Mapping[str, AgentStart],
    closing_prices: Mapping[str, int],
    ledger_day: Mapping[str, Any],
) -> list[dict[str, Any]]:
    day_orders: dict[str, list[Mapping[str, Any]]] = {}
    day_fills: dict[str, list[Mapping[str, Any]]] = {}
    for o in orders:
        if o["trading_date"] == trading_date:
            day_orders.setdefault(o["agent_id"], []).append(o)
    for f in fills:
        if f["trading_date"] == trading_date:
            day_fills.setdefault(f["agent_id"], []).append(f)
    opening, closing = ledger_day["opening"], ledger_day.get("closing") or {}
    adjustments = ledger_day.get("adjustments") or []
    rows: list[dict[str, Any]] = []
    for agent_id in sorted((set(opening) | set(starts) | set(day_orders)) - {LEDGER_ACCOUNT}):
        o, c = opening.get(agent_id) or {}, closing.get(agent_id) or opening.get(agent_id) or {}
        agent_orders, agent_fills = day_orders.get(agent_id, []), day_fills.get(agent_id, [])
        held = {code: h for code, h in (c.get("positions") or {}).items() if int(h["qty"])}
        unrealized = sum(int(h["qty"]) * closing_prices[code] - int(h["cost_won"])
                         for code, h in held.items() if closing_prices.get(code, 0) > 0)
        rows.append({
            **_activity(trading_date, agent_id, agent_orders, agent_fills),
            "realized_pnl_won": int(c.get("realized_pnl_won", 0)) - int(o.get("realized_pnl_won", 0)),
            "unrealized_pnl_won": unrealized,
            "adjusted_qty": sum(int(a["qty"]) for a in adjustments if a["agent_id"] == agent_id),
            "adjusted_won": sum(int(a["cash_won"]) for a in adjustments if a["agent_id"] == agent_id),
            "end_positions": {code: {"qty": int(h["qty"]), "avg_price": round(int(h["cost_won"]) / int(h["qty"]))}
                              for code, h in sorted(held.items())},
        })
    rows.append(account_row(trading_date, rows))
    return rows


def _activity(trading_date: str, agent_id: str, orders: list[Mapping[str, Any]],
              fills: list[Mapping[str, Any]]) -> dict[str, Any]:
    """A report row's counts of the day: orders, fills, shares and won bought and sold, costs, orders left open."""
    return {
        "trading_date": trading_date,
        "agent_id": agent_id,
        "orders": len(orders),
        "fills": len(fills),
        "bought_qty": sum(int(f["qty"]) for f in fills if f["side"] == "buy"),
        "sold_qty": sum(int(f["qty"]) for f in fills if f["side"] == "sell"),
        "bought_won": sum(int(f["qty"]) * int(f["price"]) for f in fills if f["side"] == "buy"),
        "sold_won": sum(int(f["qty"]) * int(f["price"]) for f in fills if f["side"] == "sell"),
        "fees_won": sum(int(f["fee_won"]) for f in fills),
        "taxes_won": sum(int(f["tax_won"]) for f in fills),
        "open_orders": sum(1 for o in orders if o["status"] in OPEN_STATUSES),
    }


def account_row(trading_date: str, agent_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The firm's row: every agent's figures added up, positions summed per code."""
    out: dict[str, Any] = {"trading_date": trading_date, "agent_id": ACCOUNT}
    for key in REPORT_COLUMNS[2:-1]:
        out[key] = sum(int(r[key]) for r in agent_rows)
    positions: dict[str, int] = {}
    for r in agent_rows:
        for code, p in r["end_positions"].items():
            positions[code] = positions.get(code, 0) + int(p["qty"])
    out["end_positions"] = {code: {"qty": q} for code, q in sorted(positions.items()) if q}
    return out
