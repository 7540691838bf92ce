"""The dashboard's HTML: one shell per page, with the live parts filled in by ``static/app.js``.

Pages are rendered on the server with their first state embedded as JSON, so
they show data at once and work without any request beyond this app (no CDN,
nothing from outside: the page works offline). The script then keeps them
current from the live stream.
"""

from __future__ import annotations

import json
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

STATIC_DIR = Path(__file__).parent / "static"
# Loaded by every page before its own scripts and styles: the chart library (static/vendor, see
# dashboard/vendor.py) and its wrapper (TraderCharts).
BASE_SCRIPTS = ("vendor/lightweight-charts/lightweight-charts.standalone.production.js", "charts.js")
BASE_STYLES: tuple[str, ...] = ()
# What a page with a data grid adds (TraderGrid over Tabulator): 440 KiB the other pages do without.
GRID_SCRIPTS = ("vendor/tabulator-tables/tabulator.min.js", "grid.js")
GRID_STYLES = ("vendor/tabulator-tables/tabulator_simple.min.css",)

NAV = (
    ("overview", "/", "Overview"),
    ("agents", "/agents", "Agents"),
    ("market", "/market", "Market"),
    ("risk", "/risk", "Risk"),
    ("recon", "/recon", "Reconciliation"),
    ("blotter", "/blotter", "Blotter"),
    ("reports", "/reports", "Reports"),
    ("config", "/config", "Configuration"),
)


def _embed(data: Any) -> str:
    # "</" inside a script element would end it early.
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


@cache
def _asset(name: str) -> str:
    """A file of ``static/``, read once: inlined so a page needs no second request to show data."""
    return (STATIC_DIR / name).read_text()


