"""The dashboard answers only requests addressed to it: the Host header must name the dashboard's own address.

A page of another site can make the browser send requests to 127.0.0.1 through
DNS rebinding (its own name, made to resolve to this machine): the browser then
treats the dashboard's answers as that site's and lets its script read them. The
one thing such a request cannot hide is its Host header, which carries the
other site's name. So the dashboard serves only a Host it knows:

- ``dashboard.host:dashboard.port`` as configured (an IPv6 address in brackets);
- ``127.0.0.1``, ``localhost`` and ``[::1]`` with that port when it listens on
  loopback (or on every interface, which includes loopback);
- every name of ``dashboard.allowed_hosts``: ``name:port`` as written, a bare
  ``name`` with the dashboard's port or with none (behind a proxy on port 80/443).

A port of 80 may be left out of the Host header, as browsers do. Any other Host,
or none, gets 421 Misdirected Request with a short plain-text reason, before the
request reaches a page, the API or the event stream; a WebSocket handshake is
closed (policy violation). The control API's token check stays as it is, behind this one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from core.config import LOOPBACK_HOSTS, StackSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MISDIRECTED = 421
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
EVERY_INTERFACE = {"0.0.0.0", "::", "[::]", ""}
DEFAULT_HTTP_PORT = 80
POLICY_VIOLATION = 1008  # WebSocket close code


def _bracketed(host: str) -> str:
    """An IPv6 address as a Host header writes it (``::1`` -> ``[::1]``); names and IPv4 as they are."""
    host = host.strip().lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _split(entry: str) -> tuple[str, str]:
    """``name:port`` -> (name, port); ``name`` -> (name, ""); ``[::1]:8000`` -> ("[::1]", "8000")."""
    if entry.startswith("["):
        name, _, rest = entry.partition("]")
        return name + "]", rest.removeprefix(":")
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, port
    return _bracketed(entry), ""


def allowed_hosts(settings: StackSettings) -> frozenset[str]:
    """Every Host header value the dashboard of ``settings`` answers."""
    host, port = settings.dashboard.host.strip().lower(), str(settings.dashboard.port)
    names = {_bracketed(host)} - {_bracketed(h) for h in EVERY_INTERFACE}
    if host in LOOPBACK_HOSTS or host in EVERY_INTERFACE:
        names.update(LOOPBACK_NAMES)
    allowed = {f"{name}:{port}" for name in names}
    if port == str(DEFAULT_HTTP_PORT):
        allowed.update(names)
    for entry in settings.dashboard.allowed_hosts:
        name, entry_port = _split(entry.strip().lower())
        if entry_port:
            allowed.add(f"{name}:{entry_port}")
        else:
            allowed.update({name, f"{name}:{port}"})
    return frozenset(allowed)


class HostCheck:
    """ASGI middleware: HTTP and WebSocket requests whose Host is not in ``allowed`` are refused."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(h.lower() for h in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = ""
        for key, value in scope.get("headers") or ():
            if key == b"host":
                host = value.decode("latin-1").strip().lower()
                break
        if host in self.allowed:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "unknown Host"})
            return
        reason = (f"misdirected request: Host {host[:100]!r} is not this dashboard's address; "
                  "add the name to dashboard.allowed_hosts to serve it\n" if host else
                  "misdirected request: no Host header\n").encode()
        await send({"type": "http.response.start", "status": MISDIRECTED,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(reason)).encode()),
                                (b"x-content-type-options", b"nosniff")]})
        await send({"type": "http.response.body", "body": reason})
