"""The back-test report: an HTML page that opens offline (inline SVG, no scripts), the trades and daily equity as CSV.

``write_report(result, folder)`` writes ``report.html``, ``trades.csv``,
``equity.csv`` and ``metrics.json``. The page states the data source, the
fill model (with a warning when it is the optimistic ``close``), the costs,
the session rules and the market's matching parameters; the agents with
their refusals by reason (of sent orders, of the agent's own at its limits,
orders held back by a backoff, orders made on the last continuous bar that the
agent's cancel at ``closing`` took back) and alerts, then the metrics per
agent and combined (Calmar, expectancy per closing fill, drawdown duration,
average holding time, costs as a share of the gross PnL among them), the equity curve, the
drawdown, each code's price with the fills marked (buys up, sells down) and a
table of monthly returns. The charts are SVG drawn here, so the page needs no
network and no JavaScript.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from backtest.engine import BacktestResult
from backtest.fills import FillModel
from backtest.metrics import Metrics, all_metrics, combined_equity
from core import krx

WIDTH, HEIGHT, PAD = 900, 260, 48
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MAX_POINTS = 2000

_METRIC_ROWS = (
    ("total_return", "total return", "pct"),
    ("annual_return", "annualised return", "pct"),
    ("volatility", "volatility (annual)", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "max drawdown", "pct"),
    ("max_drawdown_days", "max drawdown duration (days)", "int"),
    ("calmar", "Calmar", "num"),
    ("trades", "fills", "int"),
    ("closed_trades", "closing fills", "int"),
    ("win_rate", "win rate", "pct"),
    ("profit_factor", "profit factor", "num"),
    ("expectancy_won", "expectancy per closing fill (won)", "won"),
    ("avg_holding_minutes", "average holding time", "minutes"),
    ("turnover", "turnover (x mean equity)", "num"),
    ("gross_pnl_won", "gross PnL before costs (won)", "won"),
    ("fees_won", "fees (won)", "won"),
    ("taxes_won", "taxes (won)", "won"),
    ("cost_share", "costs / gross PnL", "pct"),
    ("exposure", "exposure", "pct"),
    ("end_equity_won", "end equity (won)", "won"),
)


def _fmt(value: object, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{float(value) * 100:.2f}%"  # type: ignore[arg-type]
    if kind == "num":
        return f"{float(value):.3f}"  # type: ignore[arg-type]
    if kind == "minutes":
        minutes = float(value)  # type: ignore[arg-type]
        return f"{minutes:,.0f} min" if minutes < 120 else f"{minutes / 60:,.1f} h"
    return f"{round(value):,}"  # type: ignore[call-overload]


def _scale(values: np.ndarray, lo: float, hi: float, out_lo: float, out_hi: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return out_lo + (values - lo) / span * (out_hi - out_lo)


def svg_lines(
    title: str,
    xs: Sequence[float] | np.ndarray,
    series: dict[str, Sequence[float] | np.ndarray],
    *,
    labels: tuple[str, str] = ("", ""),
    markers: Sequence[tuple[float, float, str]] = (),
    fill_below: bool = False,
) -> str:
    """A line chart as an SVG element: one polyline per series, optional triangle markers (x, y, "buy"/"sell")."""
    x = np.asarray(xs, dtype=float)
    ys = {k: np.asarray(v, dtype=float) for k, v in series.items()}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{PAD}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    if len(x) == 0 or not ys:
        parts.append(f'<text x="{PAD}" y="{HEIGHT // 2}">no data</text></svg>')
        return "".join(parts)
    all_y = np.concatenate([v for v in ys.values() if len(v)] + ([np.array([m[1] for m in markers])] if markers else []))
    ylo, yhi = float(all_y.min()), float(all_y.max())
    xlo, xhi = float(x.min()), float(x.max())
    left, right, top, bottom = PAD + 30, WIDTH - 10, 26, HEIGHT - 30
    parts.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#ccc"/>')
    for frac in (0.0, 0.5, 1.0):
        v = ylo + (yhi - ylo) * frac
        yy = bottom - (bottom - top) * frac
        parts.append(f'<text x="{left - 4}" y="{yy + 4:.1f}" font-size="10" text-anchor="end">{v:,.4g}</text>')
    parts.append(f'<text x="{left}" y="{HEIGHT - 8}" font-size="10">{html.escape(labels[0])}</text>')
    parts.append(f'<text x="{right}" y="{HEIGHT - 8}" font-size="10" text-anchor="end">{html.escape(labels[1])}</text>')
    for k, (name, y) in enumerate(ys.items()):
        step = max(1, len(y) // MAX_POINTS)
        px = _scale(x[::step], xlo, xhi, left, right)
        py = _scale(y[::step], ylo, yhi, bottom, top)
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
        colour = COLOURS[k % len(COLOURS)]
        if fill_below:
            parts.append(f'<polygon points="{px[0]:.1f},{top:.1f} {pts} {px[-1]:.1f},{top:.1f}" fill="{colour}" fill-opacity="0.25" stroke="none"/>')
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.3"><title>{html.escape(name)}</title></polyline>')
        parts.append(f'<text x="{right - 6}" y="{top + 14 + 13 * k}" font-size="11" text-anchor="end" fill="{colour}">{html.escape(name)}</text>')
    for mx, my, side in markers[:5000]:
        cx = float(_scale(np.array([mx]), xlo, xhi, left, right)[0])
        cy = float(_scale(np.array([my]), ylo, yhi, bottom, top)[0])
        if side == "buy":
            pts = f"{cx:.1f},{cy - 6:.1f} {cx - 4:.1f},{cy + 1:.1f} {cx + 4:.1f},{cy + 1:.1f}"
            parts.append(f'<polygon class="fill-buy" points="{pts}" fill="#2ca02c"/>')
        else:
            pts = f"{cx:.1f},{cy + 6:.1f} {cx - 4:.1f},{cy - 1:.1f} {cx + 4:.1f},{cy - 1:.1f}"
            parts.append(f'<polygon class="fill-sell" points="{pts}" fill="#d62728"/>')
    parts.append("</svg>")
    return "".join(parts)


def monthly_returns(dates: Sequence[dt.date], equity: Sequence[int], start_equity: int) -> dict[tuple[int, int], float]:
    """Return of each calendar month, from the last close of the month before (or the start)."""
    out: dict[tuple[int, int], float] = {}
    prev_end = float(start_equity)
    month_end: dict[tuple[int, int], float] = {}
    for d, e in zip(dates, equity):
        month_end[(d.year, d.month)] = float(e)
    for key in sorted(month_end):
        out[key] = month_end[key] / prev_end - 1 if prev_end > 0 else 0.0
        prev_end = month_end[key]
    return out


def _monthly_table(monthly: dict[tuple[int, int], float]) -> str:
    if not monthly:
        return "<p>no full day recorded</p>"
    years = sorted({y for y, _ in monthly})
    rows = ['<table class="monthly"><tr><th>year</th>' + "".join(f"<th>{m}</th>" for m in range(1, 13)) + "</tr>"]
    for y in years:
        cells = []
        for m in range(1, 13):
            v = monthly.get((y, m))
            if v is None:
                cells.append("<td></td>")
            else:
                shade = min(1.0, abs(v) / 0.05)
                colour = f"rgba(44,160,44,{shade:.2f})" if v >= 0 else f"rgba(214,39,40,{shade:.2f})"
                cells.append(f'<td style="background:{colour}">{v * 100:.2f}%</td>')
        rows.append(f"<tr><th>{y}</th>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "".join(rows)


def _metrics_table(metrics: dict[str, Metrics]) -> str:
    names = list(metrics)
    head = "<tr><th>metric</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    body = []
    for key, label, kind in _METRIC_ROWS:
        cells = "".join(f"<td>{_fmt(getattr(metrics[n], key), kind)}</td>" for n in names)
        body.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return f'<table class="metrics">{head}{"".join(body)}</table>'


CLOSE_MODEL_WARNING = (
    "the close fill model is optimistic: an order meets the market at the close of the very bar that made it, the "
    "price that gave the signal, where a live order arrives after that bar, when the price has moved on; next_open "
    "and intrabar assume less"
)
CANCELED_AT_CLOSING = "CANCELED_AT_CLOSING (made on the last continuous bar)"


def assumptions(result: BacktestResult) -> list[str]:
    """The lines that say what the run assumed besides the fill model: costs, session rules, market."""
    p = result.matching_params
    market = ("an order book (spread, depth, impact): " if p.book else "no order book (the touch at the last print): ") + \
        ", ".join(f"{k} {getattr(p, k)}" for k in p.__dataclass_fields__ if k != "book")
    sessions = ("KRX sessions: orders on the last continuous bar wait for the closing auction and are cancelled at "
                "closing, orders on the auction bar are refused MARKET_CLOSED" if result.sessions else
                "none: every bar is continuous trading, no closing auction, no closing cancel")
    return [f"Costs: {result.costs.describe} (core.costs)", f"Session rules: {sessions}",
            f"Market (core.matching): {market}"]


def warnings(result: BacktestResult) -> list[str]:
    """What a reader must not miss about the run's assumptions."""
    out = []
    if result.fill_model is FillModel.CLOSE:
        out.append(CLOSE_MODEL_WARNING)
    if result.costs.is_free:
        out.append("no costs were charged: the figures are gross of commission and sell tax")
    return out


