"""CURVE encryption and client allow-listing for bus and RPC endpoints beyond loopback.

By default every endpoint is an ``ipc://`` path or ``tcp://127.0.0.1``, which only
this machine can reach, and nothing here applies. As soon as an endpoint is a
``tcp://`` address beyond loopback (e.g. ``tcp://0.0.0.0:5555`` for a standby
site), every socket on it must use CURVE, and a process refuses to start
(:class:`SecurityError`, config exit code) when the keys are missing.

The scheme, one key pair per role, all Z85 text from ``zmq.curve_keypair()``,
set in the ``[security]`` section of the stack settings:

* ``curve_server_public_key`` / ``curve_server_secret_key``: every socket that
  *binds* such an endpoint (the bus proxy's XSUB/XPUB, RPC servers, the exchange
  feed) is a CURVE server with this pair.
* ``curve_client_public_key`` / ``curve_client_secret_key``: every socket of our
  own processes that *connects* to one uses this pair, and knows the server by
  ``curve_server_public_key``.
* ``authorized_client_keys``: further client public keys allowed to connect. A
  server accepts exactly these plus ``curve_client_public_key``; a ZAP handler
  (``zmq.auth.thread.ThreadAuthenticator``, one per context) refuses every other
  key, so an unknown client (or one without CURVE) completes no handshake and
  receives nothing.

Secret keys come only from the environment or ``.env``
(``TRADER_SECURITY__CURVE_SERVER_SECRET_KEY``,
``TRADER_SECURITY__CURVE_CLIENT_SECRET_KEY``); the loader refuses them in the
file, and they are masked wherever settings are shown.

A process's keys are set once with :func:`configure` (``Service.run`` does it);
a process that never called it (a command-line tool) reads them from
``load_stack()`` the first time an endpoint needs them.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator

from core.config import ConfigError, StackSettings, endpoint_is_loopback, load_stack

SERVER_PUBLIC = "security.curve_server_public_key"
SERVER_SECRET = "security.curve_server_secret_key"
CLIENT_PUBLIC = "security.curve_client_public_key"
CLIENT_SECRET = "security.curve_client_secret_key"
ZAP_DOMAIN = "trader"

log = logging.getLogger("bus.security")


class SecurityError(Exception):
    """A socket cannot be made safe: names the endpoint and the settings to set."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"{endpoint}: {reason}")


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """The CURVE keys of one process (Z85 text; empty where not configured)."""

    server_public: str = ""
    server_secret: str = ""
    client_public: str = ""
    client_secret: str = ""
    authorized_clients: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: StackSettings) -> CurveKeys:
        """The keys of the ``[security]`` section."""
        sec = settings.security
        return cls(
            server_public=sec.curve_server_public_key,
            server_secret=sec.curve_server_secret_key.get_secret_value(),
            client_public=sec.curve_client_public_key,
            client_secret=sec.curve_client_secret_key.get_secret_value(),
            authorized_clients=frozenset(sec.authorized_client_keys),
        )

    def allowed_clients(self) -> frozenset[str]:
        """Client public keys a server accepts: the allow-list and our own client key."""
        return self.authorized_clients | ({self.client_public} if self.client_public else set())

    def missing(self, *, server: bool) -> list[str]:
        """The settings a server (binding) or client (connecting) socket still needs."""
        needed = (
            [(SERVER_PUBLIC, self.server_public), (SERVER_SECRET, self.server_secret)]
            if server
            else [(SERVER_PUBLIC, self.server_public), (CLIENT_PUBLIC, self.client_public), (CLIENT_SECRET, self.client_secret)]
        )
        return [name for name, value in needed if not value]

    def mismatched(self) -> list[str]:
        """Key pairs whose public key is not the one of their secret key."""
        problems = []
        for public_name, public, secret in (
            (SERVER_PUBLIC, self.server_public, self.server_secret),
            (CLIENT_PUBLIC, self.client_public, self.client_secret),
        ):
            if public and secret and zmq.curve_public(secret.encode()).decode() != public:
                problems.append(public_name)
        return problems


def needs_curve(endpoint: str) -> bool:
    """Whether ``endpoint`` can be reached from other machines (tcp:// beyond loopback)."""
    return endpoint.startswith("tcp://") and not endpoint_is_loopback(endpoint)


def curve_problems(settings: StackSettings) -> list[tuple[str, str]]:
    """Every (key, reason) that stops the configured endpoints from being secured; empty when fine."""
    exposed = [name for name, _ in settings.endpoints if needs_curve(settings.endpoint(name))]
    if not exposed:
        return []
    keys = CurveKeys.from_settings(settings)
    why = f"endpoints beyond loopback ({', '.join('endpoints.' + n for n in exposed)}) need CURVE keys"
    problems = [(name, f"not set: {why}") for name in keys.missing(server=True) + keys.missing(server=False)]
    problems = list(dict.fromkeys(problems))
    problems += [(name, "is not the public key of its secret key") for name in keys.mismatched()]
    return problems


