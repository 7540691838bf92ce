"""The risk guard's logic: its own view of the firm, the trading state, and one decision per order (pure).

The guard trusts nothing it has not seen itself: positions, open orders and
PnL come from the order manager's published events and fills
(``oms.event.*``) and from market data (``md.*``), never from another
process's memory. Time is passed in; nothing here reads a clock or a socket.

Consistency. The guard starts HALTED and stays so until its view is
consistent, which means both of:

* the journal sync: the order manager's ``journal_state`` (the ledger's
  openings, and the orders, fills and adjustments since) applied over the
  roster's allocations (for agents the ledger has no book for yet); bus
  events that arrived before the sync are buffered and replayed after it, and
  a fill is applied once by its execution id (the zguide Clone pattern);
* the market sync: a market-data snapshot with last and base prices and the
  session the market is in: from the last ``md.session`` event, or, until one
  has been seen, from the market's clock as the ticks carry it
  (``krx.session_of`` of the latest tick's time).

Then the state is the operator's: ACTIVE, unless a halt or reduce was
persisted (the shell reads it back from the journal at start).

Trading state. An operator command (halt / reduce / resume) sets it; the
account's daily loss (``core.risk.evaluate_loss_limits``, run after every
fill and price update) only ever tightens it. Each change is a ``StateChange``
the shell journals and publishes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from core import krx, risk
from core.instruments import Instrument
from core.messages import DayReference, Fill, LedgerAdjustment, Message, OrderEvent, SessionEvent, Tick
from core.ledger import Book, LedgerError
from core.risk import Decision, Reason, RiskLimits, RiskView, TradingState
from core.risk_view import Position

OPERATOR_COMMANDS = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING, "resume": TradingState.ACTIVE}
NOT_CONSISTENT_TEXT = "the risk guard has no consistent view yet"


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change of the trading state: to what, why, and who asked for it."""

    state: TradingState
    reason: str
    who: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class AgentAllocation:
    """What the roster gives an agent: cash and a starting holding {code: (qty, avg_price)}."""

    agent_id: str
    cash_won: int
    positions: Mapping[str, tuple[int, int]]