def refusals_by_reason(result: BacktestResult) -> dict[str, dict[str, int]]:
    """Reason -> agent -> count, every way an order did not trade: refused, refused by the agent, held back, cancelled at closing."""
    out: dict[str, dict[str, int]] = {}
    for a in result.agents.values():
        counts = Counter({f"{k} (refused)": v for k, v in a.rejected.items()})
        counts.update({f"{k} (refused by the agent)": v for k, v in a.refused_by_agent.items()})
        counts.update({f"{k} (held back)": v for k, v in a.held_back.items()})
        if a.canceled_at_closing:
            counts[CANCELED_AT_CLOSING] = a.canceled_at_closing
        for reason, n in counts.items():
            out.setdefault(reason, {})[a.agent_id] = n
    return dict(sorted(out.items()))


def _refusals_table(result: BacktestResult) -> str:
    table = refusals_by_reason(result)
    if not table:
        return "<p>no order was refused, held back or cancelled at closing</p>"
    names = list(result.agents)
    head = "<tr><th>reason</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "<th>all</th></tr>"
    rows = [f"<tr><th>{html.escape(reason)}</th>" + "".join(f"<td>{by.get(n, 0):,}</td>" for n in names)
            + f"<td>{sum(by.values()):,}</td></tr>" for reason, by in table.items()]
    return f'<table class="refusals">{head}{"".join(rows)}</table>'


