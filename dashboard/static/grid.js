// The dashboard's data grids: window.TraderGrid, a thin layer over Tabulator 6
// (static/vendor/tabulator-tables, loaded before this file, with its "simple" theme).
//
//   const grid = TraderGrid.create(el, {columns, rows, index, height, persistKey, onAction});
//     columns     [{field, title, type, frozen, html, ...}]: type "text" (default), "number" (thousands
//                 separators, right-aligned, numeric sort), "pnl" (a number, signed: class pos/neg) or "html"
//                 (html(row, value) -> an HTML string: links, buttons; the function escapes what it shows).
//                 Number and pnl header filters take "1000", ">=1000", "<0", "=5" or "!=0"; text filters match a
//                 substring, case-blind. Any other key is a Tabulator column option and passes through
//                 (width, headerFilter: false, download: false, ...). Unless a column says frozen, the first
//                 one is frozen (stays in view when the table scrolls sideways).
//     rows        the first data (objects keyed by field)
//     index       the field that identifies a row (default "id")
//     height      a CSS height: the table scrolls inside this box (virtual rows); without it, it grows
//     persistKey  keep the user's sort, filters and column widths in localStorage under this key
//     onAction    (action, row, button) for a click on any [data-action] element inside a cell
//     rowAttrs    row -> {attribute: value} set on each row's element (data-id, a class for its state)
//   grid.update(rows)          new data; sort, filters and scroll position stay as the user left them
//   grid.download("csv", name) the rows as filtered and sorted, as a file
//   grid.count()               {shown, total}; also written under the table ("12 of 40 rows")
//   grid.table                 the Tabulator instance, for anything else
//   grid.ready                 a promise, resolved once the table is built
//
//   TraderGrid.fmt.number / .signed / .html(fn)   Tabulator formatters (the column types above use them)
//   TraderGrid.esc(value)                         HTML-escapes a value, for html(fn) columns
//
// The layout is fitDataStretch: columns take the width their data needs and the last one stretches; a table
// wider than its box scrolls inside the box, so a phone never scrolls the whole page sideways.
"use strict";

(function () {
  const nf = new Intl.NumberFormat("en-US", {maximumFractionDigits: 2});

  function esc(v) {
    return String(v === null || v === undefined ? "" : v)
      .replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  }
  const isNum = v => typeof v === "number" && Number.isFinite(v);

  const fmt = {
    number(cell) { const v = cell.getValue(); return isNum(v) ? nf.format(v) : esc(v === null || v === undefined ? "-" : v); },
    signed(cell) {
      const v = cell.getValue();
      if (!isNum(v)) return esc(v === null || v === undefined ? "-" : v);
      return `<span class="${v > 0 ? "pos" : v < 0 ? "neg" : ""}">${nf.format(v)}</span>`;
    },
    html(fn) { return cell => fn(cell.getRow().getData(), cell.getValue()); },
  };

  // A number column's header filter: a comparison (">=1000", "<0", "!=0", "=5") or a substring of the figure.
  const COMPARE = /^\s*(>=|<=|!=|=|>|<)\s*(-?[\d,]*\.?\d+)\s*$/;
  function numberFilter(term, value) {
    const m = COMPARE.exec(term);
    if (!m) return String(value === null || value === undefined ? "" : value).includes(term.trim().replace(/,/g, ""));
    if (!isNum(value)) return false;
    const x = Number(m[2].replace(/,/g, ""));
    switch (m[1]) {
      case ">=": return value >= x;
      case "<=": return value <= x;
      case ">": return value > x;
      case "<": return value < x;
      case "!=": return value !== x;
      default: return value === x;
    }
  }
  function textFilter(term, value) {
    return String(value === null || value === undefined ? "" : value).toLowerCase().includes(term.toLowerCase());
  }

  function column(def, frozen) {
    const {type = "text", html, ...rest} = def;
    const col = {headerFilter: "input", headerFilterPlaceholder: "filter", resizable: true, ...rest};
    if (frozen) col.frozen = true;
    if (type === "number" || type === "pnl") {
      Object.assign(col, {sorter: "number", hozAlign: "right", headerHozAlign: "right", headerFilterFunc: numberFilter,
        formatter: type === "pnl" ? fmt.signed : fmt.number}, rest);
    } else if (type === "html") {
      if (typeof html !== "function") throw new Error(`TraderGrid: column ${def.field}: type "html" needs html(row, value)`);
      Object.assign(col, {formatter: fmt.html(html), headerFilterFunc: textFilter}, rest);
    } else {
      Object.assign(col, {headerFilterFunc: textFilter}, rest);
    }
    return col;
  }

  function create(el, opts) {
    if (!el) throw new Error("TraderGrid.create: no element");
    opts = opts || {};
    const defs = opts.columns || [];
    if (!defs.length) throw new Error("TraderGrid.create: no columns");
    const anyFrozen = defs.some(d => d.frozen);
    const footer = document.createElement("span");
    footer.className = "grid-count";
    const options = {
      data: opts.rows || [],
      index: opts.index || "id",
      columns: defs.map((d, i) => column(d, !anyFrozen && i === 0)),
      layout: "fitDataStretch",
      columnDefaults: {headerSortTristate: true},
      placeholder: "no rows",
      footerElement: footer,
    };
    if (opts.height) options.height = opts.height;
    if (opts.rowAttrs) options.rowFormatter = row => { for (const [k, v] of Object.entries(opts.rowAttrs(row.getData()))) row.getElement().setAttribute(k, v); };
    if (opts.persistKey) {
      options.persistence = {sort: true, headerFilter: true, columns: ["width"]};
      options.persistenceID = opts.persistKey;
    }
    el.classList.add("trader-grid");
    const table = new window.Tabulator(el, options);
    let built = false, pending = null;
    const ready = new Promise(resolve => table.on("tableBuilt", () => { built = true; resolve(); }));

    function count() {
      const c = built ? {shown: table.getDataCount("active"), total: table.getDataCount()} : {shown: 0, total: (opts.rows || []).length};
      footer.textContent = `${nf.format(c.shown)} of ${nf.format(c.total)} rows`;
      return c;
    }
    table.on("dataFiltered", () => setTimeout(count));
    table.on("dataProcessed", () => setTimeout(count));
    table.on("renderComplete", count);
    ready.then(count);

    if (opts.onAction) {
      table.on("cellClick", (e, cell) => {
        const btn = e.target.closest("[data-action]");
        if (btn && el.contains(btn)) opts.onAction(btn.dataset.action, cell.getRow().getData(), btn);
      });
    }

    // Data that arrives before the table is built waits for it; only the newest is applied.
    function update(rows) {
      if (!built) {
        const first = pending === null;
        pending = rows;
        return first ? ready.then(() => { const r = pending; pending = null; return update(r); }) : ready;
      }
      return table.replaceData(rows || []).then(count);
    }

    function download(type, name) {
      if (!built) return ready.then(() => download(type, name));
      table.download(type || "csv", name || "table.csv");
      return Promise.resolve();
    }

    return {table, ready, update, download, count};
  }

  window.TraderGrid = {create, fmt, esc};
})();
