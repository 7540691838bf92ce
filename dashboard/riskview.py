"""The Risk and Reconciliation pages' views: the raw answers of the risk guard, the reconciler and the ledger
turned into what a person reads (pure).

``risk_view`` makes the trading state (who set it, why, since when) and, per
agent and for the account, each limit of ``core.risk_limits`` against its usage
as a bar (used, limit, percent, ok / warn / breach), agents sorted by their
highest usage. ``recon_view`` makes the list of breaks and pending differences
(kind, key, ours against the broker's, age, the adjustment that would book the
difference), the history of runs and the ledger's books.

Inputs are the dashboard state's entries as they are: an RPC poll entry
``{"ok", "result", "error", "ts_ns"}`` and a bus entry ``{"ts_ns", "sender",
"payload"}``. Time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from core.config import ConfigError
from core.risk_limits import RiskLimits, parse_risk_limits

NS = 1_000_000_000
WARN_PCT = 70.0  # a usage from here is shown as a warning
BREACH_PCT = 90.0  # and from here as a breach (the limit is close or reached)
RISK_COLUMNS = (  # key, heading, unit: one column per limit, one bar per cell
    ("loss", "day loss", "won"),
    ("exposure", "exposure", "won"),
    ("open_orders", "open orders", "orders"),
    ("position", "position per code", "shares"),
)
MAX_HISTORY = 30
REPORT_ID = re.compile(r"^recon-(\d+)-")  # the reconciler names a report after the time its run started


# --- shared ------------------------------------------------------------------


def _answer(entry: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The result of a successful RPC poll, or None."""
    if not entry or not entry.get("ok") or not isinstance(entry.get("result"), Mapping):
        return None
    return entry["result"]


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _age_s(now_ns: int, then_ns: Any) -> float | None:
    return round(max(0, now_ns - then_ns) / NS, 1) if type(then_ns) is int and then_ns > 0 else None


def level(pct: float) -> str:
    """How a usage is coloured: ok below WARN_PCT, warn below BREACH_PCT, breach from there."""
    return "ok" if pct < WARN_PCT else "warn" if pct < BREACH_PCT else "breach"


def bar(used: int, limit: int, **extra: Any) -> dict[str, Any] | None:
    """One usage against its limit (None without a limit)."""
    if limit <= 0:
        return None
    pct = round(100 * max(used, 0) / limit, 1)
    return {"used": used, "limit": limit, "pct": pct, "level": level(pct), **extra}


# --- risk --------------------------------------------------------------------


def _limits(status: Mapping[str, Any] | None) -> RiskLimits | None:
    raw = status.get("limits") if status else None
    if not isinstance(raw, Mapping):
        return None
    try:
        return parse_risk_limits(raw, "risk guard status")
    except ConfigError:
        return None


def agent_cells(usage: Mapping[str, Any], limits: RiskLimits | None, agent_id: str) -> dict[str, dict[str, Any] | None]:
    """An agent's bars: day loss, exposure (held + pending buys), open orders, its largest position per code."""
    lim = limits.for_agent(agent_id) if limits is not None else None
    day_pnl = _int(usage.get("day_pnl_won"))
    loss_limit = _int(usage.get("daily_loss_limit_won")) or (lim.daily_loss_limit_won if lim else 0)
    loss = bar(max(0, -day_pnl), loss_limit, day_pnl_won=day_pnl)
    if loss is not None and usage.get("over_loss_limit"):
        loss["level"] = "breach"
    exposure = None
    if lim is not None and "held_value_won" in usage:
        held, pending = _int(usage.get("held_value_won")), _int(usage.get("pending_buy_won"))
        exposure = bar(held + pending, lim.max_position_notional_won, held_won=held, pending_buy_won=pending)
    open_orders = bar(_int(usage.get("open_orders")), _int(usage.get("max_open_orders"))
                      or (lim.max_open_orders if lim else 0))
    position = None
    if lim is not None:
        per_code = _shares_per_code(usage)
        if per_code:
            code = max(sorted(per_code), key=lambda c: per_code[c])
            position = bar(per_code[code], lim.max_position_qty, code=code, codes=len(per_code))
        else:
            position = bar(0, lim.max_position_qty, code="", codes=0)
    return {"loss": loss, "exposure": exposure, "open_orders": open_orders, "position": position}


def _shares_per_code(usage: Mapping[str, Any]) -> dict[str, int]:
    """Shares held plus working to buy, per code (what the position limits are checked on)."""
    out: dict[str, int] = {}
    for key in ("positions", "pending_buy_qty"):
        held = usage.get(key)
        for code, qty in (held.items() if isinstance(held, Mapping) else ()):
            out[str(code)] = out.get(str(code), 0) + _int(qty)
    return {c: q for c, q in out.items() if q}


