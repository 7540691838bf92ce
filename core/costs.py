"""Trading costs per fill: broker commission and the dated sell-side tax."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from dataclasses import dataclass

# Commission rates in parts per ten million (1e-7), so 0.0140527% = 1405.27 ppm... kept as
# a Decimal-free integer pair (numerator, denominator) to stay exact.
ONLINE_COMMISSION = (140527, 1_000_000_000)  # 0.0140527 %
PAPER_COMMISSION = (142, 1_000_000)  # 0.0142 %

# Sell-side transaction tax by market, effective from the given date (inclusive).
# Rates in basis points x 100 (1/1,000,000).
_TAX_TABLE: dict[str, tuple[tuple[dt.date, int], ...]] = {
    "KOSPI": (
        (dt.date(2023, 1, 1), 2000),  # 0.20 %
        (dt.date(2024, 1, 1), 1800),  # 0.18 %
        (dt.date(2025, 1, 1), 1500),  # 0.15 %
        (dt.date(2026, 1, 1), 2000),  # 0.20 %
    ),
    "KOSDAQ": (
        (dt.date(2023, 1, 1), 2000),
        (dt.date(2024, 1, 1), 1800),
        (dt.date(2025, 1, 1), 1500),
        (dt.date(2026, 1, 1), 2000),
    ),
}
TAX_DENOMINATOR = 1_000_000


@dataclass(frozen=True, slots=True)
class CostModel:
    """Commission rate as an exact fraction; taxes follow the dated table."""

    commission_num: int = PAPER_COMMISSION[0]
    commission_den: int = PAPER_COMMISSION[1]

    def commission(self, notional_won: int) -> int:
        """Commission on a fill's notional, rounded half up to the won."""
        return (notional_won * self.commission_num * 2 + self.commission_den) // (2 * self.commission_den)

    def fill_costs(self, side: str, notional_won: int, trade_date: dt.date, market: str = "KOSPI") -> tuple[int, int]:
        """(fee_won, tax_won) for one fill."""
        fee = self.commission(notional_won)
        tax = sell_tax(notional_won, trade_date, market) if side == "sell" else 0
        return fee, tax


def tax_rate_ppm(trade_date: dt.date, market: str = "KOSPI") -> int:
    """The sell-side tax rate in millionths for a trade date and market."""
    table = _TAX_TABLE.get(market.upper(), _TAX_TABLE["KOSPI"])
    dates = [d for d, _ in table]
    i = bisect_right(dates, trade_date) - 1
    if i < 0:
        return table[0][1]
    return table[i][1]


def sell_tax(notional_won: int, trade_date: dt.date, market: str = "KOSPI") -> int:
    """Sell-side transaction tax on a fill, rounded down to the won (as brokers charge)."""
    return notional_won * tax_rate_ppm(trade_date, market) // TAX_DENOMINATOR


DEFAULT_COSTS = CostModel()