def page(name: str, title: str, body: str, initial: Any, *, stream: str, control: bool,
         scripts: tuple[str, ...] = (), styles: tuple[str, ...] = ()) -> str:
    """A whole page: navigation, venue, token field, LIVE and stale banners, ``body``, the first state and the script.

    The venue label and the LIVE banner are rendered here from the first state
    as well as by the script, so a page shows them even before it runs.
    ``scripts`` and ``styles`` are files under ``static/`` (a vendored library,
    a page's own renderers) loaded after ``app.js``: a page script registers
    its renderers with ``trader.register(section, fn)`` and the first render
    runs once every script has loaded.
    """
    here = ' class="here"'
    nav = "".join(
        f'<a href="{href}"{here if key == name else ""}>{escape(label)}</a>' for key, href, label in NAV
    )
    token_box = (
        '<label class="token">token <input id="token" type="password" autocomplete="off" '
        'placeholder="to control"></label>'
        if control
        else '<span class="token muted" title="set TRADER_DASHBOARD_TOKEN to enable">read-only</span>'
    )
    venue = initial.get("venue") or {}
    banner = escape(str(venue.get("banner") or ""))
    live_banner = f'<div id="live-banner" class="live-banner"{"" if banner else " hidden"}>{banner}</div>'
    venue_label = f'<span id="venue" class="venue">{escape(str(venue.get("label") or ""))}</span>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · trader</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<style>{_asset("app.css")}</style>
{"".join(f'<link rel="stylesheet" href="/static/{escape(css)}">' for css in BASE_STYLES + styles)}
</head>
<body data-page="{escape(name)}" data-stream="{escape(stream)}">
<header><strong class="brand">trader</strong><nav>{nav}</nav>
{venue_label}<span id="conn" class="conn">connecting…</span>{token_box}</header>
{live_banner}
<div id="stale" class="stale" hidden></div>
<div id="flash" class="flash" hidden></div>
<main>
<h1>{escape(title)}</h1>
{body}
</main>
<script id="initial" type="application/json">{_embed(initial)}</script>
<script>{_asset("app.js")}</script>
{"".join(f'<script src="/static/{escape(js)}"></script>' for js in BASE_SCRIPTS + scripts)}
</body></html>"""


def overview_body() -> str:
    """The desk: the firm's figures, exposure, equity curves, processes and grouped alerts."""
    return """
<section class="desk" id="desk">
 <div class="card"><h3>Equity</h3><div id="desk-equity" class="big">-</div><div id="desk-source" class="muted">-</div></div>
 <div class="card"><h3>Today's PnL</h3><div id="desk-pnl" class="big">-</div><div id="desk-pnl-split" class="muted">-</div></div>
 <div class="card"><h3>Cash</h3><div id="desk-cash" class="big">-</div><div id="desk-costs" class="muted">-</div></div>
 <div class="card"><h3>Exposure</h3><div id="desk-exposure" class="big">-</div><div id="desk-holdings" class="muted">-</div></div>
 <div class="card"><h3>Trading state</h3><div id="trading-state" class="big">-</div><div id="desk-firm" class="muted">-</div></div>
 <div class="card"><h3>Venue</h3><div id="broker" class="big">-</div><div id="venue-summary" class="muted">-</div></div>
 <div class="card"><h3>Market clock</h3><div id="clock" class="big">-</div><div id="session" class="muted">-</div></div>
</section>
<section class="split">
 <div><h2>Equity today</h2><div id="equity-today" class="chart short"></div></div>
 <div><h2>PnL over days <span class="muted" id="days-note"></span></h2><div id="pnl-days" class="chart short"></div></div>
</section>
<h2>Exposure by code</h2>
<div class="scroll"><table id="exposure" class="grid"><thead><tr><th>code</th><th>name</th><th>shares</th><th>avg price</th>
<th>last</th><th>value</th><th>unrealised</th><th>% of equity</th><th>agents</th></tr></thead><tbody></tbody></table></div>
<h2>Processes</h2>
<div class="scroll"><table id="processes" class="grid"><thead><tr><th>process</th><th>state</th><th>pid</th><th>uptime</th>
<th>cpu %</th><th>rss MB</th><th>queue</th><th>heartbeat age</th><th>warnings 1h</th><th>errors 1h</th><th>detail</th></tr></thead>
<tbody></tbody></table></div>
<div id="venue-codes"></div>
<h2>Alerts <span id="alerts-active" class="muted"></span></h2>
<div id="webhook-failures"></div>
<div class="scroll"><table id="alert-groups" class="grid"><thead><tr><th>last</th><th>level</th><th>source</th><th>kind</th>
<th>count</th><th>text</th><th>first</th><th>action</th></tr></thead><tbody></tbody></table></div>
<details><summary>Bus message rates <span id="bus-summary"></span> <span id="bus-gaps" class="muted"></span></summary>
<div class="scroll"><table id="rates" class="grid"><thead><tr><th>topic</th><th>rate</th><th>total</th></tr></thead><tbody></tbody></table></div>
</details>
"""


def agents_body() -> str:
    """The agent grid (static/agents.js): sort, filter and resize any column, export, and control each agent."""
    return """
<div class="toolbar"><input id="grid-filter" placeholder="filter all columns">
<a id="export-csv" href="/api/agents.csv" download>CSV</a> <a id="export-xlsx" href="/api/agents.xlsx">XLSX</a>
<span class="muted">exports hold the rows the filters show</span></div>
<div id="agent-grid"></div>
"""


