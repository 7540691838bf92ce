"""The seeded fault injector of the chaos run: at random moments, one fault of each kind in turn.

Kinds on the paper exchange (every one is drawn once per round, in a seeded
shuffled order; ``KINDS``):

* ``kill:<process>``: kill -9 of an agent, the order manager, the risk guard,
  the reconciler, market data, the supervisor, the bus proxy or the exchange;
* ``disconnect``: the exchange answers and publishes nothing for 1 to 30 s;
* ``delay``: every exchange reply waits 50 to 800 ms, for a few seconds;
* ``duplicate_notice``: every execution notice is published twice, for a while;
* ``notice_before_reply``: notices go out before the RPC reply (early notices);
* ``journal_full``: the order manager's next journal writes fail as on a full disk.

On kis-sim (``KIS_KINDS``) the venue's faults are KIS's, played by kis-sim
(``POST /kis-sim/fault``, ``services.kis_sim.faults``) and the venue's
processes are kis-sim and the KIS gateway:

* ``kill:kis-sim``, ``kill:kis-gateway`` (and the firm's as above);
* ``kis:drop-ws`` / ``kis:drop-ws-abort``: every WebSocket session ended, with
  a close frame or without;
* ``kis:rest-silence``: REST answers nothing for 1 to 5 s;
* ``kis:order-timeout`` / ``kis:order-drop``: the next 1 to 3 orders are
  carried out, then answered EGW00301 / their connection dropped;
* ``kis:notice-first``, ``kis:duplicate-notices``: notices before the REST
  reply, every notice twice, for a while;
* ``kis:revoke-token``: every token and approval key revoked;
* ``kis:random-500``: a fifth to a half of REST requests get EGW00002, for 2 to 5 s;
* ``kis:weekly-restart``: sessions closed, tokens revoked, REST silent 1 to 4 s.

KIS issues a token once a minute of real time: the two kinds that revoke
tokens wait ``token_interval_s`` (a little over the minute) after the last
one, else the next kind of the deck goes first. A real revocation comes hours
after the token was issued; at this fast clock a wall minute is hours of
market time, and a revocation sooner leaves the gateway without a token for
the rest of the minute (a harsher case, ``token_interval_s=0``).

Timed faults are cleared by the injector itself when their time is up. The
phantom account change (``phantom``) is not in the deck: the run injects it
once, at a moment of its choosing.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import zmq

from bus.rpc import RpcClient, RpcFailure
from core.config import StackSettings
from core.messages import Command, CommandResult
from tests.chaos.firm import Firm

KILLED_SERVICES = ("order-manager", "risk-guard", "reconciler", "market-data", "supervisor", "bus", "exchange")
KINDS = ("kill:agent", *(f"kill:{s}" for s in KILLED_SERVICES), "disconnect", "delay", "duplicate_notice",
         "notice_before_reply", "journal_full")
KIS_KILLED_SERVICES = ("order-manager", "risk-guard", "reconciler", "market-data", "supervisor", "bus", "kis-sim",
                       "kis-gateway")
KIS_FAULTS = ("drop-ws", "drop-ws-abort", "rest-silence", "order-timeout", "order-drop", "notice-first",
              "duplicate-notices", "revoke-token", "random-500", "weekly-restart")
KIS_KINDS = ("kill:agent", *(f"kill:{s}" for s in KIS_KILLED_SERVICES), *(f"kis:{f}" for f in KIS_FAULTS),
             "journal_full")
TOKEN_REVOKING = ("kis:revoke-token", "kis:weekly-restart")
TOKEN_INTERVAL_S = 65.0  # KIS issues a token once a minute (wall time); a revocation waits this long after the last


def kinds_of(venue: str) -> tuple[str, ...]:
    """The fault kinds the injector draws on a venue."""
    return KIS_KINDS if venue == "kis-sim" else KINDS


@dataclass
class FaultInjector:
    """Draws the next fault and its moment from one seeded generator; counts what it injected."""

    firm: Firm
    settings: StackSettings
    agents: list[str]
    seed: int
    gap_s: tuple[float, float] = (3.0, 8.0)
    max_disconnect_s: float = 30.0
    token_interval_s: float = TOKEN_INTERVAL_S  # kis-sim: the least wall time between two token-revoking faults
    log: Callable[[str], None] = print
    injected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.kinds = kinds_of(self.firm.venue)
        self._deck: list[str] = []
        self._next_at = 0.0
        self._clear_at: dict[str, float] = {}  # venue fault -> when to turn it off
        self._tokens_revoked_at = time.monotonic()  # the gateway's first token is issued as the run starts
        self.ctx = zmq.Context()
        self.http = httpx.Client(base_url=self.firm.kis_rest_url, timeout=3) if self.firm.kis_rest_url else None

    def close(self) -> None:
        """Close the sockets the injector used."""
        self.ctx.destroy(linger=0)
        if self.http is not None:
            self.http.close()

    def schedule_from(self, now: float) -> None:
        """The first fault comes one random gap after ``now``."""
        self._next_at = now + self.rng.uniform(*self.gap_s)

    def step(self, now: float) -> None:
        """Clear the timed faults whose time is up; inject the next fault when its moment has come."""
        for kind, at in list(self._clear_at.items()):
            if now >= at and self._clear(kind):
                del self._clear_at[kind]
        if now < self._next_at:
            return
        if not self._deck:
            self._deck = list(self.kinds)
            self.rng.shuffle(self._deck)
        kind = self._deck.pop()
        if kind in TOKEN_REVOKING and now - self._tokens_revoked_at < self.token_interval_s:
            others = [i for i, k in enumerate(self._deck) if k not in TOKEN_REVOKING]
            if not others:  # nothing else left this round: wait for the minute to pass
                self._deck.append(kind)
                self._next_at = now + self.rng.uniform(*self.gap_s)
                return
            self._deck[others[-1]], kind = kind, self._deck[others[-1]]  # later in this round
        if self._inject(kind, now):
            self.injected[kind] += 1
        else:
            self.failed[kind] += 1
            self._deck.append(kind)  # its turn again next time
        self._next_at = now + self.rng.uniform(*self.gap_s)

    def phantom(self, code: str, qty: int, cash_won: int) -> bool:
        """Change the venue's account without a fill (the exchange's or kis-sim's ``phantom`` fault); whether it
        took."""
        if self.firm.venue == "kis-sim":
            ok = self._kis_fault({"name": "phantom", "code": code, "qty": qty, "cash_won": cash_won})
        else:
            ok = self._exchange_fault({"kind": "phantom", "code": code, "qty": qty, "cash_won": cash_won})
        if ok:
            self.log(f"{self.firm.venue} phantom: {qty:+d} {code}, {cash_won:+,} won, no fill")
        return ok

    def clear_all(self) -> None:
        """Turn every venue fault off (before the final checks)."""
        if self.firm.venue == "kis-sim":
            self._kis_fault({"name": "clear"})
        else:
            self._exchange_fault({"kind": "clear"})
        self._clear_at.clear()

    def _clear(self, kind: str) -> bool:
        if kind == "delay":
            return self._exchange_fault({"kind": "delay", "ms": 0})
        if kind == "kis:random-500":
            return self._kis_fault({"name": "random-500", "fraction": 0})
        if kind.startswith("kis:"):
            return self._kis_fault({"name": kind[4:], "on": False})
        return self._exchange_fault({"kind": kind, "on": False})

    # --- the faults ------------------------------------------------------------------

    def _inject(self, kind: str, now: float) -> bool:
        rng = self.rng
        if kind == "kill:agent":
            agent = rng.choice(self.agents)
            pid = self.firm.agent_pid(agent)
            if pid is None:
                return False
            os.kill(pid, signal.SIGKILL)
            self.log(f"kill -9 agent {agent} (pid {pid})")
            return True
        if kind.startswith("kill:"):
            name = kind.split(":", 1)[1]
            pid = self.firm.kill9(name)
            if pid is not None:
                self.log(f"kill -9 {name} (pid {pid})")
            return pid is not None
        if kind == "disconnect":
            seconds = round(rng.uniform(1.0, self.max_disconnect_s), 1)
            ok = self._exchange_fault({"kind": "disconnect", "seconds": seconds})
            if ok:
                self.log(f"exchange disconnect {seconds} s")
            return ok
        if kind == "delay":
            ms = rng.randint(50, 800)
            ok = self._exchange_fault({"kind": "delay", "ms": ms})
            if ok:
                self._clear_at["delay"] = now + rng.uniform(3.0, 10.0)
                self.log(f"exchange replies delayed {ms} ms")
            return ok
        if kind in ("duplicate_notice", "notice_before_reply"):
            ok = self._exchange_fault({"kind": kind, "on": True})
            if ok:
                self._clear_at[kind] = now + rng.uniform(5.0, 15.0)
                self.log(f"exchange {kind} on")
            return ok
        if kind.startswith("kis:"):
            return self._inject_kis(kind[4:], now)
        if kind == "journal_full":
            writes = rng.randint(1, 5)
            ok = self._call("order_manager_rpc", Command(command_id=f"chaos-{uuid.uuid4().hex[:10]}", name="fault",
                                                         args={"kind": "journal_full", "writes": writes}))
            if ok:
                self.log(f"order manager journal: next {writes} write(s) fail (disk full)")
            return ok
        raise ValueError(f"unknown fault kind {kind!r}")

    def _inject_kis(self, name: str, now: float) -> bool:
        rng = self.rng
        body: dict[str, Any] = {"name": name}
        clear_after = 0.0
        if name == "drop-ws-abort":
            body = {"name": "drop-ws", "abort": True}
        elif name == "rest-silence":
            body["seconds"] = round(rng.uniform(1.0, 5.0), 1)
        elif name == "weekly-restart":
            body["seconds"] = round(rng.uniform(1.0, 4.0), 1)
        elif name in ("order-timeout", "order-drop"):
            body["count"] = rng.randint(1, 3)
        elif name in ("notice-first", "duplicate-notices"):
            clear_after = rng.uniform(5.0, 15.0)
        elif name == "random-500":
            body["fraction"] = round(rng.uniform(0.2, 0.5), 2)
            clear_after = rng.uniform(2.0, 5.0)
        ok = self._kis_fault(body)
        if ok:
            if clear_after:
                self._clear_at[f"kis:{name}"] = now + clear_after
            if name in ("revoke-token", "weekly-restart"):
                self._tokens_revoked_at = now
            shown = ", ".join(f"{k} {v}" for k, v in body.items() if k != "name")
            self.log(f"kis-sim {name}" + (f" ({shown})" if shown else "") +
                     (f" for {clear_after:.1f} s" if clear_after else ""))
        return ok

    def _kis_fault(self, body: dict[str, Any]) -> bool:
        """A fault at kis-sim's control endpoint (plain HTTP: it works while the gateway is down)."""
        if self.http is None:
            return False
        try:
            r = self.http.post("/kis-sim/fault", json=body)
        except httpx.HTTPError:
            return False
        if r.status_code != 200:
            self.log(f"kis-sim refused the fault {body}: {r.text[:200]}")
        return r.status_code == 200

    def _exchange_fault(self, args: dict[str, Any]) -> bool:
        return self._call("exchange_rpc", Command(command_id=f"chaos-{uuid.uuid4().hex[:10]}", name="fault", args=args))

    def _call(self, endpoint: str, cmd: Command) -> bool:
        client = RpcClient(self.ctx, self.settings.endpoint(endpoint), timeout_ms=1500, retries=0, sender="chaos")
        try:
            reply = client.call(cmd)
        except RpcFailure:
            return False
        finally:
            client.close()
        return isinstance(reply, CommandResult) and reply.ok
