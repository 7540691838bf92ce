"""The LIVE banner in real headless Chromium: a KIS gateway heartbeat saying live, published on a real bus,
reaches a real dashboard process and turns the banner on, on every page.

The dashboard runs configured for KIS's demo server, so only the heartbeat can
make it say real money. Screenshots go to ``<project>/var/screenshots/``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import PROJECT_ROOT
from core.messages import Heartbeat
from tests.browser.support import browser, dashboard_running, needs_chromium, new_page
from tests.dashboard.firm import Firm, wait_until

__all__ = ["browser"]  # the shared Chromium fixture, which `page` asks for

SCREENSHOTS = PROJECT_ROOT / "var" / "screenshots"
KIS_DEMO = {"TRADER_BROKER__KIND": "kis", "TRADER_BROKER__KIS__SERVER": "kis", "TRADER_BROKER__KIS__ENV": "demo"}
BANNER = "LIVE — real money — account 5001****-01"

pytestmark = needs_chromium


@pytest.fixture
def firm(tmp_path: Path) -> Iterator[Firm]:
    """The bus and a dashboard configured for KIS (demo), always stopped."""
    with dashboard_running(Firm(tmp_path, extra_env=KIS_DEMO)) as f:
        yield f


@pytest.fixture
def page(firm: Firm, browser: Any) -> Iterator[object]:
    """A fresh page of headless Chromium from the system at a desk's size, closed at the end."""
    ctx, watched = new_page(browser)
    try:
        yield watched.page
    finally:
        ctx.close()


def live_heartbeat() -> Heartbeat:
    return Heartbeat(name="kis-gateway", pid=4242, ts_ns=time.time_ns(),
                     info={"venue": "kis", "env": "real", "live": True, "ready": True, "stream": "connected",
                           "streamed": 40, "polled": 2, "account": "5001****-01"})


def test_a_live_gateway_heartbeat_shows_the_live_banner_on_every_page(firm: Firm, page: object) -> None:
    page.goto(firm.url + "/")  # type: ignore[attr-defined]
    page.wait_for_selector("#conn:text('live')", timeout=10_000)  # type: ignore[attr-defined]
    assert page.inner_text("#venue") == "KIS demo"  # type: ignore[attr-defined]
    assert page.locator("#live-banner").is_hidden()  # type: ignore[attr-defined]
    assert page.locator("#processes tr[data-name='exchange']").count() == 0  # type: ignore[attr-defined]
    pub = firm.publisher()

    def banner_shown() -> bool:
        # The publisher's first messages may leave before its connection to the proxy is up.
        pub.publish("sys.heartbeat.kis-gateway", live_heartbeat())
        return page.locator("#live-banner").is_visible()  # type: ignore[attr-defined]

    wait_until(banner_shown, 10, "the LIVE banner")
    assert page.inner_text("#live-banner") == BANNER  # type: ignore[attr-defined]
    assert page.inner_text("#venue") == "KIS real"  # type: ignore[attr-defined]
    detail = page.inner_text("#processes tr[data-name='kis-gateway'] td.detail")  # type: ignore[attr-defined]
    assert "40 streamed, 2 polled" in detail
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "live-banner.png"), full_page=True)  # type: ignore[attr-defined]
    for path in ("/agents", "/market", "/risk", "/recon", "/config"):
        page.goto(firm.url + path)  # type: ignore[attr-defined]
        assert page.inner_text("#live-banner") == BANNER, path  # type: ignore[attr-defined]
