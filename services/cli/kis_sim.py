"""``trader kis-sim``: a local server that speaks Korea Investment & Securities' Open API, and its faults.

    trader kis-sim                       # demo flavour: REST :29443, WebSocket :31000
    trader kis-sim --env real            # real flavour: TTTC… TR ids, 20 calls/s, KRX/NXT/SOR
    trader kis-sim --print-credentials   # the app key, secret, account and HTS id to configure a client with
    trader kis-sim fault drop-ws         # on a running server: POST /kis-sim/fault {"name": "drop-ws"}
"""

from __future__ import annotations

import json
import math
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import typer

from services.kis_sim.faults import NAMES
from services.kis_sim.options import DEFAULT_REST_PORT, DEFAULT_WS_PORT, SimOptions

app = typer.Typer(
    name="kis-sim",
    help="A local KIS Open API server (REST + WebSocket on 127.0.0.1) over the paper market, to rehearse "
    "trading against \"KIS\" offline.\n\n"
    "Point a KIS client's base URLs at http://127.0.0.1:29443 (REST) and ws://127.0.0.1:31000 (WebSocket) and "
    "give it the credentials `trader kis-sim --print-credentials` shows. Prices come from the paper world's "
    "simulator, orders match in core.matching under KRX rules, and the protocol follows shared KIS.md: tokens "
    "(1 per minute, same token for 6 h), EGW/OPSQ/OPSP codes, paging, AES notices, PINGPONG. "
    "`trader kis-sim fault --help` lists the faults a running server can play.",
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
)