def _highest(cells: Mapping[str, dict[str, Any] | None]) -> float:
    return max((c["pct"] for c in cells.values() if c is not None), default=0.0)


def _state(status: Mapping[str, Any] | None, status_ns: int, bus: Mapping[str, Any] | None, bus_ns: int) -> dict[str, Any]:
    """The trading state, who set it, why and since when, from the newer of the status answer and ``risk.state``."""
    use_bus = bus is not None and (status is None or bus_ns > status_ns)
    source = bus if use_bus else status
    if source is None:
        return {"state": "unknown", "reason": "", "who": "", "since_ns": None, "consistent": None, "source": "",
                "operator": None}
    state = str(source.get("state") or source.get("trading_state") or "unknown")
    since = None
    if status is not None and str(status.get("state")) == state and status.get("reason") == source.get("reason"):
        since = status.get("since_ns") or None
    elif use_bus and status is not None:
        since = source.get("ts_ns") or None  # a change the last status poll has not seen yet: just published
    operator = status.get("operator") if status is not None and isinstance(status.get("operator"), Mapping) else None
    if operator is not None and operator.get("state") == state and operator.get("reason") == source.get("reason"):
        operator = None  # it is what is in force: nothing more to say
    return {"state": state, "reason": str(source.get("reason") or ""), "who": str(source.get("who") or ""),
            "since_ns": since, "consistent": source.get("consistent"), "source": "risk.state" if use_bus else "status",
            "operator": dict(operator) if operator is not None and operator.get("ts_ns") else None}


def trading_state(status_entry: Mapping[str, Any] | None, bus_entry: Mapping[str, Any] | None) -> str:
    """Just the trading state in force (the Overview's figure), without building the whole Risk view."""
    status = _answer(status_entry)
    bus = bus_entry.get("payload") if bus_entry and isinstance(bus_entry.get("payload"), Mapping) else None
    status_ns = _int(status_entry.get("ts_ns")) if status_entry else 0
    bus_ns = _int(bus_entry.get("ts_ns")) if bus_entry else 0
    return str(_state(status, status_ns, bus, bus_ns)["state"])


def risk_view(status_entry: Mapping[str, Any] | None, bus_entry: Mapping[str, Any] | None, now_ns: int) -> dict[str, Any]:
    """The Risk page: the trading state and every limit against its usage, per agent (highest first) and the account."""
    status = _answer(status_entry)
    bus = bus_entry.get("payload") if bus_entry and isinstance(bus_entry.get("payload"), Mapping) else None
    status_ns = _int(status_entry.get("ts_ns")) if status_entry else 0
    bus_ns = _int(bus_entry.get("ts_ns")) if bus_entry else 0
    state = _state(status, status_ns, bus, bus_ns)
    state["age_s"] = _age_s(now_ns, state["since_ns"])
    limits = _limits(status)
    # usage from the newer of the two (the bus carries it on every change), the limits from the status answer
    newer = bus if bus is not None and (status is None or bus_ns > status_ns) else status
    usage = newer.get("usage") if newer is not None and isinstance(newer.get("usage"), Mapping) else {}
    rows = []
    for agent_id, u in usage.items():
        if not isinstance(u, Mapping):
            continue
        cells = agent_cells(u, limits, str(agent_id))
        top = _highest(cells)
        rows.append({"agent": str(agent_id), "cells": cells, "highest_pct": top, "level": level(top),
                     "over_loss_limit": bool(u.get("over_loss_limit")), "cash_won": _int(u.get("cash_won"))})
    rows.sort(key=lambda r: (-r["highest_pct"], r["agent"]))
    account = _account(usage, limits, status)
    counts = {lvl: sum(1 for r in rows if r["level"] == lvl) for lvl in ("ok", "warn", "breach")}
    return {
        "trading_state": state["state"],
        "state": state,
        "columns": [{"key": k, "label": label, "unit": unit} for k, label, unit in RISK_COLUMNS],
        "rows": rows,
        "account": account,
        "counts": counts,
        "limits_known": limits is not None,
        "guard": {"answering": status is not None,
                  "error": str(status_entry.get("error") or "") if status_entry and status is None else "",
                  "asked_age_s": _age_s(now_ns, status_ns),
                  "session": str(status.get("session") or "") if status else "",
                  "trading_date": str(status.get("trading_date") or "") if status else "",
                  "decisions": dict(status.get("decisions") or {}) if status else {},
                  "sync_problems": list(status.get("sync_problems") or []) if status else []},
    }


