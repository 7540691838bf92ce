"""Alert delivery to people: one sender per channel (Telegram, Discord, Slack, a generic webhook), off the loop.

The generic webhook (``AlertWebhook``) gets each alert at or above its
``min_level`` as a JSON POST of the alert's fields, any 2xx being delivered and
anything else retried; the chat channels get the text a person reads.

A ``ChannelSender`` holds one bounded queue and one daemon thread. ``offer``
never blocks: an alert of a muted kind is counted ``muted``, one below the
channel's level is left out (unless its kind is always sent), one that finds
the queue full is counted ``dropped``. The thread POSTs each alert with a
timeout and a few retries: a 429 waits what the reply asks (``retry_after``),
a 5xx or a dead server the doubling pause; a refusal (any other 4xx, a reply
that says it failed) is not retried. What cannot be delivered is counted
``failed`` and logged, never raised into the supervisor's loop. Secrets (a bot
token, a webhook URL) never reach a log line: they are cut out of every text
the sender logs and out of httpx's request lines.

A ``Channel`` is one service's protocol: the request for an alert and what
its reply means. The text a person reads on a phone (``phone_text``): level,
kind, source, the alert's text and the time in KST.

``python -m services.supervisor.alerting`` sends a test message to every
configured channel and says, per channel, whether it arrived.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from core.config import Alerts
from core.krx import KST
from core.messages import Alert, AlertLevel

LEVEL_ORDER = {AlertLevel.INFO: 0, AlertLevel.WARNING: 1, AlertLevel.ERROR: 2, AlertLevel.CRITICAL: 3}
LEVEL_MARKS = {AlertLevel.INFO: "🔵", AlertLevel.WARNING: "🟡", AlertLevel.ERROR: "🟠", AlertLevel.CRITICAL: "🔴"}
QUEUE_SIZE = 1000
RETRY_PAUSE_S = 0.2  # the first pause after a failed attempt; doubled after each
RETRY_AFTER_MAX_S = 60.0  # the longest a 429's retry_after is waited
REASON_CHARS = 200  # how much of a refusal's reply is logged
SECRET_MIN_CHARS = 8  # a shorter piece of a URL is not cut out of log lines (it would mangle them, and hides nothing)

log = logging.getLogger("supervisor.alerts")


def phone_text(alert: Alert, limit: int = 4000) -> str:
    """The alert as a person reads it on a phone: a heading line, the text, the time in KST."""
    when = dt.datetime.fromtimestamp(alert.ts_ns / 1e9, KST).strftime("%Y-%m-%d %H:%M:%S KST")
    head = f"{LEVEL_MARKS[alert.level]} {alert.level.value.upper()} {alert.kind} · {alert.source}"
    body = alert.text if len(alert.text) <= limit - len(head) - 40 else alert.text[:limit - len(head) - 41] + "…"
    return f"{head}\n{body}\n{when}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a reply means: delivered, or why not and whether (and after how long) to try again."""

    delivered: bool
    retry: bool = False
    retry_after_s: float | None = None  # the server's own wait (429); None = the doubling pause
    reason: str = ""


DELIVERED = Verdict(True)


class Channel(Protocol):
    """One service's side of delivery: the request for an alert and the meaning of its reply."""

    name: str
    secrets: tuple[str, ...]  # texts never to log (tokens, URLs that embed one)

    def request(self, alert: Alert) -> tuple[str, dict[str, Any]]:
        """(URL, JSON body) to POST for ``alert``."""
        ...

    def verdict(self, reply: httpx.Response) -> Verdict:
        """What the service's reply says."""
        ...


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        data = reply.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _seconds(value: object) -> float | None:
    try:
        s = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return s if s >= 0 else None


