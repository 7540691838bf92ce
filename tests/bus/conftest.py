"""Fixtures for the bus tests: a short run directory and real processes that always stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT, StackSettings, load_stack

Spawn = Callable[..., subprocess.Popen]


@pytest.fixture
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh run directory with a short path (ipc paths are limited to ~107 bytes)."""
    return tmp_path_factory.mktemp("run")


@pytest.fixture
def settings(run_dir: Path) -> StackSettings:
    """Stack settings pointing at the test's run directory."""
    return load_stack(run_dir=str(run_dir))


@pytest.fixture
def spawn(run_dir: Path) -> Iterator[Spawn]:
    """Start ``python -m <module> args...`` with TRADER_RUN_DIR set; all are stopped at the end."""
    started: list[subprocess.Popen] = []

    def start(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        full_env = {**os.environ, "TRADER_RUN_DIR": str(run_dir), **(env or {})}
        log = open(run_dir / f"{module}-{len(started)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=PROJECT_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        proc.log_path = run_dir / f"{module}-{len(started)}.log"  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_for_socket(path: Path, proc: subprocess.Popen | None = None, timeout_s: float = 10.0) -> None:
    """Wait until something listens on the ipc socket file ``path``, or fail naming the process log.

    The file appears at bind(), a moment before listen(): a connect in between is
    refused, so the file existing is not yet a server to call.
    """
    deadline = time.monotonic() + timeout_s
    while not _accepts(path):
        if proc is not None and proc.poll() is not None:
            log = Path(proc.log_path).read_text() if hasattr(proc, "log_path") else ""  # type: ignore[attr-defined]
            pytest.fail(f"process exited with {proc.returncode} before {path} was listening:\n{log}")
        if time.monotonic() > deadline:
            pytest.fail(f"nothing listened on {path} within {timeout_s} s")
        time.sleep(0.02)


def _accepts(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def ipc_path(settings: StackSettings, endpoint_name: str) -> Path:
    """The file behind an ipc endpoint of the stack."""
    return Path(settings.endpoint(endpoint_name).removeprefix("ipc://"))
