"""How much a process logs: the stack's log_level, TRADER_LOG_LEVEL, `trader up --verbose`, the libraries held back.

Each case runs a real python process that configures logging as every
process's main does and logs through our logger and httpx's (which logs one
INFO line per HTTP request).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT

PROBE = (
    "import logging; from bus.service import configure_logging; configure_logging(); "
    "ours, lib = logging.getLogger('reconciler'), logging.getLogger('httpx'); "
    "ours.debug('ours-debug'); ours.info('ours-info'); lib.info('lib-info'); lib.warning('lib-warning')"
)
# each line as logged (logger, level, text): the command line shown by `trader up` holds the words alone
LINES = {"ours-debug": "reconciler DEBUG ours-debug", "ours-info": "reconciler INFO ours-info",
         "lib-info": "httpx INFO lib-info", "lib-warning": "httpx WARNING lib-warning"}
ALL = set(LINES)


def found(text: str) -> set[str]:
    return {word for word, line in LINES.items() if line in text}


def logged(tmp_path: Path, stack_toml: str = "", **env: str) -> set[str]:
    stack = tmp_path / "stack.toml"
    stack.write_text(stack_toml)
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                          check=True, env={**base, "TRADER_CONFIG": str(stack), "TRADER_RUN_DIR": str(tmp_path), **env})
    return found(proc.stderr)


@pytest.mark.parametrize(("stack_toml", "env", "expected"), [
    ("", {}, {"ours-info", "lib-warning"}),  # the default: our INFO lines, the libraries' warnings only
    ('log_level = "debug"\n', {}, ALL),  # debug brings the libraries' INFO lines back
    ("", {"TRADER_LOG_LEVEL": "debug"}, ALL),
    ('log_level = "debug"\n', {"TRADER_LOG_LEVEL": "warning"}, {"lib-warning"}),  # the environment wins
    ("", {"TRADER_LOG_LEVEL": "loud"}, {"ours-info", "lib-warning"}),  # refused by the settings: the default level
])
def test_the_log_level_comes_from_the_stack_settings(tmp_path: Path, stack_toml: str, env: dict[str, str],
                                                     expected: set[str]) -> None:
    assert logged(tmp_path, stack_toml, **env) == expected


def test_a_process_refuses_a_log_level_it_does_not_know_naming_the_setting(tmp_path: Path) -> None:
    stack = tmp_path / "stack.toml"
    stack.write_text('log_level = "loud"\n')
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}
    proc = subprocess.run([sys.executable, "-m", "services.reconciler"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**base, "TRADER_CONFIG": str(stack), "TRADER_RUN_DIR": str(tmp_path)})
    assert proc.returncode == 2
    assert "log_level" in proc.stderr and "'debug', 'info', 'warning' or 'error'" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_trader_up_verbose_runs_every_process_at_debug(tmp_path: Path, verbose: bool) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(f'probe: python -c "{PROBE}"\n')
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}
    trader = Path(sys.executable).parent / "trader"
    argv = [str(trader), "up", "--procfile", str(procfile), *(["--verbose"] if verbose else [])]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
                          env={**base, "TRADER_CONFIG": str(tmp_path / "none.toml"), "TRADER_RUN_DIR": str(tmp_path)})
    out = found(proc.stdout + proc.stderr)
    assert out == (ALL if verbose else {"ours-info", "lib-warning"}), proc.stdout + proc.stderr
