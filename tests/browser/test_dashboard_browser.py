"""The dashboard in real headless Chromium: every page renders clean at a desk's size and a phone's, the
Overview shows each process once and its alerts in groups, pages change live without a reload, the agent grid
sorts, filters and exports, control needs the token, and the stale banner shows when the stream is cut.

Screenshots of every page go to ``<project>/var/screenshots/`` (``python -m dashboard.screenshots`` makes the
ones of a real stack for the README).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import PROJECT_ROOT
from core.messages import Alert, AlertLevel, Tick
from tests.browser.support import Watched, dashboard_running, needs_chromium, new_page
from tests.dashboard.firm import Firm, free_port, wait_until

SCREENSHOTS = PROJECT_ROOT / "var" / "screenshots"
TOKEN = "browser-token-51c2"
PAGES = ("/", "/agents", "/agents/pair-samsung", "/market", "/risk", "/recon", "/blotter", "/reports", "/config")
SIZES = ((1280, 800), (390, 844))
GRID = "#agent-grid"

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firm]:
    """Bus, stand-in publisher and the dashboard process, for the whole module."""
    with dashboard_running(Firm(Path(tmp_path_factory.mktemp("browser")), token=TOKEN), standin=True) as f:
        yield f


@pytest.fixture
def page(watched: Watched) -> Any:
    """A fresh page (its own session storage) at a desk's size."""
    return watched.page


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_every_page_renders_clean_at_a_desk_and_a_phone_size(firm: Firm, browser: Any) -> None:
    for width, height in SIZES:
        ctx, watched = new_page(browser, width, height)
        try:
            pg = watched.page
            for path in PAGES:
                pg.goto(firm.url + path)
                pg.wait_for_selector("#conn:text('live')", timeout=10_000)
                pg.wait_for_load_state("networkidle")
                sideways = pg.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert sideways <= 0, f"{path} at {width}x{height} scrolls {sideways} px sideways"
                name = path.strip("/").replace("/", "-") or "overview"
                shot(pg, f"{name}-{width}x{height}")
            assert not watched.unexpected(), f"at {width}x{height}: {watched.problems}"
            icon = pg.evaluate("fetch('/favicon.ico').then(r => r.status)")
            assert icon == 200
        finally:
            ctx.close()


def test_the_overview_lists_each_process_once_and_folds_alerts_live(firm: Firm, page: Any) -> None:
    page.goto(firm.url + "/")
    page.wait_for_selector("#processes tr[data-name='exchange'] .badge:text('running')", timeout=10_000)
    page.wait_for_selector("#conn:text('live')", timeout=10_000)
    page.evaluate("window.__loaded = true")  # gone if the page reloads
    names = page.eval_on_selector_all("#processes tbody tr", "rows => rows.map(r => r.dataset.name)")
    assert len(names) == len(set(names)) and {"bus", "exchange", "market-data", "dashboard"} <= set(names)
    assert not [n for n in names if "_" in n]
    page.wait_for_selector("#desk-equity:not(:text('-'))", timeout=10_000)
    pub = firm.publisher()
    row = "#alert-groups tr[data-key='reconciler/MISMATCH']"

    def folded() -> bool:
        pub.publish("sys.alert", Alert(level=AlertLevel.CRITICAL, source="reconciler", kind="MISMATCH",
                                       text="cash differs", ts_ns=time.time_ns()))
        cell = page.locator(f"{row} td.count")
        return cell.count() > 0 and int(cell.inner_text()) >= 2

    wait_until(folded, 10, "two alerts folded into one row")
    assert page.locator("#alert-groups tr[data-key='reconciler/MISMATCH']").count() == 1
    assert page.evaluate("window.__loaded") is True
    page.click(f"{row} button[data-action='ack']")
    page.wait_for_selector("#flash:text('refused (401')", timeout=5_000)
    page.fill("#token", TOKEN)
    page.click(f"{row} button[data-action='ack']")
    page.wait_for_selector(f"{row}.quiet", timeout=5_000)
    shot(page, "overview")


