"""The matching engine's state as plain JSON-ready data, and the engine rebuilt from it.

``EngineState`` is the persistence half of ``core.matching.MatchingEngine``
(which inherits it): what a store writes (``to_state``, ``header_state``,
``take_changes`` for increments) and reads back (``from_state``). Orders and
fills are rows; accounts, markets and the order books' state are small and
kept whole.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from core import book as bk
from core.costs import DEFAULT_COSTS, CostModel
from core.instruments import Instrument
from core.krx import Session, limit_prices
from core.matching_records import (
    Account,
    EngineChanges,
    Execution,
    Holding,
    MatchingParams,
    Order,
)
from core.messages import OrderStatus, OrderType, Side

if TYPE_CHECKING:
    from core.matching import MatchingEngine

STATE_VERSION = 1


class EngineState:
    """Saving and restoring a matching engine (mixed into ``MatchingEngine``)."""

    def take_changes(self: MatchingEngine) -> EngineChanges:
        """The orders and fills changed since the last call (or since start), and forget them."""
        changes = EngineChanges(
            new_day=self._new_day, orders=list(self._changed_orders.values()),
            fills=self._fills[self._fills_reported:],
        )
        self._changed_orders.clear()
        self._fills_reported = len(self._fills)
        self._new_day = False
        return changes

    @staticmethod
    def order_state(order: Order) -> dict[str, Any]:
        """One order as plain JSON-ready data (the rows of ``to_state()["orders"]``)."""
        return {**asdict(order), "side": order.side.value, "order_type": order.order_type.value,
                "status": order.status.value}

    @staticmethod
    def fill_state(fill: Execution) -> dict[str, Any]:
        """One execution as plain JSON-ready data (the rows of ``to_state()["fills"]``)."""
        return {**asdict(fill), "side": fill.side.value}

    def to_state(self: MatchingEngine) -> dict[str, Any]:
        """Everything needed to resume, as plain JSON-ready data (instruments and costs excluded)."""
        return {
            **self.header_state(),
            "orders": [self.order_state(o) for o in self._orders.values()],
            "fills": [self.fill_state(f) for f in self._fills],
        }

    def header_state(self: MatchingEngine, *, markets: bool = True) -> dict[str, Any]:
        """``to_state()`` without its orders and fills: session, counters, markets, books and accounts.

        ``markets=False`` leaves the markets out (the key is absent); the
        books' state (with the book on) is always there.
        """
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "params": dict(self._params_plain),
            "session": self.session.value,
            "trading_date": self.trading_date.isoformat() if self.trading_date else None,
            "order_seq": self._order_seq,
            "exec_seq": self._exec_seq,
            "accounts": {
                a.account_id: {
                    "cash_won": a.cash_won, "fees_won": a.fees_won, "taxes_won": a.taxes_won,
                    "realized_pnl_won": a.realized_pnl_won,
                    "holdings": {c: [h.qty, h.book_cost_won] for c, h in a.holdings.items()},
                }
                for a in self._accounts.values()
            },
        }
        if markets:
            state["markets"] = {
                code: {
                    "base_price": m.base_price, "last_price": m.last_price, "recent_volume": m.recent_volume,
                    "volume_ts_ns": m.volume_ts_ns, "bid_taken": m.bid_taken, "ask_taken": m.ask_taken,
                }
                for code, m in self._markets.items()
            }
        if self._book:  # small, and kept whole even when the markets are left out
            state["books"] = {
                code: {name: getattr(m, name) for name in bk.STATE_FIELDS} for code, m in self._markets.items()
            }
        return state

    @classmethod
    def from_state(
        cls: type[MatchingEngine], state: Mapping[str, Any], instruments: Mapping[str, Instrument], *,
        costs: CostModel = DEFAULT_COSTS,
    ) -> MatchingEngine:
        """Rebuild an engine from ``to_state()`` output; ValueError names what is wrong."""
        try:
            if state["version"] != STATE_VERSION:
                raise ValueError(f"state version {state['version']!r}, expected {STATE_VERSION}")
            engine = cls(instruments, costs=costs, params=MatchingParams(**state["params"]))
            engine.session = Session(state["session"])
            engine.trading_date = dt.date.fromisoformat(state["trading_date"]) if state["trading_date"] else None
            engine._order_seq = int(state["order_seq"])
            engine._exec_seq = int(state["exec_seq"])
            if engine.trading_date is not None:
                engine._day_hours(engine.trading_date)
            for code, m in state["markets"].items():
                lower, upper = limit_prices(m["base_price"])
                market = bk.new_market(code, m["base_price"], lower, upper,
                                       getattr(instruments.get(code), "kospi200", False), engine.params)
                saved_book = state.get("books", {}).get(code, {})
                for name, value in (*m.items(), *saved_book.items()):
                    setattr(market, name, value)
                if "bar_close" not in saved_book:  # saved before bar ends were kept: the last print stands in
                    market.bar_close, market.bar_up = market.last_price, market.up
                bk.set_single_price(market, market.static_ref, engine.params)
                engine._markets[code] = market
            for account_id, a in state["accounts"].items():
                engine._accounts[account_id] = Account(
                    account_id=account_id, cash_won=a["cash_won"], fees_won=a["fees_won"],
                    taxes_won=a["taxes_won"], realized_pnl_won=a["realized_pnl_won"],
                    holdings={c: Holding(qty=q, book_cost_won=b) for c, (q, b) in a["holdings"].items()},
                )
            for raw in state["orders"]:
                order = Order(**{
                    **raw, "side": Side(raw["side"]), "order_type": OrderType(raw["order_type"]),
                    "status": OrderStatus(raw["status"]),
                })
                engine._restore_order(order)
            engine._fills = [Execution(**{**f, "side": Side(f["side"])}) for f in state["fills"]]
            engine._changed_orders.clear()
            engine._fills_reported = len(engine._fills)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad matching-engine state: {exc!r}") from exc
        return engine

    def _restore_order(self: MatchingEngine, order: Order) -> None:
        self._orders[order.broker_order_id] = order
        self._by_client[order.client_order_id] = order
        if not order.is_open:
            return
        market = self._markets.get(order.code)
        account = self._accounts.get(order.account_id)
        if market is None or account is None:
            raise ValueError(f"open order {order.broker_order_id} names unknown code or account")
        market.quiet_hi = 0
        if order.side is Side.BUY:
            account.cash_on_hold_won += order.reserved_won
            bisect.insort(market.bids, order, key=bk.priority)
        else:
            account.offered_qty[order.code] = account.offered_qty.get(order.code, 0) + order.remaining_qty
            bisect.insort(market.asks, order, key=bk.priority)
