"""Alert delivery to a webhook: each alert at or above ``min_level`` as a JSON POST, off the loop.

A background thread takes alerts from a bounded queue and POSTs them with a
timeout and a few retries (doubling pause); what cannot be delivered is
counted and logged, never raised into the supervisor's loop. A full queue drops
the newest alert and counts it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request

from core.messages import Alert, AlertLevel

_ORDER = {AlertLevel.INFO: 0, AlertLevel.WARNING: 1, AlertLevel.ERROR: 2, AlertLevel.CRITICAL: 3}
QUEUE_SIZE = 1000
RETRY_PAUSE_S = 0.2

log = logging.getLogger("supervisor.webhook")


class AlertWebhook:
    """Posts alerts to one URL from a daemon thread; counts what was sent, failed and dropped."""

    def __init__(self, url: str, min_level: str = "warning", timeout_s: float = 3.0, retries: int = 3) -> None:
        self.url = url
        self.min_level = AlertLevel(min_level)
        self.timeout_s = timeout_s
        self.retries = retries
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[Alert | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    def offer(self, alert: Alert) -> bool:
        """Queue an alert for delivery if its level is high enough; never blocks."""
        if _ORDER[alert.level] < _ORDER[self.min_level]:
            return False
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def counters(self) -> dict[str, int]:
        """Delivery figures for the heartbeat."""
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "queued": self._queue.qsize()}

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the thread after what is queued (waiting at most ``timeout_s``)."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            body = json.dumps(alert.model_dump(mode="json")).encode()
            if self._post(body):
                self.sent += 1
            else:
                self.failed += 1
                log.warning("could not deliver alert %s/%s to the webhook after %d attempt(s)",
                            alert.source, alert.kind, self.retries + 1)

    def _post(self, body: bytes) -> bool:
        pause = RETRY_PAUSE_S
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - configured URL
                    if 200 <= resp.status < 300:
                        return True
            except (urllib.error.URLError, OSError, ValueError) as exc:
                log.info("webhook attempt %d failed: %s", attempt + 1, exc)
            if attempt < self.retries:
                time.sleep(pause)
                pause *= 2
        return False
