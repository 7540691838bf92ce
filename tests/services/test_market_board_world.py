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


def test_the_recorder_keeps_flows_and_announcements_beside_the_days_for_a_back_test(tmp_path) -> None:
    import datetime as dt

    from backtest.data import from_bar_dir
    from core.config import PROJECT_ROOT
    from core.instruments import load_instruments
    from core.krx import KST
    from core.messages import Bar
    from services.market_data.recorder import BarRecorder

    t0 = int(dt.datetime(2026, 3, 3, 9, 0, tzinfo=KST).timestamp()) * 10**9
    rec = BarRecorder(tmp_path)
    for i in range(3):
        rec.add(Bar(code="005930", ts_ns=t0 + i * 60 * 10**9, open=70_000, high=70_100, low=69_900, close=70_000, volume=10))
    rec.add_fundamentals(Fundamentals(code="005930", ts_ns=t0 - 3600 * 10**9, effective_date="20260303", eps=5_000, bps=50_000, dps=1_400, source="kis"))
    flow = InvestorFlow(code="005930", ts_ns=t0 + 60 * 10**9, foreign_net_qty=30, institution_net_qty=-10, individual_net_qty=-20, provisional=True)
    rec.add_flow(flow)
    rec.flush()
    rec.add_flow(flow)  # the same report again (a repeat after a restart): kept once
    rec.add_flow(flow.model_copy(update={"ts_ns": t0 + 120 * 10**9, "foreign_net_qty": 50, "individual_net_qty": -40, "provisional": False}))
    rec.flush()
    data = from_bar_dir(tmp_path, load_instruments(PROJECT_ROOT / "configs" / "instruments.csv"))
    assert data.flows["foreign_net_qty"].tolist() == [30, 50] and data.flows["provisional"].tolist() == [True, False]
    assert data.fundamentals[["eps", "source"]].values.tolist() == [[5_000, "kis"]]
    kinds = [type(r).__name__ for _, r in data.side_events()]
    assert kinds == ["FundData", "FlowData", "FlowData"]
