"""The blotter and the back-test reports in real headless Chromium, against the dashboard process.

The run directory holds a journal written by the order manager's own book and
journal (tests/dashboard/test_blotter.py) and a report saved by ``trader
backtest --save``. The blotter filters by agent and its export link downloads
the filtered rows; the reports page lists the report and opens it; no page
logs a console error.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT
from tests.browser.support import Watched, dashboard_running, needs_chromium
from tests.dashboard.firm import Firm
from tests.dashboard.test_blotter import DAY1, PAIR, write_firm_journal

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firm]:
    """The bus and the dashboard over a run directory with a journal and a saved back-test report."""
    f = Firm(Path(tmp_path_factory.mktemp("blotter")))
    write_firm_journal(f.run_dir)
    subprocess.run([sys.executable, "-m", "services.cli.main", "backtest", "--strategy", "sma_cross", "--codes", "005930",
                    "--days", "1", "--seed", "3", "-p", "fast=5", "-p", "slow=20", "--save"],
                   cwd=PROJECT_ROOT, env=f.env, check=True, capture_output=True, timeout=120)
    with dashboard_running(f):
        yield f


@pytest.fixture
def page(watched: Watched) -> Iterator[object]:
    """A fresh page whose console errors, uncaught exceptions, failed requests and error responses are asserted
    absent at the end (a download aborts the request of its link: no failure)."""
    yield watched.page
    assert watched.unexpected("net::ERR_ABORTED") == []


def agents_shown(page: object) -> list[str]:
    return page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#blotter-orders .tabulator-row .tabulator-cell[tabulator-field='agent_id']", "cs => cs.map(c => c.textContent)")


def test_the_blotter_filters_by_agent_and_exports_the_filtered_rows(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/blotter?date=2026-03-03")
    page.wait_for_selector("#blotter-orders .tabulator-row", timeout=10_000)
    assert len(agents_shown(page)) == 4
    assert page.eval_on_selector_all("#blotter-date option", "os => os.map(o => o.value)") == [
        "2026-03-04", "2026-03-03", "2026-02-27"]
    page.select_option("#blotter-agent", PAIR)
    page.wait_for_selector(f"body[data-blotter*='agent={PAIR}']", timeout=10_000)
    assert agents_shown(page) == [PAIR, PAIR]
    assert page.inner_text("#blotter-orders-count") == "2 of 4 on 2026-03-03"
    assert f"agent={PAIR}" in page.url
    with page.expect_download() as info:
        page.click("#blotter-orders-csv")
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert [r["client_order_id"] for r in rows] == [f"{PAIR}-{DAY1}-4", f"{PAIR}-{DAY1}-5"]
    assert info.value.suggested_filename == "blotter-2026-03-03-orders.csv"


def test_the_reports_page_lists_a_saved_back_test_and_opens_it(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/reports")
    link = page.locator("#reports tbody tr[data-name] a")
    assert link.count() == 1 and link.inner_text().endswith("-sma_cross")
    link.click()
    page.wait_for_selector("#report-frame", timeout=10_000)
    frame = page.frame_locator("#report-frame")
    assert frame.locator("h1").inner_text(timeout=10_000) == "Back-test report"
    assert frame.locator("svg").count() >= 2
    assert page.inner_text("#report-facts").count("sma_cross") == 1
