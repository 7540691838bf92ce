"""The trading day's end as the supervisor runs it: the closing check and the day roll.

* ``closing``: every agent should have cancelled what it had open; whatever is
  still open is mass-cancelled through the order manager, with an alert naming
  the agent.
* ``closed``: verify no open day order remains (the order manager expires them),
  write the daily report (journal table ``daily_reports`` and
  ``<run_dir>/reports/<date>.csv``), check the day's bars were recorded, and
  purge journal rows and dated files older than ``retention_days``.
* a late roll: the same report for a day whose close has passed (missed while
  the supervisor was down, or rewritten because rows of the day reached the
  journal after its report), valued at the day's recorded closing prices.

The roll's summary (``summary_text``) is what reaches a person's phone at the
close: the day's trades, realised PnL, fees and taxes, the account's equity
(ledger cash plus holdings at the close) and the orders refused, by reason.

The order manager is reached over RPC (``orders``, ``cancel_all``, and
``ledger_day``: the holdings and PnL of the report are the ledger's); the day's
orders and fills are counted in the journal itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bus.rpc import RpcClient, RpcFailure
from core.ledger import ACCOUNT as LEDGER_ACCOUNT
from core.messages import AlertLevel, Command, CommandResult
from services.supervisor.journal import DayJournal, purge_dated_files, retention_cutoff, write_report_csv
from services.supervisor.report import ACCOUNT, AgentStart, daily_report

AlertFn = Callable[[AlertLevel, str, str], None]


def _call(client: RpcClient, name: str, args: dict[str, Any]) -> Any:
    """One command to a service; its result, or raises RpcFailure / RuntimeError on a refusal."""
    command_id = f"supervisor-{uuid.uuid4().hex[:12]}"
    reply = client.call(Command(command_id=command_id, name=name, args=args, who="supervisor", ts_ns=time.time_ns()),
                        idempotency_key=command_id)
    if not isinstance(reply, CommandResult) or not reply.ok:
        raise RuntimeError(getattr(reply, "error", type(reply).__name__))
    return reply.result


def open_orders_by_agent(oms: RpcClient, agent_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The order manager's open orders of today, per agent."""
    args: dict[str, Any] = {"open": True}
    if agent_id is not None:
        args["agent_id"] = agent_id
    out: dict[str, list[dict[str, Any]]] = {}
    for o in _call(oms, "orders", args) or []:
        out.setdefault(o["agent_id"], []).append(o)
    return out


def cancel_leftovers(oms: RpcClient, alert: AlertFn, why: str, agent_id: str | None = None) -> dict[str, int]:
    """Mass-cancel through the order manager what agents left open, alerting per agent; counts per agent."""
    try:
        leftovers = open_orders_by_agent(oms, agent_id)
    except (RpcFailure, RuntimeError) as exc:
        alert(AlertLevel.ERROR, "orders_unchecked", f"cannot check open orders ({why}): order manager: {exc}")
        return {}
    for agent, orders in sorted(leftovers.items()):
        ids = ", ".join(o["client_order_id"] for o in orders[:5])
        alert(AlertLevel.WARNING, "orders_left_open",
              f"agent {agent} left {len(orders)} order(s) open {why} ({ids}); cancelling them through the order manager")
        try:
            _call(oms, "cancel_all", {"agent_id": agent})
        except (RpcFailure, RuntimeError) as exc:
            alert(AlertLevel.ERROR, "cancel_all_failed", f"cannot cancel agent {agent}'s orders: {exc}")
    return {a: len(o) for a, o in leftovers.items()}


def closing_prices(market_data: RpcClient, codes: list[str]) -> dict[str, int]:
    """Last prices from market data's snapshot (empty when it does not answer)."""
    try:
        result = _call(market_data, "snapshot", {"codes": codes, "bars": 0})
    except (RpcFailure, RuntimeError):
        return {}
    out = {}
    for code, line in ((result or {}).get("codes") or {}).items():
        if isinstance(line, dict) and isinstance(line.get("last"), int) and line["last"] > 0:
            out[code] = line["last"]
    return out


