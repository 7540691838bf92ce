// The dashboard's charts: window.TraderCharts, a thin layer over TradingView's lightweight-charts v5
// (static/vendor/lightweight-charts, loaded before this file).
//
//   TraderCharts.candles(el, bars, fills)   candlesticks and a volume histogram (its own scale at the bottom),
//                                          an arrow per fill of ours (buy: up, below the bar; sell: down, above)
//                                          with "qty@price"; bars {ts_ns, open, high, low, close, volume},
//                                          fills {ts_ns, side: "buy"|"sell", qty, price}
//   TraderCharts.line(el, points, opts)     points [[ts_ns, value], ...]; opts {zero: a baseline at 0 kept in
//                                          view, fmt: value -> string, color, area: filled below the line}
//   TraderCharts.drawdown(el, equity, opts) the fall from the running peak of an equity series [[ts_ns, won]],
//                                          in won, or in % of the peak with opts {pct: true}
//   TraderCharts.sparkline(values, opts)    an 80x20 inline SVG polyline (a string) for a grid cell;
//                                          opts {width, height, color, zero}
//
// Each element keeps one chart: the first call creates it, later calls replace its data (setData) and keep the
// user's zoom and pan (the content is fitted only when the first data arrives). Charts size themselves to
// their container (autoSize), so the element needs a height (div.chart in app.css). Times arrive as UTC
// nanoseconds; the chart gets whole UTC seconds, and every label is formatted in Asia/Seoul. Lightweight-charts
// wants strictly increasing times: points are sorted and those in the same second collapse to the last one.
// An empty series shows "no data yet" over the chart. A chart's opts are read when it is created.
"use strict";

