"""The local KIS server as a real process for the gateway's tests (one per test: faults and state are its own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kis_sim.conftest import COMMON, Server


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Server]:
    """A demo ``trader kis-sim`` on free loopback ports, its rate limit raised (tests set their own)."""
    state = tmp_path / "kis-sim"
    state.mkdir()
    server = Server(state, "--rate-limit", "1000", *COMMON)
    try:
        yield server
    finally:
        server.stop()