def test_a_click_on_an_alert_button_survives_the_pushes_of_an_alert_storm(firm: Firm, page: Any) -> None:
    page.goto(firm.url + "/")
    page.wait_for_selector("#conn:text('live')", timeout=10_000)
    pub = firm.publisher()
    row = "#alert-groups tr[data-key='risk-guard/STORM']"

    def storm() -> None:
        pub.publish("sys.alert", Alert(level=AlertLevel.ERROR, source="risk-guard", kind="STORM", text="again",
                                       ts_ns=time.time_ns()))

    def count() -> int:
        cell = page.locator(f"{row} td.count")
        return int(cell.inner_text()) if cell.count() else 0

    def total() -> int:
        text = page.inner_text("#alerts-active")  # a text the table's renderer writes on every push
        return int(text.split("·")[1].split()[0].replace(",", ""))

    wait_until(lambda: storm() or count() >= 1, 10, "the storm's row")
    # scrolled to and measured in one step of the page's own (a push may replace the row between two of ours)
    centre = page.evaluate("""sel => { const b = document.querySelector(sel); if (!b) return null;
        b.scrollIntoView({block: "center"}); const r = b.getBoundingClientRect();
        return [r.x + r.width / 2, r.y + r.height / 2]; }""", f"{row} button[data-action='ack']")
    assert centre, "the storm's row has its ack button"
    x, y = centre
    page.mouse.move(x, y)
    page.mouse.down()
    assert page.evaluate(f"document.elementFromPoint({x}, {y}).dataset.action") == "ack"
    shown, before = count(), total()
    wait_until(lambda: storm() or total() >= before + 3, 10, "three more alerts pushed to the page")
    assert count() == shown, "the row under the pressed button is not replaced mid-click"
    page.mouse.up()
    page.wait_for_selector("#flash:text('ack refused (401')", timeout=5_000)  # the click reached its button
    wait_until(lambda: count() > shown, 10, "the row catching up once the click is done")


def test_a_tick_on_the_bus_changes_the_board_without_a_reload(firm: Firm, page: Any) -> None:
    page.goto(firm.url + "/market")
    page.wait_for_selector("#conn:text('live')", timeout=10_000)
    page.evaluate("window.__loaded = true")
    pub = firm.publisher()
    cell = "#board tr[data-code='051910'] td[data-k='last']"

    def row_shown() -> bool:
        # The publisher's first messages may leave before its connection to the proxy is up.
        pub.publish("md.tick.051910", Tick(code="051910", ts_ns=time.time_ns(), price=230_000, qty=1))
        return page.locator(cell).count() > 0

    wait_until(row_shown, 10, "the LG Chem row on the board")
    for price in (233_000, 234_500):
        pub.publish("md.tick.051910", Tick(code="051910", ts_ns=time.time_ns(), price=price, qty=1))
        page.wait_for_selector(f"{cell}:text('{price:,}')", timeout=2_000)
    assert page.evaluate("window.__loaded") is True


def cells(page: Any, field: str) -> list[str]:
    return page.eval_on_selector_all(f"{GRID} .tabulator-row .tabulator-cell[tabulator-field='{field}']",
                                     "cs => cs.map(c => c.textContent.trim())")


def test_the_agent_grid_sorts_filters_and_exports_what_it_shows(firm: Firm, page: Any) -> None:
    page.goto(firm.url + "/agents")
    page.wait_for_selector(f"{GRID} .tabulator-row[data-id='pair-samsung'] [tabulator-field='state']:has-text('running')", timeout=10_000)
    ids = page.eval_on_selector_all(f"{GRID} .tabulator-row", "rows => rows.map(r => r.dataset.id)")
    assert {"pair-samsung", "foreign-hynix", "sma-samsung", "trend-naver", "volume-kakao"} <= set(ids)
    page.click(f"{GRID} .tabulator-col[tabulator-field='cash_won'] .tabulator-col-title")

    def sorted_by_cash(reverse: bool) -> bool:
        cash = [int(c.replace(",", "")) for c in cells(page, "cash_won") if c not in ("", "-")]
        return len(cash) >= 8 and cash == sorted(cash, reverse=reverse)

    wait_until(lambda: sorted_by_cash(False) or sorted_by_cash(True), 5, "the grid sorted by cash")
    first = sorted_by_cash(False)
    page.click(f"{GRID} .tabulator-col[tabulator-field='cash_won'] .tabulator-col-title")
    wait_until(lambda: sorted_by_cash(first), 5, "the grid sorted the other way")
    page.fill("#grid-filter", "volume")
    wait_until(lambda: set(page.eval_on_selector_all(f"{GRID} .tabulator-row", "rows => rows.map(r => r.dataset.id)"))
               == {"volume-kakao", "volume-ecoprobm"}, 5, "the quick filter")
    href = page.get_attribute("#export-csv", "href")
    assert "q=volume" in href
    body = page.evaluate("url => fetch(url).then(r => r.text())", href)
    lines = body.strip().splitlines()
    assert lines[0].startswith("id,") and sorted(line.split(",")[0] for line in lines[1:]) == ["volume-ecoprobm", "volume-kakao"]
    shot(page, "agents")


