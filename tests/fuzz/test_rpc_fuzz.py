"""Every RPC server of the stack fed garbage requests: each is refused with a reason, none kills it.

Requests go out from a raw DEALER in batches, each batch with one real request
at a random place; a ROUTER server answers in order, so every reply is matched
to its request. What the server must say is worked out here from the codec
(``expected_reason``): a request of the wrong shape or with an undecodable body
gets an ``error`` reply with MALFORMED_REQUEST, a decodable one reaches the
handler and gets its answer (a business refusal at most, never HANDLER_FAILED),
and a repeated idempotency key gets the first answer again. The server's
heartbeat must then count exactly the malformed requests as rejected frames.

A server remembers the answers to idempotency keys for as long as it runs, and
the stack lives for the whole module, so the keys it has answered are tracked
per server across tests (``KeyAnswers``): a key answered in an earlier test is
replayed, not decoded, whatever body comes with it this time.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.codec import decode, encode
from bus.rpc import HANDLER_FAILED, MALFORMED_REQUEST, STATUS_ERROR, STATUS_OK
from core.messages import Command, CommandResult
from tests.bus.message_strategies import model_instances
from tests.fuzz.conftest import Stack
from tests.fuzz.frames import FrameFactory, expected_reason

# endpoint -> (process, a read-only command it answers with ok=True)
RPC_SERVERS = {
    "exchange_rpc": ("exchange", "ping"),
    "market_data_rpc": ("market-data", "status"),
    "order_manager_rpc": ("order-manager", "status"),
    "risk_guard_rpc": ("risk-guard", "status"),
    "reconciler_rpc": ("reconciler", "latest"),
    "supervisor_rpc": ("supervisor", "status"),
}
BATCH = 400
REPLY_TIMEOUT_MS = 30_000

# endpoint -> idempotency key -> the [status, body] the server first answered to it
KeyAnswers = dict[str, dict[str, list[bytes]]]


class Tally:
    """What one server answered to the fuzz, by outcome."""

    def __init__(self) -> None:
        self.malformed = 0
        self.handled: Counter[str] = Counter()  # reply type / refusal reason -> count
        self.handler_failures: list[str] = []
        self.valid_answered = 0


def recv_reply(sock: zmq.Socket) -> list[bytes]:
    if not sock.poll(REPLY_TIMEOUT_MS, zmq.POLLIN):
        raise AssertionError(f"no reply within {REPLY_TIMEOUT_MS} ms")
    return sock.recv_multipart()


@pytest.fixture(scope="module")
def key_answers(stack: Stack) -> KeyAnswers:
    """The idempotency keys each server of the module's stack has answered (they outlive a test)."""
    return {endpoint: {} for endpoint in RPC_SERVERS}


def fuzz_server(stack: Stack, key_answers: KeyAnswers, endpoint: str, requests: int, seed: int) -> Tally:
    """Send ``requests`` bad requests (plus one real one per batch) and check every reply."""
    name, command = RPC_SERVERS[endpoint]
    rng = random.Random(seed)
    factory = FrameFactory(seed, ["rpc"])
    tally = Tally()
    answers_by_key = key_answers[endpoint]
    before = sum(stack.rejected_frames(name).values())
    sock = stack.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(stack.endpoint(endpoint))
    try:
        sent = 0
        while sent < requests:
            batch = [factory.request(factory.valid_frames) for _ in range(min(BATCH, requests - sent))]
            real_id = f"real-{sent}".encode()
            real = Command(command_id=f"fuzz-{sent}", name=command)
            batch.insert(rng.randrange(len(batch) + 1), [real_id, b"", encode("rpc", "fuzz", 0, real)])
            for frames in batch:
                sock.send_multipart(frames)
            for frames in batch:
                reply = recv_reply(sock)
                assert len(reply) == 3 and reply[0] == frames[0], f"reply {reply[:2]} to request {frames[:2]}"
                check_reply(frames, reply, tally, answers_by_key, real_id)
            sent += len(batch) - 1
    finally:
        sock.close(linger=0)
    stack.assert_alive()
    assert not tally.handler_failures, f"{name} failed on decodable requests: {tally.handler_failures[:5]}"
    after = stack.rejected_frames(name)
    assert sum(after.values()) - before == tally.malformed, f"{name} counted {after}, expected {tally.malformed} more"
    return tally