def agent_body(agent_id: str, history: dict[str, dict[str, list[dict[str, Any]]]], journal_note: str) -> str:
    """One agent: book, orders and fills, candlesticks with fills, PnL, and earlier days from the journal."""
    days = []
    for day, rows in history.items():
        days.append(
            f"<details><summary>{escape(day)}: {len(rows['orders'])} order row(s), {len(rows['fills'])} fill(s)</summary>"
            f"{_rows_table(rows['orders'])}{_rows_table(rows['fills'])}</details>"
        )
    earlier = "".join(days) or f'<p class="muted">{escape(journal_note)}</p>'
    return f"""
<p id="agent-links" data-agent="{escape(agent_id)}"></p>
<div class="toolbar"><button class="act" data-action="spawn" data-id="{escape(agent_id)}">spawn</button>
<button class="act danger" data-action="kill" data-id="{escape(agent_id)}">kill</button>
<button class="act" data-action="restart" data-id="{escape(agent_id)}">restart</button>
<span class="muted">control needs the token</span></div>
<section class="desk" id="agent-summary"></section>
<h2>Chart</h2>
<div id="candles" class="chart" style="height:360px"></div>
<section class="split">
 <div><h2>PnL through the day</h2><div id="pnl" class="chart short"></div></div>
 <div><h2>Equity over days <span id="agent-days-note" class="muted"></span></h2><div id="agent-days" class="chart short"></div></div>
</section>
<section class="panels">
 <section><h2>Cash</h2><div id="agent-cash"></div></section>
 <section><h2>Strategy state</h2><div id="agent-strategy"><p class="muted">asking the agent…</p></div></section>
</section>
<h2>Positions</h2>
<div class="scroll"><table id="positions" class="grid"><thead><tr><th>code</th><th>shares</th><th>avg price</th><th>last</th>
<th>value</th><th>cost</th><th>unrealised</th><th>realised</th><th>break-even</th><th>return after costs</th>
<th>pending buy</th><th>pending sell</th></tr></thead><tbody></tbody></table></div>
<h2>Open orders</h2>
<div class="scroll"><table id="open-orders" class="grid"><thead><tr><th>time</th><th>client order id</th><th>side</th><th>qty</th>
<th>price</th><th>status</th><th>filled</th></tr></thead><tbody></tbody></table></div>
<h2>Orders today</h2>
<div class="scroll"><table id="orders" class="grid"><thead><tr><th>time</th><th>client order id</th><th>side</th><th>qty</th><th>price</th>
<th>status</th><th>filled</th><th>avg fill</th><th>reason</th></tr></thead><tbody></tbody></table></div>
<h2>Fills today</h2>
<div class="scroll"><table id="fills" class="grid"><thead><tr><th>time</th><th>exec id</th><th>side</th><th>qty</th><th>price</th>
<th>fee</th><th>tax</th></tr></thead><tbody></tbody></table></div>
<h2>Earlier days (journal)</h2>
<div class="scroll">{earlier}</div>
"""


def market_body() -> str:
    """The board (best quotes, VI), investor flows by class, PER and PBR, and the Samsung preferred discount."""
    return """
<div class="scroll"><table id="board" class="grid"><thead><tr><th>code</th><th>name</th><th>last</th><th>change</th><th>change %</th>
<th>bid</th><th>ask</th><th>spread</th><th>volume</th><th>VWAP</th><th>foreign net</th><th>institution net</th><th>individual net</th>
<th>PER</th><th>PBR</th><th>div. yield %</th></tr></thead><tbody></tbody></table></div>
<h2>005935 / 005930 discount</h2>
<div id="discount-now" class="big">-</div>
<div id="discount" class="chart" style="height:220px"></div>
"""


def risk_body() -> str:
    """The trading state (who, why, since when) and its controls, and every limit against its usage as a bar."""
    return """
<section class="cards">
 <div class="card"><h3>Trading state</h3><div id="trading-state" class="big">-</div><div id="trading-why" class="muted why">-</div></div>
 <div class="card"><h3>Account day PnL</h3><div id="risk-account-pnl" class="big">-</div></div>
 <div class="card"><h3>Agents by highest usage</h3><div id="risk-counts" class="big">-</div>
  <div class="muted">ok &lt; 70 % · warn &lt; 90 % · breach</div></div>
 <div class="card"><h3>Risk guard</h3><div id="risk-guard" class="big">-</div><div id="risk-guard-detail" class="muted">-</div></div>
</section>
<div id="risk-controls" class="toolbar"><input id="risk-reason" class="reason" maxlength="200"
 placeholder="reason (recorded with the change)">
<button class="act danger" data-action="halt">Halt</button>
<button class="act" data-action="reduce">Reduce only</button>
<button class="act" data-action="resume">Resume</button></div>
<h2>Limits and usage, highest first</h2>
<table id="risk-agents" class="grid usage"><thead><tr><th>agent</th><th>day loss</th><th>exposure (held + pending buys)</th>
<th>open orders</th><th>position per code (held + pending buys)</th></tr></thead><tbody></tbody></table>
<h2>The firm per code (all agents, held + pending buys)</h2><div id="risk-codes" class="codes"></div>
<details class="raw"><summary>raw</summary><div id="risk-raw"></div></details>
"""


