"""RPC against a real server process: replies, errors, timeouts, retries, idempotency, restarts."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import zmq

from bus import rpc
from bus.codec import encode
from bus.rpc import RpcClient, RpcError, RpcTimeout, RpcUnavailable
from core.config import StackSettings
from core.messages import Command, CommandResult
from tests.bus.conftest import Spawn, ipc_path, wait_for_socket


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def command(name: str, **args: object) -> Command:
    return Command(command_id=f"c-{name}", name=name, args=args)


def start_server(spawn: Spawn, settings: StackSettings):
    path = ipc_path(settings, "supervisor_rpc")
    path.unlink(missing_ok=True)
    proc = spawn("tests.bus.counter_service")
    wait_for_socket(path, proc)
    return proc


@pytest.fixture
def server(spawn: Spawn, settings: StackSettings):
    return start_server(spawn, settings)


@pytest.fixture
def client(ctx: zmq.Context, settings: StackSettings, server) -> RpcClient:
    return RpcClient(ctx, settings.endpoint("supervisor_rpc"), timeout_ms=2000, retries=1)


def test_a_call_returns_the_servers_answer(client: RpcClient) -> None:
    reply = client.call(command("echo", a=1, b="two"))
    assert reply == CommandResult(command_id="c-echo", ok=True, result={"a": 1, "b": "two"})


def test_start_sends_at_once_and_the_answer_waits_for_the_caller(client: RpcClient) -> None:
    wait = client.start(command("echo", n=1))
    time.sleep(0.1)  # the caller works meanwhile; the reply waits in the socket
    assert wait() == CommandResult(command_id="c-echo", ok=True, result={"n": 1})
    abandoned = client.start(command("echo", n=2))
    del abandoned  # never waited for: the next call skips its reply
    assert client.call(command("echo", n=3)).result == {"n": 3}  # type: ignore[attr-defined]


def test_a_business_refusal_is_an_ordinary_reply(client: RpcClient) -> None:
    reply = client.call(command("no_such_command"))
    assert isinstance(reply, CommandResult) and not reply.ok and reply.reason_code == "UNKNOWN_COMMAND"


def test_a_handler_exception_becomes_an_error_reply_and_the_server_lives_on(client: RpcClient) -> None:
    with pytest.raises(RpcError) as err:
        client.call(command("boom"))
    assert err.value.reason_code == rpc.HANDLER_FAILED and "asked to fail" in err.value.text
    assert client.call(command("echo")).ok


def test_a_malformed_request_gets_an_error_reply(ctx: zmq.Context, settings: StackSettings, server) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(settings.endpoint("supervisor_rpc"))
    sock.send_multipart([b"r1", b"", b"not a frame"])
    sock.send_multipart([b"r2", b"only two frames"])
    replies = {}
    for _ in range(2):
        assert sock.poll(3000)
        request_id, status, body = sock.recv_multipart()
        replies[request_id] = status
    assert replies == {b"r1": rpc.STATUS_ERROR, b"r2": rpc.STATUS_ERROR}
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"))
    assert client.call(command("echo")).ok


def test_a_slow_answer_times_out_within_the_bound(ctx: zmq.Context, settings: StackSettings, server) -> None:
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"), timeout_ms=200, retries=2)
    started = time.monotonic()
    with pytest.raises(RpcTimeout, match="supervisor-rpc.sock"):
        client.call(command("sleep", s=1.0))
    assert time.monotonic() - started < 0.2 * 3 + 0.5


def test_a_retried_state_change_runs_once(ctx: zmq.Context, settings: StackSettings, server) -> None:
    # The first attempt times out while the server is still working on it; the
    # retry carries the same key and gets the original answer.
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"), timeout_ms=300, retries=3)
    reply = client.call(command("add", n=5, delay_s=0.5), idempotency_key="order-1")
    assert reply.result == {"total": 5, "executions": 1}
    again = client.call(command("add", n=5), idempotency_key="order-1")
    assert again.result == {"total": 5, "executions": 1}
    other = client.call(command("add", n=1), idempotency_key="order-2")
    assert other.result == {"total": 6, "executions": 2}


def test_a_call_survives_a_server_restart(ctx: zmq.Context, settings: StackSettings, spawn: Spawn, server) -> None:
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"), timeout_ms=1500, retries=6)
    assert client.call(command("echo")).ok
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["reply"] = client.call(command("add", n=2, delay_s=0.5), idempotency_key="k")
        except Exception as exc:  # reported to the test thread below
            outcome["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.2)  # the server is inside the handler
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=5)
    start_server(spawn, settings)
    caller.join(timeout=15)
    assert not caller.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["reply"].result == {"total": 2, "executions": 1}  # answered by the new server


def test_an_absent_server_fails_fast(ctx: zmq.Context, settings: StackSettings) -> None:
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"), timeout_ms=5000, retries=5)
    started = time.monotonic()
    with pytest.raises(RpcUnavailable, match="supervisor-rpc.sock"):
        client.call(command("echo"))
    assert time.monotonic() - started < 0.5


def test_a_dead_servers_socket_file_fails_fast(ctx: zmq.Context, settings: StackSettings, server) -> None:
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=5)
    assert ipc_path(settings, "supervisor_rpc").exists()
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"), timeout_ms=5000, retries=5)
    started = time.monotonic()
    with pytest.raises(RpcUnavailable, match="nothing is listening"):
        client.call(command("echo"))
    assert time.monotonic() - started < 0.5


def test_nothing_listening_on_tcp_gives_up_within_the_bound(ctx: zmq.Context) -> None:
    client = RpcClient(ctx, "tcp://127.0.0.1:1", timeout_ms=100, retries=2)
    started = time.monotonic()
    with pytest.raises(RpcTimeout, match="tcp://127.0.0.1:1"):
        client.call(command("echo"))
    assert time.monotonic() - started < 0.1 * 3 + 0.5


def test_a_reply_to_an_earlier_request_is_discarded(ctx: zmq.Context) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = RpcClient(ctx, f"tcp://127.0.0.1:{port}", timeout_ms=3000, retries=0)

    def serve() -> None:
        if router.poll(3000):
            identity, request_id, _key, _body = router.recv_multipart()
            stale = encode("rpc", "srv", 0, CommandResult(command_id="old", ok=True))
            fresh = encode("rpc", "srv", 0, CommandResult(command_id="new", ok=True))
            router.send_multipart([identity, b"earlier-request", rpc.STATUS_OK, stale])
            router.send_multipart([identity, request_id, rpc.STATUS_OK, fresh])

    server = threading.Thread(target=serve)
    server.start()
    try:
        assert client.call(command("echo")).command_id == "new"
    finally:
        server.join(timeout=5)
        client.close()
