"""Which venue the stack trades on, as the dashboard shows it: the process grid's venue rows and the LIVE banner.

``broker.kind`` picks the venue (DESIGN 3b): the paper exchange, or the KIS
gateway, with the local kis-sim when rehearsing. The configured venue names
the rows of the process grid; the gateway's heartbeat (``info``: env, live,
ready, stream state, streamed and polled code counts, the masked account)
and its ``status`` answer (the codes themselves, orders of unknown fate,
reduce-only codes) fill in what it is doing. Pure: time and inputs passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GATEWAY = "kis-gateway"
KIS_SIM = "kis-sim"
EXCHANGE = "exchange"
# Processes the stack runs that publish no heartbeat on the bus: the supervisor's list says whether they run.
NO_BUS_HEARTBEAT = frozenset({KIS_SIM})
# The services of every stack, in the order the grid shows them; the venue's processes go after the bus.
FIRM_SERVICES = ("market-data", "order-manager", "risk-guard", "reconciler", "supervisor", "dashboard")


@dataclass(frozen=True, slots=True)
class VenueConfig:
    """The venue the stack was configured with (``broker.kind``, ``broker.kis.env`` and ``server``)."""

    kind: str = "paper"
    env: str = "demo"
    server: str = KIS_SIM

    @property
    def processes(self) -> tuple[str, ...]:
        """The venue's processes, as ``trader up`` starts them."""
        if self.kind != "kis":
            return (EXCHANGE,)
        return (GATEWAY, KIS_SIM) if self.server == KIS_SIM else (GATEWAY,)


def service_names(venue: VenueConfig) -> tuple[str, ...]:
    """Every service process of a stack on ``venue``, as their heartbeats and pid locks name them."""
    return ("bus", *venue.processes, *FIRM_SERVICES)


def venue_view(venue: VenueConfig, gateway_info: Mapping[str, Any] | None,
               status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The venue as the pages show it: a label, the LIVE banner (or ''), and the gateway's stream.

    ``gateway_info`` is the gateway's last heartbeat ``info`` (None before
    one was seen), ``status`` its last ``status`` answer. Until the gateway
    reports, the configured env decides whether the banner shows: a stack
    configured for real money says so before it trades, not after.
    """
    if venue.kind != "kis":
        return {"kind": "paper", "process": EXCHANGE, "label": "paper exchange", "live": False, "banner": ""}
    info = dict(gateway_info or {})
    heard = gateway_info is not None
    env = str(info.get("env") or venue.env)
    live = bool(info.get("live")) if heard else venue.env == "real"
    account = str(info.get("account") or "")
    stream = status.get("stream") if isinstance(status, Mapping) else None
    stream = stream if isinstance(stream, Mapping) else {}
    streamed_codes = [str(c) for c in stream.get("streamed") or []]
    polled_codes = [str(c) for c in stream.get("polled") or []]
    via = " via kis-sim" if venue.server == KIS_SIM else ""
    label = f"KIS {env}{via}"
    banner = ""
    if live:
        whose = f"account {account}" if account else "the KIS gateway has not reported its account yet"
        if venue.server == KIS_SIM:
            banner = f"LIVE settings (env real) against the local kis-sim, no real money — {whose}"
        else:
            banner = f"LIVE — real money — {whose}"
    return {
        "kind": "kis",
        "process": GATEWAY,
        "label": label,
        "env": env,
        "server": venue.server,
        "live": live,
        "banner": banner,
        "account": account,
        "heard": heard,
        "ready": bool(info.get("ready")) if heard else False,
        "stream": str(info.get("stream") or ("not seen" if not heard else "")),
        "streamed": _count(info.get("streamed"), streamed_codes),
        "polled": _count(info.get("polled"), polled_codes),
        "streamed_codes": streamed_codes,
        "polled_codes": polled_codes,
        "orders_in_doubt": [str(c) for c in (status or {}).get("orders_in_doubt") or []],
        "reduce_only_codes": [str(c) for c in (status or {}).get("reduce_only_codes") or []],
    }


def gateway_detail(view: Mapping[str, Any]) -> str:
    """The gateway's line in the process grid: stream state, whether orders go out, streamed and polled codes."""
    if view.get("kind") != "kis" or not view.get("heard"):
        return ""
    orders = "orders go out" if view.get("ready") else "orders refused until caught up"
    return f"stream {view['stream']} · {orders} · {view['streamed']} streamed, {view['polled']} polled"


def _count(reported: Any, codes: list[str]) -> int:
    return reported if isinstance(reported, int) and not isinstance(reported, bool) else len(codes)