def test_kill_without_the_token_is_refused(firm: Firm, page: Any) -> None:
    page.goto(firm.url + "/agents")
    button = f"{GRID} .tabulator-row[data-id='sma-samsung'] button[data-action='kill']"
    page.wait_for_selector(button, timeout=10_000)
    page.click(button)
    page.wait_for_selector("#flash:text('refused (401')", timeout=5_000)


class OneAgentFirm(Firm):
    """A firm whose supervisor runs its own roster (one agent, status page on a free port)."""

    def __init__(self, run_dir: Path, roster_file: Path, *, token: str) -> None:
        super().__init__(run_dir, token=token)
        self.roster_file = roster_file

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "TRADER_ROSTER_FILE": str(self.roster_file)}


def one_agent_roster(path: Path) -> Path:
    """A roster of sma-samsung alone, on a port no other stack on this machine holds."""
    path.write_text(
        "[[agents]]\n"
        'id = "sma-samsung"\ncode = "005930"\n'
        f"dp = {free_port()}\n"
        'strategy = "sma_cross"\ncash = 30_000_000\n'
        "[agents.params]\nfast = 10\nslow = 30\nqty = 100\n"
    )
    return path


@pytest.mark.slow
def test_kill_with_the_token_stops_the_agent_and_its_page_shows_its_strategy(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    if importlib.util.find_spec("services.supervisor") is None:
        pytest.skip("the supervisor service is not in the tree")
    run_dir = Path(tmp_path_factory.mktemp("kill"))
    own = OneAgentFirm(run_dir, one_agent_roster(run_dir / "agents.toml"), token=TOKEN)
    ctx, watched = new_page(browser)
    try:
        own.start_bus()
        own.start("supervisor", "services.supervisor")
        own.start_dashboard()
        page = watched.page
        page.goto(own.url + "/agents")
        page.fill("#token", TOKEN)
        row = f"{GRID} .tabulator-row[data-id='sma-samsung']"
        page.click(f"{row} button[data-action='spawn']")
        page.wait_for_selector(f"{row} [tabulator-field='state']:has-text('running')", timeout=20_000)
        page.goto(own.url + "/agents/sma-samsung")
        page.wait_for_selector("#agent-strategy table.kv", timeout=15_000)  # asked of the agent's own status page
        page.click("button.act[data-action='kill']")
        page.wait_for_selector("#flash:text('kill sma-samsung: done (stopping)')", timeout=15_000)
        page.goto(own.url + "/agents")
        page.wait_for_selector(f"{row} [tabulator-field='state']:has-text('stopped')", timeout=20_000)
        # spawn answers 409 when the supervisor had already started the agent: a refusal the page shows, no error
        assert not watched.unexpected("/spawn", "status of 409"), watched.problems
    finally:
        ctx.close()
        own.stop()


def test_the_stale_banner_shows_when_the_stream_is_cut_and_clears_on_reconnect(firm: Firm, page: Any) -> None:
    page.goto(firm.url + "/")
    page.wait_for_selector("#conn:text('live')", timeout=10_000)
    assert page.is_hidden("#stale")
    firm.stop_process("dashboard")
    page.wait_for_selector("#stale:text('Stale since')", timeout=10_000)
    shot(page, "stale")
    firm.start_dashboard()
    page.wait_for_selector("#stale", state="hidden", timeout=20_000)
    page.wait_for_selector("#conn:text('live')", timeout=10_000)
