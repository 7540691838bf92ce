"""Where the paper exchange keeps its state between runs: one JSON file, replaced atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


class StateFileError(Exception):
    """The state file exists but cannot be read back (the exchange refuses to start over it)."""


def state_path(run_path: Path) -> Path:
    """``<run_dir>/exchange/state.json``."""
    return run_path / "exchange" / STATE_FILE


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that a crash at any instant leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    data = json.dumps(state, separators=(",", ":")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        state = json.loads(raw)
    except ValueError as exc:
        raise StateFileError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(state, dict):
        raise StateFileError(f"{path} does not hold a state object")
    return state