def recorded_closes(bars_dir: Path, codes: list[str]) -> dict[str, int]:
    """Each code's last one-minute bar close recorded in ``bars_dir`` (a day's bar folder); codes without bars left out."""
    from services.market_data.recorder import read_bars  # pyarrow: loaded only when a late roll needs it

    out: dict[str, int] = {}
    for code in codes:
        for path in sorted(bars_dir.glob(f"{code}.*")):
            try:
                bars = read_bars(path)
            except (OSError, ValueError):  # a half-written or foreign file: the price is missing, no crash
                continue
            if bars and bars[-1].close > 0:
                out[code] = int(bars[-1].close)
                break
    return out


def run_day_roll(
    trading_date: str,
    run_path: Path,
    journal: DayJournal,
    oms: RpcClient,
    market_data: RpcClient,
    starts: Mapping[str, AgentStart],
    retention_days: int,
    alert: AlertFn,
    *,
    late: bool = False,
) -> dict[str, Any]:
    """The whole roll for ``trading_date``; returns a summary of what it did.

    ``late``: the roll of a close that has passed (the supervisor was down at
    it, or the day's report is rewritten because rows reached the journal after
    it): open orders are not touched (the order manager expired that day's at
    its own roll) and the closing prices are the day's recorded bars' last
    closes, market data's last prices only for codes without recorded bars.
    Rolling a day again replaces its report: the same journal gives the same rows.
    """
    left = {} if late else cancel_leftovers(oms, alert, "after the close")
    still_open = journal.open_orders(trading_date)
    orders = journal.orders(trading_date)
    try:
        ledger_day = _call(oms, "ledger_day", {"date": trading_date})
    except (RpcFailure, RuntimeError) as exc:
        ledger_day = None
        alert(AlertLevel.WARNING, "report_without_ledger",
              f"the order manager did not give the ledger of {trading_date} ({exc}); the report is rebuilt from the "
              "journal's rows")
    held = _account_holdings(ledger_day)
    codes = sorted({o["code"] for o in orders} | set(held))  # the equity values every holding at its close
    bars_dir = run_path / "bars" / trading_date
    prices: dict[str, int] = {}
    if codes:
        prices = recorded_closes(bars_dir, codes) if late and bars_dir.is_dir() else {}
        missing = [c for c in codes if c not in prices]
        if missing:
            prices.update(closing_prices(market_data, missing))
    rows = daily_report(trading_date, orders, journal.fills(trading_date), starts, prices, ledger_day)
    journal.write_report(rows, time.time_ns())
    csv_path = write_report_csv(run_path / "reports", trading_date, rows)
    bar_files = len(list(bars_dir.glob("*"))) if bars_dir.is_dir() else 0
    if codes and not bar_files:
        alert(AlertLevel.WARNING, "bars_missing", f"no bars recorded for {trading_date} under {bars_dir}")
    cutoff = retention_cutoff(trading_date, retention_days)
    purged_rows = journal.purge_before(cutoff)
    agent_dirs = [p for p in (run_path / "agents").glob("*") if p.is_dir()]
    purged_files = purge_dated_files([run_path / "bars", run_path / "reports", *agent_dirs], cutoff)
    account = next((r for r in rows if r["agent_id"] == ACCOUNT), {})
    refused: dict[str, int] = {}
    for o in orders:
        if o["trading_date"] == trading_date and o["status"] == "rejected":
            reason = str(o.get("reason_code") or "-")
            refused[reason] = refused.get(reason, 0) + 1
    return {
        "trading_date": trading_date,
        "late": late,
        "left_open": left,
        "still_open": len(still_open),
        "orders": int(account.get("orders", 0)),
        "trades": int(account.get("fills", 0)),
        "bought_won": int(account.get("bought_won", 0)),
        "sold_won": int(account.get("sold_won", 0)),
        "realized_pnl_won": int(account.get("realized_pnl_won", 0)),
        "unrealized_pnl_won": int(account.get("unrealized_pnl_won", 0)),
        "fees_won": int(account.get("fees_won", 0)),
        "taxes_won": int(account.get("taxes_won", 0)),
        "refused": dict(sorted(refused.items(), key=lambda kv: (-kv[1], kv[0]))),
        "equity_won": _equity(ledger_day, held, prices),
        "agents_pnl_won": {r["agent_id"]: int(r["realized_pnl_won"]) for r in rows if r["agent_id"] != ACCOUNT},
        "report_rows": len(rows),
        "report_csv": str(csv_path),
        "bar_files": bar_files,
        "retention_cutoff": cutoff,
        "purged_rows": purged_rows,
        "purged_files": [str(p) for p in purged_files],
    }


