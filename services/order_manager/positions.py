"""Holdings and cash flows implied by the journal's fills (pure).

Positions here are what the day's (and retained days') fills add up to, per
agent and code, starting from zero: quantities bought minus sold, the average
price of the shares held (moving average cost, fees apart), and the cash the
fills moved (sells minus buys minus fees and taxes). Starting holdings of the
roster are not fills and are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def positions_from_fills(fills: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per agent: {code: {qty, avg_price}} and cash_flow_won; plus the account's totals by code."""
    agents: dict[str, dict[str, Any]] = {}
    for f in fills:
        book = agents.setdefault(f["agent_id"], {"positions": {}, "cash_flow_won": 0, "fees_won": 0, "taxes_won": 0})
        pos = book["positions"].setdefault(f["code"], {"qty": 0, "avg_price": 0, "cost_won": 0})
        qty, value = int(f["qty"]), int(f["qty"]) * int(f["price"])
        book["fees_won"] += int(f["fee_won"])
        book["taxes_won"] += int(f["tax_won"])
        if f["side"] == "buy":
            pos["qty"] += qty
            pos["cost_won"] += value
            book["cash_flow_won"] -= value + int(f["fee_won"]) + int(f["tax_won"])
        else:
            held = pos["qty"]
            # the cost leaves in proportion to the shares sold; a sell beyond holdings leaves no cost
            pos["cost_won"] -= pos["cost_won"] * min(qty, held) // held if held > 0 else 0
            pos["qty"] -= qty
            book["cash_flow_won"] += value - int(f["fee_won"]) - int(f["tax_won"])
        pos["avg_price"] = (2 * pos["cost_won"] + pos["qty"]) // (2 * pos["qty"]) if pos["qty"] > 0 else 0
    account: dict[str, int] = {}
    for book in agents.values():
        for code, pos in book["positions"].items():
            account[code] = account.get(code, 0) + pos["qty"]
            del pos["cost_won"]
    return {"agents": agents, "account": account}
