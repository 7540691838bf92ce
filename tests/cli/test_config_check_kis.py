"""``trader config check`` with ``broker.kind = "kis"``: every KIS problem named, no secret ever shown.

Each test runs the real command in a subprocess, from a temporary folder (so
no developer's ``.env`` is read), with a temporary stack file and only the
``TRADER_*`` variables the test sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.config import KIS_APPKEY_LENGTH, KIS_APPSECRET_LENGTH, PROJECT_ROOT
from tests.ports import free_port

CREDENTIALS = "environment (or .env)"
# Made-up credentials of the right shapes; no window of them may appear in any output.
APP_KEY = ("PSq7Lw2Zr9Xc4Vb8Nm1Kj6Hg3Fd5Sa0TyuEo" * 2)[:KIS_APPKEY_LENGTH]
APP_SECRET = ("Qz8Wx3Ec7Rv1Tb5Yn9Um2Ik6Ol4Pa0Sd" * 6)[:KIS_APPSECRET_LENGTH]
ACCOUNT = "73918264-01"
HTS_ID = "hts7q2w9"


def config_check(tmp_path: Path, toml: str, *, human: bool = False, **env: str) -> tuple[int, list[dict], str]:
    """Run ``trader config check`` on ``toml``: (exit code, the problems (--json), everything it printed)."""
    stack = tmp_path / "stack.toml"
    stack.write_text(toml)
    roster = tmp_path / "agents.toml"
    roster.write_text("agents = []\n")
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}
    full.update({"TRADER_CONFIG": str(stack), "TRADER_RUN_DIR": str(tmp_path / "var"),
                 "TRADER_ROSTER_FILE": str(roster), "TRADER_DASHBOARD__PORT": str(free_port()),
                 "PYTHONPATH": str(PROJECT_ROOT)})
    full.update(env)
    args = [sys.executable, "-m", "services.cli.main", "config", "check"] + ([] if human else ["--json"])
    out = subprocess.run(args, cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60,
                         check=False)
    printed = out.stdout + out.stderr
    problems = [] if human else json.loads(out.stdout)
    return out.returncode, problems, printed


def assert_no_part_of(secret: str, printed: str, window: int = 6) -> None:
    for i in range(len(secret) - window + 1):
        assert secret[i:i + window] not in printed, f"part of a secret was printed: {printed}"


def kis_toml(**kis: str) -> str:
    lines = ['[broker]', 'kind = "kis"', '[broker.kis]'] + [f'{k} = "{v}"' for k, v in kis.items()]
    return "\n".join(lines) + "\n"


def credentials(**override: str) -> dict[str, str]:
    env = {"TRADER_KIS_APP_KEY": APP_KEY, "TRADER_KIS_APP_SECRET": APP_SECRET, "TRADER_KIS_ACCOUNT": ACCOUNT,
           "TRADER_KIS_HTS_ID": HTS_ID}
    env.update(override)
    return env


def kis_rows(problems: list[dict]) -> dict[str, dict]:
    return {p["key"]: p for p in problems if p["file"] == CREDENTIALS or p["key"].startswith(("broker.", "kis_",
                                                                                                "secrets."))}


def test_kis_server_without_credentials_names_each_missing_variable(tmp_path: Path) -> None:
    code, problems, _ = config_check(tmp_path, kis_toml(server="kis"))
    rows = kis_rows(problems)
    assert set(rows) == {"TRADER_KIS_APP_KEY", "TRADER_KIS_APP_SECRET", "TRADER_KIS_ACCOUNT", "TRADER_KIS_HTS_ID"}
    assert all(r["file"] == CREDENTIALS and r["reason"].startswith("missing") for r in rows.values())
    assert code == 1


def test_an_app_key_one_character_short_is_named_by_its_length_only(tmp_path: Path) -> None:
    short = APP_KEY[:KIS_APPKEY_LENGTH - 1]
    code, problems, printed = config_check(tmp_path, kis_toml(server="kis"), **credentials(TRADER_KIS_APP_KEY=short))
    assert code == 1
    assert [(p["key"], p["reason"]) for p in problems] == [
        ("TRADER_KIS_APP_KEY", "must be 36 characters (KIS issues them so), not 35")]
    code, _, table = config_check(tmp_path, kis_toml(server="kis"), human=True,
                                  **credentials(TRADER_KIS_APP_KEY=short))
    assert code == 1 and "TRADER_KIS_APP_KEY" in table
    for secret in (short, APP_SECRET, ACCOUNT, HTS_ID):
        assert_no_part_of(secret, printed + table)


def test_an_account_without_its_dash_is_refused_without_showing_it(tmp_path: Path) -> None:
    bad = ACCOUNT.replace("-", "")
    code, problems, printed = config_check(tmp_path, kis_toml(server="kis"), **credentials(TRADER_KIS_ACCOUNT=bad))
    assert code == 1
    assert [p["key"] for p in problems] == ["TRADER_KIS_ACCOUNT"]
    assert "8 digits, a dash and 2 digits" in problems[0]["reason"]
    assert_no_part_of(bad, printed)


def test_real_money_needs_trader_live_yes(tmp_path: Path) -> None:
    code, problems, _ = config_check(tmp_path, kis_toml(env="real"))
    assert code == 1
    assert [p["key"] for p in problems] == ["broker.kis.env"]
    assert "TRADER_LIVE=yes" in problems[0]["reason"]
    code, problems, _ = config_check(tmp_path, kis_toml(env="real"), TRADER_LIVE="yes")
    assert (code, problems) == (0, [])


def test_rehearsing_against_kis_sim_needs_no_configuration(tmp_path: Path) -> None:
    code, problems, _ = config_check(tmp_path, kis_toml())
    assert (code, problems) == (0, [])
    code, _, printed = config_check(tmp_path, kis_toml(), human=True)
    assert code == 0 and "configuration is clean" in printed


def test_kis_credentials_written_in_the_stack_file_are_refused_unseen(tmp_path: Path) -> None:
    toml = f'kis_account = "{ACCOUNT}"\n[secrets]\nkis_app_secret = "{APP_SECRET}"\n' + kis_toml(app_key=APP_KEY)
    code, problems, printed = config_check(tmp_path, toml)
    assert code == 1
    rows = kis_rows(problems)
    assert {"kis_account", "secrets.kis_app_secret", "broker.kis.app_key"} <= set(rows)
    assert "TRADER_KIS_APP_SECRET" in rows["secrets.kis_app_secret"]["reason"]
    for secret in (ACCOUNT, APP_SECRET, APP_KEY):
        assert_no_part_of(secret, printed)


def test_malformed_kis_urls_are_named(tmp_path: Path) -> None:
    toml = kis_toml(server="kis", rest_url="ws://127.0.0.1:29443", ws_url="ws://:31000")
    code, problems, _ = config_check(tmp_path, toml, **credentials())
    assert code == 1
    rows = kis_rows(problems)
    assert set(rows) == {"broker.kis.rest_url", "broker.kis.ws_url"}
    assert "http://" in rows["broker.kis.rest_url"]["reason"] and "no host" in rows["broker.kis.ws_url"]["reason"]
    code, problems, _ = config_check(tmp_path, kis_toml(rest_url="https://openapi.koreainvestment.com:9443"))
    assert [p["key"] for p in problems] == ["broker.kis.rest_url"] and "real server" in problems[0]["reason"]
