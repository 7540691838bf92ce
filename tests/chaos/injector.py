"""The seeded fault injector of the chaos run: at random moments, one fault of each kind in turn.

Kinds (every one is drawn once per round, in a seeded shuffled order):

* ``kill:<process>``: kill -9 of an agent, the order manager, the risk guard,
  the reconciler, market data, the supervisor, the bus proxy or the exchange;
* ``disconnect``: the exchange answers and publishes nothing for 1 to 30 s;
* ``delay``: every exchange reply waits 50 to 800 ms, for a few seconds;
* ``duplicate_notice``: every execution notice is published twice, for a while;
* ``notice_before_reply``: notices go out before the RPC reply (early notices);
* ``journal_full``: the order manager's next journal writes fail as on a full disk.

Timed faults are cleared by the injector itself when their time is up. The
phantom account change (``phantom``) is not in the deck: the run injects it
once, at a moment of its choosing.
"""

from __future__ import annotations

import os
import random
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from bus.rpc import RpcClient, RpcFailure
from core.config import StackSettings
from core.messages import Command, CommandResult
from tests.chaos.firm import Firm

KILLED_SERVICES = ("order-manager", "risk-guard", "reconciler", "market-data", "supervisor", "bus", "exchange")
KINDS = ("kill:agent", *(f"kill:{s}" for s in KILLED_SERVICES), "disconnect", "delay", "duplicate_notice",
         "notice_before_reply", "journal_full")


@dataclass
class FaultInjector:
    """Draws the next fault and its moment from one seeded generator; counts what it injected."""

    firm: Firm
    settings: StackSettings
    agents: list[str]
    seed: int
    gap_s: tuple[float, float] = (3.0, 8.0)
    max_disconnect_s: float = 30.0
    log: Callable[[str], None] = print
    injected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._deck: list[str] = []
        self._next_at = 0.0
        self._clear_at: dict[str, float] = {}  # exchange fault -> when to turn it off
        self.ctx = zmq.Context()

    def close(self) -> None:
        """Close the sockets the injector used."""
        self.ctx.destroy(linger=0)

    def schedule_from(self, now: float) -> None:
        """The first fault comes one random gap after ``now``."""
        self._next_at = now + self.rng.uniform(*self.gap_s)

    def step(self, now: float) -> None:
        """Clear the timed faults whose time is up; inject the next fault when its moment has come."""
        for kind, at in list(self._clear_at.items()):
            if now >= at and self._exchange_fault({"kind": kind, "on": False} if kind != "delay" else
                                                  {"kind": "delay", "ms": 0}):
                del self._clear_at[kind]
        if now < self._next_at:
            return
        if not self._deck:
            self._deck = list(KINDS)
            self.rng.shuffle(self._deck)
        kind = self._deck.pop()
        if self._inject(kind, now):
            self.injected[kind] += 1
        else:
            self.failed[kind] += 1
            self._deck.append(kind)  # its turn again next time
        self._next_at = now + self.rng.uniform(*self.gap_s)

    def phantom(self, code: str, qty: int, cash_won: int) -> bool:
        """Change the exchange's account without a fill (the exchange's ``phantom`` fault); whether it took."""
        ok = self._exchange_fault({"kind": "phantom", "code": code, "qty": qty, "cash_won": cash_won})
        if ok:
            self.log(f"exchange phantom: {qty:+d} {code}, {cash_won:+,} won, no fill")
        return ok

    def clear_all(self) -> None:
        """Turn every exchange fault off (before the final checks)."""
        self._exchange_fault({"kind": "clear"})
        self._clear_at.clear()

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
        if kind == "journal_full":
            writes = rng.randint(1, 5)
            ok = self._call("order_manager_rpc", Command(command_id=f"chaos-{uuid.uuid4().hex[:10]}", name="fault",
                                                         args={"kind": "journal_full", "writes": writes}))
            if ok:
                self.log(f"order manager journal: next {writes} write(s) fail (disk full)")
            return ok
        raise ValueError(f"unknown fault kind {kind!r}")

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
