"""The agent roster (``configs/agents.toml``) and its checker, run before anything starts.

Each ``[[agents]]`` entry names an agent ``id``, its ``code`` (or ``codes`` for a
pair strategy), its own status port ``dp``, a ``strategy`` with its ``params``
table, its ``cash`` allocation in won, an optional starting holding
(``start_qty`` shares at ``start_avg_price`` won, of its first code) and
``enabled`` (default true).

``check_roster`` validates every entry: syntax, unique id, ``dp`` unique and
clear of every other port of the stack, codes in the instrument master and
suited to the strategy, a known strategy, params valid for it, and the sum of
allocations within the account. Each problem names the file, the agent, the key
and the reason; a bad entry excludes only that agent.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents.strategy import UnknownStrategy, get_strategy
from core.config import PROJECT_ROOT, StackSettings
from core.instruments import Instrument

DEFAULT_ROSTER_PATH = PROJECT_ROOT / "configs" / "agents.toml"
AGENT_ID_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"


class AgentSettings(BaseModel):
    """One agent of the roster, as validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=AGENT_ID_PATTERN)
    code: str | None = None
    codes: list[str] | None = None
    dp: int = Field(ge=1024, le=65535)
    strategy: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    cash: int = Field(ge=0)
    start_qty: int = Field(default=0, ge=0)
    start_avg_price: int = Field(default=0, ge=0)
    enabled: bool = True

    @model_validator(mode="after")
    def _one_way_to_name_codes(self) -> AgentSettings:
        if (self.code is None) == (self.codes is None):
            raise ValueError("give exactly one of 'code' or 'codes'")
        if self.codes is not None and not self.codes:
            raise ValueError("'codes' is empty")
        if self.start_qty > 0 and self.start_avg_price <= 0:
            raise ValueError("a starting holding (start_qty) needs its start_avg_price")
        return self

    @property
    def all_codes(self) -> list[str]:
        """The agent's codes in order (a single ``code`` becomes a list of one)."""
        return [self.code] if self.code is not None else list(self.codes or [])


@dataclass(frozen=True, slots=True)
class RosterProblem:
    """One problem of the roster: where, which agent, which key, and why."""

    file: str
    agent_id: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: agent {self.agent_id}: {self.key}: {self.reason}"


@dataclass(slots=True)
class RosterReport:
    """The outcome of a roster check: the agents that may start and every problem found."""

    file: str
    valid_agents: list[AgentSettings] = field(default_factory=list)
    problems: list[RosterProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def enabled_agents(self) -> list[AgentSettings]:
        """Valid agents that are switched on."""
        return [a for a in self.valid_agents if a.enabled]

    def agent(self, agent_id: str) -> AgentSettings | None:
        """A valid agent by id."""
        return next((a for a in self.valid_agents if a.id == agent_id), None)


def stack_ports(stack: StackSettings) -> dict[int, str]:
    """Ports the stack itself uses (dashboard and tcp endpoints), each with who uses it."""
    ports = {stack.dashboard.port: "dashboard.port"}
    for name, endpoint in stack.endpoints:
        if endpoint.startswith("tcp://"):
            tail = endpoint.rsplit(":", 1)[-1]
            if tail.isdigit():
                ports.setdefault(int(tail), f"endpoints.{name}")
    return ports


def _read(path_or_data: str | Path | Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None, str]:
    if isinstance(path_or_data, Mapping):
        return "<data>", path_or_data, ""
    path = Path(path_or_data)
    try:
        with open(path, "rb") as f:
            return str(path), tomllib.load(f), ""
    except FileNotFoundError:
        return str(path), None, "file not found"
    except tomllib.TOMLDecodeError as exc:
        return str(path), None, f"not valid TOML: {exc}"


def check_roster(
    path_or_data: str | Path | Mapping[str, Any],
    instruments: Mapping[str, Instrument],
    stack: StackSettings,
) -> RosterReport:
    """Check the whole roster; agents with a problem are left out of ``valid_agents``."""
    file, data, error = _read(path_or_data)
    report = RosterReport(file=file)
    if data is None:
        report.problems.append(RosterProblem(file, "-", "-", error))
        return report
    entries = data.get("agents")
    if not isinstance(entries, list):
        report.problems.append(RosterProblem(file, "-", "agents", "expected a list of [[agents]] tables"))
        return report
    unknown = sorted(set(data) - {"agents"})
    if unknown:
        report.problems.append(RosterProblem(file, "-", ", ".join(unknown), "unknown top-level key(s)"))

    taken_ports = stack_ports(stack)
    seen_ids: set[str] = set()
    allocated = 0
    account = stack.broker.account_cash_won
    for index, raw in enumerate(entries):
        label = f"#{index + 1}"
        if isinstance(raw, Mapping) and isinstance(raw.get("id"), str) and raw["id"]:
            label = raw["id"]
        problems: list[tuple[str, str]] = []
        agent = None
        if not isinstance(raw, Mapping):
            problems.append(("-", "expected a table"))
        else:
            try:
                agent = AgentSettings.model_validate(dict(raw))
            except ValidationError as exc:
                for err in exc.errors():
                    problems.append((".".join(str(x) for x in err["loc"]) or "-", err["msg"]))
        if agent is not None:
            problems.extend(_check_agent(agent, instruments, seen_ids, taken_ports))
            if not problems and allocated + agent.cash > account:
                problems.append(
                    ("cash", f"allocations would reach {allocated + agent.cash} won, more than the account's {account} won")
                )
        for key, reason in problems:
            report.problems.append(RosterProblem(file, label, key, reason))
        if agent is not None:
            # an agent's id and port stay taken even if it is excluded, so a later duplicate is still caught
            seen_ids.add(agent.id)
            taken_ports.setdefault(agent.dp, f"agent {agent.id}")
        if agent is not None and not problems:
            allocated += agent.cash
            report.valid_agents.append(agent)
    return report


def _check_agent(
    agent: AgentSettings,
    instruments: Mapping[str, Instrument],
    seen_ids: set[str],
    taken_ports: Mapping[int, str],
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if agent.id in seen_ids:
        problems.append(("id", f"duplicate agent id {agent.id!r}"))
    if agent.dp in taken_ports:
        problems.append(("dp", f"port {agent.dp} is already used by {taken_ports[agent.dp]}"))
    key = "code" if agent.code is not None else "codes"
    for code in agent.all_codes:
        if code not in instruments:
            problems.append((key, f"{code!r} is not in the instrument master"))
    try:
        cls = get_strategy(agent.strategy)
    except UnknownStrategy as exc:
        problems.append(("strategy", str(exc.args[0])))
        return problems
    codes_problem = cls.check_codes(agent.all_codes)
    if codes_problem:
        problems.append((key, codes_problem))
    _, param_problems = cls.check_params(agent.params)
    problems.extend(("params" if k == "-" else f"params.{k}", reason) for k, reason in param_problems)
    return problems
