"""A plain ``pip install`` of the project (no extras) brings every import its processes need.

The project is built from a copy of its packaged files (no build output lands in
the work tree) and installed, non-editable and without extras, into a fresh venv
in tmp_path; pip uses its cache, and the index answers for anything not cached,
so a dependency that is not declared is missing there as it would be for a user.
Then, with the working directory outside the repository, that venv's python:

1. imports every module of every installed package (``pkgutil.walk_packages``);
   a ``__main__`` module is not run: the modules it imports are imported
   instead. Each import that fails is named with its module and the missing
   name.
2. starts every process of the Procfile, and the agent runtime the supervisor
   starts agents with, on a stack file with an unknown key: each must reach its
   settings and exit with the configuration error's code (2), naming the key,
   so the entry point runs in the installed environment without binding a socket.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXIT_CONFIG = 2
# Benchmarks run from a checkout: some drive the firm with the test suite's helpers (the repository's tests
# package, not installed), the browser one uses playwright (a test extra). Only these names may be missing there.
CHECKOUT_ONLY_PACKAGE = "bench."
CHECKOUT_ONLY_MISSING = {"tests", "playwright"}
AGENT_RUNTIME = "agents.runtime"  # services/supervisor/watcher.py agent_argv: how agents are started

# Run by the fresh venv's python: import every module of the packages named in argv, print the failures as JSON.
WALKER = r"""
import ast, importlib, importlib.util, json, pkgutil, sys, traceback

def imports_of(source, origin):
    names = []
    for node in ast.walk(ast.parse(source, origin)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names

failures, seen = {}, []

def check(name, importer):
    try:
        importer()
    except ModuleNotFoundError as exc:
        failures[name] = {"missing": exc.name, "error": str(exc)}
    except BaseException as exc:  # a module that fails for another reason is a failure too
        failures[name] = {"missing": None, "error": "".join(traceback.format_exception_only(exc)).strip()}

def main_module(name):
    spec = importlib.util.find_spec(name)
    with open(spec.origin, encoding="utf-8") as f:
        for module in imports_of(f.read(), spec.origin):
            importlib.import_module(module)

for top in sys.argv[1:]:
    check(top, lambda: importlib.import_module(top))
    if top in failures:
        continue
    package = sys.modules[top]
    for info in pkgutil.walk_packages(package.__path__, top + ".", onerror=lambda n: None):
        seen.append(info.name)
        if info.name.rsplit(".", 1)[-1] == "__main__":
            check(info.name, lambda: main_module(info.name))
        else:
            check(info.name, lambda: importlib.import_module(info.name))
print(json.dumps({"failures": failures, "modules": seen, "files": {t: sys.modules[t].__file__ for t in sys.argv[1:]
                                                                    if t in sys.modules}}))
"""


def _packaged_tops(pyproject: dict) -> list[str]:
    """The top-level packages ``[tool.setuptools.packages.find] include`` names (``core*`` -> ``core``)."""
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.split(".")[0].rstrip("*") for pattern in include})


def _procfile_modules() -> list[tuple[str, list[str]]]:
    """(module, its arguments) of every ``python -m`` line of the Procfile."""
    out = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        if ":" not in line or line.lstrip().startswith("#"):
            continue
        argv = line.split(":", 1)[1].split()
        assert argv[:2] == ["python", "-m"], f"a Procfile process that is not `python -m MODULE`: {line!r}"
        out.append((argv[2], argv[3:]))
    return out


def _copy_project(dest: Path, tops: list[str]) -> Path:
    """The files a build reads, without caches: pyproject.toml, the readme and the packages."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for top in tops:
        shutil.copytree(ROOT / top, dest / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.mark.slow
def test_plain_install_imports_and_starts_every_process(tmp_path: Path) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tops = _packaged_tops(pyproject)
    source = _copy_project(tmp_path / "src", tops)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # the suite's pip installs into it (--python): no ensurepip run
    py = env_dir / "bin" / "python"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADER_", "PYTHON", "VIRTUAL_ENV"))}
    clean_env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    started = time.monotonic()
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-compile", "--quiet", str(source)],
        check=False, cwd=tmp_path, env=clean_env, capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}\n{install.stderr}"
    installed_s = time.monotonic() - started

    outside = tmp_path / "elsewhere"  # the repository is not on the path: only what was installed imports
    outside.mkdir()
    walk = subprocess.run([str(py), "-c", WALKER, *tops], check=False, cwd=outside, env=clean_env,
                          capture_output=True, text=True, timeout=300)
    assert walk.returncode == 0, f"the import walk itself failed:\n{walk.stderr}"
    result = json.loads(walk.stdout.strip().splitlines()[-1])
    for top, file in result["files"].items():
        assert str(env_dir) in file, f"{top} imported from {file}, not from the fresh install"
    assert set(result["files"]) == set(tops), f"packages that did not import at all: {result['failures']}"
    procfile = _procfile_modules()
    for module, _ in [*procfile, (AGENT_RUNTIME, [])]:
        assert module in result["modules"] or module in tops or f"{module}.__main__" in result["modules"], (
            f"{module} (started by the stack) is not in the installed packages")
    problems = []
    for name, failure in sorted(result["failures"].items()):
        if name.startswith(CHECKOUT_ONLY_PACKAGE) and failure["missing"] in CHECKOUT_ONLY_MISSING:
            continue
        problems.append(f"{name}: " + (f"missing import {failure['missing']!r}" if failure["missing"]
                                       else failure["error"]))
    assert not problems, "modules that do not import after `pip install .` without extras:\n  " + "\n  ".join(problems)

    # Every process starts: each reaches its settings and refuses the unknown key with the configuration exit code.
    bad_stack = tmp_path / "stack.toml"
    bad_stack.write_text("no_such_setting = 1\n")
    start_env = {**clean_env, "TRADER_CONFIG": str(bad_stack), "TRADER_RUN_DIR": str(tmp_path / "run")}
    runs = {module: [str(py), "-m", module, *args] for module, args in procfile}
    runs[AGENT_RUNTIME] = [str(py), "-m", AGENT_RUNTIME, "--id", "nobody"]
    procs = {m: subprocess.Popen(argv, cwd=outside, env=start_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for m, argv in runs.items()}
    try:
        outputs = {m: p.communicate(timeout=120) for m, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    bad = [f"{m}: exit {procs[m].returncode}\n{out}{err}" for m, (out, err) in outputs.items()
           if procs[m].returncode != EXIT_CONFIG or "no_such_setting" not in out + err]
    assert not bad, "processes that did not start up to their settings check:\n" + "\n".join(bad)
    print(f"install {installed_s:.1f} s, {len(result['modules'])} modules imported, {len(runs)} processes started")
