"""Alert delivery to a generic webhook: each alert at or above ``min_level`` as a JSON POST, off the loop.

The body is the alert itself (``level``, ``source``, ``kind``, ``text``,
``ts_ns``); any 2xx reply is delivered, anything else is retried with a
doubling pause (or the 429's ``Retry-After``). The queue, the thread and the
counters are ``alerting.ChannelSender``'s: what cannot be delivered is counted
and logged, never raised into the supervisor's loop, and a full queue drops the
newest alert and counts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from core.messages import Alert
from services.supervisor.alerting import ChannelSender, Verdict, http_verdict


class WebhookChannel:
    """A generic webhook: the alert's fields as JSON; every failure is worth another attempt."""

    name = "webhook"

    def __init__(self, url: str) -> None:
        self.url = url
        self.secrets = (url,)

    def request(self, alert: Alert) -> tuple[str, dict[str, Any]]:
        return self.url, alert.model_dump(mode="json")

    def verdict(self, reply: httpx.Response) -> Verdict:
        out = http_verdict(reply)
        return out if out.delivered or out.retry else Verdict(False, True, None, out.reason)


class AlertWebhook(ChannelSender):
    """Posts alerts to one URL from a daemon thread; counts what was sent, failed, dropped and muted."""

    def __init__(self, url: str, min_level: str = "warning", timeout_s: float = 3.0, retries: int = 3,
                 muted_kinds: Iterable[str] = ()) -> None:
        self.url = url
        super().__init__(WebhookChannel(url), min_level, muted_kinds, (), timeout_s, retries)
