"""Opening one fresh SQLite file from many processes at once, as the stack does when it starts."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from core.db import connect

SCHEMA = "CREATE TABLE IF NOT EXISTS t (who INTEGER PRIMARY KEY)"


def _open_and_write(path: str, who: int, barrier: mp.synchronize.Barrier, errors: mp.Queue) -> None:
    barrier.wait(10)
    try:
        db = connect(path, synchronous="FULL")
        db.execute(SCHEMA)
        db.execute("INSERT INTO t (who) VALUES (?)", (who,))
        db.close()
    except Exception as exc:  # reported to the test, which names it
        errors.put(f"{who}: {type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_many_processes_open_a_fresh_file_at_once_and_all_write(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    n = 6
    for round_ in range(6):
        path = tmp_path / f"journal{round_}.sqlite"
        barrier, errors = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_open_and_write, args=(str(path), i, barrier, errors)) for i in range(n)]
        for p in procs:
            p.start()
        try:
            for p in procs:
                p.join(60)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        found = []
        while not errors.empty():
            found.append(errors.get())
        assert found == []
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert sorted(r for (r,) in db.execute("SELECT who FROM t")) == list(range(n))
        finally:
            db.close()


def test_bad_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        connect(tmp_path / "x.sqlite", synchronous="OFF")


def test_the_parent_folder_is_created_and_settings_hold(tmp_path: Path) -> None:
    db = connect(tmp_path / "a" / "b.sqlite", synchronous="FULL", autocheckpoint_pages=100)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA synchronous").fetchone() == (2,)
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone() == (100,)
        assert db.execute("PRAGMA busy_timeout").fetchone() == (5000,)
    finally:
        db.close()
