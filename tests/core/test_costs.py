"""Trading costs: exact commission, the dated sell tax, rounding to the won."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.costs import DEFAULT_COSTS, ONLINE_COMMISSION, PAPER_COMMISSION, CostModel, sell_tax, tax_rate_ppm

ONLINE = CostModel(*ONLINE_COMMISSION)


@pytest.mark.parametrize(
    ("trade_date", "rate_pct"),
    [
        (dt.date(2023, 12, 28), Fraction(20, 100)),
        (dt.date(2024, 1, 2), Fraction(18, 100)),
        (dt.date(2024, 12, 30), Fraction(18, 100)),
        (dt.date(2025, 1, 2), Fraction(15, 100)),
        (dt.date(2025, 12, 30), Fraction(15, 100)),
        (dt.date(2026, 1, 2), Fraction(20, 100)),
    ],
)
@pytest.mark.parametrize("market", ["KOSPI", "KOSDAQ"])
def test_sell_tax_rate_follows_the_trade_date(trade_date: dt.date, rate_pct: Fraction, market: str) -> None:
    assert Fraction(tax_rate_ppm(trade_date, market), 10_000) == rate_pct
    assert sell_tax(10_000_000, trade_date, market) == int(10_000_000 * rate_pct / 100)


def test_the_rates_are_the_documented_ones() -> None:
    assert Fraction(*PAPER_COMMISSION) == Fraction(142, 10_000) / 100  # 0.0142 %
    assert Fraction(*ONLINE_COMMISSION) == Fraction(140527, 10_000_000) / 100  # 0.0140527 %


def test_commission_on_ten_million_won() -> None:
    assert DEFAULT_COSTS.commission(10_000_000) == 1_420
    assert ONLINE.commission(10_000_000) == 1_405  # 1,405.27 rounds to 1,405


def test_commission_rounds_half_up_to_the_won() -> None:
    half = CostModel(1, 2)
    assert [half.commission(n) for n in (1, 2, 3, 5)] == [1, 1, 2, 3]


def test_sell_tax_is_cut_down_to_the_won() -> None:
    assert sell_tax(999, dt.date(2026, 3, 3)) == 1  # 1.998 won
    assert sell_tax(499, dt.date(2026, 3, 3)) == 0


def test_a_buy_pays_commission_only_and_a_sell_pays_both() -> None:
    day = dt.date(2026, 3, 3)
    assert DEFAULT_COSTS.fill_costs("buy", 71_000 * 100, day) == (1_008, 0)
    assert DEFAULT_COSTS.fill_costs("sell", 71_000 * 100, day) == (1_008, 14_200)


@given(st.integers(min_value=0, max_value=10**15), st.sampled_from([PAPER_COMMISSION, ONLINE_COMMISSION]))
def test_commission_is_exact_for_any_notional(notional_won: int, rate: tuple[int, int]) -> None:
    exact = Fraction(notional_won * rate[0], rate[1])
    fee = CostModel(*rate).commission(notional_won)
    assert fee - Fraction(1, 2) <= exact < fee + Fraction(1, 2)


@given(st.integers(min_value=0, max_value=10**15), st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)))
def test_sell_tax_is_exact_for_any_notional(notional_won: int, trade_date: dt.date) -> None:
    exact = Fraction(notional_won * tax_rate_ppm(trade_date), 1_000_000)
    tax = sell_tax(notional_won, trade_date)
    assert tax <= exact < tax + 1


def test_bad_side_and_unknown_market_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="side"):
        DEFAULT_COSTS.fill_costs("short", 1_000, dt.date(2026, 3, 3))
    with pytest.raises(ValueError, match="market"):
        tax_rate_ppm(dt.date(2026, 3, 3), "NYSE")
    assert tax_rate_ppm(dt.date(2026, 3, 3), "kosdaq") == 2_000
