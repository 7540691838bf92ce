"""What the ``trader`` command-line tests share: the real command in a subprocess, its tables read back, and a
small real stack (bus proxy and supervisor, with a roster of the test's own) in a private run directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.config import PROJECT_ROOT
from tests.ports import free_port


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll until ``condition()`` is truthy; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def trader(env: dict[str, str], *args: str, columns: int | None = None, timeout: float = 90,
           prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``trader ARGS`` as a user would (a subprocess, output to a pipe), ``COLUMNS`` wide when given."""
    full = dict(env)
    if columns is not None:
        full["COLUMNS"] = str(columns)
    return subprocess.run([*prefix, sys.executable, "-m", "services.cli.main", *args], cwd=PROJECT_ROOT, env=full,
                          capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Printed:
    """One table as the command printed it."""

    title: str
    headers: list[str]
    rows: list[list[str]]  # the cells as printed, padding kept (so alignment can be checked)
    hidden: list[str] = field(default_factory=list)  # the columns the footer names as left out
    width: int = 0  # the widest line of the table


FOOTER = re.compile(r"(\d+) column\(s\) not shown for the terminal's width: (.*); `--wide` shows all")


def tables(output: str) -> list[Printed]:
    """Every box table in ``output`` (rich's heavy-head box; light when it has no header row), with the footer line
    that follows it, if any."""
    lines = output.splitlines()
    found: list[Printed] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith(("┏", "┌")):
            i += 1
            continue
        title = lines[i - 1].strip() if i > 0 else ""
        top = i
        if lines[i].startswith("┏"):
            headers = [h.strip() for h in lines[i + 1].strip("┃").split("┃")]
            i += 3  # the top border, the header, the rule under it
        else:  # a table without a header row
            headers = []
            i += 1
        rows = []
        while i < len(lines) and not lines[i].startswith("└"):
            if lines[i].startswith("│"):
                rows.append(lines[i][1:-1].split("│"))
            i += 1
        width = max(len(line) for line in lines[top:i + 1])
        i += 1
        tail = " ".join(line.strip() for line in lines[i:i + 4])  # the footer may wrap onto several lines
        match = FOOTER.match(tail)
        hidden = [h.strip() for h in match.group(2).split(", ")] if match else []
        if match:
            assert int(match.group(1)) == len(hidden), tail
        found.append(Printed(title, headers, rows, hidden, width))
    return found


def assert_fits(t: Printed, every: list[str], essential: list[str], columns: int) -> None:
    """No header cut, every column either shown or named as left out, the essential ones shown, within the width."""
    assert not any("…" in h for h in t.headers), t.headers
    assert t.headers == [h for h in every if h in t.headers], (t.headers, every)  # whole, in the declared order
    assert sorted(t.headers + t.hidden) == sorted(every), (t.headers, t.hidden)
    assert set(essential) <= set(t.headers), (essential, t.headers)
    assert t.width <= columns, f"a line of {t.width} characters in {columns} columns"


def sma(agent_id: str, code: str, dp: int, enabled: bool = True) -> str:
    return (f'[[agents]]\nid = "{agent_id}"\ncode = "{code}"\ndp = {dp}\nstrategy = "sma_cross"\ncash = 50000000\n'
            f"enabled = {'true' if enabled else 'false'}\n[agents.params]\nfast = 2\nslow = 3\nqty = 10\n\n")


class Supervised:
    """A bus proxy and a supervisor (real processes) in a private run directory, with the test's roster."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.roster = run_dir / "agents.toml"
        self.dp = free_port()
        self.roster.write_text(sma("sma-x", "005930", self.dp, enabled=False))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRADER_")},
            "PYTHONUNBUFFERED": "1",
            "TRADER_RUN_DIR": str(run_dir),
            "TRADER_ROSTER_FILE": str(self.roster),
            "TRADER_DASHBOARD__PORT": str(free_port()),
            "TRADER_SUPERVISOR__KILL_TIMEOUT_S": "4",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = time.time()

    def start(self, name: str, module: str) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "logs" / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", module], cwd=PROJECT_ROOT, env=self.env,
                                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def trader(self, *args: str, columns: int | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
        return trader(self.env, *args, columns=columns, **kw)

    def ps(self) -> dict[str, dict[str, Any]]:
        out = self.trader("ps", "--json")
        return {r["name"]: r for r in json.loads(out.stdout)} if out.stdout.strip().startswith("[") else {}

    def close(self) -> None:
        """Stop the supervisor (it stops its agents), then the bus; kill whatever is left, agents included."""
        import psutil

        children = []
        for p in self.procs.values():
            try:
                children += psutil.Process(p.pid).children(recursive=True)
            except psutil.Error:
                pass
        for name in ("supervisor", "bus"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        for c in children:
            try:
                c.kill()
            except psutil.Error:
                pass


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    s = Supervised(tmp_path_factory.mktemp("cli"))
    try:
        s.start("bus", "bus.proxy")
        s.start("supervisor", "services.supervisor")
        wait_for(lambda: {"bus", "supervisor"} <= set(s.ps()), 60, "the supervisor listing the bus and itself")
        yield s
    finally:
        s.close()
