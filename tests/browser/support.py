"""Headless Chromium for the browser tests: the system's Chromium through Playwright, a page that records
everything that went wrong on it, the marker that skips a module when Chromium is missing, and a firm with its
dashboard running for them to look at.

Tests under ``tests/browser/`` get the ``browser`` and ``watched`` fixtures from its conftest; a browser test
elsewhere imports them from here (``from tests.browser.support import browser``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.firm import Firm

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (CI installs Debian's chromium)")


@contextmanager
def dashboard_running(firm: Firm, *services: tuple[str, str], standin: bool = False) -> Iterator[Firm]:
    """``firm`` with its bus, the stand-in publisher if ``standin``, each ``(name, module)`` of ``services`` and
    the dashboard started, in that order; every process it started is stopped at the end, also on an error."""
    try:
        firm.start_bus()
        if standin:
            firm.start_standin()
        for name, module in services:
            firm.start(name, module)
        firm.start_dashboard()
        yield firm
    finally:
        firm.stop()


class Watched:
    """A page with every console error, page error, failed request and error response it had, and the status
    each path was served with (the last one, without its query)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        self.served: dict[str, int] = {}
        page.on("console", lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}")
                if "/api/stream" not in r.url else None)  # a stream cut by navigation is not a failure
        page.on("response", self._response)

    def _response(self, r: Any) -> None:
        path = r.url.split("://", 1)[-1].partition("/")[2].partition("?")[0]
        self.served["/" + path] = r.status
        if r.status >= 400:
            self.problems.append(f"{r.status}: {r.url}")

    def unexpected(self, *allowed: str) -> list[str]:
        """The problems that contain none of ``allowed``."""
        return [p for p in self.problems if not any(a in p for a in allowed)]


def new_page(browser: Any, width: int = 1400, height: int = 900, **options: Any) -> tuple[Any, Watched]:
    """A fresh context (its own cookies and session storage) of ``width`` x ``height`` and its watched page;
    ``options`` go to ``browser.new_context`` (``accept_downloads=True``). The caller closes the context."""
    ctx = browser.new_context(viewport={"width": width, "height": height}, **options)
    return ctx, Watched(ctx.new_page())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from the system, for the whole module, closed at the end."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    """A fresh watched page at a desk's size that accepts downloads, its context closed at the end."""
    ctx, w = new_page(browser, accept_downloads=True)
    try:
        yield w
    finally:
        ctx.close()
