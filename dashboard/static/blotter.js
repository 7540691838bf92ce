// The blotter page: a day's orders and fills in two grids (TraderGrid), filtered on the server so that
// the counts and the CSV/XLSX links give exactly the rows shown. The first data is embedded in the page
// (state.blotter); every change of the day or a filter asks /api/blotter again and puts the query in the URL.
"use strict";

(function () {
  const T = window.trader;
  const FILTERS = ["agent", "code", "side", "status", "reason"];
  const NUMBERS = new Set(["qty", "price", "filled_qty", "avg_fill_price", "fee_won", "tax_won"]);
  const INDEX = {orders: "client_order_id", fills: "exec_id"};
  const grids = {};
  let asked = 0;  // the latest request; an older answer that comes after it is dropped
  let defaults = null;  // the page's query was bad: the controls are filled from the default day

  const byId = id => document.getElementById(id);

  // Server-side filters only: a grid's own header filters would make the page show rows the exports do not.
  function columns(defs) {
    return defs.map(d => {
      const col = {...d, headerFilter: false};
      if (NUMBERS.has(d.field)) col.type = "number";
      if (d.field === "time_kst") { col.type = "html"; col.html = row => T.esc((row.time_kst || "").slice(11) || "-"); }
      return col;
    });
  }

  function query() {
    const p = new URLSearchParams();
    const day = byId("blotter-date").value;
    if (day) p.set("date", day);
    for (const f of FILTERS) { const v = byId("blotter-" + f).value; if (v) p.set(f, v); }
    return p;
  }

  function options(select, values, chosen, allLabel) {
    const list = chosen && !values.includes(chosen) ? [chosen, ...values] : values;
    T.setHTML(select, (allLabel === null ? "" : `<option value="">${T.esc(allLabel)}</option>`) +
      list.map(v => `<option value="${T.esc(v)}">${T.esc(v)}</option>`).join(""));
    select.value = chosen || "";
  }

  function links(p) {
    const q = p.toString();
    const withTable = t => { const x = new URLSearchParams(p); x.set("table", t); return x.toString(); };
    byId("blotter-orders-csv").href = "/api/blotter.csv?" + withTable("orders");
    byId("blotter-fills-csv").href = "/api/blotter.csv?" + withTable("fills");
    byId("blotter-xlsx").href = "/api/blotter.xlsx" + (q ? "?" + q : "");
  }

  function showError(text) {
    const el = byId("blotter-error");
    el.hidden = !text;
    T.setText("blotter-error", text || "");
  }

  function show(data) {
    if (!data) return;
    if (data.error) {
      showError(`${data.reason} (parameter ${data.param})`);
      if (!defaults) { defaults = true; ask(new URLSearchParams(), true); }
      return;
    }
    options(byId("blotter-date"), data.days, data.date, null);
    if (!data.days.length) byId("blotter-date").innerHTML = `<option value="${T.esc(data.date)}">${T.esc(data.date)} (no rows)</option>`;
    for (const f of FILTERS) options(byId("blotter-" + f), data.options[f] || [], data.filters[f] || "", "all");
    const c = data.counts;
    T.setText("blotter-orders-count", `${T.num(c.orders)} of ${T.num(c.orders_of_day)} on ${data.date}`);
    T.setText("blotter-fills-count", `${T.num(c.fills)} of ${T.num(c.fills_of_day)} on ${data.date}`);
    if (data.problems.length) showError(data.problems.join("; "));
    const p = query();
    links(p);
    for (const table of ["orders", "fills"]) {
      if (!grids[table]) {
        grids[table] = window.TraderGrid.create(byId("blotter-" + table), {
          columns: columns(data.columns[table]), rows: data[table], index: INDEX[table], height: "360px",
          persistKey: "blotter-" + table,
        });
      } else {
        grids[table].update(data[table]);
      }
    }
    document.body.dataset.blotter = p.toString();  // what is shown, for a reader (and the browser test) to wait on
  }

  async function ask(p, keepError) {
    const mine = ++asked;
    try {
      const res = await fetch("/api/blotter?" + p.toString(), {headers: {Accept: "application/json"}});
      const data = await res.json();
      if (mine !== asked) return;
      if (!keepError) showError("");
      show(data);
      if (!data.error && !keepError) history.replaceState(null, "", "/blotter" + (p.toString() ? "?" + p.toString() : ""));
    } catch (err) {
      if (mine === asked) showError(`the blotter could not be read: ${err}`);
    }
  }

  document.addEventListener("change", e => {
    if (e.target.closest(".blotter-controls select")) ask(query(), false);
  });
  document.addEventListener("click", e => {
    if (e.target.id === "blotter-clear") {
      for (const f of FILTERS) byId("blotter-" + f).value = "";
      ask(query(), false);
    } else if (e.target.id === "blotter-refresh") {
      ask(query(), false);
    }
  });

  T.register("blotter", show);
})();
