// One agent's page: its figures, the chart of its code with its fills, PnL through the day and equity over
// days, the book as panels (cash; positions with cost and PnL; open orders; today's orders and fills), the
// strategy's own state as a table (asked of the agent's status page through the dashboard), and control.
"use strict";

(function () {
  const T = window.trader;
  const {num, esc, kst, signed, setHTML, body} = T;
  const agentId = (document.getElementById("agent-links") || {dataset: {}}).dataset.agent;
  const TERMINAL = new Set(["filled", "cancelled", "rejected", "expired"]);
  const card = (t, v, sub) => `<div class="card"><h3>${t}</h3><div class="big">${v}</div>${sub ? `<div class="muted">${sub}</div>` : ""}</div>`;
  const kvRows = rows => `<table class="kv">${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v}</td></tr>`).join("")}</table>`;

  // A strategy's state as a readable table: scalars as they are, short lists inline, longer ones summed up.
  function value(v) {
    if (v === null || v === undefined) return '<span class="muted">-</span>';
    if (Array.isArray(v)) {
      if (v.length <= 6 && v.every(x => typeof x !== "object")) return esc(v.map(x => typeof x === "number" ? num(x) : x).join(", "));
      const nums = v.filter(x => typeof x === "number");
      return nums.length === v.length && v.length
        ? `${v.length} values, last ${num(v[v.length - 1])} (min ${num(Math.min(...nums))}, max ${num(Math.max(...nums))})`
        : `${v.length} item(s)`;
    }
    if (typeof v === "object") return kvRows(Object.entries(v).map(([k, x]) => [k, value(x)]));
    if (typeof v === "number") return num(Math.round(v * 1e4) / 1e4);
    return esc(v);
  }

  function renderAgent(d) {
    if (!d) return;
    const r = d.row, b = d.book || {};
    setHTML(document.getElementById("agent-links"), `code ${esc(r.codes.join(", "))} · strategy ${esc(r.strategy)} · ` +
      `<span class="badge ${esc(r.liveness)}">${esc(r.state)}</span>` +
      (r.dp ? ` · <a href="http://127.0.0.1:${r.dp}/">its own status page (port ${r.dp})</a>` : "") +
      (r.book_source && r.book_source !== "agent" ? ` · <span class="muted">book from ${esc(r.book_source)}</span>` : ""));
    const refusals = Object.entries(r.refusals || {}).map(([k, n]) => `${esc(k)} ${n}`).join(", ") || "none";
    setHTML(document.getElementById("agent-summary"),
      card("equity", num(b.equity_won), `cash ${num(r.cash_won)}`) +
      card("PnL", signed((r.realized_pnl_won || 0) + (r.unrealized_pnl_won || 0)), `realised ${signed(r.realized_pnl_won)} · unrealised ${signed(r.unrealized_pnl_won)}`) +
      card("return", `${signed(r.return_pct)} %`, `on ${num(b.allocation_won || r.allocation_won)} allocated`) +
      card("open orders", num(r.open_orders), `refusals: ${refusals}`) +
      card("warnings / errors 1h", `${num(r.warnings_1h)} / ${num(r.errors_1h)}`, r.last_error ? `last: ${esc(r.last_error)}` : "no error"));
    setHTML(document.getElementById("agent-cash"), d.book ? kvRows([
      ["allocated", num(b.allocation_won)], ["cash", num(b.cash_won)], ["on hold for orders", num(b.cash_on_hold_won)],
      ["available", num(b.cash_available_won)], ["holdings at last price", num(b.holdings_value_won)], ["equity", num(b.equity_won)],
      ["fees paid", num(b.fees_won)], ["taxes paid", num(b.taxes_won)], ["adjustments", num(b.adjustments_won)]])
      : '<p class="muted">no book seen yet</p>');
    const pos = Object.entries(b.positions || {}).filter(([, p]) => p.qty || p.pending_buy_qty || p.pending_sell_qty || p.realized_pnl_won);
    setHTML(body("positions"), pos.map(([code, p]) => `<tr data-code="${esc(code)}"><td>${esc(code)}</td><td>${num(p.qty)}</td>` +
      `<td>${num(p.avg_price)}</td><td>${num(p.last_price)}</td><td>${num(p.value_won)}</td><td>${num(p.cost_won)}</td>` +
      `<td>${signed(p.unrealized_pnl_won)}</td><td>${signed(p.realized_pnl_won)}</td><td>${num(p.break_even_price)}</td>` +
      `<td>${p.qty && typeof p.return_after_costs === "number" ? signed(Math.round(p.return_after_costs * 1e4) / 100) + " %" : "-"}</td>` +
      `<td>${num(p.pending_buy_qty)}</td><td>${num(p.pending_sell_qty)}</td></tr>`).join("") || '<tr><td colspan="12" class="muted">no position</td></tr>');
    const open = d.orders.filter(o => !TERMINAL.has(o.status));
    setHTML(body("open-orders"), open.map(o => `<tr><td>${esc(kst(o.ts_ns))}</td><td>${esc(o.client_order_id)}</td><td>${esc(o.side)}</td>` +
      `<td>${num(o.qty)}</td><td>${num(o.price)}</td><td class="state">${esc(o.status)}</td><td>${num(o.filled_qty)}</td></tr>`).join("")
      || '<tr><td colspan="7" class="muted">none</td></tr>');
    setHTML(body("orders"), d.orders.map(o => `<tr><td>${esc(kst(o.ts_ns))}</td><td>${esc(o.client_order_id)}</td><td>${esc(o.side)}</td><td>${num(o.qty)}</td>` +
      `<td>${num(o.price)}</td><td class="state">${esc(o.status)}</td><td>${num(o.filled_qty)}</td><td>${num(o.avg_fill_price)}</td>` +
      `<td>${esc(o.reason_code)} ${esc(o.reason_text)}</td></tr>`).join("") || '<tr><td colspan="9" class="muted">none today</td></tr>');
    setHTML(body("fills"), d.fills.map(f => `<tr><td>${esc(kst(f.ts_ns))}</td><td>${esc(f.exec_id)}</td><td>${esc(f.side)}</td><td>${num(f.qty)}</td>` +
      `<td>${num(f.price)}</td><td>${num(f.fee_won)}</td><td>${num(f.tax_won)}</td></tr>`).join("") || '<tr><td colspan="7" class="muted">none today</td></tr>');
    if (window.TraderCharts) {
      TraderCharts.candles(document.getElementById("candles"), d.bars, d.chart_fills || d.fills);
      TraderCharts.line(document.getElementById("pnl"), d.pnl, {zero: true});
    }
  }

  async function loadStatus() {
    const el = document.getElementById("agent-strategy");
    try {
      const res = await fetch(`/api/agents/${encodeURIComponent(agentId)}/status`);
      const data = await res.json();
      if (!res.ok || !data.available) { setHTML(el, `<p class="muted">${esc(data.error || res.status)}</p>`); return; }
      const st = data.strategy_state || {};
      const rows = Object.entries(st).map(([k, v]) => [k, value(v)]);
      const limits = data.limits ? Object.entries(data.limits).map(([k, v]) => [`limit: ${k}`, value(v)]) : [];
      setHTML(el, (rows.length ? kvRows(rows) : '<p class="muted">the strategy keeps no state</p>') +
        (data.phase ? `<p class="muted">phase ${esc(data.phase)} · sync ${esc((data.sync || {}).state || "-")}</p>` : "") +
        (limits.length ? `<details><summary>limits</summary>${kvRows(limits)}</details>` : ""));
    } catch (err) {
      setHTML(el, `<p class="muted">the agent's status page did not answer: ${esc(err)}</p>`);
    }
  }

  function dateNs(d) {
    const s = String(d).replace(/-/g, "");
    return Date.UTC(+s.slice(0, 4), +s.slice(4, 6) - 1, +s.slice(6, 8), 6, 30) * 1e6;
  }

  async function loadDays() {
    try {
      const res = await fetch(`/api/days?agent=${encodeURIComponent(agentId)}`);
      const data = await res.json();
      const days = data.days || [];
      const start = (T.state.agent && T.state.agent.row.allocation_won) || 0;
      T.setText("agent-days-note", days.length ? `(${days.length} day(s) of daily reports${start ? "" : ", as PnL"})` : "(no daily report yet)");
      if (window.TraderCharts) TraderCharts.line(document.getElementById("agent-days"), days.map(r => [dateNs(r.trading_date), start + r.total_pnl_won]), {});
    } catch (err) {
      T.setText("agent-days-note", `(daily reports unavailable: ${err})`);
    }
  }

  T.register("agent", renderAgent);
  if (agentId) { loadStatus(); loadDays(); setInterval(loadStatus, 5000); setInterval(loadDays, 60_000); }
})();
