"""KIS WebSocket frames: H0STCNT0 trade records, H0STASP0 order-book records, control messages.

A data frame is ``<enc>|<tr_id>|<count>|<payload>`` where the payload is
``count`` records of ``^``-separated fields laid end to end (KIS.md section
6.5). H0STCNT0 has 47 fields since the after-market session (46 as an option),
H0STASP0 63 (59 as an option); KIS.md section 12.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from core.instruments import Instrument
from core.krx import KST
from services.kis_sim.market import CodeDay, KisMarket, Trade, hhmmss

MAX_RECORDS_PER_FRAME = 99


def _pct(num: float, den: float) -> str:
    return f"{num * 100 / den:.2f}" if den else "0.00"


def _vs(price: int, ref: int) -> tuple[str, str]:
    """Sign code and difference of a price against a reference (2 up, 3 flat, 5 down)."""
    d = price - ref
    return ("2" if d > 0 else "5" if d < 0 else "3"), str(d)


def tick_record(cd: CodeDay, t: Trade, inst: Instrument, trading_date: str, ask: int, bid: int,
                ask_qty: int, bid_qty: int, fields: int = 47) -> str:
    """One H0STCNT0 record for a trade, with the day's figures as they stand after it."""
    p = t.price
    osign, ovs = _vs(p, cd.open)
    hsign, hvs = _vs(p, cd.high)
    lsign, lvs = _vs(p, cd.low)
    strength = _pct(cd.buy_volume, cd.sell_volume) if cd.sell_volume else "100.00"
    values = [
        t.code, hhmmss(t.ts_ns), str(p), cd.sign(p), str(p - cd.base), _pct(p - cd.base, cd.base),
        f"{cd.value_won / cd.volume:.2f}" if cd.volume else f"{p:.2f}", str(cd.open), str(cd.high), str(cd.low),
        str(ask), str(bid), str(t.qty), str(cd.volume), str(cd.value_won), str(cd.sell_count), str(cd.buy_count),
        str(cd.buy_count - cd.sell_count), strength, str(cd.sell_volume), str(cd.buy_volume),
        "3" if t.auction else ("1" if t.buyer_initiated else "5"), _pct(cd.buy_volume, cd.volume),
        _pct(cd.volume, cd.prev_volume), cd.open_hms, osign, ovs, cd.high_hms, hsign, hvs, cd.low_hms, lsign, lvs,
        trading_date, "20", "N", str(ask_qty), str(bid_qty), str(ask_qty * 10), str(bid_qty * 10),
        _pct(cd.volume, inst.shares_outstanding), "0", "0.00", "0", "", str(cd.open or cd.base),
    ]
    if fields == 47:
        values.append("")  # MARKET_CLS_CODE
    return "^".join(values)


def book_record(market: KisMarket, code: str, now_ns: int, fields: int = 63) -> str:
    """One H0STASP0 record: ten ask and bid levels around the last price, totals, expected-price fields."""
    asks, bids, ask_qty, bid_qty = market.book_levels(code)
    cd = market.days[code]
    values = [code, hhmmss(now_ns), "0", *map(str, asks), *map(str, bids), *map(str, ask_qty), *map(str, bid_qty),
              str(sum(ask_qty)), str(sum(bid_qty)), "0", "0", "0", "0", "0", "0", "3", "0.00", str(cd.volume),
              "0", "0", "0", "0", "0"]
    if fields == 63:
        values += ["0", "0", "0", ""]
    return "^".join(values)


def data_frame(tr_id: str, records: list[str], encrypted: bool = False) -> str:
    return f"{'1' if encrypted else '0'}|{tr_id}|{len(records):03d}|{'^'.join(records)}"


def control(tr_id: str, tr_key: str, rt_cd: str, msg_cd: str, msg1: str, output: dict[str, str] | None = None,
            encrypt: str = "N") -> str:
    """A JSON control message (subscribe ack, error) as KIS sends it."""
    body: dict[str, Any] = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if output is not None:
        body["output"] = output
    return json.dumps({"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": encrypt}, "body": body},
                      ensure_ascii=False, separators=(",", ":"))


def pingpong(now_s: float) -> str:
    """The server's heartbeat text frame (no body)."""
    stamp = dt.datetime.fromtimestamp(now_s, KST).strftime("%Y%m%d%H%M%S")
    return json.dumps({"header": {"tr_id": "PINGPONG", "datetime": stamp}}, separators=(",", ":"))
