"""The strategy API: the base class every strategy extends and the light event records it receives.

A strategy reacts to market and order events (and refusals of its orders) through callbacks and acts only
through the ``AgentContext`` it is handed (no sockets, no clock), so the same
class runs live, on the paper exchange and in the back-tester. Its parameters
are a pydantic model validated once at start; the per-event records are plain
NamedTuples, cheap enough for the back-tester's hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

import msgspec
from pydantic import BaseModel, ConfigDict, ValidationError

from core.messages import SessionPhase

if TYPE_CHECKING:
    from agents.context import AgentContext
    from agents.refusals import Refusal


class BarData(NamedTuple):
    """An OHLCV bar of one code; ``ts_ns`` is the bar's time stamp."""

    code: str
    ts_ns: int
    open: int
    high: int
    low: int
    close: int
    volume: int


class TickData(NamedTuple):
    """One trade print (or last price) of a code."""

    code: str
    ts_ns: int
    price: int
    qty: int


class FlowData(NamedTuple):
    """Net buying by investor class in shares (daily or intraday provisional)."""

    code: str
    ts_ns: int
    foreign_net_qty: int
    institution_net_qty: int = 0
    individual_net_qty: int = 0
    provisional: bool = False
    cumulative: bool = True  # the figures are the day's running totals since the open: use the change


class FundData(NamedTuple):
    """A code's per-share fundamentals in force (won): from an announcement, or the instrument master.

    ``eps`` trailing four quarters' earnings, ``bps`` book value, ``dps`` the
    annual dividend; ``effective_date`` (YYYYMMDD) when they took force, ""
    for the master's figures; ``source`` ``sim``, ``csv``, ``kis`` or ``master``.
    """

    code: str
    ts_ns: int
    effective_date: str
    eps: int
    bps: int
    dps: int
    source: str = "master"

    def per(self, price: int) -> float | None:
        """Price over earnings per share (None when EPS is not positive)."""
        return price / self.eps if self.eps > 0 and price > 0 else None

    def pbr(self, price: int) -> float | None:
        """Price over book value per share (None when BPS is not positive)."""
        return price / self.bps if self.bps > 0 and price > 0 else None


class FillData(NamedTuple):
    """An execution of one of the agent's orders, with its costs."""

    exec_id: str
    client_order_id: str
    code: str
    side: str
    qty: int
    price: int
    fee_won: int
    tax_won: int
    ts_ns: int


class OrderEventData(NamedTuple):
    """A change of state of one of the agent's orders."""

    client_order_id: str
    code: str
    side: str
    status: str
    ts_ns: int
    filled_qty: int = 0
    remaining_qty: int = 0
    reason_code: str = ""


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ParamsError(ValueError):
    """Parameters refused by a strategy, one (key, reason) per problem."""

    def __init__(self, strategy: str, problems: list[tuple[str, str]]):
        self.strategy = strategy
        self.problems = problems
        super().__init__(f"{strategy}: " + "; ".join(f"{k}: {r}" for k, r in problems))


class StateError(ValueError):
    """A saved strategy state that does not fit the strategy (shape, types or version)."""


_S = TypeVar("_S", bound=msgspec.Struct)


def read_state(state: dict[str, Any], version: int, expected_version: int, shape: type[_S]) -> _S:
    """A saved state checked against its declared shape (a ``msgspec.Struct``); raises StateError."""
    if version != expected_version:
        raise StateError(f"state version {version}, this strategy reads version {expected_version}")
    try:
        return msgspec.convert(state, shape)
    except msgspec.ValidationError as exc:
        raise StateError(f"state does not fit {shape.__name__}: {exc}") from None


