"""Bars on disk: one compressed columnar file per trading day per code.

Layout: ``<root>/<YYYYMMDD>/<code>.parquet`` (zstd-compressed parquet) or
``<code>.csv``, where ``<root>`` is ``<run_dir>/bars`` for the recorder and the
output folder of ``trader sim``. The day is the bar's Korean (KST) calendar
date. Columns: ``code, ts_ns, interval_s, open, high, low, close, volume,
value_won, bid, ask``, sorted by ``ts_ns``, one row per bar start; ``bid`` and
``ask`` are the best quotes at the bar's close where the source knows them
(``trader sim``), else 0 (a file without them reads as 0).

Writing a day that already has a file merges into it (a bar with the same start
replaces the old one), and every write goes to a temporary file renamed into
place, so a crash mid-write never leaves a half file. Day folders older than the
retention window are purged by :func:`purge_days`.

Beside the day folders, ``<root>/flows.<format>`` holds every investor-flow
report (``ts_ns, code, foreign_net_qty, institution_net_qty,
individual_net_qty, provisional``) and ``<root>/fundamentals.<format>`` every
announcement (``ts_ns, code, effective_date, eps, bps, dps, source``): what a
back-test of the recorded days replays besides bars (``backtest.data.from_bar_dir``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core import krx
from core.messages import Bar, Fundamentals, InvestorFlow

BarFormat = Literal["parquet", "csv"]
FORMATS: tuple[BarFormat, ...] = ("parquet", "csv")
COMPRESSION = "zstd"
DAY_DIR_RE = re.compile(r"^[0-9]{8}$")

SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("ts_ns", pa.int64()),
        ("interval_s", pa.int32()),
        ("open", pa.int64()),
        ("high", pa.int64()),
        ("low", pa.int64()),
        ("close", pa.int64()),
        ("volume", pa.int64()),
        ("value_won", pa.int64()),
        ("bid", pa.int64()),
        ("ask", pa.int64()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
QUOTE_COLUMNS = ("bid", "ask")
BAR_FIELDS = tuple(c for c in COLUMNS if c not in QUOTE_COLUMNS)  # what a Bar message carries

# Bars are sorted by time, so the integer columns change little from row to row:
# delta encoding before zstd stores them in about a sixth of the CSV's bytes.
# The code column is constant within a file (one file per code) and dictionary-encoded.
PARQUET_OPTIONS = {
    "compression": COMPRESSION,
    "compression_level": 9,
    "use_dictionary": ["code"],
    "column_encoding": {name: "DELTA_BINARY_PACKED" for name in COLUMNS if name != "code"},
    "write_statistics": False,
    "store_schema": False,
}


def day_of(ts_ns: int) -> str:
    """The ``YYYYMMDD`` folder a bar starting at ``ts_ns`` belongs to (KST date)."""
    return krx.kst_date(ts_ns).strftime("%Y%m%d")


def bar_path(root: Path, day: str, code: str, fmt: BarFormat = "parquet") -> Path:
    """Where the bars of ``code`` on ``day`` live."""
    return Path(root) / day / f"{code}.{fmt}"


def arrow_without_pandas() -> bool:
    """Tell pyarrow that pandas is absent, for a process that records with Arrow alone; True if it was not loaded.

    pyarrow checks on its first array whether pandas is installed (to accept its
    objects) and, when it is, imports it: some 70 MB that market data never uses.
    With ``pandas`` hidden for that one check pyarrow keeps the answer "absent";
    pandas itself stays importable (pyarrow's own pandas calls import it again).
    """
    if "pandas" in sys.modules:
        return False
    hide = _HidePandas()
    sys.meta_path.insert(0, hide)  # an import of it fails for the moment
    try:
        pa.array([0], pa.int64())
    finally:
        sys.meta_path.remove(hide)
    return "pandas" not in sys.modules


class _HidePandas:
    """A finder that says pandas is not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def bars_to_table(bars: Sequence[Bar]) -> pa.Table:
    """Bars as an Arrow table in the file schema, sorted by start time."""
    ordered = sorted(bars, key=lambda b: b.ts_ns)
    data = {name: [getattr(b, name, 0) for b in ordered] for name in COLUMNS}
    return pa.Table.from_pydict(data, schema=SCHEMA)


def table_to_bars(table: pa.Table) -> list[Bar]:
    """Rows of a bar table back into Bar messages."""
    rows = table.select(list(BAR_FIELDS)).to_pylist()
    return [Bar(**row) for row in rows]


def columns_to_table(code: str, columns: Mapping[str, np.ndarray | Sequence[int]]) -> pa.Table:
    """A bar table from column arrays (``ts_ns, open, high, low, close, volume`` and optional
    ``interval_s``, ``value_won``), the fast path for simulated days."""
    n = len(columns["ts_ns"])
    data = {
        "code": pa.array([code] * n, pa.string()),
        "interval_s": pa.array(np.asarray(columns.get("interval_s", np.full(n, 60)), dtype=np.int32)),
    }
    for name in ("ts_ns", "open", "high", "low", "close", "volume"):
        data[name] = pa.array(np.asarray(columns[name], dtype=np.int64))
    if "value_won" in columns:
        data["value_won"] = pa.array(np.asarray(columns["value_won"], dtype=np.int64))
    else:
        data["value_won"] = pa.array(np.asarray(columns["close"], dtype=np.int64) * np.asarray(columns["volume"], dtype=np.int64))
    for name in QUOTE_COLUMNS:
        data[name] = pa.array(np.asarray(columns[name], dtype=np.int64) if name in columns else np.zeros(n, np.int64))
    table = pa.table({name: data[name] for name in COLUMNS}, schema=SCHEMA)
    return table.sort_by("ts_ns")


def read_table(path: Path) -> pa.Table:
    """One bar file (parquet or csv, by suffix) as a table in the file schema."""
    path = Path(path)
    if path.suffix == ".parquet":
        table = pq.ParquetFile(path).read()  # one file: not through pyarrow.dataset (which loads pandas)
    elif path.suffix == ".csv":
        convert = pacsv.ConvertOptions(column_types={f.name: f.type for f in SCHEMA})
        table = pacsv.read_csv(path, convert_options=convert)
    else:
        raise ValueError(f"{path}: not a bar file (expected .parquet or .csv)")
    for name in QUOTE_COLUMNS:  # files written before the quotes were kept
        if name not in table.column_names:
            table = table.append_column(name, pa.array(np.zeros(table.num_rows, np.int64)))
    return table.select(list(COLUMNS)).cast(SCHEMA)


def read_bars(path: Path) -> list[Bar]:
    """The bars stored in one file, in time order."""
    return table_to_bars(read_table(path))


def write_table(root: Path, day: str, code: str, table: pa.Table, fmt: BarFormat = "parquet") -> Path:
    """Write (merging into any existing file) one code's bars of one day; returns the path."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown bar format {fmt!r}; expected one of {FORMATS}")
    path = bar_path(root, day, code, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        table = _merge(read_table(path), table)
    else:
        table = table.sort_by("ts_ns")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if fmt == "parquet":
        pq.write_table(table.cast(SCHEMA), tmp, **PARQUET_OPTIONS)
    else:
        pacsv.write_csv(table, tmp)
    os.replace(tmp, path)
    return path


def _merge(old: pa.Table, new: pa.Table) -> pa.Table:
    """Old and new rows by start time; a new row replaces an old one with the same start."""
    new_starts = set(new.column("ts_ns").to_pylist())
    keep = np.array([ts not in new_starts for ts in old.column("ts_ns").to_pylist()], dtype=bool)
    merged = pa.concat_tables([old.filter(pa.array(keep)), new.cast(SCHEMA)])
    return merged.sort_by("ts_ns")


def write_bars(root: Path, bars: Iterable[Bar], fmt: BarFormat = "parquet") -> list[Path]:
    """Write bars into their day/code files; returns the files written."""
    groups: dict[tuple[str, str], list[Bar]] = defaultdict(list)
    for bar in bars:
        groups[(day_of(bar.ts_ns), bar.code)].append(bar)
    return [write_table(root, day, code, bars_to_table(group), fmt) for (day, code), group in sorted(groups.items())]


def day_dirs(root: Path) -> list[Path]:
    """The ``YYYYMMDD`` folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and DAY_DIR_RE.match(p.name))