class RiskGuard:
    """One risk guard: the view, the limits, the trading state and the sync status."""

    def __init__(
        self,
        limits: RiskLimits,
        instruments: Mapping[str, Instrument],
        allocations: Iterable[AgentAllocation],
        persisted: StateChange | None = None,
    ) -> None:
        self.limits = limits
        self.instruments = instruments
        self.allocations = {a.agent_id: a for a in allocations}
        self.view = RiskView(instruments)
        for a in self.allocations.values():
            self.view.add_agent(a.agent_id, a.cash_won, a.positions)
        self.operator = persisted or StateChange(TradingState.ACTIVE, "", "", 0)
        self.journal_synced = False
        self.session = ""
        self.trading_date = ""
        self.over_limit_agents: set[str] = set()
        self.session_from_events = False
        self.references: dict[str, DayReference] = {}  # the venue's base price and limits per code (md.ref.*)
        self._clock_checked_until = 0
        self.sync_problems: list[str] = []
        self.adjustments_seen: set[str] = set()
        self._buffered: list[Message] = []

    # --- state -------------------------------------------------------------

    @property
    def consistent(self) -> bool:
        """Whether the guard has both its journal sync and the market's session."""
        return self.journal_synced and bool(self.session)

    @property
    def state(self) -> TradingState:
        """The state orders are checked against: HALTED until consistent, then the operator's."""
        return self.operator.state if self.consistent else TradingState.HALTED

    @property
    def reason(self) -> str:
        if self.consistent:
            return self.operator.reason
        missing = [what for what, ok in (("journal sync", self.journal_synced), ("market session", bool(self.session))) if not ok]
        return f"starting: waiting for {' and '.join(missing)}"

    def command(self, name: str, who: str, why: str, now_ns: int) -> StateChange:
        """An operator's halt / reduce / resume; returns the change to journal (KeyError for another name)."""
        target = OPERATOR_COMMANDS[name]
        self.operator = StateChange(target, why or name, who or "operator", now_ns)
        if target is TradingState.ACTIVE:
            self.over_limit_agents.clear()
        return self.operator

    # --- decisions ---------------------------------------------------------

    def decide(self, order: Any, now_ns: int) -> Decision:
        """Approve or refuse a new order; an approval is counted in the view at once."""
        if not self.consistent and order.client_order_id not in self.view.open_orders:
            return Decision(False, Reason.TRADING_STATE_HALTED.value, f"{NOT_CONSISTENT_TEXT} ({self.reason})")
        decision = risk.check_order(order, self.view, self.limits, self.state, self.session, self.instruments, now_ns)
        if decision.approved:
            self.view.on_approved(order, now_ns)
        return decision

    # --- what the guard sees -------------------------------------------------

    def on_message(self, msg: Message, now_ns: int) -> StateChange | None:
        """Follow one bus message; returns a state change when a loss limit was breached."""
        if isinstance(msg, (OrderEvent, Fill, LedgerAdjustment)) and not self.journal_synced:
            self._buffered.append(msg)
            return None
        if isinstance(msg, OrderEvent):
            self.view.on_order_event(msg, now_ns)
            return None
        if isinstance(msg, Fill):
            self.view.on_fill(msg, now_ns)
            return self._evaluate(now_ns)
        if isinstance(msg, LedgerAdjustment):
            self._adjust(msg.adjustment_id, msg.agent_id, msg.code, msg.qty, msg.cash_won)
            return None
        if isinstance(msg, Tick):
            self.view.on_price(msg.code, msg.price, now_ns)
            self.on_market_time(msg.ts_ns, now_ns)
            return self._evaluate(now_ns)
        if isinstance(msg, SessionEvent):
            self.session_from_events = True
            self.on_session(msg.phase.value, msg.trading_date, now_ns)
        if isinstance(msg, DayReference):
            self.references[msg.code] = msg
            if not self.trading_date or msg.trading_date == self.trading_date:
                self.view.base_prices[msg.code] = msg.base_price
        return None

    def on_market_time(self, market_ts_ns: int, now_ns: int) -> None:
        """The market's clock (a tick's time): gives the session until a session event has been seen."""
        if self.session_from_events or market_ts_ns < self._clock_checked_until:
            return
        self._clock_checked_until = market_ts_ns + 1_000_000_000
        self.on_session(krx.session_of(market_ts_ns).value, krx.kst_date(market_ts_ns).strftime("%Y%m%d"), now_ns)

    def on_session(self, phase: str, trading_date: str, now_ns: int) -> None:
        """A session change; a new trading date rolls the day (last prices become base prices)."""
        if self.trading_date and trading_date and trading_date != self.trading_date:
            self.view.roll_day(now_ns)
            self.over_limit_agents.clear()
            # the venue's base prices of the new day, where it told them before the day began here
            self.view.base_prices.update({c: r.base_price for c, r in self.references.items()
                                          if r.trading_date == trading_date})
        if trading_date:
            self.trading_date = trading_date
        self.session = phase

    def load_market(self, snapshot: Mapping[str, Any], now_ns: int) -> bool:
        """Apply a market-data snapshot (session, last and base prices); True once the session is known."""
        codes = snapshot.get("codes")
        if isinstance(codes, Mapping):
            for code, row in codes.items():
                if not isinstance(row, Mapping):
                    continue
                base, last = row.get("base_price"), row.get("last")
                if type(base) is int and base > 0:
                    self.view.base_prices[code] = base
                if type(last) is int and last > 0:
                    self.view.on_price(code, last, now_ns)
        session = snapshot.get("session")
        if isinstance(session, Mapping) and isinstance(session.get("phase"), str):
            self.session_from_events = True
            self.on_session(session["phase"], str(session.get("trading_date") or ""), now_ns)
        elif isinstance(codes, Mapping):
            times = [row["tick"].get("ts_ns") for row in codes.values()
                     if isinstance(row, Mapping) and isinstance(row.get("tick"), Mapping)]
            times = [t for t in times if type(t) is int and t > 0]
            if times:
                self.on_market_time(max(times), now_ns)
        return bool(self.session)

    def load_journal(self, state: Mapping[str, Any], now_ns: int) -> list[str]:
        """Apply the order manager's ``journal_state`` then the buffered events; returns the records it skipped.

        Holdings and cash start from the ledger's openings (``openings``: the
        book of record at the start of the ledger date, every day before
        included), then the fills and adjustments since; open orders come from
        the orders since. An agent the ledger has no book for yet starts from
        its roster allocation.
        """
        problems: list[str] = []
        for agent_id, raw in (state.get("openings") or {}).items():
            if agent_id.startswith("@"):
                continue  # the account's own book: the guard adds up its agents
            try:
                opening = Book.from_plain(raw, f"opening of {agent_id}")
            except LedgerError as exc:
                problems.append(str(exc))
                continue
            self.view.add_agent(agent_id, opening.cash_won,
                                {c: (h.qty, round(h.cost_won / h.qty)) for c, h in opening.positions.items() if h.qty > 0})
        for raw in state.get("fills") or []:
            try:
                self.view.on_fill(Fill.model_validate(raw), now_ns)
            except ValidationError as exc:
                problems.append(f"fill {raw.get('exec_id', '?') if isinstance(raw, Mapping) else raw!r}: {exc.error_count()} error(s)")
        for raw in state.get("orders") or []:
            try:
                self.view.on_order_event(OrderEvent.model_validate(raw), now_ns)
            except (ValidationError, ValueError) as exc:
                problems.append(f"order {raw.get('client_order_id', '?') if isinstance(raw, Mapping) else raw!r}: {exc}")
        for raw in state.get("adjustments") or []:
            try:
                self._adjust(str(raw["adjustment_id"]), str(raw["agent_id"]), str(raw["code"]), int(raw["qty"]),
                             int(raw["cash_won"]))
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"adjustment {raw!r}: {exc!r}")
        self.journal_synced = True
        buffered, self._buffered = self._buffered, []
        for msg in buffered:
            self.on_message(msg, now_ns)
        self.sync_problems = problems
        return problems

    def _adjust(self, adjustment_id: str, agent_id: str, code: str, qty: int, cash_won: int) -> None:
        """A ledger adjustment moves the agent's shares and cash (once per adjustment id)."""
        if adjustment_id in self.adjustments_seen:
            return
        self.adjustments_seen.add(adjustment_id)
        book = self.view.agents.get(agent_id)
        if book is None:
            return
        pos = book.positions.get(code)
        if pos is None:
            pos = book.positions[code] = Position()
        pos.qty = max(0, pos.qty + qty)
        if pos.qty == 0:
            pos.avg_price = 0
        book.cash_won += cash_won

    # --- loss limits -------------------------------------------------------

    def _evaluate(self, now_ns: int) -> StateChange | None:
        target = risk.evaluate_loss_limits(self.view, self.limits, self.operator.state, now_ns)
        if target is None:
            return None
        loss = -self.view.account_day_pnl_won()
        why = f"account day loss {loss:,} won reached the limit {self.limits.loss.daily_loss_limit_account_won:,} won"
        self.operator = StateChange(target, why, "loss-limit", now_ns)
        return self.operator

    def newly_over_limit(self) -> list[str]:
        """Agents that reached their own daily loss limit since the last call (for an alert each)."""
        over = set(risk.agents_over_loss_limit(self.view, self.limits))
        new = sorted(over - self.over_limit_agents)
        self.over_limit_agents = over
        return new

    # --- reporting ---------------------------------------------------------

    def usage(self) -> dict[str, dict[str, Any]]:
        """Per agent: cash, pending buys, open orders, holdings (shares and value) and day PnL against its limits."""
        out: dict[str, dict[str, Any]] = {}
        pending_buys: dict[str, dict[str, int]] = {}
        for (agent_id, code, side), qty in self.view.pending_by_agent.items():
            if side == "buy":
                pending_buys.setdefault(agent_id, {})[code] = qty
        for agent_id, book in self.view.agents.items():
            lim = self.limits.for_agent(agent_id)
            out[agent_id] = {
                "cash_won": book.cash_won,
                "pending_buy_won": self.view.pending_buy_won(agent_id),
                "pending_buy_qty": pending_buys.get(agent_id, {}),  # code -> shares working to buy
                # holdings at the mark price: with the pending buys, what the position notional limit is checked on
                "held_value_won": sum(p.qty * self.view.mark_price(c, p) for c, p in book.positions.items()),
                "open_orders": len(book.open_orders),
                "max_open_orders": lim.max_open_orders,
                "positions": {c: p.qty for c, p in book.positions.items() if p.qty},
                "day_pnl_won": self.view.day_pnl_won(agent_id),
                "daily_loss_limit_won": lim.daily_loss_limit_won,
                "over_loss_limit": agent_id in self.over_limit_agents,
            }
        return out

    def status(self) -> dict[str, Any]:
        """State, why, who, sync status, limits and usage (the ``status`` command)."""
        return {
            "state": self.state.value,
            "reason": self.reason,
            "who": self.operator.who if self.consistent else "startup",
            "since_ns": self.operator.ts_ns,
            # the operator's (or the loss limit's) last word, also while the start-up HALTED is in force
            "operator": {"state": self.operator.state.value, "reason": self.operator.reason, "who": self.operator.who,
                         "ts_ns": self.operator.ts_ns},
            "consistent": self.consistent,
            "journal_synced": self.journal_synced,
            "session": self.session,
            "trading_date": self.trading_date,
            "account_day_pnl_won": self.view.account_day_pnl_won(),
            "sync_problems": list(self.sync_problems),
            "limits": self.limits.model_dump(mode="json"),
            "usage": self.usage(),
        }
