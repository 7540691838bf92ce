"""Faults the local KIS server plays on command, to rehearse what a real gateway does on a bad day.

Each fault, as sent to the control endpoint ``POST /kis-sim/fault`` (JSON) and
as ``trader kis-sim fault NAME [--seconds S] [--count N] [--fraction F]``:

* ``drop-ws``: end every WebSocket session now (``{"abort": true}``: no close frame);
* ``rest-silence``: answer no REST request for ``seconds`` (requests in that
  window are held, then their connections dropped unprocessed);
* ``order-timeout``: the next ``count`` orders are carried out, then answered
  HTTP 500 EGW00301 (the order's fate unknown to the client);
* ``order-drop``: the next ``count`` orders are carried out, then the HTTP
  connection is dropped without an answer;
* ``notice-first``: notices of an order go out before its REST reply (on /
  off with ``{"on": false}``);
* ``revoke-token``: every live token and approval key is revoked now;
* ``random-500``: a ``fraction`` of REST requests get HTTP 500 EGW00002 (0 stops it);
* ``duplicate-notices``: every notice is sent twice (on / off);
* ``weekly-restart``: every session closed, every token revoked, and REST
  silent for ``seconds`` (default 0), as KIS's weekly maintenance;
* ``phantom``: ``{"name": "phantom", "code": "000660", "qty": 3, "cash_won": -12345}``
  changes the account's holding and cash without a fill, order or notice (a
  change only a reconciliation can find; saved before the reply; it stays
  after ``clear``, being no fault in force);
* ``clear``: back to normal.

Pure: monotonic time is passed in; the service carries out the immediate ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from services.exchange.faults import FaultError as ExchangeFaultError
from services.exchange.faults import Phantom, phantom_from_args

NAMES = ("drop-ws", "rest-silence", "order-timeout", "order-drop", "notice-first", "revoke-token", "random-500",
         "duplicate-notices", "weekly-restart", "phantom", "clear")


class FaultError(ValueError):
    """A fault request that names no fault or carries bad arguments."""


@dataclass
class Faults:
    """The faults in force."""

    seed: int = 0
    silent_until_s: float = 0.0
    order_timeouts: int = 0
    order_drops: int = 0
    notice_first: bool = False
    duplicate_notices: bool = False
    random_500: float = 0.0
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def apply(self, request: dict[str, Any], now_s: float) -> dict[str, Any]:
        """Take a fault request; returns what the service must do now ("drop_ws", "revoke", "phantom") and the
        state (a phantom's change under "phantom")."""
        name = request.get("name")
        if name not in NAMES:
            raise FaultError(f"unknown fault {name!r}; one of {', '.join(NAMES)}")
        if name == "phantom":
            return {"actions": ["phantom"], "phantom": phantom_from(request), "faults": self.describe(now_s)}
        seconds = _number(request, "seconds", 0.0)
        count = int(_number(request, "count", 1))
        on = request.get("on", True)
        if not isinstance(on, bool):
            raise FaultError("'on' must be true or false")
        actions: list[str] = []
        if name == "drop-ws":
            actions.append("drop_ws_abort" if request.get("abort") else "drop_ws")
        elif name == "rest-silence":
            self.silent_until_s = now_s + seconds
        elif name == "order-timeout":
            self.order_timeouts = count
        elif name == "order-drop":
            self.order_drops = count
        elif name == "notice-first":
            self.notice_first = on
        elif name == "duplicate-notices":
            self.duplicate_notices = on
        elif name == "revoke-token":
            actions.append("revoke")
        elif name == "random-500":
            fraction = _number(request, "fraction", 0.5)
            if not 0 <= fraction <= 1:
                raise FaultError("fraction must be between 0 and 1")
            self.random_500 = fraction
        elif name == "weekly-restart":
            actions += ["drop_ws", "revoke"]
            self.silent_until_s = now_s + seconds
        else:
            self.silent_until_s, self.order_timeouts, self.order_drops = 0.0, 0, 0
            self.notice_first = self.duplicate_notices = False
            self.random_500 = 0.0
        return {"actions": actions, "faults": self.describe(now_s)}

    def silent(self, now_s: float) -> bool:
        return now_s < self.silent_until_s

    def next_500(self) -> bool:
        return self.random_500 > 0 and self._rng.random() < self.random_500

    def take_order_fault(self) -> str | None:
        """"timeout" or "drop" if the order being answered is to suffer one."""
        if self.order_timeouts:
            self.order_timeouts -= 1
            return "timeout"
        if self.order_drops:
            self.order_drops -= 1
            return "drop"
        return None

    def describe(self, now_s: float) -> dict[str, Any]:
        return {"silent_for_s": round(max(0.0, self.silent_until_s - now_s), 3), "order_timeouts": self.order_timeouts,
                "order_drops": self.order_drops, "notice_first": self.notice_first,
                "duplicate_notices": self.duplicate_notices, "random_500": self.random_500}


def phantom_from(request: dict[str, Any]) -> Phantom:
    """The change a ``phantom`` request asks for (the paper exchange's phantom); FaultError names what is wrong."""
    try:
        return phantom_from_args({k: v for k, v in request.items() if k != "name"})
    except ExchangeFaultError as exc:
        raise FaultError(str(exc)) from exc


def _number(request: dict[str, Any], key: str, default: float) -> float:
    value = request.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise FaultError(f"{key!r} must be a number >= 0, not {value!r}")
    return float(value)
