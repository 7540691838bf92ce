"""Loopback TCP ports for the processes a test starts: free when asked for, and never handed out twice in a run.

Asking the kernel for a free port and closing it again can give the same port
twice in a row, so two servers of one test (a REST and a WebSocket port) could
be told to listen on one port; remembering what was handed out rules that out,
and keeps a port that an earlier test's process may still hold from being
given to a later one.

When the suite runs on several pytest-xdist workers, each worker draws from a
range of its own below the kernel's ephemeral ports (``WORKER_RANGES``), so two
workers never hand out the same port, and no outgoing connection of any
process takes a port a test is about to listen on.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading

FIRST_WORKER_PORT = 20_000
WORKER_RANGE = 3_000  # ports per worker: gw0 20000-22999, gw1 23000-25999, ... (below 32768)
MAX_WORKERS = 4

_handed_out: set[int] = set()
_rng = random.Random()  # not the global generator, which tests may seed
_lock = threading.Lock()


def _worker_range() -> range | None:
    """This xdist worker's own port range, or None outside xdist (the kernel then chooses)."""
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    if match is None:
        return None
    n = int(match.group(1)) % MAX_WORKERS
    start = FIRST_WORKER_PORT + n * WORKER_RANGE
    return range(start, start + WORKER_RANGE)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this run has not handed out before."""
    own = _worker_range()
    with _lock:
        for _ in range(1000):
            if own is None:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = int(s.getsockname()[1])
            else:
                port = _rng.choice(own)
                if port in _handed_out or not _bindable(port):
                    continue
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free loopback port that was not handed out before")