_process_keys: CurveKeys | None = None
_keys_lock = threading.Lock()


def configure(settings: StackSettings | None) -> CurveKeys | None:
    """Set this process's CURVE keys from its settings, before any socket is made.

    ``None`` forgets them: the next socket that needs keys reads ``load_stack()``.
    """
    global _process_keys
    keys = CurveKeys.from_settings(settings) if settings is not None else None
    with _keys_lock:
        _process_keys = keys
    return keys


def process_keys() -> CurveKeys:
    """This process's keys: those of :func:`configure`, else those of ``load_stack()``."""
    global _process_keys
    with _keys_lock:
        if _process_keys is None:
            try:
                _process_keys = CurveKeys.from_settings(load_stack())
            except ConfigError as exc:
                raise SecurityError("-", f"cannot read the CURVE keys: {exc}") from exc
        return _process_keys


def secure_server(sock: zmq.Socket, endpoint: str, keys: CurveKeys | None = None) -> None:
    """Make ``sock`` a CURVE server before it binds ``endpoint`` when that is beyond loopback."""
    if not needs_curve(endpoint):
        return
    keys = keys if keys is not None else process_keys()
    missing = keys.missing(server=True)
    if missing:
        raise SecurityError(endpoint, _missing_text(missing))
    if keys.mismatched():
        raise SecurityError(endpoint, f"{', '.join(keys.mismatched())} is not the public key of its secret key")
    _start_authenticator(sock.context, keys)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.server_secret.encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.server_public.encode())
    sock.setsockopt(zmq.CURVE_SERVER, 1)


def secure_client(sock: zmq.Socket, endpoint: str, keys: CurveKeys | None = None) -> None:
    """Give ``sock`` our client keys before it connects to ``endpoint`` when that is beyond loopback."""
    if not needs_curve(endpoint):
        return
    keys = keys if keys is not None else process_keys()
    missing = keys.missing(server=False)
    if missing:
        raise SecurityError(endpoint, _missing_text(missing))
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.client_secret.encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.client_public.encode())


def bind(sock: zmq.Socket, endpoint: str, keys: CurveKeys | None = None) -> None:
    """Bind ``sock`` to ``endpoint``, as a CURVE server when the endpoint is beyond loopback.

    On SecurityError the socket is closed, so a refused socket cannot block the context's end.
    """
    try:
        secure_server(sock, endpoint, keys)
    except SecurityError:
        sock.close(linger=0)
        raise
    sock.bind(endpoint)


def connect(sock: zmq.Socket, endpoint: str, keys: CurveKeys | None = None) -> None:
    """Connect ``sock`` to ``endpoint``, as a CURVE client when the endpoint is beyond loopback.

    On SecurityError the socket is closed, so a refused socket cannot block the context's end.
    """
    try:
        secure_client(sock, endpoint, keys)
    except SecurityError:
        sock.close(linger=0)
        raise
    sock.connect(endpoint)


class _AllowList:
    """The ZAP credentials provider: a client key is accepted only if it is listed."""

    def __init__(self, keys: frozenset[str]) -> None:
        self.keys = frozenset(k.encode() for k in keys)

    def callback(self, domain: str, client_key: bytes) -> bool:
        allowed = client_key in self.keys
        if not allowed:
            log.warning("refused a CURVE client with an unknown key %s", client_key.decode(errors="replace"))
        return allowed


_authenticators: weakref.WeakKeyDictionary[zmq.Context, ThreadAuthenticator] = weakref.WeakKeyDictionary()


def _start_authenticator(ctx: zmq.Context, keys: CurveKeys) -> None:
    """Start the context's ZAP handler once; it accepts only the allowed client keys."""
    with _keys_lock:
        if ctx in _authenticators:
            return
        auth = ThreadAuthenticator(ctx, log=logging.getLogger("bus.security.zap"))
        auth.start()
        auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_AllowList(keys.allowed_clients()))
        _authenticators[ctx] = auth


def stop_authenticator(ctx: zmq.Context) -> None:
    """Stop the context's ZAP handler, if it has one (before the context is destroyed)."""
    with _keys_lock:
        auth = _authenticators.pop(ctx, None)
    if auth is not None:
        auth.stop()


def _missing_text(missing: list[str]) -> str:
    env = ", ".join("TRADER_" + name.upper().replace(".", "__") for name in missing)
    return (
        f"a tcp:// endpoint beyond loopback needs CURVE keys; set {', '.join(missing)} "
        f"(environment: {env}; make a pair with zmq.curve_keypair())"
    )
