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
    out = subprocess.run([sys.executable, "-m", "services.cli.main", "--help"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0
    assert "trader" in out.stdout.lower()


# Each listing's help says what it does, names its flags and shows an example.
HELP_TEACHES = {
    ("ps",): ("--wide", "--watch", "--interval", "--json", "trader ps --watch"),
    ("profile",): ("py-spy", "--seconds", "--fresh", "--profiler", "--idle", "Exit codes", "trader profile"),
    ("reload",): ("roster", "--json", "trader reload"),
    ("orders",): ("--wide", "--open", "--since", "trader orders"),
    ("positions",): ("--wide", "trader positions"),
    ("agents",): ("--export", "--wide", "trader agents --export"),
    ("agent",): ("--wide", "trader agent"),
    ("market",): ("--wide", "trader market"),
    ("recon",): ("--wide", "trader recon"),
    ("ledger", "show"): ("--wide", "trader ledger show"),
    ("ledger", "day"): ("--wide", "trader ledger day"),
    ("backtest",): ("--wide", "--strategy", "trader backtest"),
    ("sweep",): ("--wide", "--grid", "--walk-forward", "trader sweep"),
}


def test_the_help_of_each_listing_says_what_it_does_its_flags_and_an_example():
    for command, needles in HELP_TEACHES.items():
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, command
        text = " ".join(result.output.split())  # rich wraps the help; compare the words
        assert "Example" in text, command
        for needle in needles:
            assert needle in text, (command, needle)
