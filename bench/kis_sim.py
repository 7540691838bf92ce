"""Benchmark of the local KIS server: REST order round trips and real-time ticks delivered to one client.

Starts ``python -m services.kis_sim`` on free loopback ports (rate limit raised,
clock x60, started in continuous trading, each print cut into 16 trades so
that the feed is as busy as a lively KRX morning), sends limit orders one after
another over one keep-alive connection, then counts H0STCNT0 records arriving
for every code over a few seconds. Prints figures, then one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.kis_sim.conftest import Server, subscribe_msg

ORDERS = 400
TRADES_PER_PRINT = 16  # a busy market: each simulated print (about 16 a minute per code) cut into 16 KRX trades
WS_SECONDS = 5.0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), "--rate-limit", "100000", "--speed", "60", "--start-time", "09:05",
                        "--ws-max-requests", "1000", "--trades-per-print", str(TRADES_PER_PRINT))
        try:
            low = int(server.price()["stck_llam"])
            headers = server.headers("VTTC0012U")
            body = {"CANO": server.cano, "ACNT_PRDT_CD": "01", "PDNO": "005930", "ORD_DVSN": "00", "ORD_QTY": "1",
                    "ORD_UNPR": str(low)}
            with httpx.Client(base_url=server.base) as http:
                for _ in range(20):  # warm-up
                    http.post("/uapi/domestic-stock/v1/trading/order-cash", json=body, headers=headers)
                times = []
                for _ in range(ORDERS):
                    t0 = time.perf_counter()
                    r = http.post("/uapi/domestic-stock/v1/trading/order-cash", json=body, headers=headers)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert r.json()["rt_cd"] == "0", r.text
            times.sort()
            p50 = statistics.median(times)
            p99 = times[int(len(times) * 0.99) - 1]
            print(f"order round trip over {ORDERS}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {times[-1]:.2f} ms")
            key = server.approval()
            codes = _codes()
            records = 0
            with connect(server.ws_url, max_size=None) as ws:
                for code in codes:
                    ws.send(subscribe_msg(key, "H0STCNT0", code))
                t0 = time.monotonic()
                while time.monotonic() - t0 < WS_SECONDS:
                    msg = ws.recv(timeout=WS_SECONDS)
                    if msg.startswith("0|H0STCNT0|"):
                        records += int(msg.split("|", 3)[2])
                    elif '"PINGPONG"' in msg:
                        ws.send(msg)
                elapsed = time.monotonic() - t0
            rate = records / elapsed
            print(f"ticks delivered to one client at clock x60: {records} in {elapsed:.1f} s = {rate:.0f}/s "
                  f"({len(codes)} codes)")
        finally:
            server.stop()
    print(json.dumps({"bench": "kis_sim", "order_p50_ms": round(p50, 3), "order_p99_ms": round(p99, 3),
                      "ws_ticks_per_s": round(rate, 1)}))


def _codes() -> list[str]:
    from core.config import PROJECT_ROOT
    from core.instruments import load_instruments

    return list(load_instruments(PROJECT_ROOT / "configs" / "instruments.csv"))


if __name__ == "__main__":
    sys.exit(main())