def _account_holdings(ledger_day: Mapping[str, Any] | None) -> dict[str, int]:
    """code -> shares the account holds at the day's end, by the ledger's closing (empty without a ledger)."""
    closing = (ledger_day or {}).get("closing") or (ledger_day or {}).get("opening") or {}
    book = closing.get(LEDGER_ACCOUNT) if isinstance(closing, Mapping) else None
    positions = book.get("positions") if isinstance(book, Mapping) else None
    if not isinstance(positions, Mapping):
        return {}
    return {code: int(h["qty"]) for code, h in positions.items() if isinstance(h, Mapping) and int(h.get("qty", 0))}


def _equity(ledger_day: Mapping[str, Any] | None, held: Mapping[str, int], prices: Mapping[str, int]) -> int | None:
    """The account's cash plus its holdings at the closing prices; None without a ledger or a price of a holding."""
    closing = (ledger_day or {}).get("closing") or (ledger_day or {}).get("opening") or {}
    book = closing.get(LEDGER_ACCOUNT) if isinstance(closing, Mapping) else None
    if not isinstance(book, Mapping) or not isinstance(book.get("cash_won"), int):
        return None
    if any(prices.get(code, 0) <= 0 for code in held):
        return None
    return int(book["cash_won"]) + sum(qty * prices[code] for code, qty in held.items())


def _won(n: int, signed: bool = False) -> str:
    return f"{n:+,} won" if signed else f"{n:,} won"


def summary_text(summary: Mapping[str, Any], max_agents: int = 10) -> str:
    """The day roll's summary as a person reads it: trades, PnL, costs, equity, refusals, what was left open."""
    d = str(summary["trading_date"])
    lines = [f"{'(late roll) ' if summary.get('late') else ''}day {d[:4]}-{d[4:6]}-{d[6:]} closed",
             (f"trades {summary['trades']} (orders {summary['orders']}; bought {_won(summary['bought_won'])}, "
              f"sold {_won(summary['sold_won'])})"),
             f"realised PnL {_won(summary['realized_pnl_won'], True)}, unrealised {_won(summary['unrealized_pnl_won'], True)}",
             f"fees {_won(summary['fees_won'])}, taxes {_won(summary['taxes_won'])}"]
    equity = summary.get("equity_won")
    lines.append(f"equity {_won(equity)}" if isinstance(equity, int) else "equity: not available (no ledger or price)")
    refused = summary.get("refused") or {}
    if refused:
        lines.append(f"refused {sum(refused.values())}: " + ", ".join(f"{k} {v}" for k, v in refused.items()))
    else:
        lines.append("refused 0")
    if summary.get("still_open"):
        lines.append(f"orders still open: {summary['still_open']}")
    agents = summary.get("agents_pnl_won") or {}
    for agent_id, pnl in sorted(agents.items(), key=lambda kv: -abs(kv[1]))[:max_agents]:
        lines.append(f"  {agent_id}: {_won(pnl, True)}")
    if len(agents) > max_agents:
        lines.append(f"  ... and {len(agents) - max_agents} more agent(s)")
    return "\n".join(lines)
