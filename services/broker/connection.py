"""The connection state machine every broker client shares: liveness, reconnects, recovery before trading.

``ConnectionMonitor`` walks CONNECTED -> DISCONNECTED -> RECONNECTING ->
RECONCILING -> CONNECTED (DESIGN section 5). It is the zguide's Paranoid
Pirate heartbeat rule applied to a broker: a broker is alive only while it is
heard from (an RPC answer, a feed frame, its ``sys.heartbeat.*``); silence for
longer than ``silence_limit_s`` counts as a disconnect even when the socket
looks open. After a drop it retries for ever, waiting ``Backoff`` delays
(1-2 s at first, doubling to 30 s, jittered).

Recovery runs in a fixed order through hooks the shell supplies (each returns
``None`` when it succeeded, or the reason it did not):

1. ``connect``: start an attempt (send a ping, open a subscription). The
   attempt succeeds once the broker is heard from (``heard``) after it began,
   within the silence limit.
2. ``authenticate``: log in again where the broker needs it (the paper broker
   needs nothing).
3. ``resubscribe``: subscribe again to everything that was subscribed.
4. ``reconcile``: catch up with the broker's orders and fills. Only when it
   succeeds does the state become CONNECTED (orders are accepted again); when it
   fails the state stays RECONCILING, ``halted`` says why (one RECONCILING ->
   RECONCILING transition per new reason), and it is tried again after a
   backoff delay.

A hook raises ``ConnectionLost`` when the broker stopped answering in the
middle of it; that drops the connection (DISCONNECTED, backoff). Every change
of state is returned as a ``Transition`` so the shell can publish it (an Alert
``broker_connection`` and the ``connection`` key of its heartbeat).

Starting: the stack starts its processes together, and the venue (the paper
exchange building its calendar, the KIS gateway logging in) is often not up
when its clients first try. Until the connection is first CONNECTED, within
``start_grace_s`` of the first ``poll``, the monitor is *starting*: each
transition of those first attempts says so (``Transition.starting``) and the
shell logs it at DEBUG instead of alerting. After the grace period, or once
the connection had been up, a loss is a warning as always; a failed
reconciliation (the venue answered) is never hidden.

Pure: time (``now``, monotonic seconds of the caller) is passed in; the class
reads no clock and opens no socket, the hooks do the talking.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.broker.backoff import Backoff
from services.broker.base import ConnectionState

Hook = Callable[[], str | None]
FIRST_DELAY_CEILING_S = 2.0  # the first reconnect waits 1-2 s (Backoff draws from half its ceiling up)
MAX_DELAY_S = 30.0
ALERT_KIND = "broker_connection"


class ConnectionLost(Exception):
    """Raised by a hook when the broker stopped answering during it."""


def _nothing_to_do() -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of connection state, for the shell to publish."""

    from_state: ConnectionState
    to_state: ConnectionState
    reason: str
    ts: float  # the caller's clock (monotonic seconds) when it happened
    starting: bool = False  # one of the first attempts while the venue is still starting: DEBUG, no alert

    @property
    def text(self) -> str:
        """The alert text: ``<from> -> <to>: reason``."""
        return f"{self.from_state.value} -> {self.to_state.value}: {self.reason}"


@dataclass(slots=True)
class ReconnectHooks:
    """What the shell does at each step of a reconnect; each returns None on success or the reason it failed."""

    connect: Hook = _nothing_to_do
    authenticate: Hook = _nothing_to_do
    resubscribe: Hook = _nothing_to_do
    reconcile: Hook = _nothing_to_do


def broker_backoff(max_s: float = MAX_DELAY_S, rng: random.Random | None = None) -> Backoff:
    """The reconnect delays of a broker client: first 1-2 s, doubling with jitter up to ``max_s``."""
    return Backoff(initial_s=min(FIRST_DELAY_CEILING_S, max_s), max_s=max_s, rng=rng)


