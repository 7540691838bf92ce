"""The broker connection state machine with time passed in: every transition, the recovery order, the backoff."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from services.broker.backoff import Backoff
from services.broker.base import ConnectionState as S
from services.broker.connection import ConnectionLost, ConnectionMonitor, ReconnectHooks, broker_backoff


class Broker:
    """A scripted broker seen through the hooks: records the order of the recovery steps."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.answers = True
        self.auth_problem: str | None = None
        self.reconcile_problem: str | None = None
        self.reconcile_silent = False
        self.monitor: ConnectionMonitor | None = None
        self.now = 0.0

    def hooks(self) -> ReconnectHooks:
        return ReconnectHooks(connect=self.connect, authenticate=self.authenticate, resubscribe=self.resubscribe,
                              reconcile=self.reconcile)

    def connect(self) -> str | None:
        self.steps.append("connect")
        if self.answers:
            assert self.monitor is not None
            self.monitor.heard(self.now)  # the ping was answered
        return None

    def authenticate(self) -> str | None:
        self.steps.append("authenticate")
        return self.auth_problem

    def resubscribe(self) -> str | None:
        self.steps.append("resubscribe")
        return None

    def reconcile(self) -> str | None:
        self.steps.append("reconcile")
        if self.reconcile_silent:
            raise ConnectionLost("fills_today got no answer")
        return self.reconcile_problem


def monitor_of(broker: Broker, silence_limit_s: float = 3.0) -> ConnectionMonitor:
    m = ConnectionMonitor(broker.hooks(), silence_limit_s=silence_limit_s,
                          backoff=broker_backoff(rng=random.Random(0)))
    broker.monitor = m
    return m


def poll(broker: Broker, m: ConnectionMonitor, now: float) -> list[tuple[S, S]]:
    broker.now = now
    return [(t.from_state, t.to_state) for t in m.poll(now)]


def test_start_up_connects_authenticates_resubscribes_then_reconciles_before_connected() -> None:
    b = Broker()
    m = monitor_of(b)
    assert m.state is S.DISCONNECTED and not m.connected
    moves = poll(b, m, 0.0)
    assert moves == [(S.DISCONNECTED, S.RECONNECTING), (S.RECONNECTING, S.RECONCILING), (S.RECONCILING, S.CONNECTED)]
    assert b.steps == ["connect", "authenticate", "resubscribe", "reconcile"]
    assert m.connected and m.halted == ""


def test_transitions_are_records_with_reason_and_time_for_the_alert() -> None:
    b = Broker()
    m = monitor_of(b)
    b.now = 5.0
    first = m.poll(5.0)[0]
    assert (first.from_state, first.to_state, first.ts) == (S.DISCONNECTED, S.RECONNECTING, 5.0)
    assert first.text == "disconnected -> reconnecting: attempt 1"


def test_a_silent_broker_is_disconnected_even_with_the_socket_open() -> None:
    b = Broker()
    m = monitor_of(b, silence_limit_s=3.0)
    poll(b, m, 0.0)
    m.heard(1.0)
    assert poll(b, m, 3.9) == []
    moves = m.poll(4.1)
    assert [(t.from_state, t.to_state) for t in moves] == [(S.CONNECTED, S.DISCONNECTED)]
    assert "no word from the broker for 3.1 s" in moves[0].reason and m.drops == 1


def test_a_request_without_answer_drops_the_connection_at_once() -> None:
    b = Broker()
    m = monitor_of(b)
    poll(b, m, 0.0)
    moves = m.lost(0.5, "place got no answer")
    assert [(t.from_state, t.to_state) for t in moves] == [(S.CONNECTED, S.DISCONNECTED)]
    assert moves[0].text.startswith("connected -> disconnected: place got no answer; next attempt in ")
    assert m.lost(0.6, "again") == []  # already down: nothing new to say


def test_reconnect_waits_its_backoff_then_recovers_in_order() -> None:
    b = Broker()
    m = monitor_of(b)
    poll(b, m, 0.0)
    m.lost(10.0, "silence")
    b.steps.clear()
    assert poll(b, m, 10.9) == []  # the first delay is at least 1 s
    moves = poll(b, m, 12.01)  # and at most 2 s
    assert moves[-1] == (S.RECONCILING, S.CONNECTED)
    assert b.steps == ["connect", "authenticate", "resubscribe", "reconcile"]


def test_an_attempt_that_hears_nothing_fails_after_the_silence_limit_and_backs_off_longer() -> None:
    b = Broker()
    m = monitor_of(b, silence_limit_s=3.0)
    b.answers = False
    assert poll(b, m, 0.0) == [(S.DISCONNECTED, S.RECONNECTING)]
    assert poll(b, m, 2.9) == []
    assert poll(b, m, 3.1) == [(S.RECONNECTING, S.DISCONNECTED)]
    assert m.drops == 0  # it never was connected
    first_retry = m._next_try_at - 3.1
    assert 1.0 <= first_retry <= 2.0
    poll(b, m, 3.1 + first_retry)
    assert m.state is S.RECONNECTING and m.attempts == 2
    poll(b, m, 3.1 + first_retry + 3.5)
    assert 2.0 <= m._next_try_at - (3.1 + first_retry + 3.5) <= 4.0


