"""The desk: the firm-wide figures of the Overview, and alerts folded into groups a person can act on.

``desk_figures`` turns the book of record (the order manager's ``positions``
answer: the account's book and each agent's) and the board's last prices into
the header strip (equity, cash, realised today, unrealised, exposure by code).
When the order manager has not answered, the agents' own books stand in and
the figures say so (``source``). ``AlertGroups`` folds alerts of one kind from
one source into one row with a count; a row can be acknowledged (until the
next alert of it) or muted for a while. Pure: time and inputs passed in.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACCOUNT_BOOK = "@account"  # the ledger's account book (core.ledger.ACCOUNT)
_LEVELS = {"info": 0, "warning": 1, "error": 2, "critical": 3}
MAX_GROUPS = 500
MUTE_LIMIT_S = 7 * 24 * 3600


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def desk_figures(
    ledger: Mapping[str, Any] | None,
    opening_realized: Mapping[str, int] | None,
    last_prices: Mapping[str, int],
    names: Mapping[str, str],
    agent_rows: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """Equity, cash, holdings, realised today, unrealised and the exposure by code.

    ``ledger`` is the order manager's ``positions`` answer (or None),
    ``opening_realized`` each book's realised PnL at the opening of the
    ledger date (the baseline of "today"), ``last_prices`` the board's last
    price per code (a code without one is valued at its average price).
    """
    account = (ledger or {}).get("account_book") if isinstance(ledger, Mapping) else None
    holders: dict[str, list[str]] = {}
    agents = (ledger or {}).get("agents") if isinstance(ledger, Mapping) else None
    if isinstance(agents, Mapping):
        for agent_id, book in agents.items():
            for code, pos in ((book or {}).get("positions") or {}).items():
                if _int((pos or {}).get("qty")):
                    holders.setdefault(str(code), []).append(str(agent_id))
    if isinstance(account, Mapping) and isinstance(account.get("cash_won"), int):
        source = "ledger"
        cash = _int(account.get("cash_won"))
        realized_total = _int(account.get("realized_pnl_won"))
        baseline = (opening_realized or {}).get(ACCOUNT_BOOK)
        realized_today = realized_total - baseline if baseline is not None else None
        fees, taxes = _int(account.get("fees_won")), _int(account.get("taxes_won"))
        positions = {str(c): (_int(p.get("qty")), _int(p.get("cost_won")), float(p.get("avg_price") or 0))
                     for c, p in (account.get("positions") or {}).items() if isinstance(p, Mapping)}
    else:
        source = "agents"
        cash = realized_total = fees = taxes = 0
        positions = {}
        for row in agent_rows:
            cash += _int(row.get("cash_won"))
            realized_total += _int(row.get("realized_pnl_won"))
            code, qty = str(row.get("code") or ""), _int(row.get("holding"))
            if code and qty:
                q, cost, _ = positions.get(code, (0, 0, 0.0))
                q, cost = q + qty, cost + round(qty * float(row.get("avg_price") or 0))
                positions[code] = (q, cost, cost / q if q else 0.0)
                if str(row.get("id")) not in holders.setdefault(code, []):
                    holders[code].append(str(row.get("id")))
        realized_today = None
    exposure = []
    holdings = unrealized = 0
    for code, (qty, cost, avg) in sorted(positions.items()):
        if not qty:
            continue
        last = _int(last_prices.get(code)) or round(avg)
        value = qty * last
        holdings += value
        unrealized += value - cost
        exposure.append({"code": code, "name": names.get(code, ""), "qty": qty, "avg_price": round(avg),
                         "last": last, "value_won": value, "unrealized_won": value - cost,
                         "agents": sorted(holders.get(code, []))})
    equity = cash + holdings
    for row in exposure:
        row["pct_of_equity"] = round(100 * row["value_won"] / equity, 2) if equity else 0.0
    exposure.sort(key=lambda r: -abs(r["value_won"]))
    return {
        "source": source,
        "equity_won": equity,
        "cash_won": cash,
        "holdings_won": holdings,
        "exposure_pct": round(100 * holdings / equity, 2) if equity else 0.0,
        "realized_total_won": realized_total,
        "realized_today_won": realized_today,
        "unrealized_won": unrealized,
        "fees_won": fees,
        "taxes_won": taxes,
        "exposure": exposure,
    }


@dataclass(slots=True)
class AlertGroup:
    """Alerts of one kind from one source: how many, the worst level, the first and the last."""

    source: str
    kind: str
    level: str = "info"
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    text: str = ""
    acked_count: int = 0  # the count when acknowledged (a new alert makes the row active again)
    acked_by: str = ""
    muted_until_ns: int = 0
    levels: dict[str, int] = field(default_factory=dict)

    def row(self, now_ns: int) -> dict[str, Any]:
        muted = self.muted_until_ns > now_ns
        acked = self.acked_count >= self.count and self.count > 0
        return {"key": f"{self.source}/{self.kind}", "source": self.source, "kind": self.kind, "level": self.level,
                "count": self.count, "first_ns": self.first_ns, "last_ns": self.last_ns, "text": self.text,
                "acked": acked, "acked_by": self.acked_by, "muted": muted,
                "muted_until_ns": self.muted_until_ns if muted else 0,
                "active": not muted and not acked and self.level != "info",  # news, not something to act on
                "levels": dict(self.levels)}


class AlertGroups:
    """Every alert folded by (source, kind), newest group first; acknowledge and mute per group."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], AlertGroup] = {}

    def add(self, source: str, kind: str, level: str, text: str, ts_ns: int) -> AlertGroup:
        key = (source, kind)
        g = self.groups.get(key)
        if g is None:
            if len(self.groups) >= MAX_GROUPS:  # forget the group heard from longest ago
                oldest = min(self.groups, key=lambda k: self.groups[k].last_ns)
                del self.groups[oldest]
            g = self.groups[key] = AlertGroup(source, kind, first_ns=ts_ns)
        g.count += 1
        g.levels[level] = g.levels.get(level, 0) + 1
        if g.count == 1 or _LEVELS.get(level, 0) > _LEVELS.get(g.level, 0):
            g.level = level  # the row shows the worst level it has seen
        g.last_ns, g.text = max(g.last_ns, ts_ns), text
        return g

    def _find(self, key: str) -> AlertGroup | None:
        source, _, kind = key.partition("/")
        return self.groups.get((source, kind))

    def acknowledge(self, key: str, who: str) -> AlertGroup | None:
        """Mark a group seen up to now; None if there is no such group."""
        g = self._find(key)
        if g is not None:
            g.acked_count, g.acked_by = g.count, who
        return g

    def mute(self, key: str, minutes: float, now_ns: int) -> AlertGroup | None:
        """Keep a group out of the active list for ``minutes`` (0 unmutes); None if there is no such group."""
        g = self._find(key)
        if g is not None:
            seconds = max(0.0, min(float(minutes) * 60, MUTE_LIMIT_S))
            g.muted_until_ns = now_ns + int(seconds * 1e9) if seconds else 0
        return g

    def rows(self, now_ns: int, limit: int = 100) -> list[dict[str, Any]]:
        """Active groups first (worst level, then newest), then acknowledged and muted ones."""
        out = [g.row(now_ns) for g in self.groups.values()]
        out.sort(key=lambda r: (not r["active"], -_LEVELS.get(r["level"], 0) if r["active"] else 0, -r["last_ns"]))
        return out[:limit]


