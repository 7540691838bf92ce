"""The vendored chart and grid libraries in real headless Chromium: the market and agent pages draw
lightweight-charts canvases from files served under /static/vendor/, with no console error and no
failed request, and TraderGrid (Tabulator) sorts, filters, counts, updates and downloads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.messages import Bar, Fill, Side
from tests.browser.support import Watched, dashboard_running, needs_chromium
from tests.dashboard.firm import Firm, wait_until

pytestmark = [needs_chromium, pytest.mark.slow]

CHART_LIBRARIES = (
    "/static/vendor/lightweight-charts/lightweight-charts.standalone.production.js",
    "/static/charts.js",
)
GRID_LIBRARIES = (
    "/static/vendor/tabulator-tables/tabulator.min.js",
    "/static/vendor/tabulator-tables/tabulator_simple.min.css",
    "/static/grid.js",
)
MINUTE_NS = 60 * 10**9


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firm]:
    with dashboard_running(Firm(Path(tmp_path_factory.mktemp("vendor-charts"))), standin=True) as f:
        yield f


def test_the_market_page_draws_the_discount_with_the_vendored_library(firm: Firm, watched: Watched) -> None:
    page = watched.page
    page.goto(firm.url + "/market")
    assert page.evaluate("LightweightCharts.version()") == "5.2.1"
    page.wait_for_selector("#discount canvas", timeout=10_000)
    # The stand-in trades 005930 and 005935: the discount gets points and "no data yet" goes away.
    page.wait_for_selector("#discount .chart-empty", state="hidden", timeout=15_000)
    assert {path: watched.served.get(path) for path in CHART_LIBRARIES} == dict.fromkeys(CHART_LIBRARIES, 200)
    assert not [path for path in GRID_LIBRARIES if path in watched.served]  # a page without a grid goes without
    assert watched.unexpected() == []


def test_an_agent_page_draws_candles_volume_fill_markers_and_pnl_in_kst(firm: Firm, watched: Watched) -> None:
    page = watched.page
    page.goto(firm.url + "/agents/sma-samsung")
    page.wait_for_selector("#candles canvas", timeout=10_000)
    page.wait_for_selector("#pnl canvas", timeout=10_000)
    pub = firm.publisher()
    first = (time.time_ns() // MINUTE_NS - 10) * MINUTE_NS
    bars = [Bar(code="005930", ts_ns=first + i * MINUTE_NS, open=70_000 + 100 * i, high=70_300 + 100 * i,
                low=69_900 + 100 * i, close=70_200 + 100 * i - 300 * (i % 2), volume=1_000 + i) for i in range(6)]
    fills = [Fill(exec_id="vc-1", client_order_id="sma-samsung-vc-1", agent_id="sma-samsung", code="005930", side=Side.BUY,
                  qty=10, price=70_100, ts_ns=first + MINUTE_NS + 20 * 10**9),
             Fill(exec_id="vc-2", client_order_id="sma-samsung-vc-2", agent_id="sma-samsung", code="005930", side=Side.SELL,
                  qty=10, price=70_400, ts_ns=first + 4 * MINUTE_NS + 5 * 10**9)]

    def charted(sent: list[Fill], n_markers: int) -> object:
        # The publisher's first messages may leave before its connection to the proxy is up: send until seen.
        for b in bars:
            pub.publish("md.bar.005930", b)
        for f in sent:
            pub.publish("oms.event.sma-samsung", f)
        return page.evaluate("""n => {
            const c = document.getElementById('candles').__traderChart;
            return c && c.empty.hidden && c.series.markers.markers().length >= n && c.series.price.data().length >= 6;
        }""", n_markers)

    # The sell only once the buy is booked: the agent's book refuses to sell what it does not hold.
    wait_until(lambda: charted(fills[:1], 1), 15, "the bars and the buy on the agent's chart")
    wait_until(lambda: charted(fills, 2), 15, "the sell on the agent's chart")
    markers = page.evaluate("document.getElementById('candles').__traderChart.series.markers.markers()")
    mine = [m for m in markers if m["text"] in ("10@70,100", "10@70,400")]
    assert [(m["shape"], m["position"], m["time"]) for m in mine] == [
        ("arrowUp", "belowBar", (first + MINUTE_NS) // 10**9),  # on the bar the fill happened in
        ("arrowDown", "aboveBar", (first + 4 * MINUTE_NS) // 10**9),
    ]
    assert page.evaluate("document.getElementById('candles').__traderChart.series.volume.data().length") >= 6
    # Labels are in KST: 00:00 UTC is 09:00 in Seoul.
    label = page.evaluate("document.getElementById('candles').__traderChart.chart.options().localization.timeFormatter(Date.UTC(2026, 0, 5) / 1000)")
    assert label == "2026-01-05 09:00:00 KST"
    # A later render replaces the data but keeps the user's zoom.
    zoom = page.evaluate("""async () => {
        const el = document.getElementById('candles'), ts = el.__traderChart.chart.timeScale();
        const frame = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
        // the chart lays the last bars out on a later frame: the range it fitted them in, once it spans them
        let fitted = ts.getVisibleLogicalRange();
        for (let i = 0; i < 120 && !(fitted && fitted.to - fitted.from >= 4); i++) {
            await frame();
            fitted = ts.getVisibleLogicalRange();
        }
        ts.setVisibleLogicalRange({from: fitted.from, to: fitted.to + 3});  // room on the right: never refused
        await frame();
        const zoomed = ts.getVisibleLogicalRange();
        TraderCharts.candles(el, trader.state.agent.bars, trader.state.agent.fills);
        await frame();
        return {fitted, zoomed, after: ts.getVisibleLogicalRange()};
    }""")
    assert zoom["zoomed"] != zoom["fitted"]
    assert zoom["after"] == zoom["zoomed"]
    page.wait_for_selector("#pnl .chart-empty", state="hidden", timeout=10_000)  # the fills made PnL points
    assert watched.unexpected() == []


GRID_ROWS = [
    {"id": "a", "code": "005930", "cash_won": 1_000_000, "pnl": 1_500, "link": "/agents/a"},
    {"id": "b", "code": "000660", "cash_won": 250_000, "pnl": -700, "link": "/agents/b"},
    {"id": "c", "code": "005935", "cash_won": 3_000_000, "pnl": 0, "link": "/agents/c"},
]


def test_trader_grid_sorts_filters_counts_updates_and_downloads(firm: Firm, watched: Watched, tmp_path: Path) -> None:
    page = watched.page
    page.goto(firm.url + "/agents")  # a page with a grid: it loads Tabulator and TraderGrid
    page.evaluate("""rows => {
        const el = document.createElement('div');
        el.id = 'test-grid';
        document.querySelector('main').appendChild(el);
        window.__actions = [];
        window.__grid = TraderGrid.create(el, {index: 'id', rows, height: '240px',
          onAction: (action, row) => window.__actions.push([action, row.id]),
          columns: [
            {field: 'id', title: 'id'},
            {field: 'code', title: 'code'},
            {field: 'cash_won', title: 'cash', type: 'number'},
            {field: 'pnl', title: 'PnL', type: 'pnl'},
            {field: 'link', title: '', type: 'html', headerSort: false, headerFilter: false, download: false,
             html: row => `<a href="${TraderGrid.esc(row.link)}">open</a> <button data-action="kill">kill</button>`},
          ]});
        return window.__grid.ready;
    }""", GRID_ROWS)
    page.wait_for_selector("#test-grid .tabulator-row", timeout=5_000)
    cells = page.eval_on_selector_all("#test-grid .tabulator-cell[tabulator-field='cash_won']", "cs => cs.map(c => c.textContent)")
    assert cells == ["1,000,000", "250,000", "3,000,000"]
    assert page.eval_on_selector("#test-grid .tabulator-row .tabulator-cell[tabulator-field='pnl'] span", "s => s.className") == "pos"
    assert page.evaluate("__grid.table.getColumns()[0].getDefinition().frozen") is True
    assert page.inner_text("#test-grid .grid-count") == "3 of 3 rows"

    page.evaluate("__grid.table.setSort('cash_won', 'desc')")
    order = page.evaluate("__grid.table.getData('active').map(r => r.id)")
    assert order == ["c", "a", "b"]
    page.locator("#test-grid .tabulator-col[tabulator-field='cash_won'] .tabulator-header-filter input").press_sequentially(">=500,000")
    page.wait_for_function("document.querySelector('#test-grid .grid-count').textContent === '2 of 3 rows'", timeout=5_000)

    # New data: the sort and the filter stay.
    page.evaluate("rows => __grid.update(rows)", [*GRID_ROWS, {"id": "d", "code": "035720", "cash_won": 2_000_000, "pnl": 5, "link": ""}])
    assert page.evaluate("__grid.table.getData('active').map(r => r.id)") == ["c", "d", "a"]
    assert page.inner_text("#test-grid .grid-count") == "3 of 4 rows"

    page.click("#test-grid .tabulator-row:has-text('005930') button[data-action='kill']")
    assert page.evaluate("__actions") == [["kill", "a"]]

    with page.expect_download() as dl:
        page.evaluate("__grid.download('csv', 'agents.csv')")
    path = tmp_path / "agents.csv"
    dl.value.save_as(path)
    lines = path.read_text().strip().splitlines()
    assert lines[0] == '"id","code","cash","PnL"'
    assert [line.split(",")[0] for line in lines[1:]] == ['"c"', '"d"', '"a"']

    assert page.evaluate("TraderCharts.sparkline([1, 3, 2])").startswith('<svg class="spark" width="80" height="20"')
    # The drawdown: how far equity is below its running peak (the points' order does not matter).
    fall = page.evaluate("""() => {
        const el = document.createElement('div');
        el.style.height = '150px';
        document.querySelector('main').appendChild(el);
        const s = 1_700_000_000e9;
        TraderCharts.drawdown(el, [[s + 2e9, 90], [s, 100], [s + 1e9, 120], [s + 3e9, 130]]);
        return el.__traderChart.series.s.data().map(p => p.value);
    }""")
    assert fall == [0, 0, -30, 0]
    assert watched.unexpected() == []