def read_day(root: Path, day: str) -> dict[str, list[Bar]]:
    """Every code's bars of one day, by code."""
    folder = Path(root) / day
    out: dict[str, list[Bar]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if path.suffix in (".parquet", ".csv") and not path.name.startswith("."):
            out[path.stem] = read_bars(path)
    return out


def purge_days(root: Path, reference: dt.date, retention_days: int) -> list[Path]:
    """Remove day folders older than ``retention_days`` before ``reference``; returns what went.

    The folder of ``reference`` and those of the ``retention_days - 1`` calendar
    days before it are kept.
    """
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    cutoff = (reference - dt.timedelta(days=retention_days - 1)).strftime("%Y%m%d")
    removed = []
    for folder in day_dirs(root):
        if folder.name < cutoff:
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def newest_day(root: Path) -> dt.date | None:
    """The date of the newest day folder under ``root``, if any."""
    dirs = day_dirs(root)
    if not dirs:
        return None
    return dt.datetime.strptime(dirs[-1].name, "%Y%m%d").date()


SIDE_KEYS = {"flows": ("ts_ns", "code"), "fundamentals": ("code", "effective_date")}
SIDE_SCHEMAS = {
    "flows": pa.schema([("ts_ns", pa.int64()), ("code", pa.string()), ("foreign_net_qty", pa.int64()),
                        ("institution_net_qty", pa.int64()), ("individual_net_qty", pa.int64()),
                        ("provisional", pa.bool_())]),
    "fundamentals": pa.schema([("ts_ns", pa.int64()), ("code", pa.string()), ("effective_date", pa.string()),
                               ("eps", pa.int64()), ("bps", pa.int64()), ("dps", pa.int64()), ("source", pa.string())]),
}
FLOW_FIELDS = tuple(SIDE_SCHEMAS["flows"].names)
FUNDAMENTAL_FIELDS = tuple(SIDE_SCHEMAS["fundamentals"].names)


def write_side_table(root: Path, name: str, rows: Sequence[Mapping[str, object]], fmt: BarFormat = "parquet") -> Path:
    """Merge rows into ``<root>/<name>.<format>`` (flows or fundamentals): a row with the same key replaces the old one.

    The table is sorted by (ts_ns, code); Arrow only, so that recording flows
    does not load pandas into market data.
    """
    schema, key = SIDE_SCHEMAS[name], SIDE_KEYS[name]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.{fmt}"
    merged: dict[tuple[object, ...], dict[str, object]] = {}
    old: list[dict[str, object]] = []
    if path.exists():
        if fmt == "csv":
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in schema}, include_columns=schema.names))
        else:
            table = pq.ParquetFile(path).read(columns=schema.names)
        old = table.cast(schema).to_pylist()
    for row in [*old, *({f: r.get(f) for f in schema.names} for r in rows)]:
        row["code"] = str(row["code"])
        k = tuple(row[f] for f in key)
        merged.pop(k, None)  # the later row, at its own place
        merged[k] = row
    ordered = sorted(merged.values(), key=lambda r: (r["ts_ns"], r["code"]))
    out = pa.Table.from_pylist(ordered, schema=schema)
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "csv":
        pacsv.write_csv(out, tmp)
    else:
        pq.write_table(out, tmp, compression=COMPRESSION)
    os.replace(tmp, path)
    return path


