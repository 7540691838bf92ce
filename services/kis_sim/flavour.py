"""The two KIS environments the local server can play: demo (모의투자) and real (실전), per KIS.md section 8.

Everything that differs between the two servers lives in one ``Flavour``
record: TR ids, page sizes, the REST rate, accepted exchanges, success codes,
the branch number and the notice TR. Keeping them in one table makes swapping
a deprecated TR id a one-line change (KIS.md section 7, item 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# paths of the domestic-stock REST endpoints served
ORDER_CASH = "/uapi/domestic-stock/v1/trading/order-cash"
ORDER_RVSECNCL = "/uapi/domestic-stock/v1/trading/order-rvsecncl"
DAILY_CCLD = "/uapi/domestic-stock/v1/trading/inquire-daily-ccld"
BALANCE = "/uapi/domestic-stock/v1/trading/inquire-balance"
PSBL_ORDER = "/uapi/domestic-stock/v1/trading/inquire-psbl-order"
PSBL_RVSECNCL = "/uapi/domestic-stock/v1/trading/inquire-psbl-rvsecncl"
PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
INVESTOR = "/uapi/domestic-stock/v1/quotations/inquire-investor"
MINUTE_CHART = "/uapi/domestic-stock/v1/quotations/inquire-time-itemchartprice"

TICK_TR = "H0STCNT0"
BOOK_TR = "H0STASP0"

# market-data TR ids: the same on both servers
QUOTE_TRS: dict[str, str] = {
    PRICE: "FHKST01010100",
    INVESTOR: "FHKST01010900",
    MINUTE_CHART: "FHKST03010200",
}


@dataclass(frozen=True, slots=True)
class Flavour:
    """What one KIS environment looks like from outside."""

    name: str  # "demo" or "real"
    # path -> {tr_id: what it does}; the new TR ids first, the deprecated ones still answered
    trading_trs: dict[str, dict[str, str]]
    unsupported_trs: frozenset[str]  # real TR ids this server refuses (demo: "모의투자 TR 이 아닙니다")
    rest_rate_per_s: int
    balance_page: int
    daily_ccld_page: int
    psbl_rvsecncl_page: int
    exchanges: frozenset[str]
    branch: str  # KRX_FWDG_ORD_ORGNO in order replies
    notice_tr: str
    order_ok_code: str
    order_ok_text: dict[str, str] = field(default_factory=dict)  # "buy" / "sell" / "revise" / "cancel"

    @property
    def is_demo(self) -> bool:
        return self.name == "demo"

    def action(self, path: str, tr_id: str) -> str | None:
        """What a TR id asks for on a path ("buy", "sell", "change", "query"), or None if this server lacks it."""
        if path in QUOTE_TRS:
            return "query" if QUOTE_TRS[path] == tr_id else None
        return self.trading_trs.get(path, {}).get(tr_id)


def _real_trs(prefix_t: str, prefix_c: str) -> dict[str, dict[str, str]]:
    t, c = prefix_t, prefix_c
    return {
        ORDER_CASH: {f"{t}TTC0012U": "buy", f"{t}TTC0011U": "sell", f"{t}TTC0802U": "buy", f"{t}TTC0801U": "sell"},
        ORDER_RVSECNCL: {f"{t}TTC0013U": "change", f"{t}TTC0803U": "change"},
        DAILY_CCLD: {f"{t}TTC0081R": "query", f"{t}TTC8001R": "query", f"{c}TSC9215R": "query",
                     f"{c}TSC9115R": "query"},
        BALANCE: {f"{t}TTC8434R": "query"},
        PSBL_ORDER: {f"{t}TTC8908R": "query"},
    }


REAL = Flavour(
    name="real",
    trading_trs={**_real_trs("T", "C"), PSBL_RVSECNCL: {"TTTC0084R": "query", "TTTC8036R": "query"}},
    unsupported_trs=frozenset(),
    rest_rate_per_s=20,
    balance_page=50,
    daily_ccld_page=100,
    psbl_rvsecncl_page=50,
    exchanges=frozenset({"KRX", "NXT", "SOR"}),
    branch="06010",
    notice_tr="H0STCNI0",
    order_ok_code="APBK0013",
    order_ok_text={k: "주문 전송 완료 되었습니다." for k in ("buy", "sell", "revise", "cancel")},
)

DEMO = Flavour(
    name="demo",
    trading_trs=_real_trs("V", "V"),
    # the real ids of every trading TR, and the ones the demo server does not offer at all
    unsupported_trs=frozenset(tr for trs in REAL.trading_trs.values() for tr in trs),
    rest_rate_per_s=2,
    balance_page=20,
    daily_ccld_page=15,
    psbl_rvsecncl_page=50,
    exchanges=frozenset({"KRX"}),
    branch="00950",
    notice_tr="H0STCNI9",
    order_ok_code="40600000",
    order_ok_text={
        "buy": "모의투자 매수주문이 완료 되었습니다.",
        "sell": "모의투자 매도주문이 완료 되었습니다.",
        "revise": "모의투자 정정주문이 완료 되었습니다.",
        "cancel": "모의투자 취소주문이 완료 되었습니다.",
    },
)

FLAVOURS = {"demo": DEMO, "real": REAL}
