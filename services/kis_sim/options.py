"""What ``trader kis-sim`` can be told: ports, environment, credentials, clock, state, and the UNCONFIRMED knobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.config import KIS_SIM_REST_PORT as DEFAULT_REST_PORT
from core.config import KIS_SIM_WS_PORT as DEFAULT_WS_PORT


@dataclass(frozen=True, slots=True)
class SimOptions:
    env: str = "demo"
    rest_port: int = DEFAULT_REST_PORT
    ws_port: int = DEFAULT_WS_PORT
    appkey: str = ""
    appsecret: str = ""
    account: str = ""
    hts_id: str = ""
    speed: float = 1.0
    seed: int = 42
    state: Path | None = None  # None: a fresh world in memory-backed temp files each run
    start_date: str = ""
    start_time: str = ""  # "" = the stack's clock.start_time (08:55)
    cash_won: int = 0  # 0 = the stack's broker.account_cash_won
    rate_limit_per_s: int = 0  # 0 = the flavour's (2 demo, 20 real)
    trades_per_print: int = 10
    token_error_status: int = 500
    keep_old_tokens: bool = False
    cancel_guard_ms: int = 100
    accept_empty_branch: bool = False
    unpadded_odno: bool = False
    notice_fields: int = 26
    tick_fields: int = 47
    book_fields: int = 63
    doc_spellings: bool = False
    key_per_subscription: bool = False
    ping_interval_s: float = 5.0
    pong_timeout_s: float = 30.0
    ws_max_requests_per_s: int = 20
