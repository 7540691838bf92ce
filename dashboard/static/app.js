// The dashboard's live script: renders the page from the embedded state, then keeps it
// current from the Server-Sent Events stream, reconnecting by itself and showing a
// "stale since ..." banner when nothing has arrived for a few seconds.
"use strict";

const STALE_AFTER_MS = 3000;
const page = document.body.dataset.page;
const state = JSON.parse(document.getElementById("initial").textContent);
let lastMessageAt = Date.now();
let source = null;
let reconnectDelay = 500;

// --- formatting ---------------------------------------------------------------

// Thousands separators and at most 3 decimals, as Intl.NumberFormat("en-US") gives, without its set-up cost
// (tens of ms on a page's first load).
function fmtNumber(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  const [i, f] = (Number.isInteger(a) ? String(a) : a.toFixed(3).replace(/0+$/, "").replace(/\.$/, "")).split(".");
  const text = i.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + (f ? "." + f : "");
  return v < 0 && text !== "0" ? "-" + text : text;
}
function num(v) { return v === null || v === undefined || v === "" ? "-" : (typeof v === "number" ? fmtNumber(v) : String(v)); }
function esc(v) {
  return String(v === null || v === undefined ? "" : v).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function kst(ns, withDate) {
  if (!ns) return "-";
  const d = new Date(ns / 1e6 + 9 * 3600 * 1000);
  const iso = d.toISOString();
  return (withDate ? iso.slice(0, 10) + " " : "") + iso.slice(11, 19) + " KST";
}
function local(ms) { return new Date(ms).toLocaleTimeString(); }
function dur(s) {
  if (s === null || s === undefined) return "-";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
}
function signed(v) { return typeof v === "number" ? `<span class="${v > 0 ? "pos" : v < 0 ? "neg" : ""}">${num(v)}</span>` : num(v); }
function setText(id, text) { const el = document.getElementById(id); if (el && el.textContent !== text) el.textContent = text; }
// A button replaced between the press and the release of a click loses the click (the page re-renders on every
// push, and an alert storm pushes many times a second): while a pointer is down, what holds its target waits,
// and is written once the click has been dispatched.
let pressed = null;
const held = new Map();
document.addEventListener("pointerdown", e => { pressed = e.target; }, true);
function release() {
  pressed = null;
  setTimeout(() => { const due = [...held]; held.clear(); for (const [el, html] of due) setHTML(el, html); }, 0);
}
document.addEventListener("pointerup", release, true);
document.addEventListener("pointercancel", release, true);
window.addEventListener("blur", () => { if (pressed) release(); });
function setHTML(el, html) {
  if (!el) return;
  if (pressed && el.contains(pressed)) { held.set(el, html); return; }
  if (el.__html !== html) { el.innerHTML = html; el.__html = html; }
}
function body(tableId) { const t = document.getElementById(tableId); return t ? t.tBodies[0] : null; }
function kv(data) {
  if (data === null || data === undefined) return '<span class="muted">-</span>';
  if (Array.isArray(data)) {
    if (!data.length) return '<span class="muted">none</span>';
    if (typeof data[0] === "object" && data[0] !== null) {
      const cols = Object.keys(data[0]);
      return `<table class="grid"><thead><tr>${cols.map(c => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>` +
        data.map(r => `<tr>${cols.map(c => `<td>${typeof r[c] === "object" ? kv(r[c]) : esc(num(r[c]))}</td>`).join("")}</tr>`).join("") + "</tbody></table>";
    }
    return esc(data.join(", "));
  }
  if (typeof data === "object") {
    return '<table class="kv">' + Object.entries(data).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${kv(v)}</td></tr>`).join("") + "</table>";
  }
  return esc(num(data));
}

// --- charts (static/charts.js: TradingView lightweight-charts) ----------------------

function lineChart(el, points, opts) { window.TraderCharts.line(el, points, opts || {}); }

function candleChart(el, bars, fills) { window.TraderCharts.candles(el, bars, fills); }

// --- pages -------------------------------------------------------------------

function renderProcesses(s) {
  const tb = body("processes");
  if (!tb) return;
  setHTML(tb, s.rows.map(p => `<tr class="${p.up ? "" : "down"}" data-name="${esc(p.name)}"><td>${esc(p.name)}</td>` +
    `<td class="state">${esc(p.state)}</td><td>${p.pid || "-"}</td><td>${dur(p.uptime_s)}</td><td>${num(p.cpu_pct)}</td>` +
    `<td>${num(p.rss_mb)}</td><td>${num(p.queue_depth)}</td><td class="age">${p.heartbeat_age_s === null ? "-" : p.heartbeat_age_s + " s"}</td>` +
    `<td class="detail">${esc(p.detail || "")}</td></tr>`).join(""));
  setText("broker", s.broker);
}

// The venue: its label in the header, the LIVE banner on every page, the KIS stream on the overview.
function renderVenue(v) {
  const label = document.getElementById("venue");
  if (label) { if (label.textContent !== v.label) label.textContent = v.label; label.className = "venue" + (v.live ? " live" : ""); }
  const banner = document.getElementById("live-banner");
  if (banner) { banner.hidden = !v.banner; if (banner.textContent !== v.banner) banner.textContent = v.banner; }
  if (v.kind !== "kis") { setText("venue-summary", v.label); return; }
  setText("venue-summary", v.heard ? `${v.label} · stream ${v.stream} · ${v.ready ? "orders go out" : "orders refused until caught up"}`
    : `${v.label} · the gateway has not reported yet`);
  const codes = list => list.length ? esc(list.join(", ")) : '<span class="muted">none</span>';
  const panel = document.getElementById("venue-codes");
  if (panel) setHTML(panel, `<h2>KIS stream: which codes are streamed and which polled</h2><table class="kv">` +
    `<tr><th>streamed (${num(v.streamed)})</th><td data-k="streamed">${v.streamed_codes.length || !v.streamed ? codes(v.streamed_codes) : '<span class="muted">codes not asked yet</span>'}</td></tr>` +
    `<tr><th>polled over REST (${num(v.polled)})</th><td data-k="polled">${v.polled_codes.length || !v.polled ? codes(v.polled_codes) : '<span class="muted">codes not asked yet</span>'}</td></tr>` +
    `<tr><th>orders of unknown fate</th><td>${codes(v.orders_in_doubt)}</td></tr>` +
    `<tr><th>reduce-only codes</th><td>${codes(v.reduce_only_codes)}</td></tr></table>`);
}

function renderAlerts(s) {
  const tb = body("alerts");
  if (tb) setHTML(tb, s.rows.map(a => `<tr class="lvl-${esc(a.level)}"><td>${esc(kst(a.ts_ns, true))}</td><td>${esc(a.level)}</td>` +
    `<td>${esc(a.source)}</td><td>${esc(a.kind)}</td><td>${esc(a.text)}</td></tr>`).join("") || '<tr><td colspan="5" class="muted">no alerts</td></tr>');
  const wf = document.getElementById("webhook-failures");
  if (wf) setHTML(wf, s.webhook_failures.length ? '<div class="warn">webhook delivery failures: ' + kv(s.webhook_failures) + "</div>" : "");
}

function renderBus(s) {
  const tb = body("rates");
  if (tb) setHTML(tb, Object.entries(s.counts).sort().map(([k, n]) => `<tr><td>${esc(k)}</td><td>${num(s.rates[k] || 0)}</td><td>${num(n)}</td></tr>`).join(""));
  const total = Object.values(s.rates).reduce((a, b) => a + b, 0);
  setText("bus-summary", `${num(Math.round(total))} msg/s`);
  const gaps = Object.values(s.gaps).reduce((a, b) => a + b, 0), bad = Object.values(s.bad_frames).reduce((a, b) => a + b, 0);
  setText("bus-gaps", `missed ${num(gaps)}, bad frames ${num(bad)}`);
}

function renderClock(s) {
  setText("clock", kst(s.market_ts_ns, true));
  setText("session", s.session && s.session.phase ? `${s.session.phase} · ${s.session.trading_date} · x${s.session.clock_speed}` : "no session event yet");
}

function renderRisk(s) {
  const el = document.getElementById("trading-state");
  if (el) { el.textContent = s.trading_state; el.className = "big ts-" + s.trading_state.toLowerCase(); }
  const st = document.getElementById("risk-status");
  if (st) setHTML(st, s.status ? (s.status.ok ? kv(s.status.result) : `<p class="warn">risk guard unavailable: ${esc(s.status.error)}</p>`) : '<p class="muted">not asked yet</p>');
  const rb = document.getElementById("risk-bus");
  if (rb) setHTML(rb, s.bus && s.bus.payload ? kv(s.bus.payload) : '<p class="muted">nothing yet</p>');
}

function renderRecon(s) {
  const b = document.getElementById("recon-breaks");
  if (b) setHTML(b, s.breaks && s.breaks.length
    ? `<p class="warn">${s.breaks.length} break(s): shown until gone or booked as an adjustment</p>` + kv(s.breaks)
    : `<p class="muted">no break${s.pending ? ` (${s.pending} difference(s) pending)` : ""}</p>`);
  const lb = document.getElementById("ledger-books");
  if (lb) setHTML(lb, s.books && s.books.length ? `<p class="muted">open on ${esc(s.ledger_date || "-")}</p>` + kv(s.books) : '<p class="muted">not asked yet</p>');
  const la = document.getElementById("ledger-adjustments");
  if (la) setHTML(la, kv(s.adjustments || []));
  const l = document.getElementById("recon-latest");
  if (l) setHTML(l, s.latest ? (s.latest.ok ? kv(s.latest.result) : `<p class="warn">reconciler unavailable: ${esc(s.latest.error)}</p>`) : '<p class="muted">not asked yet</p>');
  const r = document.getElementById("recon-reports");
  if (r) setHTML(r, s.reports.length ? s.reports.map(x => `<h3>${esc(kst(x.ts_ns, true))} from ${esc(x.sender)}</h3>` + kv(x.payload)).join("") : '<p class="muted">none yet</p>');
}

function renderMarket(s) {
  const tb = body("board");
  if (tb) setHTML(tb, s.rows.map(q => `<tr data-code="${esc(q.code)}"><td>${esc(q.code)}</td><td>${esc(q.name)}</td>` +
    `<td data-k="last">${num(q.last)}${q.vi ? ` <span class="warn" title="volatility interruption: a 2-minute single-price auction">VI</span>` : ""}</td>` +
    `<td>${signed(q.change)}</td><td>${signed(q.change_pct)}</td>` +
    `<td data-k="bid" title="${num(q.bid_qty)} shown">${num(q.bid)}</td><td data-k="ask" title="${num(q.ask_qty)} shown">${num(q.ask)}</td><td>${q.spread == null ? "-" : num(q.spread)}</td>` +
    `<td>${num(q.volume)}</td><td>${num(q.vwap)}</td><td>${signed(q.foreign_net_qty)}${q.flow_provisional ? "*" : ""}</td>` +
    `<td>${signed(q.institution_net_qty)}</td><td>${signed(q.individual_net_qty)}</td>` +
    `<td data-k="per">${q.per == null ? "-" : q.per.toFixed(2)}</td><td data-k="pbr">${q.pbr == null ? "-" : q.pbr.toFixed(2)}</td>` +
    `<td>${q.dividend_yield_pct == null ? "-" : q.dividend_yield_pct.toFixed(2)}</td></tr>`).join(""));
  const pct = v => (100 * v).toFixed(2) + " %";
  lineChart(document.getElementById("discount"), s.discount, {fmt: pct});
  if (s.discount.length) setText("discount-now", pct(s.discount[s.discount.length - 1][1]));
}

const RENDER = {processes: renderProcesses, alerts: renderAlerts, bus: renderBus, clock: renderClock, risk: renderRisk,
  recon: renderRecon, market: renderMarket, venue: renderVenue};

function render(update) {
  for (const [section, fn] of Object.entries(RENDER)) {
    if (update[section] === undefined) continue;
    state[section] = update[section];
    if (page === "agent" && section !== "agents" && section !== "venue") continue;
    fn(update[section]);
  }
  if (update.agent !== undefined) { state.agent = update.agent; if (RENDER.agent) RENDER.agent(update.agent); }
}

// --- the live stream -------------------------------------------------------------

function connect() {
  if (source) source.close();
  setText("conn", "connecting…");
  source = new EventSource("/api/stream?" + document.body.dataset.stream);
  source.addEventListener("open", () => { reconnectDelay = 500; setText("conn", "live"); document.getElementById("conn").className = "conn live"; });
  source.addEventListener("state", e => { lastMessageAt = Date.now(); render(JSON.parse(e.data)); });
  source.addEventListener("ping", () => { lastMessageAt = Date.now(); });
  source.addEventListener("error", () => {
    document.getElementById("conn").className = "conn";
    setText("conn", "reconnecting…");
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(connect, reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, 8000);
    }
  });
}

setInterval(() => {
  const banner = document.getElementById("stale");
  const silent = Date.now() - lastMessageAt;
  if (silent > STALE_AFTER_MS) {
    banner.hidden = false;
    setText("stale", `Stale since ${local(lastMessageAt)}: no update for ${Math.round(silent / 1000)} s, reconnecting…`);
    if (silent > 2 * STALE_AFTER_MS && source && source.readyState !== EventSource.CONNECTING) connect();
  } else if (!banner.hidden) {
    banner.hidden = true;
  }
}, 500);

// --- controls ------------------------------------------------------------------

function flash(text, ok) {
  const el = document.getElementById("flash");
  el.hidden = false; el.className = "flash " + (ok ? "ok" : "bad"); el.textContent = text;
}

async function act(action, id) {
  const token = (document.getElementById("token") || {}).value || sessionStorage.getItem("token") || "";
  const url = id ? `/api/agents/${encodeURIComponent(id)}/${action}` : `/api/risk/${action}`;
  const headers = {"Content-Type": "application/x-www-form-urlencoded"};
  if (token) headers.Authorization = "Bearer " + token;
  try {
    const res = await fetch(url, {method: "POST", headers, body: ""});
    const data = await res.json();
    const what = `${action}${id ? " " + id : ""}`;
    const state = res.ok && data.result && data.result.state ? ` (${data.result.state})` : "";
    flash(res.ok ? `${what}: done${state}` : `${what} refused (${res.status} ${data.reason_code || ""}): ${data.error || ""}`, res.ok);
  } catch (err) {
    flash(`${action} failed: ${err}`, false);
  }
}

document.addEventListener("click", e => {
  const btn = e.target.closest("button.act");
  if (btn) { act(btn.dataset.action, btn.dataset.id); return; }
});
document.addEventListener("input", e => {
  if (e.target.id === "token") sessionStorage.setItem("token", e.target.value);
});

// What page scripts (static/*.js loaded after this one) use: the helpers, the state, and register(section, fn),
// which makes fn the renderer of a section of the stream (replacing this file's own, if any).
window.trader = {state, page, num, esc, kst, dur, signed, setText, setHTML, body, kv, act, flash, render,
  register(section, fn) { RENDER[section] = fn; }};

const tokenBox = document.getElementById("token");
if (tokenBox) tokenBox.value = sessionStorage.getItem("token") || "";
// Page scripts load after this one; the first render waits for them.
document.addEventListener("DOMContentLoaded", () => { render(state); connect(); });
