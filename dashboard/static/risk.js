// The Risk and Reconciliation pages: limits against usage as bars, the trading state and its controls;
// breaks and pending differences with what to do about each, the runs, the ledger's books.
// The views come built from dashboard/riskview.py; this file only draws them.
"use strict";
(() => {
  const {num, esc, kst, signed, setHTML, setText, kv, flash} = window.trader;
  const $ = id => document.getElementById(id);

  function token() { return ($("token") || {}).value || sessionStorage.getItem("token") || ""; }

  // POST form fields with the token; the answer flashed as done or refused.
  async function post(url, fields, what) {
    const headers = {"Content-Type": "application/x-www-form-urlencoded"};
    if (token()) headers.Authorization = "Bearer " + token();
    const body = new URLSearchParams(Object.entries(fields).filter(([, v]) => v !== "" && v !== null && v !== undefined)).toString();
    try {
      const res = await fetch(url, {method: "POST", headers, body});
      const data = await res.json();
      flash(res.ok ? `${what}: done${data.result && data.result.state ? ` (${data.result.state})` : ""}`
        : `${what} refused (${res.status} ${data.reason_code || ""}): ${data.error || ""}`, res.ok);
      return res.ok ? data : null;
    } catch (err) {
      flash(`${what} failed: ${err}`, false);
      return null;
    }
  }

  function age(s) {
    if (s === null || s === undefined) return "-";
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
    return h ? `${h}h ${String(m).padStart(2, "0")}m` : m ? `${m}m ${String(sec).padStart(2, "0")}s` : `${sec}s`;
  }

  // --- Risk ---------------------------------------------------------------------

  const UNIT = {loss: "won", exposure: "won", open_orders: "", position: "sh"};

  function usageBar(key, b) {
    if (!b) return '<span class="muted">-</span>';
    const width = Math.min(100, b.pct);
    let label = `${num(b.used)} / ${num(b.limit)}`;
    if (key === "loss") label = b.day_pnl_won < 0 ? `lost ${num(-b.day_pnl_won)} / ${num(b.limit)} won` : `${b.day_pnl_won > 0 ? "+" : ""}${num(b.day_pnl_won)} today / ${num(b.limit)} won`;
    if (key === "position") label = b.code ? `${esc(b.code)}: ${num(b.used)} / ${num(b.limit)} sh` : `none / ${num(b.limit)} sh`;
    const title = key === "exposure" ? `held ${num(b.held_won)} + pending buys ${num(b.pending_buy_won)} won` :
      key === "loss" ? `day PnL ${num(b.day_pnl_won)} won` : key === "position" && b.codes > 1 ? `largest of ${b.codes} codes` : "";
    return `<div class="ubar lvl-${esc(b.level)}" data-k="${esc(key)}" data-pct="${b.pct}" title="${esc(title)}">` +
      `<span class="fill" style="width:${width}%"></span><span class="txt">${label}${key === "exposure" ? " " + UNIT.exposure : ""}</span>` +
      `<span class="pct">${b.pct.toFixed(0)} %</span></div>`;
  }

  function renderRisk(s) {
    const el = $("trading-state");
    if (el) { el.textContent = s.trading_state; el.className = "big ts-" + String(s.trading_state).toLowerCase(); }
    if (!$("risk-agents")) return;  // another page showing the trading state only
    const st = s.state || {};
    const since = st.since_ns ? `since ${kst(st.since_ns, true)} (${age(st.age_s)} ago)` : "";
    setHTML($("trading-why"), st.state && st.state !== "unknown"
      ? `set by <b>${esc(st.who || "-")}</b>${st.reason ? `: ${esc(st.reason)}` : ""}<br>${esc(since)}` +
        (st.operator ? `<br><span class="warn">the operator's last word: ${esc(st.operator.state)} by ${esc(st.operator.who)}` +
          `${st.operator.reason ? ": " + esc(st.operator.reason) : ""} at ${esc(kst(st.operator.ts_ns, true))} (in force once the guard is in sync)</span>` : "")
      : '<span class="muted">the risk guard has not answered yet</span>');
    const acct = s.account || {cells: {}};
    setHTML($("risk-account-pnl"), signed(acct.day_pnl_won));
    const g = s.guard || {};
    setText("risk-guard", g.answering ? (st.consistent === false ? "starting" : "answering") : "not answering");
    setText("risk-guard-detail", g.answering ? `session ${g.session || "-"} · ${g.trading_date || "-"} · approved ${num((g.decisions || {}).approved)}, refused ${num((g.decisions || {}).refused)}`
      : (g.error || "not asked yet"));
    const c = s.counts || {};
    setHTML($("risk-counts"), `<span class="lvl-breach-t">${num(c.breach || 0)} breach</span> · <span class="lvl-warn-t">${num(c.warn || 0)} warn</span> · ${num(c.ok || 0)} ok`);
    const cols = s.columns || [];
    const acctRow = `<tr class="account" data-agent="ACCOUNT"><td>account</td>` + cols.map(col => {
      const b = acct.cells[col.key];
      if (b) return `<td>${usageBar(col.key, b)}</td>`;
      if (col.key === "exposure") return `<td class="muted" title="no account-wide notional limit">${num(acct.exposure_won)} won</td>`;
      if (col.key === "open_orders") return `<td class="muted" title="no account-wide limit">${num(acct.open_orders)}</td>`;
      return '<td class="muted">-</td>';
    }).join("") + "</tr>";
    const rows = (s.rows || []).map(r => `<tr data-agent="${esc(r.agent)}" class="lvl-row-${esc(r.level)}">` +
      `<td><a href="/agents/${encodeURIComponent(r.agent)}">${esc(r.agent)}</a>${r.over_loss_limit ? ' <span class="warn" title="over its daily loss limit: it may only reduce">reduce only</span>' : ""}</td>` +
      cols.map(col => `<td>${usageBar(col.key, r.cells[col.key])}</td>`).join("") + "</tr>").join("");
    setHTML($("risk-agents").tBodies[0], acctRow + (rows || `<tr><td colspan="${cols.length + 1}" class="muted">no usage reported yet</td></tr>`));
    const codes = acct.codes || [];
    setHTML($("risk-codes"), codes.length ? codes.map(b => `<div class="coderow"><span class="code">${esc(b.code)}</span>${usageBar("position", b)}</div>`).join("")
      : '<p class="muted">the firm holds nothing and bids for nothing</p>');
    setHTML($("risk-raw"), `<h3>status (RPC)</h3>${s.status ? kv(s.status) : "-"}<h3>risk.state (bus)</h3>${s.bus && s.bus.payload ? kv(s.bus.payload) : "-"}`);
  }

  const controls = $("risk-controls");
  if (controls) {
    controls.addEventListener("click", e => {
      const btn = e.target.closest("button.act");
      if (!btn) return;
      e.stopPropagation();  // app.js's own act() would send no reason
      const reason = ($("risk-reason") || {}).value || "";
      post(`/api/risk/${btn.dataset.action}`, {reason: reason.trim()}, btn.dataset.action);
    });
  }

  // --- Reconciliation ---------------------------------------------------------------

  function side(v) {
    if (v === null || v === undefined) return '<span class="muted">none</span>';
    return typeof v === "object" ? esc(JSON.stringify(v)) : esc(num(v));
  }

  // A difference with its sign: +20 shares, -1,000,000 won.
  function plus(v) { return `<span class="${v > 0 ? "pos" : v < 0 ? "neg" : ""}">${v > 0 ? "+" : ""}${num(v)}</span>`; }

  let items = [];

  function renderRecon(s) {
    items = (s.breaks || []).concat(s.pending_items || []);
    setText("recon-break-count", String((s.breaks || []).length));
    setText("recon-pending-count", String(s.pending || 0));
    const last = s.last_run;
    setText("recon-latest", last ? last.result : (s.reconciler_error ? "reconciler not answering" : "no run yet"));
    setText("recon-latest-detail", last ? `${kst(last.ts_ns, true)} · ${last.trigger}${last.error ? " · " + last.error : ""}` : (s.reconciler_error || ""));
    const tb = $("recon-items").tBodies[0];
    setHTML(tb, items.map((d, i) => `<tr class="st-${esc(d.status)}" data-kind="${esc(d.kind)}" data-key="${esc(d.key)}">` +
      `<td>${esc(d.status)}</td><td>${esc(d.kind)}</td><td>${esc(d.key)}${d.agent && !d.key.startsWith(d.agent) ? `<br><span class="muted">${esc(d.agent)}</span>` : ""}</td>` +
      `<td class="side">${side(d.ours)}</td><td class="side">${side(d.theirs)} <span class="muted">(${esc(d.theirs_label)})</span></td>` +
      `<td class="delta">${d.delta === null || d.delta === undefined ? "-" : plus(d.delta) + " " + esc(d.unit)}</td>` +
      `<td class="age" title="first seen ${esc(kst(d.first_seen_ns, true))}">${age(d.age_s)}</td>` +
      `<td class="what"><div>${esc(d.what)}</div><div class="muted">${esc(d.advice)}</div></td>` +
      `<td class="ctl">${d.adjust ? `<button class="recon-adjust" data-i="${i}">book adjustment</button> ` : ""}` +
      `<button class="recon-run">run again</button></td></tr>`).join("") ||
      '<tr><td colspan="9" class="muted">no break and nothing pending</td></tr>');
    setHTML($("recon-history").tBodies[0], (s.history || []).map(h => `<tr class="${h.breaks ? "has-breaks" : h.error ? "has-error" : ""}">` +
      `<td>${esc(kst(h.ts_ns, true))}</td><td>${esc(h.trigger)}</td><td>${num(h.breaks)}</td><td>${num(h.pending)}</td>` +
      `<td>${num(h.healed)}</td><td>${h.agents_compared === null ? "-" : num(h.agents_compared)}</td>` +
      `<td>${h.duration_ms === null ? "-" : num(h.duration_ms) + " ms"}</td><td class="what" title="${esc(h.error)}">${esc(h.result)}</td></tr>`).join("") ||
      '<tr><td colspan="8" class="muted">no run seen yet</td></tr>');
    setText("ledger-date", s.ledger_date ? `open on ${s.ledger_date}` : "the order manager has not answered yet");
    setHTML($("ledger-books").tBodies[0], (s.books || []).map(b => `<tr data-book="${esc(b.book)}"><td>${esc(b.book)}</td>` +
      `<td>${num(b.cash_won)}</td><td>${esc(b.holdings) || '<span class="muted">none</span>'}</td><td>${signed(b.realized_pnl_won)}</td>` +
      `<td>${num(b.fees_won)}</td><td>${num(b.taxes_won)}</td><td>${num(b.adjustments)}</td></tr>`).join("") ||
      '<tr><td colspan="7" class="muted">no book yet</td></tr>');
    setHTML($("ledger-adjustments").tBodies[0], (s.adjustments || []).map(a => `<tr><td>${esc(a.adjustment_id)}</td><td>${esc(a.agent_id)}</td>` +
      `<td>${esc(a.code)}</td><td>${signed(a.qty)}</td><td>${signed(a.cash_won)}</td><td class="what">${esc(a.reason)}</td><td>${esc(a.who)}</td></tr>`).join("") ||
      '<tr><td colspan="7" class="muted">none</td></tr>');
    setHTML($("recon-codes"), (s.codes || []).map(c => `<option value="${esc(c)}">`).join(""));
    setHTML($("recon-agents"), (s.agents || []).map(a => `<option value="${esc(a)}">`).join(""));
    setHTML($("recon-raw"), `<h3>latest (RPC)</h3>${s.latest ? kv(s.latest) : "-"}<h3>reports on the bus</h3>` +
      ((s.reports || []).map(x => `<h4>${esc(kst(x.ts_ns, true))} from ${esc(x.sender)}</h4>` + kv(x.payload)).join("") || "-"));
  }

  function openAdjust(d) {
    const form = $("adjust-form");
    for (const [k, v] of Object.entries({agent_id: d.adjust.agent_id, code: d.adjust.code, qty: d.adjust.qty, cash_won: d.adjust.cash_won}))
      form.elements[k].value = v;
    form.elements.reason.value = "";
    setText("adjust-for", `${d.kind} ${d.key}: ${d.what}`);
    form.hidden = false;
    form.scrollIntoView({block: "nearest"});
    (form.elements.agent_id.value ? form.elements.reason : form.elements.agent_id).focus();
  }

  const form = $("adjust-form");
  if (form) {
    document.addEventListener("click", e => {
      const adj = e.target.closest("button.recon-adjust");
      if (adj) { openAdjust(items[Number(adj.dataset.i)]); return; }
      if (e.target.closest("button.recon-run")) {
        post("/api/recon/run", {}, "reconciliation run").then(d => {
          if (d && d.result) flash(`reconciliation run: ${d.result.error ? "could not run: " + d.result.error
            : d.result.clean ? "clean" : `${(d.result.breaks || []).length} break(s), ${(d.result.pending || []).length} pending`}`, !d.result.error);
        });
      }
      if (e.target.closest("#adjust-cancel")) form.hidden = true;
    });
    form.addEventListener("submit", async e => {
      e.preventDefault();
      const fields = Object.fromEntries(new FormData(form).entries());
      if (await post("/api/ledger/adjust", fields, `adjustment ${fields.agent_id} ${fields.code}`)) form.hidden = true;
    });
  }

  window.trader.register("risk", renderRisk);
  window.trader.register("recon", renderRecon);
})();
