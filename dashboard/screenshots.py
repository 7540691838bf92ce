"""Screenshots of every dashboard page, at a desk's size and a phone's, from a real paper stack.

``python -m dashboard.screenshots`` starts the whole stack of the Procfile in a
temporary run directory (the paper exchange on a fast clock, the default
roster with status pages on free ports), lets the agents trade for a while,
then opens each page in headless Chromium at 1280x800 and at 390x844 and
writes ``<page>-<width>x<height>.png`` to ``--out`` (default
``docs/screenshots``). Every process it started is stopped at the end, also
on an error or Ctrl-C. It needs Chromium (``/usr/bin/chromium``) and
Playwright for Python (the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.config import PROJECT_ROOT
from services.cli.stack import stack_entries

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SIZES = ((1280, 800), (390, 844))
PAGES = ("overview", "agents", "agent", "market", "risk", "recon", "blotter", "reports", "config")
TOKEN = "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _wait(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


class PaperStack:
    """The Procfile's processes for the paper venue under one run directory; ``stop()`` ends them all."""

    def __init__(self, run_dir: Path, clock_speed: float) -> None:
        self.run_dir = run_dir
        self.port = _free_port()
        roster = (PROJECT_ROOT / "configs" / "agents.toml").read_text()
        roster = re.sub(r"(?m)^dp\s*=\s*\d+", lambda _: f"dp = {_free_port()}", roster)
        (run_dir / "agents.toml").write_text(roster)
        self.env = {**os.environ, "TRADER_RUN_DIR": str(run_dir), "TRADER_DASHBOARD__PORT": str(self.port),
                    "TRADER_DASHBOARD_TOKEN": TOKEN, "TRADER_ROSTER_FILE": str(run_dir / "agents.toml"),
                    "TRADER_CLOCK__SPEED": str(clock_speed), "TRADER_BROKER__KIND": "paper"}
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, cmd in stack_entries(kind="paper"):
            argv = cmd.split()
            argv[0] = sys.executable if argv[0] == "python" else argv[0]
            with open(logs / f"{name}.log", "ab") as log:
                self.procs.append(subprocess.Popen(argv, cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True))

    def state(self, sections: str) -> dict[str, Any] | None:
        return _get(f"{self.url}/api/state?sections={sections}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def _busiest_agent(stack: PaperStack) -> str:
    rows = (stack.state("agents") or {}).get("agents", {}).get("rows", [])
    rows.sort(key=lambda r: (-(r.get("open_orders") or 0) - abs(r.get("realized_pnl_won") or 0), r["id"]))
    return rows[0]["id"] if rows else "sma-samsung"


def shoot(out: Path, seconds: float, clock_speed: float) -> list[Path]:
    """Start a paper stack, let it trade ``seconds``, and write every page at both sizes to ``out``."""
    # Playwright is of the test extra: imported only when shooting.
    from playwright.sync_api import Error as BrowserError
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="trader-shots-") as tmp:
        stack = PaperStack(Path(tmp), clock_speed)
        try:
            _say(f"starting a paper stack in {tmp} (dashboard {stack.url})")
            stack.start()
            _wait(lambda: stack.state("processes"), 60, "the dashboard")

            def agents_up() -> bool:
                rows = (stack.state("agents") or {}).get("agents", {}).get("rows", [])
                return bool(rows) and all(r["up"] for r in rows)

            _wait(agents_up, 90, "every agent of the roster")
            _say(f"every agent runs; trading for {seconds:.0f} s")
            time.sleep(seconds)  # the market runs on: this is the picture's content, not a wait for an event
            agent = _busiest_agent(stack)
            paths = {"overview": "/", "agents": "/agents", "agent": f"/agents/{agent}", "market": "/market",
                     "risk": "/risk", "recon": "/recon", "blotter": "/blotter", "reports": "/reports", "config": "/config"}
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    for width, height in SIZES:
                        ctx = browser.new_context(viewport={"width": width, "height": height})
                        page = ctx.new_page()
                        for name in PAGES:
                            try:
                                page.goto(stack.url + paths[name])
                                page.wait_for_selector("#conn:text('live')", timeout=30_000)
                                page.wait_for_load_state("networkidle")
                            except BrowserError as exc:
                                raise TimeoutError(f"the {name} page at {width}x{height} did not go live: "
                                                   f"{str(exc).splitlines()[0]}") from exc
                            path = out / f"{name}-{width}x{height}.png"
                            page.screenshot(path=str(path), full_page=True)
                            written.append(path)
                            _say(f"wrote {path}")
                        ctx.close()
                finally:
                    browser.close()
        finally:
            stack.stop()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.screenshots", description=__doc__.split("\n\n")[0],
                                     epilog="Example: python -m dashboard.screenshots --out docs/screenshots --seconds 60")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "screenshots", help="folder for the PNG files")
    parser.add_argument("--seconds", type=float, default=45.0, help="how long the agents trade before the pictures (wall s)")
    parser.add_argument("--clock-speed", type=float, default=60.0, help="market seconds per wall second")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        _say(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
        return 2
    try:
        written = shoot(args.out, args.seconds, args.clock_speed)
    except TimeoutError as exc:
        _say(f"screenshots failed: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    _say(f"{len(written)} screenshot(s) in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