def check_reply(frames: list[bytes], reply: list[bytes], tally: Tally,
                answers_by_key: dict[str, list[bytes]], real_id: bytes) -> None:
    """Compare one reply with what the server must have said to ``frames``."""
    _, status, body = reply
    answer = decode(body).msg
    if frames[0] == real_id:
        assert status == STATUS_OK and isinstance(answer, CommandResult) and answer.ok, answer
        tally.valid_answered += 1
        return
    if len(frames) != 3:
        assert status == STATUS_ERROR and answer.reason_code == MALFORMED_REQUEST  # type: ignore[attr-defined]
        tally.malformed += 1
        return
    key = frames[1].decode(errors="replace")
    if key and key in answers_by_key:
        assert reply[1:] == answers_by_key[key], "a repeated idempotency key must get the first answer again"
        return
    if expected_reason(frames[2]) is not None:
        assert status == STATUS_ERROR and answer.reason_code == MALFORMED_REQUEST, answer  # type: ignore[attr-defined]
        tally.malformed += 1
        return
    if status == STATUS_ERROR and getattr(answer, "reason_code", "") == HANDLER_FAILED:
        tally.handler_failures.append(f"{decode(frames[2]).type}: {answer.error[:300]}")  # type: ignore[attr-defined]
    else:
        assert status == STATUS_OK, answer
        tally.handled[getattr(answer, "reason_code", "") or type(answer).__name__] += 1
    if key:
        answers_by_key[key] = reply[1:]


@pytest.mark.parametrize("endpoint", list(RPC_SERVERS))
def test_garbage_requests_are_refused_with_a_reason_and_real_requests_still_answered(
        stack: Stack, key_answers: KeyAnswers, endpoint: str) -> None:
    tally = fuzz_server(stack, key_answers, endpoint, requests=2_000, seed=zlib.crc32(endpoint.encode()))
    assert tally.malformed > 1_000
    assert tally.valid_answered == 5


@pytest.mark.slow
def test_a_hundred_thousand_garbage_requests_across_the_rpc_servers(stack: Stack, key_answers: KeyAnswers) -> None:
    per_server = 100_000 // len(RPC_SERVERS) + 1
    for i, endpoint in enumerate(RPC_SERVERS):
        tally = fuzz_server(stack, key_answers, endpoint, requests=per_server, seed=1000 + i)
        assert tally.valid_answered == (per_server + BATCH - 1) // BATCH


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_any_multipart_request_gets_a_reply_from_the_exchange(stack: Stack, frames: list[bytes]) -> None:
    sock = stack.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(stack.endpoint("exchange_rpc"))
    try:
        sock.send_multipart(frames)
        reply = recv_reply(sock)
    finally:
        sock.close(linger=0)
    assert reply[0] == frames[0]
    answer = decode(reply[2]).msg
    assert reply[1] == STATUS_OK or answer.reason_code in (MALFORMED_REQUEST,)  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=st.sampled_from(["order_request", "cancel_request", "command", "tick", "heartbeat"]).flatmap(
    lambda t: model_instances(__import__("core.messages", fromlist=["REGISTRY"]).REGISTRY[t])))
def test_any_schema_valid_message_gets_an_answer_not_a_handler_failure(stack: Stack, msg: object) -> None:
    for endpoint in ("exchange_rpc", "order_manager_rpc"):
        sock = stack.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(stack.endpoint(endpoint))
        try:
            sock.send_multipart([b"h", b"", encode("rpc", "fuzz", 0, msg)])  # type: ignore[arg-type]
            status, body = recv_reply(sock)[1:]
        finally:
            sock.close(linger=0)
        answer = decode(body).msg
        assert status == STATUS_OK, f"{endpoint}: {answer}"
