"""Request/reply between processes: a Lazy Pirate client and an idempotent server.

Wire (DEALER -> ROUTER), all frames bytes:

    request:  [request_id, idempotency_key (may be empty), codec frame of the request]
    reply:    [request_id, status (b"ok" | b"error"), codec frame of the reply]

An ``error`` reply carries a ``CommandResult(ok=False)`` with a reason code; the
client raises it as :class:`RpcError`. A business refusal is an ordinary ``ok``
reply (e.g. ``CommandResult(ok=False)`` or an ``OrderEvent`` REJECTED).

The client follows the zguide's Lazy Pirate pattern: send, wait up to the
timeout, and on silence close the socket, open a new one and resend, at most
``retries`` times, so a call never takes longer than ``timeout * (retries + 1)``.
A request that changes state carries an idempotency key; the server remembers
the answer per key (bounded LRU) and replays it to a retry instead of running
the handler a second time.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zmq

from bus import security
from bus.codec import DecodeError, EncodeError, decode, encode
from core.messages import CommandResult, Message

STATUS_OK: Final = b"ok"
STATUS_ERROR: Final = b"error"
RPC_TOPIC: Final = "rpc"

# Reason codes of error replies.
MALFORMED_REQUEST: Final = "MALFORMED_REQUEST"
HANDLER_FAILED: Final = "HANDLER_FAILED"
BAD_REPLY: Final = "BAD_REPLY"
# Why a request was malformed, besides the codec's reasons (RpcServer.rejected).
NO_REQUEST_ID: Final = "NO_REQUEST_ID"
WRONG_FRAME_COUNT: Final = "WRONG_FRAME_COUNT"

DEFAULT_IDEMPOTENCY_CAPACITY = 10_000

log = logging.getLogger("bus.rpc")


class RpcFailure(Exception):
    """Base of everything a call can fail with."""


class RpcTimeout(RpcFailure):
    """No reply after every retry."""


class RpcUnavailable(RpcFailure):
    """Nothing is there to answer (e.g. the server's ipc socket does not exist)."""


class RpcError(RpcFailure):
    """The server answered with an error reply."""

    def __init__(self, reason_code: str, text: str) -> None:
        self.reason_code = reason_code
        self.text = text
        super().__init__(f"{reason_code}: {text}")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Who asked and under which ids, handed to the server's handler with the request."""

    request_id: str
    idempotency_key: str | None
    sender: str
    received_ns: int
    sent_ns: int = 0  # the header's time: when the client sent it (its clock, this machine's)


Handler = Callable[[Message, RequestInfo], Message]


def _ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint.removeprefix("ipc://")) if endpoint.startswith("ipc://") else None


def _ipc_problem(path: Path) -> str:
    """Why nothing can be listening on an ipc path ('' if something may be)."""
    if not path.exists():
        return "the socket file does not exist"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        return "nothing is listening on the socket file (its server has stopped)"
    except OSError as exc:
        return f"cannot connect: {exc.strerror}"
    finally:
        probe.close()
    return ""


class RpcClient:
    """Calls one server with a timeout and bounded retries (zguide Lazy Pirate)."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        *,
        timeout_ms: int = 1000,
        retries: int = 2,
        sender: str = "",
        linger_ms: int = 0,
    ) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.sender = sender or f"client-{os.getpid()}"
        self.linger_ms = linger_ms
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:12]
        self._socket: zmq.Socket | None = None

    @property
    def socket(self) -> zmq.Socket:
        """The DEALER socket, created on first use and after every timeout."""
        if self._socket is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            security.connect(sock, self.endpoint)
            self._socket = sock
        return self._socket

    def call(
        self,
        msg: Message,
        *,
        idempotency_key: str | None = None,
        timeout_ms: int | None = None,
    ) -> Message:
        """Send ``msg`` and return the reply; raises RpcTimeout, RpcUnavailable or RpcError."""
        return self.start(msg, idempotency_key=idempotency_key, timeout_ms=timeout_ms)()

    def start(
        self,
        msg: Message,
        *,
        idempotency_key: str | None = None,
        timeout_ms: int | None = None,
    ) -> Callable[[], Message]:
        """Send ``msg`` now and wait later: returns the function that waits for the reply.

        The caller can work while the server does (the order manager journals an
        order while the risk guard decides on it). Waiting raises what ``call``
        raises; a reply never waited for is discarded by the next call. Sending
        raises RpcUnavailable at once when the server's socket file is missing.
        """
        timeout_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        path = _ipc_path(self.endpoint)
        if path is not None and self._socket is None:
            problem = _ipc_problem(path)
            if problem:
                raise RpcUnavailable(f"no server at {self.endpoint}: {problem}")
        request_id = f"{self._id_prefix}-{next(self._ids)}".encode()
        try:
            body = encode(RPC_TOPIC, self.sender, 0, msg, time.time_ns())  # the server can tell how long it waited
        except EncodeError as exc:
            raise RpcFailure(f"cannot send {type(msg).__name__} to {self.endpoint}: {exc}") from exc
        frames = [request_id, (idempotency_key or "").encode(), body]
        self.socket.send_multipart(frames)

        def wait() -> Message:
            for attempt in range(self.retries + 1):
                sock = self.socket
                if attempt:
                    sock.send_multipart(frames)
                reply = self._await(sock, request_id, timeout_ms)
                if reply is not None:
                    return self._unpack(reply)
                # Lazy Pirate: the socket may hold a half-sent request or a late
                # reply; throw it away and start clean.
                self.close()
                if attempt < self.retries:
                    log.info("no reply from %s in %d ms, retrying (%d/%d)", self.endpoint, timeout_ms, attempt + 1,
                             self.retries)
            raise RpcTimeout(
                f"no reply from {self.endpoint} after {self.retries + 1} attempt(s) of {timeout_ms} ms"
            )

        return wait

    def close(self) -> None:
        """Close the socket; the next call opens a new one."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _await(self, sock: zmq.Socket, request_id: bytes, timeout_ms: int) -> list[bytes] | None:
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not sock.poll(remaining_ms, zmq.POLLIN):
                return None
            reply = sock.recv_multipart()
            if len(reply) == 3 and reply[0] == request_id:
                return reply
            log.debug("discarding a late or malformed reply on %s", self.endpoint)

    def _unpack(self, reply: list[bytes]) -> Message:
        _, status, body = reply
        try:
            msg = decode(body).msg
        except DecodeError as exc:
            raise RpcError(BAD_REPLY, f"undecodable reply from {self.endpoint}: {exc}") from None
        if status == STATUS_OK:
            return msg
        if isinstance(msg, CommandResult):
            raise RpcError(msg.reason_code or HANDLER_FAILED, msg.error)
        raise RpcError(BAD_REPLY, f"error reply from {self.endpoint} carries {type(msg).__name__}")


