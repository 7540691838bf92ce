"""One two-node Ray cluster on this machine for the module: a head and a node of one CPU each, always stopped."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from backtest.cluster import LocalCluster

RAY_NAMES = ("raylet", "gcs_server", "ray::")


def _ray_processes() -> dict[int, psutil.Process]:
    """Live Ray daemons and workers on this machine, by pid."""
    found = {}
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        text = " ".join([proc.info["name"] or "", *(proc.info["cmdline"] or ())[:1]])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(n in text for n in RAY_NAMES):
            found[proc.pid] = proc
    return found


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    before = set(_ray_processes())
    # short: Ray's Unix sockets live under it and their paths must stay under ~107 characters
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    started = LocalCluster(root, nodes=2, cpus=1)
    saved = {k: os.environ.get(k) for k in started.env}
    os.environ.update(started.env)  # the drivers here and the commands the tests start hold the cluster's token
    try:
        yield started.start()
    finally:
        started.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        left = [p for pid, p in _ray_processes().items() if pid not in before]
        for proc in left:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Ray processes left after the cluster stopped: {[(p.pid, p.name()) for p in left]}"
