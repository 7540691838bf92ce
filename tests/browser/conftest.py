"""Fixtures of the browser tests: headless Chromium for each module and a fresh watched page for each test."""

from tests.browser.support import browser, watched

__all__ = ["browser", "watched"]