class RpcServer:
    """Answers requests on a ROUTER socket; replays cached answers to retried keys."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        handler: Handler,
        *,
        name: str = "server",
        idempotency_capacity: int = DEFAULT_IDEMPOTENCY_CAPACITY,
        linger_ms: int = 200,
        bind: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.handler = handler
        self.name = name
        self.socket: zmq.Socket = ctx.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, linger_ms)
        if bind:
            security.bind(self.socket, endpoint)
        else:
            security.connect(self.socket, endpoint)
        self.capacity = idempotency_capacity
        self._answers: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()
        self.handled = 0
        self.replayed = 0
        self.malformed = 0
        self.failed = 0
        self.rejected: Counter[str] = Counter()  # why malformed requests were refused -> how many

    def handle_ready(self, limit: int = 1000) -> int:
        """Answer the requests already waiting (up to ``limit``); returns how many."""
        n = 0
        while n < limit:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            n += 1
            self._handle(frames)
        return n

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self.malformed += 1
            self.rejected[NO_REQUEST_ID] += 1
            log.warning("dropping a request of %d frame(s): no request id", len(frames))
            return
        identity, request_id = frames[0], frames[1]
        if len(frames) != 4:
            self.rejected[WRONG_FRAME_COUNT] += 1
            self._refuse(identity, request_id, MALFORMED_REQUEST, f"expected 3 frames, got {len(frames) - 1}")
            return
        key = frames[2].decode(errors="replace") or None
        if key is not None and key in self._answers:
            self._answers.move_to_end(key)
            status, body = self._answers[key]
            self.replayed += 1
            self.socket.send_multipart([identity, request_id, status, body])
            return
        try:
            env = decode(frames[3])
        except DecodeError as exc:
            self.rejected[exc.reason_code] += 1
            self._refuse(identity, request_id, MALFORMED_REQUEST, str(exc))
            return
        info = RequestInfo(request_id.decode(errors="replace"), key, env.sender, time.time_ns(), env.ts_ns)
        try:
            answer = self.handler(env.msg, info)
            body = encode(RPC_TOPIC, self.name, 0, answer)
            status = STATUS_OK
        except Exception as exc:  # a handler bug must cost one request, not the process
            self.failed += 1
            log.exception("handler failed on %s %s", env.type, info.request_id)
            status, body = STATUS_ERROR, _error_body(self.name, HANDLER_FAILED, f"{type(exc).__name__}: {exc}")
        self.handled += 1
        if key is not None:
            self._answers[key] = (status, body)
            if len(self._answers) > self.capacity:
                self._answers.popitem(last=False)
        self.socket.send_multipart([identity, request_id, status, body])

    def _refuse(self, identity: bytes, request_id: bytes, reason_code: str, text: str) -> None:
        self.malformed += 1
        log.warning("refusing a malformed request: %s", text)
        self.socket.send_multipart([identity, request_id, STATUS_ERROR, _error_body(self.name, reason_code, text)])

    def close(self) -> None:
        """Close the socket."""
        self.socket.close()


def _error_body(sender: str, reason_code: str, text: str) -> bytes:
    result = CommandResult(command_id="-", ok=False, error=text[:2000], reason_code=reason_code)
    return encode(RPC_TOPIC, sender, 0, result)