def _account(usage: Mapping[str, Any], limits: RiskLimits | None, status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The account: its day loss against the account limit and the firm's largest position per code."""
    agents = [u for u in usage.values() if isinstance(u, Mapping)]
    day_pnl = (_int(status.get("account_day_pnl_won")) if status is not None and "account_day_pnl_won" in status
               else sum(_int(u.get("day_pnl_won")) for u in agents))
    firm: dict[str, int] = {}
    for u in agents:
        for code, qty in _shares_per_code(u).items():
            firm[code] = firm.get(code, 0) + qty
    held = sum(_int(u.get("held_value_won")) + _int(u.get("pending_buy_won")) for u in agents)
    cells: dict[str, dict[str, Any] | None] = {
        "loss": bar(max(0, -day_pnl), limits.loss.daily_loss_limit_account_won, day_pnl_won=day_pnl) if limits else None,
        "exposure": None,  # no account-wide notional limit: the total is shown as a figure
        "open_orders": None,
        "position": None,
    }
    codes = []
    if limits is not None:
        codes = sorted((bar(q, limits.position.max_qty_per_code, code=c) for c, q in firm.items()),
                       key=lambda b: (-b["pct"], b["code"]))  # type: ignore[index]
        cells["position"] = codes[0] if codes else bar(0, limits.position.max_qty_per_code, code="", codes=0)
    top = _highest(cells)
    return {"cells": cells, "highest_pct": top, "level": level(top), "day_pnl_won": day_pnl,
            "exposure_won": held, "open_orders": sum(_int(u.get("open_orders")) for u in agents), "codes": codes,
            "breach_state": limits.loss.account_breach_state.value if limits else ""}


# --- reconciliation ------------------------------------------------------------

ADVICE = {
    "HALT": "trading was halted or reduced for it (break policy): find the cause, book an adjustment, run again",
    "ALERT": "the agent was asked to re-sync its book; book an adjustment only if the ledger is wrong",
    "WAIT": "in flight (an order or a fill not applied yet): it settles by itself, or becomes a break",
    "APPLY_MISSING_FILL": "healed by the reconciler (the broker's fill applied)",
    "RESOLVE_ORDER": "healed by the reconciler (the order resolved from the broker's record)",
}
KIND_ADVICE = {  # where the kind says more than the action
    "UNKNOWN_OPEN_ORDER_AT_BROKER": "trading was halted for it: find who placed it, cancel it at the broker, run again",
    "FILL_MISSING_AT_BROKER": "the broker does not know an execution we booked: check its statement; if it never "
                              "happened, book the adjustment that takes it out",
    "LEDGER_DIFFERENCE": "the ledger's account moved otherwise than its agents: check the ledger's journal "
                         "(an adjustment moves both, it does not settle this)",
}


def _fill_effect(fill: Mapping[str, Any]) -> tuple[int, int]:
    """Shares and cash a fill moves a book by."""
    qty, price = _int(fill.get("qty")), _int(fill.get("price"))
    fee, tax = _int(fill.get("fee_won")), _int(fill.get("tax_won"))
    if str(fill.get("side")) == "buy":
        return qty, -(qty * price + fee)
    return -qty, qty * price - fee - tax


def _fill_text(fill: Any) -> str:
    if not isinstance(fill, Mapping):
        return "-"
    return f"{fill.get('side', '?')} {fill.get('qty', '?')} {fill.get('code', '?')} @ {fill.get('price', '?')}"


def difference_item(d: Mapping[str, Any], holders: Mapping[str, list[str]]) -> dict[str, Any]:
    """One difference as a line: what differs (ours against theirs), by how much, and the adjustment that books it.

    ``holders``: code -> the agents whose ledger book holds it (an adjustment
    names one agent: pre-filled when a single agent holds the code).
    """
    kind, key = str(d.get("kind") or ""), str(d.get("key") or "")
    data = d.get("data") if isinstance(d.get("data"), Mapping) else {}
    broker, oms = d.get("broker"), d.get("oms")
    agent, code = str(data.get("agent_id") or ""), str(data.get("code") or "")
    theirs_label, ours, theirs, unit, delta = "broker", oms, broker, "", None
    adjust: dict[str, Any] | None = None
    if kind == "POSITION_DIFFERENCE":
        code, unit = key, "shares"
        if type(broker) is int and type(oms) is int:
            delta = broker - oms
            only = holders.get(code) or []
            adjust = {"agent_id": only[0] if len(only) == 1 else "", "code": code, "qty": delta, "cash_won": 0}
    elif kind == "CASH_DIFFERENCE":
        unit = "won"
        if type(broker) is int and type(oms) is int:
            delta = broker - oms
            adjust = {"agent_id": "", "code": "", "qty": 0, "cash_won": delta}
    elif kind == "AGENT_BOOK_DIFFERENCE":
        theirs_label, theirs = "agent", data.get("agent")
        agent = agent or key.split("/", 1)[0]
        unit = "won" if key.endswith("/cash") else "shares"
        if type(theirs) is int and type(oms) is int:
            delta = theirs - oms
            adjust = {"agent_id": agent, "code": code, "qty": delta if unit == "shares" else 0,
                      "cash_won": delta if unit == "won" else 0}
    elif kind == "LEDGER_DIFFERENCE":
        theirs_label, unit = "the agents", "won" if key.endswith("/cash") else "shares"
        code = "" if unit == "won" else key.split("/", 1)[-1]
        if isinstance(oms, Mapping):
            ours, theirs = oms.get("account"), oms.get("agents")
            if type(ours) is int and type(theirs) is int:
                delta = ours - theirs
    elif kind in ("FILL_MISSING_IN_OMS", "FILL_MISSING_AT_BROKER"):
        fill = broker if kind == "FILL_MISSING_IN_OMS" else oms
        ours, theirs = (None, _fill_text(fill)) if kind == "FILL_MISSING_IN_OMS" else (_fill_text(fill), None)
        if isinstance(fill, Mapping):
            agent, code = str(fill.get("agent_id") or ""), str(fill.get("code") or "")
            qty, cash = _fill_effect(fill)
            sign = 1 if kind == "FILL_MISSING_IN_OMS" else -1  # book the broker's execution, or take ours out
            adjust = {"agent_id": agent, "code": code, "qty": sign * qty, "cash_won": sign * cash}
    elif kind in ("UNKNOWN_OPEN_ORDER_AT_BROKER", "ORDER_OPEN_IN_OMS_GONE_AT_BROKER"):
        order = broker if isinstance(broker, Mapping) else oms if isinstance(oms, Mapping) else {}
        code = str(order.get("code") or "")
        ours = str(oms.get("status")) if isinstance(oms, Mapping) else None
        theirs = str(broker.get("status") or "open") if isinstance(broker, Mapping) else None
    elif kind == "AGENT_BOOK_BEHIND":
        theirs_label, theirs = "agent", data.get("agent") or "none"
        agent = agent or key.split("/", 1)[0]
    if not agent and "/" in key and kind.startswith("AGENT"):
        agent = key.split("/", 1)[0]
    return {"kind": kind, "action": str(d.get("action") or ""), "key": key, "agent": agent, "code": code,
            "what": str(d.get("text") or ""), "ours": ours, "theirs": theirs, "theirs_label": theirs_label,
            "unit": unit, "delta": delta, "adjust": adjust,
            "advice": KIND_ADVICE.get(kind) or ADVICE.get(str(d.get("action") or ""), "")}


def _reports(latest_entry: Mapping[str, Any] | None, bus_reports: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every report seen (the reconciler's latest answer and those on the bus), newest first, once each."""
    seen: dict[str, Mapping[str, Any]] = {}
    candidates = [_answer(latest_entry)] + [r.get("payload") for r in bus_reports if isinstance(r, Mapping)]
    for rep in candidates:
        if isinstance(rep, Mapping) and rep.get("report_id"):
            seen.setdefault(str(rep["report_id"]), rep)
    return sorted(seen.values(), key=lambda r: _int(r.get("ts_ns")), reverse=True)


def run_line(rep: Mapping[str, Any]) -> dict[str, Any]:
    """One run of the reconciler as one line: when, why, breaks, pending, healed, how long, and the outcome."""
    breaks, pending = len(rep.get("breaks") or []), len(rep.get("pending") or [])
    differences, healed = len(rep.get("differences") or []), len(rep.get("healed") or [])
    sources = rep.get("sources") if isinstance(rep.get("sources"), Mapping) else {}
    error = str(rep.get("error") or sources.get("error") or "")
    started = REPORT_ID.match(str(rep.get("report_id")))
    ts = _int(rep.get("ts_ns"))
    duration_ms = round((ts - int(started.group(1))) / 1e6, 1) if started and ts >= int(started.group(1)) else None
    if error:
        result = "could not run"
    elif rep.get("clean"):
        result = "clean"
    else:
        result = f"{breaks} break(s)" if breaks else f"{differences} difference(s)"
    if rep.get("halted"):
        result += ", trading halted"
    compared = sources.get("agents_compared")
    return {"report_id": str(rep.get("report_id")), "ts_ns": ts, "trigger": str(rep.get("trigger") or ""),
            "breaks": breaks, "pending": pending, "differences": differences, "healed": healed,
            "agents_compared": len(compared) if isinstance(compared, list) else None,
            "clean": bool(rep.get("clean")), "halted": bool(rep.get("halted")), "error": error,
            "result": result, "duration_ms": duration_ms}


def _first_pending_seen(reports: list[Mapping[str, Any]], ident: str) -> int | None:
    """When a pending difference was first seen: the oldest of the unbroken run of reports showing it."""
    first = None
    for rep in reports:  # newest first
        ids = {f"{d.get('kind')} {d.get('key')}" for d in (rep.get("pending") or []) if isinstance(d, Mapping)}
        if ident not in ids:
            break
        first = _int(rep.get("ts_ns")) or first
    return first


def ledger_books(ledger: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ledger's books (each agent's and the account's) as table rows."""
    books = []
    for name, book in [*(ledger.get("agents") or {}).items(), ("ACCOUNT", ledger.get("account_book"))]:
        if not isinstance(book, Mapping):
            continue
        positions = book.get("positions") if isinstance(book.get("positions"), Mapping) else {}
        books.append({"book": name, "cash_won": book.get("cash_won"),
                      "holdings": ", ".join(f"{c} {_int(p.get('qty')):,}" for c, p in positions.items()
                                            if isinstance(p, Mapping)),
                      "realized_pnl_won": book.get("realized_pnl_won"), "fees_won": book.get("fees_won"),
                      "taxes_won": book.get("taxes_won"), "adjustments": len(book.get("adjustments") or [])})
    return books


def recon_view(latest_entry: Mapping[str, Any] | None, bus_reports: Iterable[Mapping[str, Any]],
               ledger_entry: Mapping[str, Any] | None, now_ns: int) -> dict[str, Any]:
    """The Reconciliation page: open breaks and pending differences, the run history and the ledger's books."""
    reports = _reports(latest_entry, bus_reports)
    latest = reports[0] if reports else {}
    ledger = _answer(ledger_entry) or {}
    holders: dict[str, list[str]] = {}
    for agent_id, book in (ledger.get("agents") or {}).items():
        for code, pos in ((book.get("positions") or {}).items() if isinstance(book, Mapping) else ()):
            if isinstance(pos, Mapping) and _int(pos.get("qty")):
                holders.setdefault(str(code), []).append(str(agent_id))
    breaks = []
    for d in latest.get("breaks") or []:
        if isinstance(d, Mapping):
            item = difference_item(d, holders)
            first = d.get("first_seen_ns")
            breaks.append({**item, "status": "break", "first_seen_ns": first, "age_s": _age_s(now_ns, first),
                           "since": first})
    pending = []
    for d in latest.get("pending") or []:
        if isinstance(d, Mapping):
            item = difference_item(d, holders)
            first = _first_pending_seen(reports, f"{item['kind']} {item['key']}")
            pending.append({**item, "status": "pending", "first_seen_ns": first, "age_s": _age_s(now_ns, first)})
    breaks.sort(key=lambda b: -(b["age_s"] or 0))
    adjustments = [{k: a.get(k) for k in ("adjustment_id", "agent_id", "code", "qty", "cash_won", "reason", "who")}
                   for a in ((ledger.get("account_book") or {}).get("adjustments") or []) if isinstance(a, Mapping)]
    reconciler_error = ""
    if latest_entry and not latest_entry.get("ok"):
        reconciler_error = str(latest_entry.get("error") or "no answer")
    return {
        "breaks": breaks,
        "pending": len(pending),
        "pending_items": pending,
        "history": [run_line(r) for r in reports[:MAX_HISTORY]],
        "last_run": run_line(latest) if latest else None,
        "reconciler_error": reconciler_error,
        "ledger_date": str(ledger.get("ledger_date") or ""),
        "books": ledger_books(ledger),
        "adjustments": adjustments,
        "codes": sorted({c for b in (ledger.get("agents") or {}).values() if isinstance(b, Mapping)
                         for c in (b.get("positions") or {})} | {i["code"] for i in breaks + pending if i["code"]}),
        "agents": sorted(str(a) for a in (ledger.get("agents") or {})),
    }