class BarRecorder:
    """Buffers bars (and flow reports and announcements) as they arrive and writes them on ``flush``."""

    def __init__(self, root: Path, fmt: BarFormat = "parquet") -> None:
        self.root = Path(root)
        self.fmt = fmt
        self._pending: dict[tuple[str, str], dict[int, Bar]] = defaultdict(dict)
        self._side: dict[str, list[dict[str, object]]] = {"flows": [], "fundamentals": []}
        self.written_bars = 0
        self.files_written = 0

    def add_flow(self, flow: InvestorFlow) -> None:
        """Keep an investor-flow report until the next flush."""
        self._side["flows"].append({k: getattr(flow, k) for k in FLOW_FIELDS})

    def add_fundamentals(self, fund: Fundamentals) -> None:
        """Keep an announcement until the next flush."""
        self._side["fundamentals"].append({k: getattr(fund, k) for k in FUNDAMENTAL_FIELDS})

    def add(self, bar: Bar) -> None:
        """Keep a bar until the next flush (a bar with the same start replaces the earlier one)."""
        self._pending[(day_of(bar.ts_ns), bar.code)][bar.ts_ns] = bar

    @property
    def pending(self) -> int:
        """Bars waiting to be written."""
        return sum(len(v) for v in self._pending.values())

    def pending_days(self) -> list[str]:
        """The days that have bars waiting."""
        return sorted({day for day, _ in self._pending})

    def flush(self, day: str | None = None) -> list[Path]:
        """Write the waiting bars (of one day, or all); returns the files written."""
        keys = [k for k in sorted(self._pending) if day is None or k[0] == day]
        paths = []
        for key in keys:
            bars = list(self._pending[key].values())
            paths.append(write_table(self.root, key[0], key[1], bars_to_table(bars), self.fmt))
            del self._pending[key]
            self.written_bars += len(bars)
            self.files_written += 1
        if day is None:
            for name, rows in self._side.items():
                if rows:
                    paths.append(write_side_table(self.root, name, rows, self.fmt))
                    rows.clear()
        return paths