MAX_CLOCK_MARKS = 30_000  # over 8 wall hours of one mark a second
SAME_CLOCK_NS = 300 * 1_000_000_000  # a market clock within this of the wall clock is the wall clock (a real venue)
MARK_EVERY_NS = 1_000_000_000


class MarketClock:
    """Wall time to market time, from (wall, market) marks taken from the ticks once a wall second.

    The order manager stamps orders and fills by the wall clock; the paper world's bars carry market time
    and run faster. Charts over the bars place a fill at ``market_time`` of its stamp. On a real-time venue
    (the two clocks within ``SAME_CLOCK_NS``) a time is left as it is.
    """

    def __init__(self) -> None:
        self.marks: deque[tuple[int, int]] = deque(maxlen=MAX_CLOCK_MARKS)

    def mark(self, wall_ns: int, market_ns: int) -> None:
        if not self.marks or wall_ns - self.marks[-1][0] >= MARK_EVERY_NS:
            self.marks.append((wall_ns, market_ns))

    def market_time(self, wall_ns: int) -> int:
        marks = self.marks
        if not marks or abs(marks[-1][1] - marks[-1][0]) <= SAME_CLOCK_NS:
            return wall_ns
        i = bisect.bisect_right(marks, (wall_ns, float("inf"))) - 1
        if i < 0:
            return marks[0][1] - (marks[0][0] - wall_ns)  # before the first mark: no speed known, a wall offset
        lo = marks[i]
        hi = marks[i + 1] if i + 1 < len(marks) else (marks[i - 1] if i > 0 else None)
        if hi is None or hi[0] == lo[0]:
            return lo[1] + (wall_ns - lo[0])
        speed = (hi[1] - lo[1]) / (hi[0] - lo[0])
        return int(lo[1] + (wall_ns - lo[0]) * speed)
