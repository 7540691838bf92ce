// The Overview as a desk: the firm's figures in a strip, exposure by code, the equity curve of the day and the
// PnL over days (the daily reports of the book of record), one row per process with a clear state, and the
// alerts folded by source and kind, each group acknowledged or muted behind the token.
"use strict";

(function () {
  const T = window.trader;
  const {num, esc, kst, dur, signed, setText, setHTML, body} = T;
  const won = v => (v === null || v === undefined ? "-" : num(Math.round(v)) + " ₩");
  const pct = v => (v === null || v === undefined ? "-" : v.toFixed(2) + " %");
  const LIVENESS = {starting: "starting", running: "running", late: "late", dead: "dead"};

  function renderDesk(d) {
    setText("desk-equity", won(d.equity_won));
    setText("desk-source", d.source === "ledger" ? `book of record · ${d.ledger_date || "-"}` : "agents' own books (no ledger answer yet)");
    setHTML(document.getElementById("desk-pnl"), signed(d.pnl_today_won));
    setHTML(document.getElementById("desk-pnl-split"),
      `realised ${d.realized_today_won === null ? "-" : signed(d.realized_today_won)} · unrealised ${signed(d.unrealized_won)}`);
    setText("desk-cash", won(d.cash_won));
    setText("desk-costs", `fees ${num(d.fees_won)} · taxes ${num(d.taxes_won)}`);
    setText("desk-exposure", pct(d.exposure_pct));
    const ts = document.getElementById("trading-state");
    if (ts && ts.textContent !== d.trading_state) { ts.textContent = d.trading_state; ts.className = "big ts-" + String(d.trading_state).toLowerCase(); }
    setText("desk-holdings", `${won(d.holdings_won)} in ${d.exposure.length} code(s)`);
    const procs = d.processes || {}, agents = d.agents || {};
    const tally = c => Object.entries(c).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ") || "none";
    setText("desk-firm", `processes: ${tally(procs)} · agents: ${tally(agents)}`);
    const tb = body("exposure");
    if (tb) setHTML(tb, d.exposure.map(e => `<tr data-code="${esc(e.code)}"><td>${esc(e.code)}</td><td>${esc(e.name)}</td>` +
      `<td>${num(e.qty)}</td><td>${num(e.avg_price)}</td><td>${num(e.last)}</td><td>${num(e.value_won)}</td>` +
      `<td>${signed(e.unrealized_won)}</td><td>${pct(e.pct_of_equity)}</td><td class="detail">${esc(e.agents.join(", "))}</td></tr>`).join("")
      || '<tr><td colspan="9" class="muted">no open position</td></tr>');
    if (window.TraderCharts) TraderCharts.line(document.getElementById("equity-today"), d.curve.map(p => [p[0], p[1]]), {area: true});
    window.__overviewRendered = window.__overviewRendered || performance.now();
  }

  function renderProcesses(s) {
    const tb = body("processes");
    if (!tb) return;
    setHTML(tb, s.rows.map(p => `<tr class="live-${esc(p.liveness)}" data-name="${esc(p.name)}"><td>${esc(p.name)}</td>` +
      `<td class="state"><span class="badge ${esc(p.liveness)}" title="${esc(p.state)}">${esc(LIVENESS[p.liveness] || p.liveness)}</span></td>` +
      `<td>${p.pid || "-"}</td><td>${dur(p.uptime_s)}</td><td>${num(p.cpu_pct)}</td>` +
      `<td>${num(p.rss_mb)}</td><td>${num(p.queue_depth)}</td><td class="age">${p.heartbeat_age_s === null ? "-" : p.heartbeat_age_s + " s"}</td>` +
      `<td class="${p.warnings_1h ? "warn" : ""}">${num(p.warnings_1h)}</td>` +
      `<td class="${p.errors_1h ? "neg" : ""}" title="${esc(p.last_error)}">${num(p.errors_1h)}</td>` +
      `<td class="detail">${esc(p.detail || p.last_error || "")}</td></tr>`).join(""));
    setText("broker", s.broker);
  }

  function renderAlerts(s) {
    setText("alerts-active", `${s.active} active of ${s.groups.length} group(s) · ${num(Object.values(s.counts).reduce((a, b) => a + b, 0))} alert(s)`);
    const tb = body("alert-groups");
    if (tb) setHTML(tb, s.groups.map(g => {
      const cls = `lvl-${esc(g.level)}${g.active ? "" : " quiet"}`;
      const mark = g.muted ? ` <span class="muted">muted until ${esc(kst(g.muted_until_ns))}</span>` : g.acked ? ' <span class="muted">acknowledged</span>' : "";
      const acts = (g.active ? `<button class="alert-act" data-action="ack" data-key="${esc(g.key)}">ack</button>` : "") +
        (g.muted ? `<button class="alert-act" data-action="mute" data-minutes="0" data-key="${esc(g.key)}">unmute</button>`
          : `<button class="alert-act" data-action="mute" data-minutes="60" data-key="${esc(g.key)}">mute 1h</button>`);
      return `<tr class="${cls}" data-key="${esc(g.key)}"><td>${esc(kst(g.last_ns, true))}</td><td>${esc(g.level)}</td>` +
        `<td>${esc(g.source)}</td><td>${esc(g.kind)}</td><td class="count">${num(g.count)}</td><td class="text">${esc(g.text)}${mark}</td>` +
        `<td>${esc(kst(g.first_ns))}</td><td class="ctl">${acts}</td></tr>`;
    }).join("") || '<tr><td colspan="8" class="muted">no alerts</td></tr>');
    const wf = document.getElementById("webhook-failures");
    if (wf) setHTML(wf, s.webhook_failures.length ? '<div class="warn">alert delivery failures: ' + T.kv(s.webhook_failures) + "</div>" : "");
  }

  // Daily reports come as trading dates (YYYY-MM-DD or YYYYMMDD): each point sits at 15:30 KST of its day.
  function dateNs(d) {
    const s = String(d).replace(/-/g, "");
    return Date.UTC(+s.slice(0, 4), +s.slice(4, 6) - 1, +s.slice(6, 8), 6, 30) * 1e6;
  }

  async function loadDays() {
    try {
      const res = await fetch("/api/days?agent=ACCOUNT");
      const data = await res.json();
      const days = data.days || [];
      setText("days-note", days.length ? `(${days.length} day(s), realised to date plus unrealised at each close)` : "(no daily report yet)");
      if (window.TraderCharts) TraderCharts.line(document.getElementById("pnl-days"), days.map(r => [dateNs(r.trading_date), r.total_pnl_won]), {zero: true});
    } catch (err) {
      setText("days-note", `(daily reports unavailable: ${err})`);
    }
  }

  async function alertAction(btn) {
    const token = (document.getElementById("token") || {}).value || sessionStorage.getItem("token") || "";
    const headers = {"Content-Type": "application/x-www-form-urlencoded"};
    if (token) headers.Authorization = "Bearer " + token;
    const form = new URLSearchParams({key: btn.dataset.key, minutes: btn.dataset.minutes || "60"});
    try {
      const res = await fetch(`/api/alerts/${btn.dataset.action}`, {method: "POST", headers, body: form.toString()});
      const data = await res.json();
      T.flash(res.ok ? `${btn.dataset.action} ${btn.dataset.key}: done` : `${btn.dataset.action} refused (${res.status} ${data.reason_code || ""}): ${data.error || ""}`, res.ok);
    } catch (err) {
      T.flash(`${btn.dataset.action} failed: ${err}`, false);
    }
  }

  document.addEventListener("click", e => {
    const btn = e.target.closest("button.alert-act");
    if (btn) alertAction(btn);
  });

  T.register("desk", renderDesk);
  T.register("processes", renderProcesses);
  T.register("alerts", renderAlerts);
  loadDays();
  setInterval(loadDays, 60_000);
})();
