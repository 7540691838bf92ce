"""A venue still starting is no news: the first attempts of a broker client are quiet within the grace period.

The monitor with time passed in first, then the real market-data process
started before its venue (a real feed publisher process started later).
"""

from __future__ import annotations

import random
import signal
import sys
from collections.abc import Iterator

import pytest

from core.messages import Alert
from services.broker.base import ConnectionState as S
from services.broker.connection import (
    ALERT_KIND,
    ConnectionMonitor,
    ReconnectHooks,
    broker_backoff,
)
from tests.services.test_market_data import Stack, bus_subscriber, received, wait_until


class Venue:
    """A venue seen through the hooks: answers a ping once it is up; its reconciliation may fail."""

    def __init__(self) -> None:
        self.up = False
        self.reconcile_problem: str | None = None
        self.monitor: ConnectionMonitor | None = None
        self.now = 0.0

    def connect(self) -> str | None:
        if not self.up:
            return "ping: no server at the venue's endpoint"
        assert self.monitor is not None
        self.monitor.heard(self.now)
        return None

    def reconcile(self) -> str | None:
        return self.reconcile_problem


def monitor_of(venue: Venue, grace_s: float) -> ConnectionMonitor:
    m = ConnectionMonitor(ReconnectHooks(connect=venue.connect, reconcile=venue.reconcile), silence_limit_s=3.0,
                          backoff=broker_backoff(rng=random.Random(0)), start_grace_s=grace_s)
    venue.monitor = m
    return m


def poll_until(venue: Venue, m: ConnectionMonitor, until: float, step: float = 0.25) -> list:
    out = []
    while venue.now < until:
        venue.now += step
        if venue.up:
            m.heard(venue.now)  # a venue that is up is heard from (its heartbeats)
        out += m.poll(venue.now)
    return out


def test_the_first_attempts_while_the_venue_starts_are_marked_starting_then_connected_is_news() -> None:
    v = Venue()
    m = monitor_of(v, grace_s=60.0)
    early = poll_until(v, m, 10.0)
    assert len(early) >= 4 and all(t.starting for t in early)  # attempts and failures alike
    assert m.info(v.now)["starting"] is True
    v.up = True
    later = poll_until(v, m, 45.0)  # the backoff's next attempt finds it
    assert [t.to_state for t in later][-1] is S.CONNECTED
    assert not later[-1].starting  # being up is said: the alert others wait for
    assert all(t.starting for t in later[:-1])
    assert m.info(v.now)["starting"] is False


def test_a_venue_still_down_after_the_grace_period_is_a_warning_again() -> None:
    v = Venue()
    m = monitor_of(v, grace_s=5.0)
    moves = poll_until(v, m, 40.0)
    assert any(t.ts < 5.0 and t.starting for t in moves)
    late = [t for t in moves if t.ts >= 5.0]
    assert late and not any(t.starting for t in late)


def test_once_connected_a_loss_within_the_grace_period_is_a_warning() -> None:
    v = Venue()
    v.up = True
    m = monitor_of(v, grace_s=60.0)
    assert m.poll(0.0)[-1].to_state is S.CONNECTED
    lost = m.lost(1.0, "place got no answer")
    assert lost and not lost[0].starting
    v.up = False
    assert not any(t.starting for t in poll_until(v, m, 20.0))


def test_a_failed_reconciliation_is_never_hidden_as_start_up() -> None:
    v = Venue()
    v.up = True
    v.reconcile_problem = "fills_today: journal and broker disagree"
    m = monitor_of(v, grace_s=60.0)
    moves = m.poll(0.0)
    halted = [t for t in moves if t.from_state is t.to_state is S.RECONCILING]
    assert halted and not halted[0].starting and "halted, reconcile failed" in halted[0].reason
    assert all(t.starting for t in moves if t not in halted)


def test_a_negative_grace_period_is_refused() -> None:
    with pytest.raises(ValueError, match="grace"):
        monitor_of(Venue(), grace_s=-1.0)


# --- the real market-data process, started before its venue ---------------------------


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        s.start("bus", ["-m", "bus.proxy"])
        yield s
    finally:
        logs = {name: s.log(name)[-3000:] for name in ("market-data", "feed")}
        s.close()
        for name, text in logs.items():
            sys.stderr.write(f"--- {name} log ---\n{text}\n")


def connection_alerts(sub) -> list[Alert]:
    return [e.msg for e in sub.drain() if isinstance(e.msg, Alert) and e.msg.kind == ALERT_KIND]


@pytest.mark.slow
def test_market_data_started_before_its_venue_says_nothing_until_connected_then_warns_of_a_loss(stack: Stack) -> None:
    alerts = bus_subscriber(stack, ["sys.alert"])
    stack.start("market-data", ["-m", "services.market_data"], TRADER_LOG_LEVEL="debug")
    wait_until(lambda: stack.rpc("status")["connect_attempts"] >= 3, what="a few attempts while the venue is down")
    assert connection_alerts(alerts) == []
    assert f"{ALERT_KIND} while the venue starts" in stack.log("market-data")  # the retries are there, at DEBUG
    stack.start_feed()
    up = received(alerts, lambda e: isinstance(e.msg, Alert) and e.msg.kind == ALERT_KIND)
    assert (up.msg.level.value, up.msg.text.split(":")[0]) == ("info", "reconciling -> connected")
    stack.stop("feed", signal.SIGKILL)
    down = received(alerts, lambda e: isinstance(e.msg, Alert) and e.msg.kind == ALERT_KIND)
    assert down.msg.level.value == "warning" and down.msg.text.startswith("connected -> disconnected")


def test_market_data_warns_when_its_venue_is_still_down_after_the_grace_period(stack: Stack) -> None:
    alerts = bus_subscriber(stack, ["sys.alert"])
    stack.start("market-data", ["-m", "services.market_data"], TRADER_MARKET_DATA__VENUE_START_GRACE_S="0.3")
    warned = received(alerts, lambda e: isinstance(e.msg, Alert) and e.msg.kind == ALERT_KIND)
    assert warned.msg.level.value == "warning"
