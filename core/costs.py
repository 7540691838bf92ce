"""Trading costs per fill: broker commission and the dated sell-side tax, exact in integer won.

Rates are integer fractions, never floats, so a cost is the same on every
machine and for any notional. Commission is charged on both sides and rounded
half up to the won; the sell-side tax (securities transaction tax plus the
rural special tax on KOSPI) is rounded down to the won, and its rate depends on
the trade date and the market.

An order filled in several executions is charged, on each, the cost of its
filled amount so far minus what it was already charged (``order_fill_costs``):
what an order costs in all is the cost of its total, however the executions
split it. That is what lets a KIS gateway that missed the notices of some
executions, and learns only the order's new total from the daily orders, book
the same costs as the broker did.

``CostModel.none()`` charges nothing, the sell tax included: a back-test with
it shows a strategy's gross result, and compares to the won with a
back-tester that models no costs.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from dataclasses import dataclass

# Commission rates as exact (numerator, denominator) pairs of integers.
ONLINE_COMMISSION = (140527, 1_000_000_000)  # 0.0140527 %
PAPER_COMMISSION = (142, 1_000_000)  # 0.0142 %

# Sell-side transaction tax by market, effective from the given date (inclusive),
# in millionths. KOSPI: securities transaction tax + 0.15% rural special tax.
_TAX_TABLE: dict[str, tuple[tuple[dt.date, int], ...]] = {
    "KOSPI": (
        (dt.date(2020, 1, 1), 2500),  # 0.25 %
        (dt.date(2021, 1, 1), 2300),  # 0.23 %
        (dt.date(2023, 1, 1), 2000),  # 0.20 %
        (dt.date(2024, 1, 1), 1800),  # 0.18 %
        (dt.date(2025, 1, 1), 1500),  # 0.15 %
        (dt.date(2026, 1, 1), 2000),  # 0.20 %
    ),
    "KOSDAQ": (
        (dt.date(2020, 1, 1), 2500),
        (dt.date(2021, 1, 1), 2300),
        (dt.date(2023, 1, 1), 2000),
        (dt.date(2024, 1, 1), 1800),
        (dt.date(2025, 1, 1), 1500),
        (dt.date(2026, 1, 1), 2000),
    ),
}
# the effective dates of each table, for bisecting without rebuilding the list on every fill
_TAX_DATES: dict[str, list[dt.date]] = {m: [d for d, _ in table] for m, table in _TAX_TABLE.items()}
TAX_DENOMINATOR = 1_000_000


@dataclass(frozen=True, slots=True)
class CostModel:
    """Commission rate as an exact fraction; the sell tax follows the dated table unless ``sell_tax`` is off."""

    commission_num: int = PAPER_COMMISSION[0]
    commission_den: int = PAPER_COMMISSION[1]
    sell_tax: bool = True

    @classmethod
    def none(cls) -> CostModel:
        """No commission and no sell tax."""
        return cls(0, 1, sell_tax=False)

    @property
    def is_free(self) -> bool:
        """True when no fill is ever charged anything."""
        return self.commission_num == 0 and not self.sell_tax

    @property
    def describe(self) -> str:
        """One line for the report saying what was charged."""
        if self.is_free:
            return "none (no commission, no sell tax)"
        rate = f"commission {self.commission_num / self.commission_den * 100:.7g}% on both sides"
        return rate + (", the dated sell tax" if self.sell_tax else ", no sell tax")

    def sell_tax_ppm(self, trade_date: dt.date, market: str = "KOSPI") -> int:
        """The sell tax rate charged, in millionths (0 with the tax off)."""
        return tax_rate_ppm(trade_date, market) if self.sell_tax else 0

    def commission(self, notional_won: int) -> int:
        """Commission on a fill's notional, rounded half up to the won."""
        return (notional_won * self.commission_num * 2 + self.commission_den) // (2 * self.commission_den)

    def fill_costs(self, side: str, notional_won: int, trade_date: dt.date, market: str = "KOSPI") -> tuple[int, int]:
        """(fee_won, tax_won) for one fill; ``side`` is "buy" or "sell" (tax only on sells)."""
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
        fee = self.commission(notional_won)
        tax = sell_tax(notional_won, trade_date, market) if side == "sell" and self.sell_tax else 0
        return fee, tax

    def order_fill_costs(self, side: str, filled_before_won: int, notional_won: int, trade_date: dt.date,
                         market: str = "KOSPI") -> tuple[int, int]:
        """(fee_won, tax_won) for an execution of ``notional_won`` on an order that had ``filled_before_won``.

        The cost of the order's new filled amount minus the cost of what it had:
        the executions of one order add up to the cost of its total.
        """
        if filled_before_won < 0 or notional_won < 0:
            raise ValueError(f"filled amounts must not be negative ({filled_before_won}, {notional_won})")
        fee_after, tax_after = self.fill_costs(side, filled_before_won + notional_won, trade_date, market)
        fee_before, tax_before = self.fill_costs(side, filled_before_won, trade_date, market)
        return fee_after - fee_before, tax_after - tax_before


def tax_rate_ppm(trade_date: dt.date, market: str = "KOSPI") -> int:
    """The sell-side tax rate in millionths for a trade date and market (KOSPI or KOSDAQ).

    Dates before the table's first entry take its first rate.
    """
    table = _TAX_TABLE.get(market.upper())
    if table is None:
        raise ValueError(f"no sell tax table for market {market!r} (known: {', '.join(_TAX_TABLE)})")
    i = bisect_right(_TAX_DATES[market.upper()], trade_date) - 1
    return table[max(i, 0)][1]


def sell_tax(notional_won: int, trade_date: dt.date, market: str = "KOSPI") -> int:
    """Sell-side transaction tax on a fill, rounded down to the won (as brokers charge)."""
    return notional_won * tax_rate_ppm(trade_date, market) // TAX_DENOMINATOR


DEFAULT_COSTS = CostModel()
