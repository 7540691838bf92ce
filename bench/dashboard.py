"""Benchmark of the dashboard: bus-to-browser push latency and the time to show 100 agents.

Starts real processes (bus proxy, stand-in publisher, ``python -m dashboard``)
under a temporary run directory with a roster of 100 agents, drives headless
Chromium, and prints figures; the last line is JSON:
``{"bench": "dashboard", "push_p50_ms": ..., "push_p95_ms": ..., "grid100_ms": ...}``.

- push: a tick published on the bus with a new price, to that price in the
  market board's DOM (a MutationObserver stamps it), over ``EVENTS`` events;
- grid100: navigation start to the first render of the agent grid with 100 rows
  (server page, script, first state), median of ``GRID_RUNS`` loads.

Run: ``python -m bench.dashboard`` (needs /usr/bin/chromium and playwright).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from core.messages import Tick
from tests.dashboard.firm import Firm, wait_until

EVENTS = 150
GRID_RUNS = 5
AGENTS = 100
CODE = "051910"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CODES = ("005930", "000660", "035420", "005380", "035720")

OBSERVER = """
(code) => {
  window.__seen = {};
  const tb = document.querySelector('#board tbody');
  new MutationObserver(() => {
    const cell = tb.querySelector(`tr[data-code='${code}'] td[data-k='last']`);
    if (cell && !(cell.textContent in window.__seen)) window.__seen[cell.textContent] = performance.timeOrigin + performance.now();
  }).observe(tb, {childList: true, subtree: true, characterData: true});
}
"""


def write_roster(config_dir: Path, n: int) -> None:
    """A roster of ``n`` agents spread over a few codes."""
    lines = []
    for i in range(n):
        lines += [
            "[[agents]]",
            f'id = "bench-{i:03d}"',
            f'code = "{CODES[i % len(CODES)]}"',
            f"dp = {9000 + i}",
            'strategy = "sma_cross"',
            "cash = 10_000_000",
            "",
        ]
    (config_dir / "agents.toml").write_text("\n".join(lines))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def main() -> int:
    """Run both measurements and print the figures and the JSON line."""
    with tempfile.TemporaryDirectory(prefix="dashbench") as tmp:
        run_dir, config_dir = Path(tmp) / "run", Path(tmp) / "configs"
        run_dir.mkdir()
        config_dir.mkdir()
        write_roster(config_dir, AGENTS)
        firm = Firm(run_dir, config_dir=config_dir)
        try:
            firm.start_bus()
            firm.start_standin(1.0)
            firm.start_dashboard()
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page()
                    page.goto(firm.url + "/market")
                    page.wait_for_selector("#conn:text('live')")
                    pub = firm.publisher()
                    cell = f"#board tr[data-code='{CODE}'] td[data-k='last']"

                    def row_shown() -> bool:
                        pub.publish(f"md.tick.{CODE}", Tick(code=CODE, ts_ns=time.time_ns(), price=100_000, qty=1))
                        return page.locator(cell).count() > 0

                    wait_until(row_shown, 10, "the bench code on the board")
                    page.evaluate(OBSERVER, CODE)
                    latencies = []
                    for i in range(EVENTS):
                        price = 200_000 + 500 * i
                        text = f"{price:,}"
                        sent_ms = time.time() * 1000
                        pub.publish(f"md.tick.{CODE}", Tick(code=CODE, ts_ns=time.time_ns(), price=price, qty=1))
                        page.wait_for_function("t => t in window.__seen", arg=text, timeout=5000, polling=10)
                        latencies.append(page.evaluate("t => window.__seen[t]", text) - sent_ms)
                        time.sleep(0.02)
                    grid_loads, grid_renders = [], []
                    for _ in range(GRID_RUNS):
                        g = browser.new_page()
                        g.goto(firm.url + "/agents")
                        g.wait_for_function(f"window.__gridFirst && window.__gridFirst.rows === {AGENTS}", timeout=10000)
                        figures = g.evaluate("window.__gridFirst")
                        grid_loads.append(figures["at"])
                        grid_renders.append(figures["ms"])
                        g.close()
                finally:
                    browser.close()
        finally:
            firm.stop()
    p50, p95 = statistics.median(latencies), percentile(latencies, 95)
    grid_ms = statistics.median(grid_loads)
    print(f"push latency over {len(latencies)} events: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(latencies):.1f} ms")
    print(f"agent grid with {AGENTS} agents: {grid_ms:.1f} ms from navigation to first render "
          f"(render alone {statistics.median(grid_renders):.1f} ms), median of {GRID_RUNS}")
    print(json.dumps({"bench": "dashboard", "push_p50_ms": round(p50, 1), "push_p95_ms": round(p95, 1), "grid100_ms": round(grid_ms, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