def http_verdict(reply: httpx.Response, retry_after: object = None) -> Verdict:
    """The common reading of a status: 2xx delivered, 429 wait and retry, 408/5xx retry, other 4xx refused."""
    status = reply.status_code
    if 200 <= status < 300:
        return DELIVERED
    reason = f"HTTP {status}: {reply.text[:REASON_CHARS]}".strip()
    if status == 429:
        wait = _seconds(retry_after)
        return Verdict(False, True, wait if wait is not None else _seconds(reply.headers.get("retry-after")), reason)
    return Verdict(False, status == 408 or status >= 500, None, reason)


class TelegramChannel:
    """The Telegram Bot API: ``POST {base_url}/bot{token}/sendMessage`` with chat_id and text."""

    name = "telegram"

    def __init__(self, base_url: str, token: str, chat_id: str, parse_mode: str = "") -> None:
        self.url = f"{base_url.rstrip('/')}/bot{token}/sendMessage"
        self.chat_id = chat_id
        self.parse_mode = parse_mode
        self.secrets = (token,)

    def request(self, alert: Alert) -> tuple[str, dict[str, Any]]:
        text = phone_text(alert, 4000)  # Telegram's limit is 4096 characters
        body: dict[str, Any] = {"chat_id": self.chat_id, "text": text}
        if self.parse_mode == "HTML":
            head, _, rest = text.partition("\n")
            body["text"] = f"<b>{html.escape(head)}</b>\n{html.escape(rest)}"
            body["parse_mode"] = "HTML"
        return self.url, body

    def verdict(self, reply: httpx.Response) -> Verdict:
        data = _json(reply)
        params = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
        if reply.status_code == 200 and data.get("ok") is True:
            return DELIVERED
        if reply.status_code == 200:  # 200 without "ok": true is not Telegram's success
            return Verdict(False, False, None, f"reply without ok: {reply.text[:REASON_CHARS]}")
        out = http_verdict(reply, params.get("retry_after"))
        described = data.get("description")
        return Verdict(False, out.retry, out.retry_after_s,
                       f"HTTP {reply.status_code}: {described}" if isinstance(described, str) else out.reason)


def url_secrets(url: str) -> tuple[str, ...]:
    """What of a webhook URL must not be logged: the URL, and its last part (the token) when it is long enough."""
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return (url, tail) if len(tail) >= SECRET_MIN_CHARS else (url,)


class DiscordChannel:
    """A Discord webhook: POST ``{"content": text}``; 204 is success, 429 carries ``retry_after``."""

    name = "discord"

    def __init__(self, url: str) -> None:
        self.url = url
        self.secrets = url_secrets(url)

    def request(self, alert: Alert) -> tuple[str, dict[str, Any]]:
        # allowed_mentions: an alert's text never pings @everyone or a role
        return self.url, {"content": phone_text(alert, 1990), "allowed_mentions": {"parse": []}}

    def verdict(self, reply: httpx.Response) -> Verdict:
        return http_verdict(reply, _json(reply).get("retry_after"))


class SlackChannel:
    """A Slack incoming webhook: POST ``{"text": text}``; the reply's body is ``ok``."""

    name = "slack"

    def __init__(self, url: str) -> None:
        self.url = url
        self.secrets = url_secrets(url)

    def request(self, alert: Alert) -> tuple[str, dict[str, Any]]:
        return self.url, {"text": phone_text(alert, 3000)}

    def verdict(self, reply: httpx.Response) -> Verdict:
        out = http_verdict(reply)
        if out.delivered and reply.text.strip() != "ok":
            return Verdict(False, False, None, f"reply is not ok: {reply.text[:REASON_CHARS]}")
        return out


class WebhookChannel:
    """A generic webhook: the alert's fields as JSON (level, source, kind, text, ts_ns); any failure is retried."""

    name = "webhook"

    def __init__(self, url: str) -> None:
        self.url = url
        self.secrets = (url,)

    def request(self, alert: Alert) -> tuple[str, dict[str, Any]]:
        return self.url, alert.model_dump(mode="json")

    def verdict(self, reply: httpx.Response) -> Verdict:
        out = http_verdict(reply)
        return out if out.delivered or out.retry else Verdict(False, True, None, out.reason)