class ConnectionMonitor:
    """The connection state of one broker client, driven by ``poll``, ``heard`` and ``lost``."""

    def __init__(
        self,
        hooks: ReconnectHooks,
        *,
        silence_limit_s: float,
        backoff: Backoff | None = None,
        start_grace_s: float = 0.0,
    ) -> None:
        if silence_limit_s <= 0:
            raise ValueError("the silence limit must be positive")
        if start_grace_s < 0:
            raise ValueError("the start grace period cannot be negative")
        self.hooks = hooks
        self.silence_limit_s = silence_limit_s
        self.start_grace_s = start_grace_s
        self.started_at: float | None = None  # the first poll
        self.ever_connected = False
        self.backoff = backoff if backoff is not None else broker_backoff()
        self.state = ConnectionState.DISCONNECTED
        self.reason = "not connected yet"
        self.halted = ""  # why reconciliation failed, while it does
        self.attempts = 0  # reconnect attempts since start
        self.drops = 0  # times a CONNECTED link was lost
        self.last_heard: float | None = None
        self.since = 0.0  # when the current state began
        self._attempt_at = 0.0
        self._next_try_at = 0.0  # next attempt (DISCONNECTED) or next reconcile (RECONCILING)

    # --- what the shell tells the monitor ---------------------------------------

    @property
    def connected(self) -> bool:
        """Whether orders may go to the broker (CONNECTED and reconciled)."""
        return self.state is ConnectionState.CONNECTED

    def heard(self, now: float) -> None:
        """The broker said something (an answer, a feed frame, a heartbeat)."""
        if self.last_heard is None or now > self.last_heard:
            self.last_heard = now

    def lost(self, now: float, reason: str) -> list[Transition]:
        """A request got no answer: the connection is down whatever the socket says."""
        if self.state is ConnectionState.DISCONNECTED:
            return []
        return [self._drop(now, reason)]

    def try_now(self, now: float) -> None:
        """Waiting to retry, but the broker was just heard: the next ``poll`` tries at once."""
        if self.state is ConnectionState.DISCONNECTED:
            self._next_try_at = min(self._next_try_at, now)

    def attempt_began(self, now: float) -> None:
        """The attempt really started at ``now`` (opening it took time): its silence limit counts from here."""
        if self.state is ConnectionState.RECONNECTING:
            self._attempt_at = now

    def starting(self, now: float) -> bool:
        """Never connected yet, within ``start_grace_s`` of the first poll: the venue may still be starting."""
        if self.ever_connected:
            return False
        return self.started_at is None or now - self.started_at < self.start_grace_s

    def seconds_silent(self, now: float) -> float | None:
        """How long the broker has been quiet, or None before it was first heard."""
        return None if self.last_heard is None else max(0.0, now - self.last_heard)

    # --- the machine ---------------------------------------------------------------

    def poll(self, now: float) -> list[Transition]:
        """Advance at time ``now``: detect silence, start attempts, run the recovery steps when due."""
        if self.started_at is None:
            self.started_at = now
        out: list[Transition] = []
        if self.state is ConnectionState.CONNECTED:
            silent = self.seconds_silent(now)
            if silent is not None and silent > self.silence_limit_s:
                out.append(self._drop(now, f"no word from the broker for {silent:.1f} s"))
            return out
        if self.state is ConnectionState.DISCONNECTED:
            if now < self._next_try_at:
                return out
            self.attempts += 1
            self._attempt_at = now
            out.append(self._move(ConnectionState.RECONNECTING, now, f"attempt {self.attempts}"))
            if not self._run(self.hooks.connect, now, "connect", out):
                return out
        if self.state is ConnectionState.RECONNECTING:
            if self.last_heard is None or self.last_heard < self._attempt_at:
                if now - self._attempt_at > self.silence_limit_s:
                    out.append(self._drop(now, f"no answer within {self.silence_limit_s:.1f} s of attempt {self.attempts}"))
                return out
            if not self._run(self.hooks.authenticate, now, "authenticate", out):
                return out
            if not self._run(self.hooks.resubscribe, now, "resubscribe", out):
                return out
            out.append(self._move(ConnectionState.RECONCILING, now, "the broker answers; reconciling"))
            self._next_try_at = now
        if self.state is ConnectionState.RECONCILING:
            silent = self.seconds_silent(now)
            if silent is not None and silent > self.silence_limit_s:
                out.append(self._drop(now, f"no word from the broker for {silent:.1f} s while reconciling"))
                return out
            if now < self._next_try_at:
                return out
            try:
                problem = self.hooks.reconcile()
            except ConnectionLost as exc:
                out.append(self._drop(now, f"reconcile: {exc}"))
                return out
            if problem is not None:
                delay = self.backoff.next_delay()
                self._next_try_at = now + delay
                if problem != self.halted:  # say it once per new reason, not on every retry
                    out.append(Transition(self.state, self.state, f"halted, reconcile failed: {problem}", now))
                self.halted = problem
                self.reason = f"halted, reconcile failed: {problem}; next try in {delay:.1f} s"
                return out
            self.halted = ""
            self.backoff.reset()
            out.append(self._move(ConnectionState.CONNECTED, now, "reconciled"))
        return out

    def info(self, now: float) -> dict[str, Any]:
        """The state for a heartbeat's ``connection`` key."""
        silent = self.seconds_silent(now)
        return {"state": self.state.value, "reason": self.reason, "halted": self.halted,
                "attempts": self.attempts, "drops": self.drops, "starting": self.starting(now),
                "seconds_silent": None if silent is None else round(silent, 3)}

    # --- internals -----------------------------------------------------------------

    def _run(self, hook: Hook, now: float, step: str, out: list[Transition]) -> bool:
        """Run one recovery step; a failure drops the connection and schedules the next attempt."""
        try:
            problem = hook()
        except ConnectionLost as exc:
            problem = str(exc) or "the broker stopped answering"
        if problem is None:
            return True
        out.append(self._drop(now, f"{step}: {problem}"))
        return False

    def _drop(self, now: float, reason: str) -> Transition:
        if self.state is ConnectionState.CONNECTED:
            self.drops += 1
        delay = self.backoff.next_delay()
        self._next_try_at = now + delay
        return self._move(ConnectionState.DISCONNECTED, now, f"{reason}; next attempt in {delay:.1f} s")

    def _move(self, to: ConnectionState, now: float, reason: str) -> Transition:
        connected = to is ConnectionState.CONNECTED
        t = Transition(self.state, to, reason, now, starting=not connected and self.starting(now))
        self.state, self.reason, self.since = to, reason, now
        self.ever_connected = self.ever_connected or connected
        return t
