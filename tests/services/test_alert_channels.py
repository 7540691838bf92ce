"""Alerts that reach a phone: the Telegram, Discord and Slack channels against local stand-ins of those services.

Each stand-in is an ``http.server`` on a loopback port that answers as the
real service does (Telegram's Bot API checks the token in the path and the
chat id, and replies ``{"ok": true, "result": {...}}``; a Discord webhook
replies 204; a Slack incoming webhook replies ``ok``) and can be told to
answer the next requests with a 429 (``retry_after``), a 500 or garbage.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus.rpc import RpcClient
from core.config import PROJECT_ROOT, ConfigError, load_stack
from core.messages import Alert, AlertLevel, Command, CommandResult, Heartbeat, Side
from core.orders import OrderBook
from services.order_manager.journal import Journal
from services.supervisor import dayroll
from services.supervisor.alerting import (
    ChannelSender,
    DiscordChannel,
    SlackChannel,
    TelegramChannel,
    phone_text,
)
from services.supervisor.health import HeartbeatBook
from services.supervisor.journal import DayJournal
from tests.ports import free_port
from tests.test_stack import sma

TOKEN = "123456789:AAtest-token_for-the-fake-bot-api"
CHAT = "-1001234567890"
DISCORD_PATH = "/api/webhooks/4242/discord-secret-part"
SLACK_PATH = "/services/T0000/B0000/slack-secret-part"
TS_NS = 1_772_497_800 * 10**9  # 2026-03-03 00:30:00 UTC = 09:30 KST


def alert(level: AlertLevel, kind: str = "k", text: str = "something happened", source: str = "oms") -> Alert:
    return Alert(level=level, source=source, kind=kind, text=text, ts_ns=TS_NS)


class FakeChat:
    """A local stand-in for one chat service: what it received, and replies it is told to give first."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.attempts: list[tuple[float, str, dict[str, Any]]] = []  # (monotonic time, path, body) of every POST
        self.messages: list[dict[str, Any]] = []  # the bodies it accepted
        self.script: list[tuple[str, float]] = []  # ("429", retry_after) / ("500", 0) / ("garbage", 0)
        self.arrivals = 0  # requests that reached the server (answered or held)
        self.hold = threading.Event()  # cleared: requests wait until it is set
        self.hold.set()
        self.cond = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                with fake.cond:
                    fake.arrivals += 1
                    fake.cond.notify_all()
                fake.hold.wait(10)
                status, headers, out = fake.answer(self.path, body if isinstance(body, dict) else {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        with self.cond:
            self.attempts.append((time.monotonic(), path, body))
            scripted = self.script.pop(0) if self.script else None
            reply = getattr(self, f"_{self.kind}")(path, body, scripted)
            if reply[0] in (200, 204) and scripted is None:
                self.messages.append(body)
            self.cond.notify_all()
            return reply

    def _telegram(self, path: str, body: dict[str, Any], scripted: tuple[str, float] | None) -> tuple[int, dict, bytes]:
        def js(status: int, data: dict) -> tuple[int, dict, bytes]:
            return status, {"Content-Type": "application/json"}, json.dumps(data).encode()

        if path != f"/bot{TOKEN}/sendMessage":
            return js(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        if scripted is not None and scripted[0] == "429":
            n = scripted[1]
            return js(429, {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {n}",
                            "parameters": {"retry_after": n}})
        if scripted is not None and scripted[0] == "500":
            return js(500, {"ok": False, "error_code": 500, "description": "Internal Server Error"})
        if scripted is not None:
            return 200, {"Content-Type": "text/html"}, b"<html>a proxy's error page</html>"
        if str(body.get("chat_id")) != CHAT:
            return js(400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"})
        if not body.get("text"):
            return js(400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"})
        return js(200, {"ok": True, "result": {"message_id": len(self.messages) + 1, "date": int(time.time()),
                                               "chat": {"id": int(CHAT), "type": "supergroup"}, "text": body["text"]}})

    def _discord(self, path: str, body: dict[str, Any], scripted: tuple[str, float] | None) -> tuple[int, dict, bytes]:
        if path != DISCORD_PATH:
            return 404, {"Content-Type": "application/json"}, b'{"message": "Unknown Webhook", "code": 10015}'
        if scripted is not None and scripted[0] == "429":
            data = {"message": "You are being rate limited.", "retry_after": scripted[1], "global": False}
            return 429, {"Content-Type": "application/json", "Retry-After": "1"}, json.dumps(data).encode()
        if scripted is not None:
            return 500, {}, b"500: Internal Server Error"
        if not body.get("content"):
            return 400, {"Content-Type": "application/json"}, b'{"message": "Cannot send an empty message", "code": 50006}'
        return 204, {}, b""

    def _webhook_all(self, path: str, body: dict[str, Any], scripted: tuple[str, float] | None) -> tuple[int, dict, bytes]:
        return 200, {}, b""

    def _slack(self, path: str, body: dict[str, Any], scripted: tuple[str, float] | None) -> tuple[int, dict, bytes]:
        if path != SLACK_PATH:
            return 404, {}, b"no_service"
        if scripted is not None and scripted[0] == "429":
            return 429, {"Retry-After": str(scripted[1])}, b"rate_limited"
        if scripted is not None:
            return 500, {}, b"rollup_error"
        if not body.get("text"):
            return 400, {}, b"invalid_payload"
        return 200, {"Content-Type": "text/plain"}, b"ok"

    def wait_for(self, what: str, condition: Callable[[list[dict[str, Any]]], Any], timeout_s: float,
                 log: Path | None = None) -> Any:
        """Wait until ``condition(messages)`` is truthy; fail naming ``what`` (and a log's tail) at the deadline."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not (found := condition(self.messages)):
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
                    raise AssertionError(f"{what}: not received; got {[m.get('text', m) for m in self.messages]}\n{tail}")
                self.cond.wait(left)
            return found

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def telegram() -> Iterator[FakeChat]:
    fake = FakeChat("telegram")
    yield fake
    fake.close()


@pytest.fixture()
def discord() -> Iterator[FakeChat]:
    fake = FakeChat("discord")
    yield fake
    fake.close()


@pytest.fixture()
def slack() -> Iterator[FakeChat]:
    fake = FakeChat("slack")
    yield fake
    fake.close()


def telegram_sender(fake: FakeChat, token: str = TOKEN, **kw: Any) -> ChannelSender:
    return ChannelSender(TelegramChannel(fake.base, token, CHAT), **{"timeout_s": 2.0, "retries": 3, **kw})


# --- the message -------------------------------------------------------------------------------


def test_the_phone_text_has_level_kind_source_text_and_the_time_in_kst() -> None:
    text = phone_text(alert(AlertLevel.CRITICAL, "trading_halt", "trading state halted by operator: drill",
                            "risk-guard"))
    head, body, when = text.split("\n")
    assert "CRITICAL" in head and "trading_halt" in head and "risk-guard" in head
    assert body == "trading state halted by operator: drill"
    assert when == "2026-03-03 09:30:00 KST"
    long = phone_text(alert(AlertLevel.INFO, text="x" * 10_000), 2000)
    assert len(long) <= 2000 and long.endswith("KST")


# --- Telegram ------------------------------------------------------------------------------------


def test_telegram_gets_the_alert_as_a_bot_message_to_the_chat(telegram: FakeChat) -> None:
    sender = telegram_sender(telegram)
    assert sender.offer(alert(AlertLevel.ERROR, "process_died", "process order-manager died"))
    sender.close(10)
    (msg,) = telegram.messages
    assert msg["chat_id"] == CHAT and "process order-manager died" in msg["text"] and "KST" in msg["text"]
    assert "parse_mode" not in msg
    assert sender.counters() == {"sent": 1, "failed": 0, "dropped": 0, "muted": 0, "queued": 0}


def test_html_parse_mode_escapes_the_text_and_bolds_the_heading(telegram: FakeChat) -> None:
    sender = ChannelSender(TelegramChannel(telegram.base, TOKEN, CHAT, "HTML"), retries=0)
    sender.offer(alert(AlertLevel.ERROR, text="cash < 0 & falling"))
    sender.close(10)
    (msg,) = telegram.messages
    assert msg["parse_mode"] == "HTML" and msg["text"].startswith("<b>") and "cash &lt; 0 &amp; falling" in msg["text"]


def test_a_channel_sends_at_its_level_and_the_always_sent_kinds_and_never_a_muted_kind(telegram: FakeChat) -> None:
    sender = telegram_sender(telegram, min_level="error", muted_kinds=["heartbeat_late", "recon_break"],
                             always_kinds=["day_summary", "recon_break"])
    assert not sender.offer(alert(AlertLevel.WARNING, "orders_left_open", "below the level"))
    assert not sender.offer(alert(AlertLevel.CRITICAL, "heartbeat_late", "muted"))
    assert not sender.offer(alert(AlertLevel.CRITICAL, "recon_break", "muted beats always"))
    assert sender.offer(alert(AlertLevel.ERROR, "agent_flapping", "at the level"))
    assert sender.offer(alert(AlertLevel.INFO, "day_summary", "always sent"))
    sender.close(10)
    assert [m["text"].split("\n")[1] for m in telegram.messages] == ["at the level", "always sent"]
    assert sender.counters()["sent"] == 2 and sender.counters()["muted"] == 2


def test_a_429_is_retried_after_its_retry_after_and_a_500_after_the_doubling_pause(telegram: FakeChat) -> None:
    telegram.script = [("429", 0.3), ("500", 0), ("500", 0)]
    sender = telegram_sender(telegram, retries=3)
    sender.offer(alert(AlertLevel.ERROR, text="persistent"))
    sender.close(15)
    assert [m["text"].split("\n")[1] for m in telegram.messages] == ["persistent"]
    times = [t for t, _, _ in telegram.attempts]
    assert len(times) == 4
    assert times[1] - times[0] >= 0.3  # the 429's retry_after, longer than the first pause
    assert times[2] - times[1] >= 0.2 and times[3] - times[2] >= 0.4  # then the pause, doubled
    assert sender.counters()["sent"] == 1 and sender.counters()["failed"] == 0


def test_retries_run_out_and_the_alert_is_counted_failed_then_the_next_goes_out(telegram: FakeChat) -> None:
    telegram.script = [("500", 0), ("500", 0)]
    sender = telegram_sender(telegram, retries=1)
    sender.offer(alert(AlertLevel.ERROR, text="lost"))
    sender.offer(alert(AlertLevel.ERROR, text="delivered"))
    sender.close(10)
    assert [m["text"].split("\n")[1] for m in telegram.messages] == ["delivered"]
    assert (sender.failed, sender.sent) == (1, 1)
    assert "Internal Server Error" in sender.counters()["last_error"]


def test_a_refusal_is_not_retried_and_the_token_never_reaches_a_log_line(
        telegram: FakeChat, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    wrong = "987654321:BBwrong-token-that-must-stay-secret"
    sender = ChannelSender(TelegramChannel(telegram.base, wrong, CHAT), retries=3, timeout_s=2)
    sender.offer(alert(AlertLevel.CRITICAL, text="to nowhere"))
    sender.close(10)
    assert len(telegram.attempts) == 1 and sender.failed == 1  # a 404 is an answer, not a reason to try again
    assert "Not Found" in sender.counters()["last_error"]
    assert wrong not in caplog.text and "wrong-token" not in caplog.text
    assert any("***" in r.getMessage() for r in caplog.records if r.name == "httpx")  # the request was logged, scrubbed


def test_a_bad_reply_or_a_dead_server_is_a_failure_never_a_crash(telegram: FakeChat) -> None:
    telegram.script = [("garbage", 0)]
    sender = telegram_sender(telegram, retries=2)
    sender.offer(alert(AlertLevel.ERROR, text="answered with html"))
    sender.offer(alert(AlertLevel.ERROR, text="fine"))
    sender.close(10)
    assert (sender.failed, sender.sent) == (1, 1) and "reply without ok" in sender.last_error
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # bound, never listening: connections are refused
        dead = ChannelSender(TelegramChannel(f"http://127.0.0.1:{dead_port}", TOKEN, CHAT), retries=1, timeout_s=1)
        dead.offer(alert(AlertLevel.CRITICAL, text="lost"))
        dead.close(10)
    assert dead.counters()["failed"] == 1 and dead.sent == 0


def test_a_full_queue_drops_the_newest_alert_and_counts_it(telegram: FakeChat) -> None:
    telegram.hold.clear()  # the server holds the first request: the sender's thread waits on it
    sender = telegram_sender(telegram, queue_size=2)
    sender.offer(alert(AlertLevel.ERROR, text="in flight"))
    with telegram.cond:
        assert telegram.cond.wait_for(lambda: telegram.arrivals, 10)  # the request has reached the server
    assert sender.offer(alert(AlertLevel.ERROR, text="queued 1")) and sender.offer(alert(AlertLevel.ERROR, text="queued 2"))
    assert not sender.offer(alert(AlertLevel.ERROR, text="dropped"))
    assert sender.counters()["dropped"] == 1 and sender.counters()["queued"] == 2
    telegram.hold.set()
    sender.close(10)
    assert [m["text"].split("\n")[1] for m in telegram.messages] == ["in flight", "queued 1", "queued 2"]


# --- Discord and Slack -----------------------------------------------------------------------------


def test_discord_gets_content_without_mentions_and_its_429_retry_after_is_honoured(discord: FakeChat) -> None:
    discord.script = [("429", 0.25)]
    sender = ChannelSender(DiscordChannel(discord.base + DISCORD_PATH), retries=2, timeout_s=2)
    sender.offer(alert(AlertLevel.ERROR, "agent_died", "agent sma-a exited with code 1 @everyone"))
    sender.close(10)
    (msg,) = discord.messages
    assert "agent sma-a exited" in msg["content"] and msg["allowed_mentions"] == {"parse": []}
    assert discord.attempts[1][0] - discord.attempts[0][0] >= 0.25
    assert sender.counters()["sent"] == 1


def test_discord_unknown_webhook_is_refused_once(discord: FakeChat) -> None:
    sender = ChannelSender(DiscordChannel(discord.base + "/api/webhooks/1/gone-secret"), retries=3, timeout_s=2)
    sender.offer(alert(AlertLevel.ERROR))
    sender.close(10)
    assert len(discord.attempts) == 1 and sender.failed == 1 and "Unknown Webhook" in sender.last_error
    assert "gone-secret" not in sender.last_error


def test_slack_gets_text_and_ok_is_success_a_500_is_retried_a_bad_payload_is_not(slack: FakeChat) -> None:
    slack.script = [("500", 0)]
    sender = ChannelSender(SlackChannel(slack.base + SLACK_PATH), retries=2, timeout_s=2)
    sender.offer(alert(AlertLevel.CRITICAL, "recon_break", "account holds 3 more 005930 than the ledger"))
    sender.close(10)
    (msg,) = slack.messages
    assert "account holds 3 more 005930" in msg["text"] and sender.sent == 1 and len(slack.attempts) == 2
    wrong = ChannelSender(SlackChannel(slack.base + "/services/T0000/B0000/revoked-secret"), retries=2, timeout_s=2)
    wrong.offer(alert(AlertLevel.CRITICAL))
    wrong.close(10)
    assert wrong.failed == 1 and len(slack.attempts) == 3 and "no_service" in wrong.last_error


def test_slack_429_waits_its_retry_after_header(slack: FakeChat) -> None:
    slack.script = [("429", 1)]
    sender = ChannelSender(SlackChannel(slack.base + SLACK_PATH), retries=1, timeout_s=2)
    sender.offer(alert(AlertLevel.ERROR, text="slow down"))
    sender.close(10)
    assert sender.sent == 1 and slack.attempts[1][0] - slack.attempts[0][0] >= 1.0


# --- configuration -------------------------------------------------------------------------------


def stack_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "stack.toml"
    p.write_text(text)
    return p


def test_channels_come_from_the_file_and_their_secrets_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = stack_file(tmp_path, f'[alerts.telegram]\nchat_id = "{CHAT}"\nmin_level = "error"\n'
                                'muted_kinds = ["heartbeat_late"]\n[alerts.slack]\nmin_level = "critical"\n')
    monkeypatch.setenv("TRADER_ALERTS__TELEGRAM__BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TRADER_ALERTS__SLACK__WEBHOOK_URL", "https://hooks.slack.com/services/T/B/secret")
    alerts = load_stack(path).alerts
    assert alerts.telegram.configured and alerts.slack.configured and not alerts.discord.configured
    assert alerts.telegram.muted_kinds == ["heartbeat_late"] and alerts.telegram.base_url == "https://api.telegram.org"
    shown = json.dumps(load_stack(path).masked())
    assert TOKEN not in shown and "hooks.slack.com" not in shown


def test_a_half_configured_channel_or_a_secret_in_the_file_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TRADER_ALERTS__TELEGRAM__BOT_TOKEN", "TRADER_ALERTS__DISCORD__WEBHOOK_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError) as exc:
        load_stack(stack_file(tmp_path, f'[alerts.telegram]\nchat_id = "{CHAT}"\n'))
    assert "TRADER_ALERTS__TELEGRAM__BOT_TOKEN" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_stack(stack_file(tmp_path, '[alerts.discord]\nwebhook_url = "https://discord.com/api/webhooks/1/s"\n'))
    assert exc.value.problems[0][1] == "alerts.discord.webhook_url" and "environment" in exc.value.problems[0][2]
    with pytest.raises(ConfigError) as exc:
        load_stack(stack_file(tmp_path, '[alerts.telegram]\nchat_id = "my chat"\nmin_level = "loud"\n'
                                        'base_url = "api.telegram.org"\n'))
    keys = {k for _, k, _ in exc.value.problems}
    assert {"alerts.telegram.chat_id", "alerts.telegram.min_level", "alerts.telegram.base_url"} <= keys


@pytest.mark.slow
def test_config_check_names_the_bad_alert_entries(tmp_path: Path) -> None:
    path = stack_file(tmp_path, '[alerts]\nmin_level = "sometimes"\n[alerts.slack]\nmuted_kinds = ["two words"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}
    env.update({"TRADER_CONFIG": str(path), "TRADER_RUN_DIR": str(tmp_path / "run")})
    out = subprocess.run([str(Path(sys.executable).parent / "trader"), "config", "check", "--json"], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    reasons = {p["key"]: p["reason"] for p in json.loads(out.stdout)}
    assert "'info', 'warning', 'error' or 'critical'" in reasons["alerts.min_level"]
    assert "not an alert kind" in reasons["alerts.slack.muted_kinds"]


def test_the_test_message_command_reaches_each_channel_and_names_one_that_fails(
        tmp_path: Path, telegram: FakeChat, slack: FakeChat) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}
    env.update({"TRADER_CONFIG": str(stack_file(tmp_path, "")), "TRADER_ALERTS__RETRIES": "0",
                "TRADER_ALERTS__TELEGRAM__BASE_URL": telegram.base, "TRADER_ALERTS__TELEGRAM__CHAT_ID": CHAT,
                "TRADER_ALERTS__TELEGRAM__BOT_TOKEN": TOKEN,
                "TRADER_ALERTS__SLACK__WEBHOOK_URL": slack.base + "/services/T0000/B0000/revoked-secret-part"})
    out = subprocess.run([sys.executable, "-m", "services.supervisor.alerting"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "telegram: sent" in out.stdout and "slack: FAILED: HTTP 404: no_service" in out.stdout
    assert "alert_test" in telegram.messages[0]["text"]
    assert TOKEN not in out.stdout + out.stderr and "revoked-secret" not in out.stdout + out.stderr


# --- start-up quiet and the day summary (pure parts) ------------------------------------------------


def test_a_process_not_heard_from_yet_is_late_only_after_the_grace_one_heard_from_after_three_intervals() -> None:
    book = HeartbeatBook(interval_s=1.0, late_intervals=3.0, grace_s=15.0)
    book.expect("slow-agent", 0.0)
    assert book.newly_late(14.0) == []
    assert book.newly_late(15.5) == ["slow-agent"]
    book.expect("agent", 20.0)
    book.record(Heartbeat(name="agent", pid=1, ts_ns=1), 21.0)
    assert book.newly_late(24.5) == ["agent"]  # heard from once: the plain limit again
    assert book.mark_dead("agent") and not book.mark_dead("agent")  # its death is reported once


def test_a_heartbeat_that_announced_a_longer_interval_is_late_only_after_three_of_them() -> None:
    book = HeartbeatBook(interval_s=1.0, late_intervals=3.0)
    book.record(Heartbeat(name="idle-agent", pid=1, ts_ns=1, interval_s=5.0), 0.0)
    book.record(Heartbeat(name="oms", pid=2, ts_ns=1, interval_s=0.2), 0.0)  # shorter than the bus's: the bus's
    assert book.late_after_s("idle-agent") == 15.0 and book.late_after_s("oms") == 3.0
    assert book.newly_late(4.0) == ["oms"]
    assert book.newly_late(14.0) == [] and book.newly_late(15.5) == ["idle-agent"]
    book.record(Heartbeat(name="idle-agent", pid=1, ts_ns=2, interval_s=1.0), 16.0)  # the market opened
    assert book.newly_late(19.5) == ["idle-agent"]


DAY = "20260303"


def journal_day(run_dir: Path) -> None:
    """The order manager's journal of a day: two buys filled, one order refused by the risk guard."""
    book = OrderBook()
    journal = Journal(run_dir / "journal.sqlite")
    outs = []
    for n, (qty, price, fee) in enumerate(((10, 70_000, 105), (5, 70_200, 53)), start=1):
        coid = f"sma-a-{DAY}-{n}"
        outs += [book.submit(coid, "sma-a", "005930", Side.BUY, qty, price, 10 * n),
                 book.ack(coid, f"B{n}", 10 * n + 1),
                 book.apply_fill(f"E{n}", qty, price, 10 * n + 2, coid, f"B{n}", fee, 0)]
    coid = f"sma-a-{DAY}-3"
    outs += [book.submit(coid, "sma-a", "005930", Side.BUY, 1_000, 70_000, 40),
             book.reject(coid, "POSITION_LIMIT", "over the position limit", 41)]
    journal.write(outs, book.orders, DAY)
    journal.close()


def test_the_day_summary_counts_trades_costs_pnl_and_refusals(tmp_path: Path) -> None:
    journal_day(tmp_path)
    ctx = zmq.Context()
    oms = RpcClient(ctx, f"ipc://{tmp_path}/nobody-oms.sock", timeout_ms=100, retries=0)
    md = RpcClient(ctx, f"ipc://{tmp_path}/nobody-md.sock", timeout_ms=100, retries=0)
    day_journal = DayJournal(tmp_path)
    try:
        summary = dayroll.run_day_roll(DAY, tmp_path, day_journal, oms, md, {}, 30, lambda *a: None, late=True)
    finally:
        day_journal.close()
        oms.close()
        md.close()
        ctx.destroy(linger=0)
    assert (summary["trades"], summary["orders"], summary["fees_won"]) == (2, 3, 158)
    assert summary["refused"] == {"POSITION_LIMIT": 1} and summary["equity_won"] is None  # no ledger answered
    text = dayroll.summary_text(summary)
    assert "day 2026-03-03 closed" in text and "trades 2 (orders 3" in text and "fees 158 won" in text
    assert "refused 1: POSITION_LIMIT 1" in text and "equity: not available" in text


# --- the supervisor, delivering to the fake Telegram -----------------------------------------------


class Processes:
    """The processes a test starts, each in a session of its own, stopped (and any agent left) at the end."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, module: str) -> subprocess.Popen[bytes]:
        with open(self.log(name), "ab") as out:
            p = subprocess.Popen([sys.executable, "-m", module], cwd=PROJECT_ROOT, env=self.env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = p
        return p

    def log(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def stop(self) -> None:
        for name in ("supervisor", *[n for n in self.procs if n != "supervisor"]):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        for lock in (self.run_dir / "run").glob("*.pid"):  # an agent the supervisor could not stop
            try:
                pid = int(json.loads(lock.read_text())["pid"])
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, KeyError, TypeError):
                pass


def command(client: RpcClient, name: str, args: dict[str, Any]) -> CommandResult:
    cid = f"test-{name}-{time.time_ns()}"
    reply = client.call(Command(command_id=cid, name=name, args=args, who="test", ts_ns=time.time_ns()),
                        idempotency_key=cid)
    assert isinstance(reply, CommandResult) and reply.ok, reply
    return reply


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not seen in {timeout_s} s"
        time.sleep(0.1)


def kinds(fake: FakeChat, kind: str, *words: str) -> list[dict[str, Any]]:
    """The messages of ``kind`` (its heading) that contain every one of ``words``."""
    return [m for m in fake.messages
            if kind in m.get("text", "").split("\n")[0] and all(w in m.get("text", "") for w in words)]


@pytest.mark.slow
def test_the_supervisor_delivers_deaths_a_halt_and_the_day_summary_to_telegram_and_keeps_start_up_quiet(
        tmp_path: Path, telegram: FakeChat) -> None:
    journal_day(tmp_path)
    everything = FakeChat("webhook_all")  # the generic webhook at level info: every alert, as JSON
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()  # the crasher's status port is taken: it dies at start, every time
    roster = tmp_path / "agents.toml"
    roster.write_text(sma("steady", "005930", free_port()) + sma("crasher", "005930", blocker.getsockname()[1]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}
    env.update({
        "PYTHONUNBUFFERED": "1",
        "TRADER_RUN_DIR": str(tmp_path), "TRADER_ROSTER_FILE": str(roster),
        "TRADER_BUS__HEARTBEAT_INTERVAL_S": "0.2",  # late after 0.6 s: an agent's start takes longer than that
        "TRADER_BUS__RPC_TIMEOUT_MS": "300",
        "TRADER_SUPERVISOR__FLAP_RESTARTS": "2", "TRADER_SUPERVISOR__RESTART_BACKOFF_S": "0.1",
        "TRADER_DASHBOARD__PORT": str(free_port()),
        "TRADER_ALERTS__TELEGRAM__BASE_URL": telegram.base, "TRADER_ALERTS__TELEGRAM__CHAT_ID": CHAT,
        "TRADER_ALERTS__TELEGRAM__BOT_TOKEN": TOKEN, "TRADER_ALERTS__TELEGRAM__MIN_LEVEL": "error",
        "TRADER_ALERTS__WEBHOOK_URL": everything.base + "/all", "TRADER_ALERTS__MIN_LEVEL": "info",
        "TRADER_ALERTS__RETRIES": "1",
    })
    procs = Processes(tmp_path, env)
    ctx = zmq.Context()
    supervisor = RpcClient(ctx, f"ipc://{tmp_path}/run/supervisor-rpc.sock", timeout_ms=5000, retries=0, sender="test")
    risk = RpcClient(ctx, f"ipc://{tmp_path}/run/risk-guard-rpc.sock", timeout_ms=3000, retries=2, sender="test")
    log = procs.log("supervisor")
    try:
        procs.start("bus", "bus.proxy")
        procs.start("supervisor", "services.supervisor")
        guard = procs.start("risk-guard", "services.risk_guard")

        # an agent dies (agent_died is a warning: it comes through the always-sent kinds), then flaps
        telegram.wait_for("the crasher's death", lambda ms: kinds(telegram, "agent_died", "crasher"), 30, log)
        telegram.wait_for("the crasher flapping", lambda ms: kinds(telegram, "agent_flapping", "crasher"), 30, log)

        # trading halts: the risk guard's alert, relayed from the bus
        command(risk, "halt", {"who": "operator", "why": "fire drill"})
        telegram.wait_for("the halt", lambda ms: kinds(telegram, "trading_halt", "fire drill"), 20, log)

        # the close: the day's summary
        command(supervisor, "day_roll", {"trading_date": DAY})
        (summary,) = telegram.wait_for("the day summary", lambda ms: kinds(telegram, "day_summary"), 20, log)
        assert "trades 2" in summary["text"] and "fees 158 won" in summary["text"]
        assert "refused 1: POSITION_LIMIT 1" in summary["text"] and "KST" in summary["text"]

        # the steady agent took longer than three heartbeat intervals to start: no heartbeat_late for it
        wait_until(lambda: any(r["name"] == "steady" and r.get("heartbeat_age_s") is not None
                               for r in command(supervisor, "list", {}).result), 30, "the steady agent heard from")
        late = [m for m in everything.messages if m.get("kind") == "heartbeat_late" and "since it started" in m["text"]]
        assert late == [], late

        # a service dies: one process_died, however many checks pass after it
        guard.kill()
        guard.wait(5)
        telegram.wait_for("the risk guard's death", lambda ms: kinds(telegram, "process_died", "risk-guard"), 20, log)
        command(supervisor, "day_roll", {"trading_date": DAY})  # takes several checks' time (RPC time-outs)
        telegram.wait_for("a second summary", lambda ms: len(kinds(telegram, "day_summary")) == 2, 20, log)
        assert len(kinds(telegram, "process_died", "risk-guard")) == 1
        assert not kinds(telegram, "heartbeat_late")  # a warning below Telegram's level: not sent
        counters = command(supervisor, "status", {}).result["alert_channels"]
        assert counters["telegram"]["sent"] >= 6 and counters["telegram"]["failed"] == 0
        assert counters["webhook"]["sent"] > counters["telegram"]["sent"]  # the webhook takes every level
        assert TOKEN not in log.read_text()
    finally:
        supervisor.close()
        risk.close()
        ctx.destroy(linger=0)
        procs.stop()
        blocker.close()
        everything.close()