class _Scrub(logging.Filter):
    """Cuts known secrets out of a logger's records (httpx logs each request's URL)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            cleaned = scrub(text, self.secrets)
            if cleaned != text:
                record.msg, record.args = cleaned, None
        return True


_httpx_scrub = _Scrub()
logging.getLogger("httpx").addFilter(_httpx_scrub)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    return text


class ChannelSender:
    """One channel's bounded queue and delivery thread, with its level, muting and counters."""

    def __init__(self, channel: Channel, min_level: str = "warning", muted_kinds: Iterable[str] = (),
                 always_kinds: Iterable[str] = (), timeout_s: float = 3.0, retries: int = 3,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.channel = channel
        self.name = channel.name
        self.min_level = AlertLevel(min_level)
        self.muted_kinds = frozenset(muted_kinds)
        self.always_kinds = frozenset(always_kinds)
        self.timeout_s = timeout_s
        self.retries = retries
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.muted = 0
        self.last_error = ""
        self._secrets = tuple(s for s in channel.secrets if s)
        _httpx_scrub.secrets.update(self._secrets)
        self.queue_size = queue_size
        self._queue: queue.Queue[Alert | None] = queue.Queue(queue_size + 1)  # one place kept for the stop mark
        self._closing = threading.Event()  # set once close() gave up waiting: no more pauses
        self._thread = threading.Thread(target=self._run, name=f"alerts-{self.name}", daemon=True)
        self._thread.start()

    def wants(self, alert: Alert) -> bool:
        """Whether this channel sends ``alert``: not muted, and at its level or of a kind always sent."""
        if alert.kind in self.muted_kinds:
            return False
        return alert.kind in self.always_kinds or LEVEL_ORDER[alert.level] >= LEVEL_ORDER[self.min_level]

    def offer(self, alert: Alert) -> bool:
        """Queue an alert for delivery if the channel wants it; never blocks."""
        if alert.kind in self.muted_kinds:
            self.muted += 1
            return False
        if not self.wants(alert):
            return False
        try:
            if self._queue.qsize() >= self.queue_size:  # the last place is the stop mark's
                raise queue.Full
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def counters(self) -> dict[str, Any]:
        """Delivery figures for the heartbeat (the last error is scrubbed of secrets)."""
        out: dict[str, Any] = {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "muted": self.muted,
                               "queued": self._queue.qsize()}
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the thread after what is queued (waiting at most ``timeout_s``)."""
        self.stop_soon()
        self.join(timeout_s)

    def stop_soon(self) -> None:
        """Ask the thread to stop once the queue is empty."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # asked twice: the first stop mark is queued already
            pass

    def join(self, timeout_s: float) -> None:
        """Wait for the thread; past the timeout, cut its pauses short so it ends soon."""
        self._thread.join(timeout_s)
        self._closing.set()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            while True:
                alert = self._queue.get()
                if alert is None:
                    return
                try:
                    delivered, reason, attempts = self._deliver(client, alert)
                except Exception as exc:  # noqa: BLE001 - a channel's bug must not end delivery for the rest
                    delivered, reason, attempts = False, f"{type(exc).__name__}: {exc}", 1
                if delivered:
                    self.sent += 1
                    continue
                self.failed += 1
                self.last_error = scrub(reason, self._secrets)[:REASON_CHARS]
                log.warning("could not deliver alert %s/%s to %s after %d attempt(s): %s", alert.source, alert.kind,
                            self.name, attempts, self.last_error)

    def _deliver(self, client: httpx.Client, alert: Alert) -> tuple[bool, str, int]:
        """(delivered, why not, attempts) for one alert, retrying as the replies allow."""
        url, body = self.channel.request(alert)
        pause = RETRY_PAUSE_S
        reason = ""
        for attempt in range(1, self.retries + 2):
            try:
                verdict = self.channel.verdict(client.post(url, json=body))
            except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
                verdict = Verdict(False, True, None, f"{type(exc).__name__}: {exc}")
            if verdict.delivered:
                return True, "", attempt
            reason = verdict.reason
            log.info("%s attempt %d failed: %s", self.name, attempt, scrub(reason, self._secrets)[:REASON_CHARS])
            if not verdict.retry or attempt > self.retries or self._closing.is_set():
                return False, reason, attempt
            if verdict.retry_after_s is not None:
                wait = min(verdict.retry_after_s, RETRY_AFTER_MAX_S)
            else:
                wait, pause = pause, pause * 2
            if self._closing.wait(wait):
                return False, reason + " (stopping)", attempt
        return False, reason, self.retries + 1


class AlertWebhook(ChannelSender):
    """The generic webhook's sender: alerts at or above ``min_level`` POSTed as JSON, as the webhook always had them."""

    def __init__(self, url: str, min_level: str = "warning", timeout_s: float = 3.0, retries: int = 3,
                 muted_kinds: Iterable[str] = ()) -> None:
        self.url = url
        super().__init__(WebhookChannel(url), min_level, muted_kinds, (), timeout_s, retries)


def close_all(senders: Iterable[ChannelSender], timeout_s: float = 1.0) -> None:
    """Stop every sender, waiting at most ``timeout_s`` in all for what they have queued."""
    senders = list(senders)
    for s in senders:
        s.stop_soon()
    for s in senders:
        s.join(timeout_s / max(1, len(senders)))


def channel_senders(alerts: Alerts) -> list[ChannelSender]:
    """A sender for each configured channel of the ``[alerts]`` section: the generic webhook first, then the chats."""
    out: list[ChannelSender] = []
    if alerts.webhook_url:
        out.append(AlertWebhook(alerts.webhook_url, alerts.min_level, alerts.timeout_s, alerts.retries,
                                alerts.webhook_muted_kinds))
    common: Mapping[str, Any] = {"always_kinds": alerts.always_kinds, "timeout_s": alerts.timeout_s,
                                 "retries": alerts.retries}
    tg = alerts.telegram
    if tg.configured:
        out.append(ChannelSender(TelegramChannel(tg.base_url, tg.bot_token.get_secret_value(), tg.chat_id,
                                                 tg.parse_mode), tg.min_level, tg.muted_kinds, **common))
    if alerts.discord.configured:
        out.append(ChannelSender(DiscordChannel(alerts.discord.webhook_url.get_secret_value()),
                                 alerts.discord.min_level, alerts.discord.muted_kinds, **common))
    if alerts.slack.configured:
        out.append(ChannelSender(SlackChannel(alerts.slack.webhook_url.get_secret_value()),
                                 alerts.slack.min_level, alerts.slack.muted_kinds, **common))
    return out


def send_test_alert(alerts: Alerts, timeout_s: float = 15.0) -> dict[str, dict[str, Any]]:
    """Send one critical ``alert_test`` to every configured channel; each channel's counters afterwards."""
    senders = channel_senders(alerts)
    test = Alert(level=AlertLevel.CRITICAL, source="trader", kind="alert_test",
                 text="a test message: alerts reach this channel", ts_ns=time.time_ns())
    for s in senders:
        s.offer(test)
    close_all(senders, timeout_s)
    return {s.name: s.counters() for s in senders}


def main() -> int:
    """``python -m services.supervisor.alerting``: send a test message to each channel of ``[alerts]``."""
    from core.config import ConfigError, load_stack

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        settings = load_stack()
    except ConfigError as exc:
        print(exc)
        return 2
    results = send_test_alert(settings.alerts)
    if not results:
        print("no alert channel is configured (see docs/alerts.md)")
        return 1
    for name, c in results.items():
        outcome = "sent" if c["sent"] else ("muted (alert_test is in its muted_kinds)" if c["muted"] else
                                            f"FAILED: {c.get('last_error') or 'not delivered in time'}")
        print(f"{name}: {outcome}")
    return 0 if all(c["sent"] for c in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
