"""The pid lock: one holder at a time, stale locks taken over, refusals name the holder."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from bus.pidlock import LockHeld, PidLock, lock_path

HOLD_LOCK = "import sys, time; from bus.pidlock import PidLock; PidLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"


def test_lock_file_records_pid_start_time_and_command_line(run_dir: Path) -> None:
    lock = PidLock(lock_path(run_dir, "agent-a"))
    lock.acquire()
    try:
        record = json.loads((run_dir / "run" / "agent-a.pid").read_text())
        me = psutil.Process()
        assert record == {"pid": me.pid, "create_time": me.create_time(), "cmdline": me.cmdline()}
    finally:
        lock.release()
    assert not (run_dir / "run" / "agent-a.pid").exists()


def test_a_second_holder_is_refused_with_the_holders_pid(run_dir: Path) -> None:
    path = lock_path(run_dir, "risk-guard")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld) as err:
            PidLock(path).acquire()
        assert err.value.pid == holder.pid
        assert "-c" in err.value.cmdline
        assert str(holder.pid) in str(err.value) and "already running" in str(err.value)
    finally:
        holder.kill()
        holder.wait(timeout=5)


def test_the_lock_is_freed_when_its_holder_is_killed(run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = lock_path(run_dir, "exchange")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait(timeout=5)
    assert path.exists()  # left behind by the dead process
    with caplog.at_level(logging.WARNING, logger="bus.pidlock"):
        with PidLock(path):
            assert json.loads(path.read_text())["pid"] == psutil.Process().pid
    assert f"pid {holder.pid}" in caplog.text and "stale" in caplog.text


def test_a_reused_pid_is_recognised_as_stale(run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = lock_path(run_dir, "reconciler")
    path.parent.mkdir(parents=True)
    parent = psutil.Process().parent()
    assert parent is not None
    # The file names a live process, but one that started at another time than the writer.
    path.write_text(json.dumps({"pid": parent.pid, "create_time": parent.create_time() - 1000, "cmdline": ["old"]}))
    with caplog.at_level(logging.WARNING, logger="bus.pidlock"):
        with PidLock(path):
            pass
    assert "pid reused" in caplog.text


def test_an_unreadable_lock_file_is_taken_over(run_dir: Path) -> None:
    path = lock_path(run_dir, "supervisor")
    path.parent.mkdir(parents=True)
    path.write_text("garbage {")
    with PidLock(path) as lock:
        assert lock.held


def test_the_same_process_cannot_take_its_lock_twice_through_another_object(run_dir: Path) -> None:
    path = lock_path(run_dir, "bus")
    with PidLock(path):
        with pytest.raises(LockHeld):
            PidLock(path).acquire()
