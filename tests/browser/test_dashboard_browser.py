"""The dashboard in real headless Chromium: pages render, values change live, the grid sorts,
control needs the token, and the stale banner shows when the stream is cut.

Screenshots of every page go to ``<project>/var/screenshots/``.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT
from core.messages import Alert, AlertLevel, Tick
from tests.dashboard.firm import Firm, free_port, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = PROJECT_ROOT / "var" / "screenshots"
TOKEN = "browser-token-51c2"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (CI installs Debian's chromium)")
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firm]:
    """Bus, stand-in publisher and the dashboard process, for the whole module."""
    f = Firm(Path(tmp_path_factory.mktemp("browser")), token=TOKEN)
    try:
        f.start_bus()
        f.start_standin()
        f.start_dashboard()
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium from the system, closed at the end."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A fresh page (its own session storage)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    pg = ctx.new_page()
    try:
        yield pg
    finally:
        ctx.close()


def shot(page: object, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_overview_renders_processes_and_alerts(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/")
    page.wait_for_selector("#processes tr[data-name='exchange'] td.state:text('running')", timeout=10_000)
    page.wait_for_selector("#conn:text('live')", timeout=10_000)
    assert page.inner_text("#processes tr[data-name='supervisor'] td.state") in ("not seen", "down")
    pub = firm.publisher()

    def alert_listed() -> bool:
        pub.publish("sys.alert", Alert(level=AlertLevel.CRITICAL, source="reconciler", kind="MISMATCH", text="cash differs", ts_ns=time.time_ns()))
        return page.locator("#alerts tr.lvl-critical td:text('cash differs')").count() > 0

    wait_until(alert_listed, 10, "the alert on the overview")
    shot(page, "overview")


def test_agent_grid_renders_the_default_roster(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/agents")
    page.wait_for_selector("#agent-grid tr[data-id='pair-samsung'] td[data-k='state']:text('running')", timeout=10_000)
    ids = page.eval_on_selector_all("#agent-grid tbody tr", "rows => rows.map(r => r.dataset.id)")
    assert {"pair-samsung", "foreign-hynix", "sma-samsung", "trend-naver", "volume-kakao"} <= set(ids)
    shot(page, "agents")


def test_a_tick_on_the_bus_changes_the_board_without_a_reload(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/market")
    page.wait_for_selector("#conn:text('live')", timeout=10_000)
    page.evaluate("window.__loaded = true")  # gone if the page reloads
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
    shot(page, "market")


def test_the_grid_sorts_by_a_column(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/agents")
    page.wait_for_selector("#agent-grid tbody tr[data-id]", timeout=10_000)
    page.click("#agent-grid th[data-k='cash_won']")
    cash = page.eval_on_selector_all("#agent-grid tbody td[data-k='cash_won']", "cs => cs.map(c => Number(c.textContent.replace(/,/g, '')))")
    assert cash == sorted(cash) and len(cash) >= 8
    page.click("#agent-grid th[data-k='cash_won']")
    cash = page.eval_on_selector_all("#agent-grid tbody td[data-k='cash_won']", "cs => cs.map(c => Number(c.textContent.replace(/,/g, '')))")
    assert cash == sorted(cash, reverse=True)
    page.fill("#grid-filter", "volume")
    ids = page.eval_on_selector_all("#agent-grid tbody tr", "rows => rows.map(r => r.dataset.id)")
    assert set(ids) == {"volume-kakao", "volume-ecoprobm"}


def test_kill_without_the_token_is_refused(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/agents")
    page.wait_for_selector("#agent-grid tr[data-id='sma-samsung']", timeout=10_000)
    page.click("#agent-grid tr[data-id='sma-samsung'] button[data-action='kill']")
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


def test_kill_with_the_token_stops_the_agent(browser: object, tmp_path_factory: pytest.TempPathFactory) -> None:
    if importlib.util.find_spec("services.supervisor") is None or not (PROJECT_ROOT / "services/supervisor/service.py").exists():
        pytest.skip("the supervisor service is not in the tree yet: the positive kill path needs it")
    run_dir = Path(tmp_path_factory.mktemp("kill"))
    own = OneAgentFirm(run_dir, one_agent_roster(run_dir / "agents.toml"), token=TOKEN)
    ctx = browser.new_context()  # type: ignore[attr-defined]
    try:
        own.start_bus()
        own.start("supervisor", "services.supervisor")
        own.start_dashboard()
        page = ctx.new_page()
        page.goto(own.url + "/agents")
        page.fill("#token", TOKEN)
        running = "#agent-grid tr[data-id='sma-samsung'] td[data-k='state']:text('running')"
        page.click("#agent-grid tr[data-id='sma-samsung'] button[data-action='spawn']")
        page.wait_for_selector(running, timeout=20_000)
        page.click("#agent-grid tr[data-id='sma-samsung'] button[data-action='kill']")
        page.wait_for_selector("#flash:text('kill sma-samsung: done (stopping)')", timeout=15_000)
        page.wait_for_selector(running, state="detached", timeout=20_000)
        page.wait_for_selector("#agent-grid tr[data-id='sma-samsung'] td[data-k='state']:text('stopped')", timeout=20_000)
    finally:
        ctx.close()
        own.stop()


def test_other_pages_render(firm: Firm, page: object) -> None:
    for path, name, selector in (
        ("/agents/pair-samsung", "agent", "#agent-summary .card"),
        ("/risk", "risk", "#trading-state"),
        ("/recon", "recon", "#recon-latest"),
        ("/config", "config", "table.kv"),
    ):
        page.goto(firm.url + path)
        page.wait_for_selector(selector, timeout=10_000)
        shot(page, name)


def test_stale_banner_shows_when_the_stream_is_cut_and_clears_on_reconnect(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/")
    page.wait_for_selector("#conn:text('live')", timeout=10_000)
    assert page.is_hidden("#stale")
    firm.stop_process("dashboard")
    page.wait_for_selector("#stale:text('Stale since')", timeout=10_000)
    shot(page, "stale")
    firm.start_dashboard()
    page.wait_for_selector("#stale", state="hidden", timeout=20_000)
    page.wait_for_selector("#conn:text('live')", timeout=10_000)
