"""Back-test reports in the dashboard: a real ``trader backtest --save`` run listed, opened and its files served.

The back-test runs in-process (the CLI through typer's runner) on one simulated
day of one code, with the run directory under tmp_path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from core.config import load_stack
from dashboard.app import create_app
from services.cli.main import app as cli

BACKTEST = ["backtest", "--strategy", "sma_cross", "--codes", "005930", "--days", "1", "--seed", "3",
            "-p", "fast=5", "-p", "slow=20", "--save"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with one report saved by the back-test CLI, and a secret file beside the reports."""
    run = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADER_RUN_DIR", str(run))
        result = CliRunner().invoke(cli, BACKTEST)
    assert result.exit_code == 0, result.output
    (run / "secret.txt").write_text("not for the browser")
    return run


@pytest.fixture
def client(run_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(load_stack(run_dir=str(run_dir)), start_feed=False), base_url="http://127.0.0.1:8000") as c:
        yield c


def saved(run_dir: Path) -> Path:
    (folder,) = (run_dir / "backtests").iterdir()
    return folder


def test_a_saved_back_test_is_listed_with_its_strategy_period_and_metrics(client: TestClient, run_dir: Path) -> None:
    folder = saved(run_dir)
    assert folder.name.endswith("-sma_cross") and (folder / "report.html").is_file()
    summary = json.loads((folder / "metrics.json").read_text())
    listed = client.get("/api/reports").json()
    assert listed["root"] == str(run_dir / "backtests")
    (report,) = listed["reports"]
    assert report["name"] == folder.name and report["strategies"] == ["sma_cross"] and report["codes"] == ["005930"]
    assert report["period"]["start"] == report["period"]["end"] != "" and report["period"]["days"] == 1
    assert report["fill_model"] == "next_open"
    assert report["metrics"]["total_return"] == summary["metrics"]["combined"]["total_return"]
    assert {"report.html", "metrics.json", "trades.csv", "equity.csv"} <= set(report["files"])
    page = client.get("/reports").text
    assert f'href="/reports/{folder.name}"' in page and str(run_dir / "backtests") in page and "sma_cross" in page


def test_a_report_opens_in_the_page_and_its_files_are_served_with_their_media_types(client: TestClient, run_dir: Path) -> None:
    name = saved(run_dir).name
    page = client.get(f"/reports/{name}")
    assert page.status_code == 200 and f'src="/reports/{name}/files/report.html"' in page.text
    html = client.get(f"/reports/{name}/files/report.html")
    assert html.headers["content-type"].startswith("text/html") and "<svg" in html.text
    assert "sandbox" in html.headers["content-security-policy"] and html.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"/reports/{name}/files/trades.csv").headers["content-type"].startswith("text/csv")
    assert client.get(f"/reports/{name}/files/metrics.json").json()["fill_model"] == "next_open"


def test_paths_out_of_a_report_are_refused(client: TestClient, run_dir: Path) -> None:
    name = saved(run_dir).name
    os.symlink(run_dir / "secret.txt", saved(run_dir) / "link.txt")
    for path in (f"/reports/{name}/files/%2e%2e/%2e%2e/secret.txt", f"/reports/{name}/files/..%2F..%2Fsecret.txt",
                 f"/reports/{name}/files/%2Fetc%2Fpasswd", f"/reports/{name}/files/link.txt",
                 "/reports/..%2F/files/secret.txt", "/reports/%2e%2e/files/secret.txt", f"/reports/{name}/files/.hidden"):
        res = client.get(path)
        assert res.status_code == 404, path
        assert "not for the browser" not in res.text
        if "/files/" in path and not path.startswith("/reports/."):
            assert res.json()["error"] == "NO_SUCH_FILE", path  # refused by the report's file lookup itself
    assert client.get("/api/reports/..").status_code == 404
    assert client.get("/reports/no-such-report").status_code == 404