class Strategy:
    """Base of all strategies: typed params, callbacks, a status view and the state it keeps.

    Subclasses set ``name``, ``Params`` and ``n_codes`` (how many codes the
    strategy trades, in the order of the agent's ``codes``) and override the
    callbacks they need; the defaults do nothing.

    A strategy that keeps state across events (counters, ladders, trailing
    highs, indicator rings) declares it: ``save_state`` returns it as plain
    msgpack-able data and ``load_state`` takes it back, and ``state_version``
    changes whenever its shape does. The runtime saves it and restores it
    before ``on_start`` (``agents.state_store``); bars that came after the save
    are then replayed to it with trading refused, so rings and averages catch
    up. The bar windows of the context (``ctx.bars``) are not part of the
    state: they are warmed from the recorded bars.
    """

    name: ClassVar[str] = ""
    n_codes: ClassVar[int] = 1
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    state_version: ClassVar[int] = 1

    def __init__(self, params: StrategyParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @classmethod
    def check_params(cls, data: dict[str, Any] | None) -> tuple[StrategyParams | None, list[tuple[str, str]]]:
        """Validate raw params: (params, []) or (None, [(key, reason), ...])."""
        try:
            return cls.Params.model_validate(data or {}), []
        except ValidationError as exc:
            problems = [(".".join(str(x) for x in e["loc"]) or "-", e["msg"]) for e in exc.errors()]
            return None, problems

    @classmethod
    def check_codes(cls, codes: list[str]) -> str | None:
        """Why these codes do not suit the strategy, or None (default: exactly ``n_codes`` distinct codes)."""
        if len(codes) != cls.n_codes:
            return f"{cls.name} trades {cls.n_codes} code(s), got {len(codes)}"
        if len(set(codes)) != len(codes):
            return f"codes repeat: {codes}"
        return None

    @classmethod
    def from_params(cls, data: dict[str, Any] | None = None) -> Strategy:
        """A strategy built from raw params; raises ParamsError naming each bad key."""
        params, problems = cls.check_params(data)
        if params is None:
            raise ParamsError(cls.name, problems)
        return cls(params)

    # --- callbacks -------------------------------------------------------------

    def on_start(self, ctx: AgentContext) -> None:
        """Called once, after the book is rebuilt and before any market event."""

    def on_tick(self, ctx: AgentContext, tick: TickData) -> None:
        """A trade print of one of the agent's codes."""

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        """A completed bar of one of the agent's codes."""

    def on_flow(self, ctx: AgentContext, flow: FlowData) -> None:
        """Investor flows of one of the agent's codes."""

    def on_fundamentals(self, ctx: AgentContext, fund: FundData) -> None:
        """A code's fundamentals changed (an earnings announcement); ``ctx.fundamentals(code)`` has them."""

    def on_fill(self, ctx: AgentContext, fill: FillData) -> None:
        """One of the agent's orders was (partly) executed; the book is already updated."""

    def on_order_event(self, ctx: AgentContext, event: OrderEventData) -> None:
        """One of the agent's orders changed state; the book is already updated."""

    def on_refused(self, ctx: AgentContext, refusal: Refusal) -> None:
        """One of the agent's orders was refused (risk, order manager or venue), with its reason code.

        A signal, not a cue to send it again: the context already holds back
        orders of the shape the reason blocks (``agents.refusals``); a strategy
        may resize, wait or give up.
        """

    def on_session(self, ctx: AgentContext, phase: SessionPhase) -> None:
        """The trading phase changed (open, closing, closed, ...)."""

    def on_timer(self, ctx: AgentContext, now_ns: int) -> None:
        """A periodic wake-up in market time."""

    def state(self) -> dict[str, Any]:
        """The strategy's own state as plain data, for status pages."""
        return {}

    def save_state(self) -> dict[str, Any]:
        """Everything the strategy keeps across events, as plain msgpack-able data (default: nothing)."""
        return {}

    def load_state(self, state: dict[str, Any], version: int) -> None:
        """Take back what ``save_state`` gave (saved under ``version``); raises StateError if it does not fit."""
        if state:
            raise StateError(f"{self.name} keeps no state, got {sorted(state)}")


class UnknownStrategy(KeyError):
    """A strategy name that is not in the registry."""


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered under ``name``; raises UnknownStrategy."""
    from agents.strategies import STRATEGIES

    try:
        return STRATEGIES[name]
    except KeyError:
        raise UnknownStrategy(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None


def __getattr__(attr: str) -> Any:
    # STRATEGIES lives with the strategies (they import this module); expose it here lazily.
    if attr == "STRATEGIES":
        from agents.strategies import STRATEGIES

        return STRATEGIES
    raise AttributeError(attr)