def recon_body() -> str:
    """Breaks and pending differences with what to do about each, the reconciler's runs and the ledger's books."""
    return """
<section class="cards">
 <div class="card"><h3>Breaks</h3><div id="recon-break-count" class="big">-</div><div class="muted">until gone or booked</div></div>
 <div class="card"><h3>Pending</h3><div id="recon-pending-count" class="big">-</div><div class="muted">in flight</div></div>
 <div class="card"><h3>Last run</h3><div id="recon-latest" class="big">-</div><div id="recon-latest-detail" class="muted">-</div></div>
</section>
<div class="toolbar"><button class="recon-run">Run again</button></div>
<h2>Breaks and pending differences</h2>
<table id="recon-items" class="grid diffs"><thead><tr><th>status</th><th>kind</th><th>key</th><th>ours (ledger)</th>
<th>theirs</th><th>difference</th><th>age</th><th>what it is, what to do</th><th></th></tr></thead><tbody></tbody></table>
<form id="adjust-form" class="adjust" hidden><h3>Book an adjustment in the ledger</h3><p id="adjust-for" class="muted"></p>
<label>agent <input name="agent_id" list="recon-agents" required></label>
<label>code <input name="code" list="recon-codes" required></label>
<label>shares <input name="qty" type="number" step="1" value="0"></label>
<label>cash won <input name="cash_won" type="number" step="1" value="0"></label>
<label>reason <input name="reason" class="reason" required maxlength="500"></label>
<button type="submit">Book adjustment</button> <button type="button" id="adjust-cancel">Cancel</button></form>
<datalist id="recon-codes"></datalist><datalist id="recon-agents"></datalist>
<h2>Runs, newest first</h2>
<table id="recon-history" class="grid"><thead><tr><th>time</th><th>trigger</th><th>breaks</th><th>pending</th><th>healed</th>
<th>agents compared</th><th>duration</th><th>result</th></tr></thead><tbody></tbody></table>
<h2>The ledger (book of record)</h2><p id="ledger-date" class="muted"></p>
<table id="ledger-books" class="grid"><thead><tr><th>book</th><th>cash</th><th>holdings</th><th>realised PnL</th><th>fees</th>
<th>taxes</th><th>adjustments</th></tr></thead><tbody></tbody></table>
<h2>Adjustments</h2>
<table id="ledger-adjustments" class="grid"><thead><tr><th>adjustment</th><th>agent</th><th>code</th><th>shares</th><th>cash</th>
<th>reason</th><th>who</th></tr></thead><tbody></tbody></table>
<details class="raw"><summary>raw</summary><div id="recon-raw"></div></details>
"""


def config_body(masked: dict[str, Any], roster_note: str) -> str:
    """The effective configuration with secrets masked."""
    note = f'<p class="muted">roster: {escape(roster_note)}</p>' if roster_note else ""
    return f'{note}<div class="scroll">{_kv(masked)}</div>'


def _kv(data: Any) -> str:
    if isinstance(data, dict):
        rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{_kv(v)}</td></tr>" for k, v in data.items())
        return f'<table class="kv">{rows}</table>'
    if isinstance(data, list):
        return escape(", ".join(str(x) for x in data)) or "-"
    return escape(str(data))


def _rows_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0].keys())
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