def render_html(result: BacktestResult) -> str:
    """The whole report page as one self-contained HTML string."""
    metrics = all_metrics(result)
    agents = list(result.agents.values())
    dates = [d.date for d in agents[0].days] if agents else []
    x = np.arange(len(dates), dtype=float)
    span = (str(dates[0]), str(dates[-1])) if dates else ("", "")
    equity = {a.agent_id: [d.equity_won for d in a.days] for a in agents}
    combined = combined_equity(result)
    start = sum(a.capital_won for a in agents)
    if len(agents) > 1:
        equity["combined"] = combined
    series = np.asarray([start, *combined], dtype=float)
    peak = np.maximum.accumulate(series) if len(series) else series
    drawdown = -np.divide(peak - series, peak, out=np.zeros(len(series)), where=peak > 0) * 100
    charts = [
        svg_lines("Equity at each close (won)", x, equity, labels=span),
        svg_lines("Drawdown of the combined equity (%)", np.arange(len(drawdown), dtype=float), {"drawdown": drawdown},
                  labels=("start", span[1]), fill_below=True),
    ]
    for code, (ts, close) in result.prices.items():
        fills = [(t.ts_ns, t.price, t.side) for a in agents for t in a.trades if t.code == code]
        markers = [(float(t), float(p), s) for t, p, s in fills]
        first = dt.datetime.fromtimestamp(int(ts[0]) / 1e9, krx.KST).strftime("%Y-%m-%d") if len(ts) else ""
        last = dt.datetime.fromtimestamp(int(ts[-1]) / 1e9, krx.KST).strftime("%Y-%m-%d") if len(ts) else ""
        charts.append(svg_lines(f"{code} price with fills (buys up, sells down)", ts.astype(float), {code: close},
                                labels=(first, last), markers=markers))
    monthly = monthly_returns(dates, combined, start)
    failure = f'<p class="failure">Run stopped early: {html.escape(str(result.failure))}</p>' if result.failure else ""
    notes = "".join(f'<p class="assumption">{html.escape(line)}.</p>' for line in assumptions(result))
    warned = "".join(f'<p class="warning">Warning: {html.escape(line)}.</p>' for line in warnings(result))
    agent_rows = "".join(
        f"<tr><td>{html.escape(a.agent_id)}</td><td>{html.escape(a.strategy)}</td><td>{html.escape(', '.join(a.codes))}</td>"
        f"<td>{html.escape(json.dumps(a.params))}</td><td>{a.capital_won:,}</td><td>{a.orders}</td>"
        f"<td>{_counts(a.rejected)}</td><td>{_counts(a.refused_by_agent)}</td><td>{_counts(a.held_back)}</td>"
        f"<td>{html.escape('; '.join(a.alerts)) or '-'}</td></tr>"
        for a in agents
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Back-test report</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; }}
th, td {{ border: 1px solid #ddd; padding: 3px 8px; font-size: 13px; text-align: right; }}
th {{ background: #f4f4f4; }} .failure {{ color: #b00; font-weight: bold; }}
.warning {{ color: #8a5300; background: #fff4d6; border-left: 4px solid #e0a000; padding: 4px 8px; }}
svg {{ display: block; margin: 8px 0 18px; }}
</style></head><body>
<h1>Back-test report</h1>
<p>Data: {html.escape(result.source)}; {result.bars:,} bars over {len(result.days)} day(s) ({span[0]} to {span[1]}).</p>
<p class="fill-model">Fill model: <b>{result.fill_model.value}</b>: {html.escape(result.fill_model.describe)}.</p>
{notes}
{warned}
{failure}
<h2>Agents</h2>
<table><tr><th>agent</th><th>strategy</th><th>codes</th><th>params</th><th>capital (won)</th><th>orders</th><th>refused (risk, venue)</th><th>refused by the agent at its limits</th><th>held back (backoff)</th><th>alerts</th></tr>{agent_rows}</table>
<h2>Refusals by reason</h2>
{_refusals_table(result)}
<h2>Metrics</h2>
{_metrics_table(metrics)}
<h2>Charts</h2>
{''.join(charts)}
<h2>Monthly returns (combined)</h2>
{_monthly_table(monthly)}
</body></html>
"""


def _counts(by_reason: Counter[str]) -> str:
    return html.escape(", ".join(f"{k}: {v}" for k, v in sorted(by_reason.items()))) or "-"


def write_trades_csv(result: BacktestResult, path: Path) -> None:
    """Every fill of every agent in time order."""
    trades = sorted((t for a in result.agents.values() for t in a.trades), key=lambda t: (t.ts_ns, t.exec_id))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent_id", "ts_ns", "time_kst", "code", "side", "qty", "price", "notional_won", "fee_won", "tax_won", "client_order_id", "exec_id"])
        for t in trades:
            when = dt.datetime.fromtimestamp(t.ts_ns / 1e9, krx.KST).strftime("%Y-%m-%d %H:%M:%S")
            w.writerow([t.agent_id, t.ts_ns, when, t.code, t.side, t.qty, t.price, t.qty * t.price, t.fee_won, t.tax_won, t.client_order_id, t.exec_id])


def write_equity_csv(result: BacktestResult, path: Path) -> None:
    """Each agent's book at each close, one row per agent and day."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["date", "agent_id", "equity_won", "cash_won", "holdings_value_won", "realized_pnl_won", "fees_won", "taxes_won"])
        for a in result.agents.values():
            for d in a.days:
                w.writerow([d.date.isoformat(), a.agent_id, d.equity_won, d.cash_won, d.holdings_value_won, d.realized_pnl_won, d.fees_won, d.taxes_won])


def write_report(result: BacktestResult, folder: str | Path) -> dict[str, Path]:
    """Write report.html, trades.csv, equity.csv and metrics.json into ``folder``; returns their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("report.html", "trades.csv", "equity.csv", "metrics.json")}
    paths["report.html"].write_text(render_html(result), encoding="utf-8")
    write_trades_csv(result, paths["trades.csv"])
    write_equity_csv(result, paths["equity.csv"])
    summary = {
        "source": result.source,
        "fill_model": result.fill_model.value,
        "costs": result.costs.describe,
        "sessions": result.sessions,
        "warnings": warnings(result),
        "bars": result.bars,
        "days": len(result.days),
        "failure": str(result.failure) if result.failure else None,
        "metrics": {k: m.as_dict() for k, m in all_metrics(result).items()},
        "refusals": {a.agent_id: {"refused": dict(a.rejected), "refused_by_agent": dict(a.refused_by_agent),
                                  "held_back": dict(a.held_back), "canceled_at_closing": a.canceled_at_closing,
                                  "alerts": list(a.alerts)}
                     for a in result.agents.values()},
    }
    paths["metrics.json"].write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return paths
