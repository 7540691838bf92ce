"""The trader command line: help, version, configuration."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from services.cli.main import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("version", "config", "up", "down"):
        assert command in result.output


def test_version_prints_the_installed_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.startswith("trader ")


def test_config_show_json_masks_secrets(monkeypatch):
    monkeypatch.setenv("TRADER_DASHBOARD_TOKEN", "do-not-print-me")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["dashboard_token"] == "********"
    assert "do-not-print-me" not in result.output


def test_config_error_exits_non_zero(monkeypatch):
    monkeypatch.setenv("TRADER_CLOCK__SPEED", "fast")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "services.cli.main", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "trader" in out.stdout.lower()
