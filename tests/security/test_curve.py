"""Endpoints beyond loopback: no keys, no start; with keys, only allow-listed clients get anything."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq

from bus import security
from bus.codec import encode
from bus.pubsub import Publisher, Subscriber
from bus.rpc import RPC_TOPIC, RpcClient
from bus.security import CurveKeys, SecurityError, curve_problems, needs_curve
from bus.service import EXIT_CONFIG
from core.config import PROJECT_ROOT, ConfigError, load_stack
from core.messages import Alert, AlertLevel, Command, CommandResult
from tests.fuzz.conftest import free_port, stack_env, wait_for

EXIT_WAIT_S = 30.0


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair as Z85 text."""

    public: str
    secret: str

    @classmethod
    def new(cls) -> KeyPair:
        public, secret = zmq.curve_keypair()
        return cls(public.decode(), secret.decode())


@dataclass(frozen=True)
class Keys:
    """The stack's server pair, our own client pair, an extra allow-listed pair and a stranger's pair."""

    server: KeyPair
    client: KeyPair
    listed: KeyPair
    stranger: KeyPair

    def env(self) -> dict[str, str]:
        return {
            "TRADER_SECURITY__CURVE_SERVER_PUBLIC_KEY": self.server.public,
            "TRADER_SECURITY__CURVE_SERVER_SECRET_KEY": self.server.secret,
            "TRADER_SECURITY__CURVE_CLIENT_PUBLIC_KEY": self.client.public,
            "TRADER_SECURITY__CURVE_CLIENT_SECRET_KEY": self.client.secret,
            "TRADER_SECURITY__AUTHORIZED_CLIENT_KEYS": f'["{self.listed.public}"]',
        }


@pytest.fixture
def keys() -> Keys:
    return Keys(KeyPair.new(), KeyPair.new(), KeyPair.new(), KeyPair.new())


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; each is stopped at the end, even when the test fails."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()
    for p in started:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    security.stop_authenticator(context)
    context.destroy(linger=0)


