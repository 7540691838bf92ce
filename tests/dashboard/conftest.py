"""Fixtures for the dashboard tests: a firm of real processes that always stops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard.firm import Firm

TOKEN = "test-token-7f3a"


@pytest.fixture
def firm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firm]:
    """Bus proxy and stand-in publisher running under a fresh run directory."""
    f = Firm(Path(tmp_path_factory.mktemp("dash")), token=TOKEN)
    try:
        f.start_bus()
        f.start_standin()
        yield f
    finally:
        f.stop()