(function () {
  const LC = window.LightweightCharts;
  const UP = "#c62828", DOWN = "#1565c0", LINE = "#37474f", MUTED = "#777";
  const nf = new Intl.NumberFormat("en-US", {maximumFractionDigits: 2});
  const kstParts = new Intl.DateTimeFormat("en-CA", {timeZone: "Asia/Seoul", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"});

  function kst(sec) {
    const p = {};
    for (const part of kstParts.formatToParts(new Date(sec * 1000))) p[part.type] = part.value;
    return p;
  }
  function timeLabel(sec) { const p = kst(sec); return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} KST`; }
  function tickLabel(sec, type) {
    const p = kst(sec);
    switch (type) {
      case LC.TickMarkType.Year: return p.year;
      case LC.TickMarkType.Month: return `${p.year}-${p.month}`;
      case LC.TickMarkType.DayOfMonth: return `${p.month}-${p.day}`;
      case LC.TickMarkType.TimeWithSeconds: return `${p.hour}:${p.minute}:${p.second}`;
      default: return `${p.hour}:${p.minute}`;
    }
  }

  const sec = ns => Math.floor(Number(ns) / 1e9);
  const finite = v => typeof v === "number" && Number.isFinite(v);

  // Sorted by time, one item per second (the last one seen wins).
  function uniqueBySecond(items, timeOf) {
    const bySec = new Map();
    for (const it of items) {
      const t = timeOf(it);
      if (Number.isFinite(t)) bySec.set(t, it);
    }
    return [...bySec.entries()].sort((a, b) => a[0] - b[0]);
  }

  function priceFormat(fmt) { return {type: "custom", minMove: 0.0001, formatter: fmt || (v => nf.format(v))}; }

  // The element's chart, created on first use.
  // secondsVisible: time labels to the second (the line charts' points), or to the minute (one-minute bars).
  function chartFor(el, build, secondsVisible) {
    if (el.__traderChart) return el.__traderChart;
    el.classList.add("chart");
    const chart = LC.createChart(el, {
      autoSize: true,
      layout: {background: {type: "solid", color: "#fff"}, textColor: "#333", fontSize: 11},
      grid: {vertLines: {color: "#f0f0f0"}, horzLines: {color: "#f0f0f0"}},
      rightPriceScale: {borderColor: "#ddd"},
      timeScale: {borderColor: "#ddd", timeVisible: true, secondsVisible: Boolean(secondsVisible),
        tickMarkFormatter: (time, type) => tickLabel(time, type)},
      localization: {timeFormatter: time => timeLabel(time)},
      crosshair: {mode: LC.CrosshairMode.Normal},
    });
    const empty = document.createElement("div");
    empty.className = "chart-empty";
    empty.textContent = "no data yet";
    el.appendChild(empty);
    const c = {chart, empty, fitted: false, series: build(chart)};
    el.__traderChart = c;
    return c;
  }

  function shown(c, hasData) {
    c.empty.hidden = hasData;
    if (hasData && !c.fitted) { c.chart.timeScale().fitContent(); c.fitted = true; }
  }

  function candles(el, bars, fills) {
    if (!el) return;
    const c = chartFor(el, chart => {
      const price = chart.addSeries(LC.CandlestickSeries, {upColor: UP, downColor: DOWN, borderUpColor: UP, borderDownColor: DOWN,
        wickUpColor: UP, wickDownColor: DOWN, priceFormat: priceFormat()});
      price.priceScale().applyOptions({scaleMargins: {top: 0.06, bottom: 0.28}});
      const volume = chart.addSeries(LC.HistogramSeries, {priceScaleId: "volume", priceFormat: {type: "volume"},
        lastValueVisible: false, priceLineVisible: false});
      volume.priceScale().applyOptions({scaleMargins: {top: 0.78, bottom: 0}});
      return {price, volume, markers: LC.createSeriesMarkers(price, [])};
    }, false);
    const rows = uniqueBySecond((bars || []).filter(b => finite(b.open) && finite(b.high) && finite(b.low) && finite(b.close)),
      b => sec(b.ts_ns));
    c.series.price.setData(rows.map(([time, b]) => ({time, open: b.open, high: b.high, low: b.low, close: b.close})));
    c.series.volume.setData(rows.map(([time, b]) => ({time, value: finite(b.volume) ? b.volume : 0,
      color: b.close >= b.open ? "rgba(198,40,40,0.35)" : "rgba(21,101,192,0.35)"})));
    // A fill's marker sits on the bar it happened in (the last bar starting at or before it).
    const times = rows.map(r => r[0]);
    const barOf = t => {
      let lo = 0, hi = times.length - 1, at = -1;
      while (lo <= hi) { const mid = (lo + hi) >> 1; if (times[mid] <= t) { at = mid; lo = mid + 1; } else hi = mid - 1; }
      return at < 0 ? null : times[at];
    };
    const markers = [];
    for (const f of fills || []) {
      const time = barOf(sec(f.ts_ns));
      if (time === null || (f.side !== "buy" && f.side !== "sell")) continue;
      const buy = f.side === "buy";
      markers.push({time, position: buy ? "belowBar" : "aboveBar", shape: buy ? "arrowUp" : "arrowDown",
        color: buy ? UP : DOWN, text: `${nf.format(f.qty)}@${nf.format(f.price)}`});
    }
    markers.sort((a, b) => a.time - b.time);
    c.series.markers.setMarkers(markers);
    shown(c, rows.length > 0);
  }

  function line(el, points, opts) {
    if (!el) return;
    opts = opts || {};
    const c = chartFor(el, chart => {
      const color = opts.color || LINE;
      const style = {priceFormat: priceFormat(opts.fmt), lineWidth: 2};
      if (opts.zero) {
        // Keep 0 within the scale so the baseline is always in view.
        style.autoscaleInfoProvider = original => {
          const r = original();
          if (r && r.priceRange) { r.priceRange.minValue = Math.min(r.priceRange.minValue, 0); r.priceRange.maxValue = Math.max(r.priceRange.maxValue, 0); }
          return r;
        };
      }
      const s = opts.area
        ? chart.addSeries(LC.AreaSeries, {...style, lineColor: color, topColor: color + "55", bottomColor: color + "08"})
        : chart.addSeries(LC.LineSeries, {...style, color});
      if (opts.zero) s.createPriceLine({price: 0, color: MUTED, lineWidth: 1, lineStyle: LC.LineStyle.Dashed, axisLabelVisible: false});
      return {s};
    }, true);
    const rows = uniqueBySecond((points || []).filter(p => Array.isArray(p) && finite(p[1])), p => sec(p[0]));
    c.series.s.setData(rows.map(([time, p]) => ({time, value: p[1]})));
    shown(c, rows.length > 0);
  }

  function drawdown(el, equity, opts) {
    opts = opts || {};
    let peak = -Infinity;
    const points = [];
    for (const p of (equity || []).filter(q => Array.isArray(q) && finite(q[1])).sort((a, b) => a[0] - b[0])) {
      peak = Math.max(peak, p[1]);
      points.push([p[0], opts.pct ? (peak > 0 ? 100 * (p[1] - peak) / peak : 0) : p[1] - peak]);
    }
    const fmt = opts.pct ? (v => v.toFixed(2) + " %") : (v => nf.format(Math.round(v)));
    line(el, points, {zero: true, area: true, color: UP, fmt});
  }

  function sparkline(values, opts) {
    opts = opts || {};
    const W = opts.width || 80, H = opts.height || 20, color = opts.color || LINE;
    const ys = (values || []).filter(finite);
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (opts.zero && ys.length) { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
    const span = hi - lo || 1;
    const y = v => (H - 1 - (v - lo) * (H - 2) / span).toFixed(1);
    const x = i => (ys.length > 1 ? i * (W - 2) / (ys.length - 1) + 1 : W / 2).toFixed(1);
    const pts = ys.map((v, i) => `${x(i)},${y(v)}`).join(" ");
    const zero = opts.zero && ys.length ? `<line x1="0" x2="${W}" y1="${y(0)}" y2="${y(0)}" stroke="#bbb" stroke-dasharray="2 2"/>` : "";
    return `<svg class="spark" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">${zero}` +
      (ys.length ? `<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="1.2"/>` : "") + "</svg>";
  }

  window.TraderCharts = {candles, line, drawdown, sparkline};
})();