@pytest.fixture
def our_keys(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> Iterator[Keys]:
    """This test process holds the stack's keys, as one of our own processes would."""
    for name, value in keys.env().items():
        monkeypatch.setenv(name, value)
    security.configure(load_stack())
    yield keys
    security.configure(None)


def start(procs: list[subprocess.Popen], module: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", module], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    procs.append(p)
    return p


def exposed_bus(tmp_path: Path, **extra: str) -> tuple[dict[str, str], str, str]:
    """A stack environment whose bus listens on every interface: (env, bus_in, bus_out)."""
    bus_in, bus_out = f"tcp://0.0.0.0:{free_port()}", f"tcp://0.0.0.0:{free_port()}"
    env = stack_env(tmp_path, TRADER_ENDPOINTS__BUS_IN=bus_in, TRADER_ENDPOINTS__BUS_OUT=bus_out, **extra)
    return env, bus_in, bus_out


def stranger_socket(ctx: zmq.Context, kind: int, endpoint: str, pair: KeyPair | None, server_public: str) -> zmq.Socket:
    """A socket of someone outside the firm: with a key pair nobody listed, or without CURVE at all."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if pair is not None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_public.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public.encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret.encode())
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def frames_waiting(sock: zmq.Socket) -> int:
    n = 0
    while sock.poll(0, zmq.POLLIN):
        sock.recv_multipart()
        n += 1
    return n


# --- refusing to start --------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["bus.proxy", "services.exchange"])
def test_a_process_with_an_endpoint_beyond_loopback_and_no_keys_refuses_to_start(
    module: str, tmp_path: Path, procs: list[subprocess.Popen]
) -> None:
    env, bus_in, _ = exposed_bus(tmp_path, TRADER_ENDPOINTS__EXCHANGE_RPC=f"tcp://0.0.0.0:{free_port()}")
    log = tmp_path / "out.log"
    p = start(procs, module, env, log)
    assert p.wait(timeout=EXIT_WAIT_S) == EXIT_CONFIG
    text = log.read_text()
    assert bus_in in text
    assert "TRADER_SECURITY__CURVE_CLIENT_SECRET_KEY" in text


def test_config_check_names_every_missing_key_when_an_endpoint_is_beyond_loopback(tmp_path: Path) -> None:
    env, _, _ = exposed_bus(tmp_path)
    out = subprocess.run([sys.executable, "-m", "services.cli.main", "config", "check", "--json"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    keys = {p["key"] for p in json.loads(out.stdout) if p["key"].startswith("security.")}
    assert keys == {"security.curve_server_public_key", "security.curve_server_secret_key",
                    "security.curve_client_public_key", "security.curve_client_secret_key"}
    assert out.returncode != 0


# --- the bus with keys ---------------------------------------------------------------------------


def test_only_authorised_subscribers_receive_what_an_authorised_publisher_sends(
    keys: Keys, our_keys: Keys, tmp_path: Path, procs: list[subprocess.Popen], ctx: zmq.Context
) -> None:
    env, bus_in, bus_out = exposed_bus(tmp_path, **keys.env())
    proxy = start(procs, "bus.proxy", env, tmp_path / "bus.log")
    ours = Subscriber(ctx, bus_out, ["sys.alert"])
    listed = stranger_socket(ctx, zmq.SUB, bus_out, keys.listed, keys.server.public)
    unknown = stranger_socket(ctx, zmq.SUB, bus_out, keys.stranger, keys.server.public)
    plain = stranger_socket(ctx, zmq.SUB, bus_out, None, keys.server.public)
    publisher = Publisher(ctx, bus_in, "test-desk")
    alert = Alert(level=AlertLevel.INFO, source="test-desk", kind="curve", text="hello", ts_ns=time.time_ns())

    got_ours: list[object] = []
    got_listed = 0

    def both_authorised_received() -> bool:
        nonlocal got_listed
        assert proxy.poll() is None, (tmp_path / "bus.log").read_text()
        publisher.publish("sys.alert", alert)
        got_ours.extend(ours.drain())
        got_listed += frames_waiting(listed)
        return bool(got_ours) and got_listed > 0

    wait_for(both_authorised_received, 30, "authorised subscribers to receive through the CURVE bus")
    # Alerts sent now have the same chance to reach the strangers as the one the authorised got.
    for _ in range(20):
        publisher.publish("sys.alert", alert)
    assert ours.recv(5000) is not None
    assert got_ours[0].msg == alert
    assert frames_waiting(unknown) == 0
    assert frames_waiting(plain) == 0


# --- an RPC server with keys ---------------------------------------------------------------------


def test_an_rpc_server_answers_authorised_clients_only(
    keys: Keys, our_keys: Keys, tmp_path: Path, procs: list[subprocess.Popen], ctx: zmq.Context
) -> None:
    rpc = f"tcp://0.0.0.0:{free_port()}"
    env = stack_env(tmp_path, TRADER_ENDPOINTS__EXCHANGE_RPC=rpc, **keys.env())
    exchange = start(procs, "services.exchange", env, tmp_path / "exchange.log")
    client = RpcClient(ctx, rpc, timeout_ms=500, retries=0, sender="test-desk")

    def ping() -> CommandResult | None:
        assert exchange.poll() is None, (tmp_path / "exchange.log").read_text()
        try:
            reply = client.call(Command(command_id="p", name="ping", ts_ns=time.time_ns()))
        except Exception:
            return None
        return reply if isinstance(reply, CommandResult) else None

    answer = wait_for(ping, 30, "the exchange to answer an authorised client")
    assert answer.ok and "trading_date" in answer.result
    client.close()

    request = [b"r1", b"", encode(RPC_TOPIC, "stranger", 0, Command(command_id="s", name="ping", ts_ns=time.time_ns()))]
    for pair in (keys.stranger, None):
        sock = stranger_socket(ctx, zmq.DEALER, rpc, pair, keys.server.public)
        sock.send_multipart(request)  # queued for a handshake the server never accepts
        assert sock.poll(1500, zmq.POLLIN) == 0, "an unauthorised client got an answer"
        sock.close(linger=0)
    # The authorised one is still answered after the strangers tried.
    assert wait_for(ping, 10, "a second answer").ok


# --- pure rules ----------------------------------------------------------------------------------


def test_only_tcp_endpoints_beyond_loopback_need_curve() -> None:
    assert needs_curve("tcp://0.0.0.0:5555")
    assert needs_curve("tcp://10.1.2.3:5555")
    assert needs_curve("tcp://*:5555")
    assert not needs_curve("tcp://127.0.0.1:5555")
    assert not needs_curve("tcp://localhost:5555")
    assert not needs_curve("ipc:///tmp/x.sock")
    assert not needs_curve("inproc://x")


def test_a_socket_without_keys_is_refused_naming_the_endpoint_and_settings(ctx: zmq.Context) -> None:
    sock = ctx.socket(zmq.PUB)
    with pytest.raises(SecurityError) as exc:
        security.bind(sock, "tcp://0.0.0.0:5999", CurveKeys())
    assert "tcp://0.0.0.0:5999" in str(exc.value)
    assert "security.curve_server_secret_key" in str(exc.value)
    assert sock.closed
    loopback = ctx.socket(zmq.PUB)
    security.bind(loopback, f"tcp://127.0.0.1:{free_port()}", CurveKeys())  # loopback needs nothing
    loopback.close(linger=0)


def test_a_public_key_that_is_not_its_secret_keys_is_a_configuration_problem(keys: Keys) -> None:
    settings = load_stack(endpoints={"bus_in": "tcp://0.0.0.0:5998"}, security={
        "curve_server_public_key": keys.server.public, "curve_server_secret_key": keys.stranger.secret,
        "curve_client_public_key": keys.client.public, "curve_client_secret_key": keys.client.secret,
    })
    assert curve_problems(settings) == [("security.curve_server_public_key", "is not the public key of its secret key")]
    assert curve_problems(load_stack()) == []  # the default stack is loopback only


def test_secret_keys_are_masked_and_never_read_from_the_file(keys: Keys, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADER_SECURITY__CURVE_SERVER_SECRET_KEY", keys.server.secret)
    shown = str(load_stack().masked())
    assert keys.server.secret not in shown and "********" in shown
    stack = tmp_path / "stack.toml"
    stack.write_text(f'[security]\ncurve_client_secret_key = "{keys.client.secret}"\n')
    with pytest.raises(ConfigError) as exc:
        load_stack(stack)
    assert "security.curve_client_secret_key" in str(exc.value)
    with pytest.raises(ConfigError):
        load_stack(security={"curve_server_public_key": "too-short"})


def test_a_subscriber_forgets_the_least_recently_heard_sender_beyond_its_bound(ctx: zmq.Context) -> None:
    from bus.pubsub import MAX_SENDERS

    sub = Subscriber(ctx, "inproc://bounded-senders", ["sys.alert"])
    alert = Alert(level=AlertLevel.INFO, source="x", kind="k", text="t", ts_ns=1)
    sub.handle_frame(encode("sys.alert", "desk-old", 1, alert))
    sub.handle_frame(encode("sys.alert", "desk-busy", 1, alert))
    for i in range(MAX_SENDERS):
        sub.handle_frame(encode("sys.alert", f"made-up-{i}", 1, alert))
        if i % 1000 == 0:
            sub.handle_frame(encode("sys.alert", "desk-busy", 2 + i // 1000, alert))
    # desk-busy was heard recently: a jump in its stream is still a gap.
    sub.handle_frame(encode("sys.alert", "desk-busy", 100, alert))
    assert sub.missed > 0
    missed = sub.missed
    # desk-old was forgotten: its next number starts a new stream instead of a gap.
    sub.handle_frame(encode("sys.alert", "desk-old", 50, alert))
    assert sub.missed == missed
    sub.close()
