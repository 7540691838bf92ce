"""Loopback TCP ports for the processes a test starts: free when asked for, and never handed out twice in a run.

Asking the kernel for a free port and closing it again can give the same port
twice in a row, so two servers of one test (a REST and a WebSocket port) could
be told to listen on one port; remembering what was handed out rules that out,
and keeps a port that an earlier test's process may still hold from being
given to a later one.
"""

from __future__ import annotations

import socket
import threading

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this run has not handed out before."""
    with _lock:
        for _ in range(1000):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free loopback port that was not handed out before")
