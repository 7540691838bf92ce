// The agent grid: every agent a row (Tabulator through TraderGrid): sort, filter, resize any column, the id
// pinned, today's PnL as a sparkline, warnings and errors of the last hour, refusals by reason, the last error,
// and spawn / kill / restart (app.js's act(), behind the token). The export links carry the filters shown.
"use strict";

(function () {
  const T = window.trader;
  const {esc} = T;
  const spark = v => (window.TraderCharts && v && v.length > 1 ? TraderCharts.sparkline(v, {zero: true}) : '<span class="muted">-</span>');
  const refusalsText = r => Object.entries(r.refusals || {}).map(([k, n]) => `${k} ${n}`).join(", ");

  const columns = [
    {field: "id", title: "id", frozen: true, type: "html", html: r => `<a href="/agents/${encodeURIComponent(r.id)}">${esc(r.id)}</a>`},
    {field: "code", title: "code"},
    {field: "strategy", title: "strategy"},
    {field: "state", title: "state", type: "html",
      html: r => `<span class="badge ${esc(r.liveness)}" title="${esc(r.liveness)}">${esc(r.state)}</span>`},
    {field: "pnl_spark", title: "PnL today", type: "html", headerFilter: false, headerSort: false, download: false,
      html: r => spark(r.pnl_spark)},
    {field: "pnl_today_won", title: "PnL", type: "pnl"},
    {field: "cash_won", title: "cash", type: "number"},
    {field: "holding", title: "holding", type: "number"},
    {field: "avg_price", title: "avg price", type: "number"},
    {field: "last_price", title: "last", type: "number"},
    {field: "realized_pnl_won", title: "realised", type: "pnl"},
    {field: "unrealized_pnl_won", title: "unrealised", type: "pnl"},
    {field: "return_pct", title: "return %", type: "pnl"},
    {field: "open_orders", title: "open orders", type: "number"},
    {field: "warnings_1h", title: "warn 1h", type: "number"},
    {field: "errors_1h", title: "err 1h", type: "number"},
    {field: "refusals_text", title: "refusals", type: "html", html: r => esc(r.refusals_text || "")},
    {field: "last_error", title: "last error", type: "html", maxWidth: 320,
      html: r => `<span title="${esc(r.last_error)}">${esc(r.last_error || "")}</span>`},
    {field: "heartbeat_age_s", title: "hb age s", type: "number"},
    {field: "control", title: "control", type: "html", headerFilter: false, headerSort: false, download: false,
      html: r => `<button class="act" data-action="spawn" data-id="${esc(r.id)}">spawn</button>` +
        `<button class="act danger" data-action="kill" data-id="${esc(r.id)}">kill</button>` +
        `<button class="act" data-action="restart" data-id="${esc(r.id)}">restart</button>`},
  ];

  const el = document.getElementById("agent-grid");
  if (!el || !window.TraderGrid) return;
  const prepare = rows => rows.map(r => ({...r, refusals_text: refusalsText(r)}));
  let quick = "";
  const first = T.state.agents;  // the embedded state: the grid is built with it, the first render has nothing to add
  const grid = TraderGrid.create(el, {
    columns, rows: prepare(first ? first.rows : []), index: "id", persistKey: "agent-grid",
    height: "max(320px, calc(100vh - 150px))",  // rows scroll inside (only those in view are drawn), headers stay
    rowAttrs: r => ({"data-id": r.id, "data-liveness": r.liveness}),
  });
  window.__agentGrid = grid;

  // The export links: the quick filter and each column's header filter, as the server's q and f_<column>.
  function exportLinks() {
    const qs = new URLSearchParams();
    if (quick) qs.set("q", quick);
    for (const f of grid.table.getHeaderFilters()) if (f.value) qs.set("f_" + f.field, f.value);
    const sorters = grid.table.getSorters();
    if (sorters.length) { qs.set("sort", sorters[0].field); qs.set("desc", sorters[0].dir === "desc" ? "1" : "0"); }
    document.getElementById("export-csv").href = "/api/agents.csv?" + qs;
    document.getElementById("export-xlsx").href = "/api/agents.xlsx?" + qs;
  }

  grid.ready.then(() => {
    grid.table.on("dataFiltered", exportLinks);
    grid.table.on("dataSorted", exportLinks);
    exportLinks();
  });
  document.getElementById("grid-filter").addEventListener("input", e => {
    quick = e.target.value.trim().toLowerCase();
    if (!quick) grid.table.clearFilter();
    else grid.table.setFilter(row => Object.values(row).some(v => v !== null && typeof v !== "object" && String(v).toLowerCase().includes(quick)));
    exportLinks();
  });

  // Render figures for the benchmark: the first render since navigation, and the latest.
  const t0 = performance.now();
  grid.ready.then(() => {
    window.__gridRender = {rows: first ? first.rows.length : 0, ms: performance.now() - t0, at: performance.now()};
    if (!window.__gridFirst) window.__gridFirst = window.__gridRender;
  });
  T.register("agents", s => {
    if (s === first) return;
    const t1 = performance.now();
    grid.update(prepare(s.rows)).then(() => {
      window.__gridRender = {rows: s.rows.length, ms: performance.now() - t1, at: performance.now()};
    });
  });
})();