def test_an_answer_arriving_later_completes_the_attempt() -> None:
    b = Broker()
    m = monitor_of(b, silence_limit_s=3.0)
    b.answers = False
    poll(b, m, 0.0)
    m.heard(0.4)  # the feed's heartbeat arrives
    assert poll(b, m, 0.5) == [(S.RECONNECTING, S.RECONCILING), (S.RECONCILING, S.CONNECTED)]


def test_authentication_refused_drops_back_to_disconnected_with_the_reason() -> None:
    b = Broker()
    m = monitor_of(b)
    b.auth_problem = "token expired"
    moves = m.poll(0.0)
    assert [(t.from_state, t.to_state) for t in moves] == [(S.DISCONNECTED, S.RECONNECTING),
                                                          (S.RECONNECTING, S.DISCONNECTED)]
    assert moves[-1].reason.startswith("authenticate: token expired")
    assert "resubscribe" not in b.steps and "reconcile" not in b.steps


def test_failed_reconciliation_stays_halted_and_says_why_until_it_succeeds() -> None:
    b = Broker()
    m = monitor_of(b)
    b.reconcile_problem = "unknown broker order 0000123"
    moves = m.poll(0.0)
    assert [(t.from_state, t.to_state) for t in moves][-1] == (S.RECONCILING, S.RECONCILING)
    assert m.state is S.RECONCILING and not m.connected
    assert m.halted == "unknown broker order 0000123" and "halted" in m.info(0.0)["reason"]
    m.heard(0.5)
    assert m.poll(0.6) == []  # waiting its backoff, and the same reason is not repeated
    m.heard(2.5)
    assert m.poll(2.5) == [] and b.steps.count("reconcile") == 2  # tried again after 1-2 s, still failing
    b.reconcile_problem = None
    m.heard(6.6)
    assert [(t.from_state, t.to_state) for t in m.poll(6.6)] == [(S.RECONCILING, S.CONNECTED)]
    assert m.halted == "" and m.connected


def test_broker_lost_while_reconciling_means_disconnected() -> None:
    b = Broker()
    m = monitor_of(b)
    b.reconcile_silent = True
    moves = m.poll(0.0)
    assert moves[-1].to_state is S.DISCONNECTED and "fills_today got no answer" in moves[-1].reason


def test_silence_while_halted_in_reconciling_drops_the_connection() -> None:
    b = Broker()
    m = monitor_of(b, silence_limit_s=3.0)
    b.reconcile_problem = "broker order unknown"
    m.poll(0.0)
    assert [(t.from_state, t.to_state) for t in m.poll(3.5)] == [(S.RECONCILING, S.DISCONNECTED)]


def test_success_resets_the_backoff() -> None:
    b = Broker()
    m = monitor_of(b, silence_limit_s=1.0)
    b.answers = False
    now = 0.0
    for _ in range(5):  # five failed attempts: the delay grows
        poll(b, m, now)
        now += 1.5
        poll(b, m, now)
        now = m._next_try_at
    assert m.backoff.attempts >= 5
    b.answers = True
    poll(b, m, now)
    assert m.connected and m.backoff.attempts == 0
    m.lost(now + 1, "gone")
    assert 1.0 <= m._next_try_at - (now + 1) <= 2.0


def test_info_names_the_state_for_the_heartbeat() -> None:
    b = Broker()
    m = monitor_of(b)
    poll(b, m, 0.0)
    m.heard(1.0)
    info = m.info(1.5)
    assert info["state"] == "connected" and info["seconds_silent"] == 0.5 and info["attempts"] == 1


# --- backoff bounds ----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), failures=st.integers(1, 40))
def test_broker_backoff_starts_at_1_to_2_s_grows_never_exceeds_30_s_and_resets(seed: int, failures: int) -> None:
    backoff = broker_backoff(rng=random.Random(seed))
    delays = [backoff.next_delay() for _ in range(failures)]
    assert 1.0 <= delays[0] <= 2.0
    assert all(d <= 30.0 for d in delays)
    for k, d in enumerate(delays):  # the k-th delay lies in [ceiling/2, ceiling], the ceiling doubling to 30 s
        ceiling = min(30.0, 2.0 * 2**k)
        assert ceiling / 2 <= d <= ceiling
    backoff.reset()
    assert 1.0 <= backoff.next_delay() <= 2.0


@settings(deadline=None)  # a loaded CI machine can take 300 ms over a pure loop
@given(initial=st.floats(0.01, 10), cap=st.floats(10, 60), seed=st.integers(0, 1000))
def test_backoff_never_exceeds_its_cap_however_many_attempts(initial: float, cap: float, seed: int) -> None:
    backoff = Backoff(initial_s=initial, max_s=cap, rng=random.Random(seed))
    assert all(0 < backoff.next_delay() <= cap for _ in range(100))
