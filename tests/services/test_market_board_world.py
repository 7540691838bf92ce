"""The market board keeps each code's book and fundamentals: the snapshot shows bid, ask, PER and PBR."""

from __future__ import annotations

from core.messages import Fundamentals, InvestorFlow, Quote, Tick
from services.market_data.board import MarketBoard


def test_the_board_keeps_quotes_and_fundamentals_and_forwards_only_new_figures() -> None:
    board = MarketBoard(base_prices={"005930": 70_000})
    assert board.apply(Tick(code="005930", ts_ns=1, price=70_500, qty=10))
    assert board.apply(Quote(code="005930", ts_ns=2, bid_px=[70_400, 70_300], bid_qty=[900, 1_200], ask_px=[70_500], ask_qty=[400]))
    fund = Fundamentals(code="005930", ts_ns=3, effective_date="20260430", eps=5_000, bps=50_000, dps=1_444)
    assert board.apply(fund)
    assert not board.apply(fund.model_copy(update={"ts_ns": 9}))  # the venue's repeat: nothing new to forward
    assert not board.apply(fund.model_copy(update={"effective_date": "20260130", "eps": 4_000}))  # an older one
    assert board.apply(InvestorFlow(code="005930", ts_ns=4, foreign_net_qty=300, institution_net_qty=-100, individual_net_qty=-200, provisional=True))
    line = board.snapshot()["codes"]["005930"]
    assert (line["bid"], line["ask"]) == (70_400, 70_500)
    assert line["per"] == 14.1 and line["pbr"] == 1.41
    assert line["fundamentals"]["dps"] == 1_444
    assert line["flow"]["institution_net_qty"] == -100 and line["flow"]["cumulative"] is True