@app.callback()
def serve(
    ctx: typer.Context,
    env: str = typer.Option("demo", "--env", help="Which KIS server to play: demo (모의투자: VTTC… TR ids, 2 calls/s, "
                            "KRX only, pages of 20/15) or real (실전: TTTC…, 20 calls/s, KRX/NXT/SOR, pages of 50/100)."),
    rest_port: int = typer.Option(DEFAULT_REST_PORT, "--rest-port", help="REST port on 127.0.0.1 (plain HTTP; "
                                  "also serves the control endpoint /kis-sim/...)."),
    ws_port: int = typer.Option(DEFAULT_WS_PORT, "--ws-port", help="WebSocket port on 127.0.0.1 (plain ws; any path, "
                                "e.g. / or /tryitout)."),
    appkey: str = typer.Option("", "--appkey", help="The 36-character app key clients must send (default: the "
                               "fixed demo or real key; see --print-credentials)."),
    appsecret: str = typer.Option("", "--appsecret", help="The 180-character app secret (default: the fixed one)."),
    account: str = typer.Option("", "--account", help="The account as CANO-ACNT_PRDT_CD, 8 digits - 2 digits "
                                "(default 50000000-01 demo, 60000000-01 real)."),
    hts_id: str = typer.Option("", "--hts-id", help="The HTS id notices are subscribed with (tr_key of H0STCNI9/0)."),
    speed: float = typer.Option(1.0, "--speed", min=0.001, help="Market clock speed: market seconds per wall second "
                                "(60 = a trading day in about 6.5 minutes)."),
    seed: int = typer.Option(42, "--seed", help="Seed of the price simulator (same seed, same prices)."),
    state: Optional[Path] = typer.Option(None, "--state", help="Directory of the SQLite state (orders, fills, cash, "
                                         "tokens, the clock); survives restarts. Default: a fresh temporary one."),
    start_time: str = typer.Option("", "--start-time", help="KST time of day a new world starts at, HH:MM "
                                   "(default: the stack's clock.start_time, 08:55)."),
    start_date: str = typer.Option("", "--start-date", help="First trading day of a new world, YYYY-MM-DD "
                                   "(default: today or the next XKRX trading day)."),
    cash_won: int = typer.Option(0, "--cash", help="Opening cash of a new account in won (default: the stack's "
                                 "broker.account_cash_won)."),
    rate_limit: int = typer.Option(0, "--rate-limit", help="REST calls per second per app key (default 2 demo, "
                                   "20 real); more get HTTP 500 EGW00201."),
    trades_per_print: int = typer.Option(10, "--trades-per-print", min=1, help="KRX trades (H0STCNT0 records) "
                                         "each simulated print is cut into."),
    token_error_status: int = typer.Option(500, "--token-error-status", help="HTTP status of EGW00121/EGW00123 "
                                           "(UNCONFIRMED: reports say 500 and 200)."),
    keep_old_tokens: bool = typer.Option(False, "--keep-old-tokens", help="Keep a token alive after a newer one is "
                                         "issued (UNCONFIRMED; by default the newer one replaces it)."),
    cancel_guard_ms: int = typer.Option(100, "--cancel-guard-ms", help="A revise/cancel sooner than this after its "
                                        "order is refused: 거래소 미접수로 정정취소주문이 불가합니다."),
    accept_empty_branch: bool = typer.Option(False, "--accept-empty-branch", help="Accept an empty "
                                             "KRX_FWDG_ORD_ORGNO on revise/cancel (UNCONFIRMED; refused by default)."),
    unpadded_odno: bool = typer.Option(False, "--unpadded-odno", help="Answer ODNO without zero padding, as some "
                                       "demo logs show (\"2696\")."),
    notice_fields: int = typer.Option(26, "--notice-fields", help="Notice layout: 26 (current) or 23 (older)."),
    tick_fields: int = typer.Option(47, "--tick-fields", help="H0STCNT0 fields: 47 (since 2026-09) or 46."),
    book_fields: int = typer.Option(63, "--book-fields", help="H0STASP0 fields: 63 (since 2026-09) or 59."),
    doc_spellings: bool = typer.Option(False, "--doc-spellings", help="Also send the workbook example's spellings "
                                       "cncl_cfrm_qty and excg_id_dvsn_Cd in the daily query."),
    key_per_subscription: bool = typer.Option(False, "--key-per-subscription", help="A new AES key/iv per "
                                              "subscription (UNCONFIRMED; one per session by default)."),
    ping_interval: float = typer.Option(5.0, "--ping-interval", help="Seconds between PINGPONG frames."),
    pong_timeout: float = typer.Option(30.0, "--pong-timeout", help="Close a session whose PINGPONG got neither a "
                                       "PONG frame nor a text echo within this many seconds (UNCONFIRMED)."),
    ws_max_requests: int = typer.Option(20, "--ws-max-requests", help="WebSocket requests per second a session may "
                                        "send; past it they are refused, at five times it the session is closed."),
    print_credentials: bool = typer.Option(False, "--print-credentials", help="Print the credentials a client "
                                           "needs (JSON) and exit."),
    stack: bool = typer.Option(False, "--stack", help="Run as the stack's KIS server (what `trader up` starts when "
                               "broker.kind = \"kis\"): env, ports, clock speed (broker.kis.sim_speed), seed, start "
                               "and state (<run_dir>/kis-sim) from the stack's settings, and a pid lock."),
) -> None:
    """Run the local KIS server (the default), or a subcommand."""
    if ctx.invoked_subcommand is not None:
        return
    from services.kis_sim.credentials import credentials

    if env not in ("demo", "real"):
        raise typer.BadParameter("must be demo or real", param_hint="--env")
    if notice_fields not in (23, 26) or tick_fields not in (46, 47) or book_fields not in (59, 63):
        raise typer.BadParameter("--notice-fields 23|26, --tick-fields 46|47, --book-fields 59|63")
    try:
        creds = credentials(env, appkey, appsecret, account, hts_id)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if print_credentials:
        print(json.dumps({"env": env, "appkey": creds.appkey, "appsecret": creds.appsecret, "account": creds.account,
                          "hts_id": creds.hts_id, "rest": f"http://127.0.0.1:{rest_port}",
                          "websocket": f"ws://127.0.0.1:{ws_port}"}, indent=2))
        return
    from services.kis_sim.service import run

    lock = None
    if stack:
        # uvicorn re-raises the SIGTERM it caught once it has shut down: through this handler, so the
        # pid lock below is released rather than left stale by a process killed by its own signal
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        env, rest_port, ws_port, speed, seed, state, start_date, start_time, stack_rate, lock = _from_stack()
        rate_limit = rate_limit or stack_rate
    try:
        run(SimOptions(
            env=env, rest_port=rest_port, ws_port=ws_port, appkey=appkey, appsecret=appsecret, account=account,
            hts_id=hts_id, speed=speed, seed=seed, state=state, start_date=start_date, start_time=start_time,
            cash_won=cash_won, rate_limit_per_s=rate_limit, trades_per_print=trades_per_print,
            token_error_status=token_error_status, keep_old_tokens=keep_old_tokens, cancel_guard_ms=cancel_guard_ms,
            accept_empty_branch=accept_empty_branch, unpadded_odno=unpadded_odno, notice_fields=notice_fields,
            tick_fields=tick_fields, book_fields=book_fields, doc_spellings=doc_spellings,
            key_per_subscription=key_per_subscription, ping_interval_s=ping_interval, pong_timeout_s=pong_timeout,
            ws_max_requests_per_s=ws_max_requests,
        ))
    finally:
        if lock is not None:
            lock.release()


