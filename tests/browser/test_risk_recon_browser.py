"""The Risk and Reconciliation pages in real headless Chromium, against the dashboard process and a real risk guard.

Risk: every agent's limits as usage bars and no raw dump on the page; a halt
without the token is refused, with it the risk guard records it with the
reason typed in. Reconciliation: a break on the bus (``recon.report``, as the
reconciler publishes it) is listed with both sides, its age and its actions, and
"book adjustment" opens the form pre-filled. No page logs a console error
(beyond the 401 of the refusals the test provokes).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.messages import ReconReport
from tests.browser.support import Watched, dashboard_running, needs_chromium
from tests.dashboard.firm import Firm, wait_until

TOKEN = "risk-token-3d9e"
REFUSED_401 = "the server responded with a status of 401"

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firm]:
    """The bus, the stand-in publisher, a real risk guard and the dashboard."""
    firm = Firm(Path(tmp_path_factory.mktemp("riskrecon")), token=TOKEN)
    with dashboard_running(firm, ("risk-guard", "services.risk_guard"), standin=True) as f:
        yield f


@pytest.fixture
def page(watched: Watched) -> Iterator[object]:
    """A fresh page whose console errors, uncaught exceptions, failed requests and error responses are asserted
    absent at the end, but for the refusals (401) the tests provoke."""
    yield watched.page
    assert watched.unexpected(REFUSED_401, "401: ") == []


def test_risk_shows_usage_bars_and_a_halt_needs_the_token(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/risk")
    page.wait_for_selector("#risk-agents tr[data-agent='pair-samsung'] .ubar[data-k='exposure']", timeout=15_000)
    assert page.locator("#risk-agents tr[data-agent='pair-samsung'] .ubar").count() == 4
    assert page.locator("#risk-agents tr[data-agent='ACCOUNT'] .ubar[data-k='loss']").count() == 1
    # pair-samsung starts with 500 shares of 005930: the highest usage, first of the agents
    first = page.eval_on_selector_all("#risk-agents tbody tr[data-agent]", "rs => rs.map(r => r.dataset.agent)")[1]
    assert first == "pair-samsung"
    text = page.inner_text("main")
    assert "pending_buy_won" not in text and "max_open_orders" not in text  # the raw answers stay folded away
    assert page.inner_text("#trading-state") == "HALTED"  # the guard has no order manager to sync with

    page.fill("#risk-reason", "fat finger on 000660")
    page.click("#risk-controls button[data-action='halt']")
    page.wait_for_selector("#flash:text('halt refused (401')", timeout=5_000)
    page.fill("#token", TOKEN)
    page.click("#risk-controls button[data-action='halt']")
    page.wait_for_selector("#flash:text('halt: done (HALTED)')", timeout=10_000)
    # while starting, the guard's HALTED is in force; the operator's halt is shown with who and why
    page.wait_for_selector("#trading-why:has-text('HALTED by dashboard: fat finger on 000660')", timeout=10_000)


def test_recon_lists_a_break_with_its_age_and_actions(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/recon")
    page.wait_for_selector("#conn:text('live')", timeout=10_000)
    now = time.time_ns()
    breaks = ({"kind": "POSITION_DIFFERENCE", "action": "HALT", "key": "000660",
               "text": "000660: broker holds 120 managed shares, the journal 100", "broker": 120, "oms": 100, "data": {},
               "first_seen_ns": now - 125 * 1_000_000_000},)
    pub = firm.publisher()
    row = "#recon-items tr.st-break[data-key='000660']"

    def listed() -> bool:
        pub.publish("recon.report", ReconReport(report_id=f"recon-{now - 30_000_000}-a1b2c3", ts_ns=now, trigger="schedule",
                                                clean=False, differences=breaks, breaks=breaks, halted=True))
        return page.locator(row).count() > 0

    wait_until(listed, 10, "the break on the page")
    assert re.fullmatch(r"2m \d\ds", page.inner_text(f"{row} td.age"))
    assert "+20 shares" in page.inner_text(row).replace("\t", " ")
    assert page.locator(f"{row} button.recon-run").count() == 1
    assert page.inner_text("#recon-history tbody tr:first-child td:last-child") == "1 break(s), trading halted"
    page.click(f"{row} button.recon-adjust")
    form = page.locator("#adjust-form")
    assert form.is_visible()
    assert (form.locator("[name=code]").input_value(), form.locator("[name=qty]").input_value()) == ("000660", "20")
    form.locator("[name=agent_id]").fill("foreign-hynix")
    form.locator("[name=reason]").fill("broker statement shows 20 more")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#flash:text('refused (401')", timeout=5_000)  # no token on this page