def _from_stack() -> tuple[Any, ...]:
    """The kis-sim settings of the stack's KIS venue, and its pid lock (taken)."""
    from urllib.parse import urlsplit

    from bus.pidlock import LockHeld, PidLock, lock_path
    from core.config import ConfigError, load_stack

    try:
        s = load_stack()
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    kis = s.broker.kis
    rest, ws = kis.urls()
    lock = PidLock(lock_path(s.run_path, "kis-sim"))
    try:
        lock.acquire()
    except LockHeld as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from exc
    state = s.run_path / "kis-sim"
    state.mkdir(parents=True, exist_ok=True)
    # a gateway told that KIS allows more than its published rate (broker.kis.rate_per_s) is rehearsing against a
    # server that does: this one, its limit a quarter above the gateway's pace
    rate = math.ceil(kis.rate_per_s * 1.25) if kis.rate_per_s else 0
    return (kis.env, urlsplit(rest).port or DEFAULT_REST_PORT, urlsplit(ws).port or DEFAULT_WS_PORT, kis.sim_speed,
            s.clock.seed, state, s.clock.start_date, s.clock.start_time, rate, lock)


@app.command()
def fault(
    name: str = typer.Argument(..., help=f"One of: {', '.join(NAMES)}."),
    port: int = typer.Option(DEFAULT_REST_PORT, "--port", help="The running server's REST port."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="rest-silence / weekly-restart: how long REST "
                                            "stays silent."),
    count: Optional[int] = typer.Option(None, "--count", help="order-timeout / order-drop: how many orders."),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="random-500: the share of requests (0-1)."),
    off: bool = typer.Option(False, "--off", help="notice-first / duplicate-notices: turn it off."),
    abort: bool = typer.Option(False, "--abort", help="drop-ws: drop the connections without a close frame."),
) -> None:
    """Make a running kis-sim misbehave: POST /kis-sim/fault on its REST port (see services/kis_sim/faults.py)."""
    body: dict[str, object] = {"name": name}
    for key, value in (("seconds", seconds), ("count", count), ("fraction", fraction)):
        if value is not None:
            body[key] = value
    if off:
        body["on"] = False
    if abort:
        body["abort"] = True
    request = urllib.request.Request(f"http://127.0.0.1:{port}/kis-sim/fault", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(response.read().decode())
    except urllib.error.HTTPError as exc:
        typer.echo(f"error: {exc.read().decode()}", err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:
        typer.echo(f"error: no kis-sim answers on 127.0.0.1:{port} ({exc}); start one with `trader kis-sim`", err=True)
        raise typer.Exit(2) from exc
