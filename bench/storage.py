"""Benchmark: how small simulated 1-minute bars are on disk (``python -m bench.storage``).

Writes a sample of simulated bars (20 trading days x the 15 codes of the master
by default) three ways and compares the bytes:

* ``csv``: the market-data recorder's CSV layout (one file per day per code);
* ``recorder``: the recorder's parquet layout (``services.market_data.recorder``:
  one zstd parquet file per day per code), the figure of the final JSON line;
* ``code_file_dense``: the recorder's layout (one file per day per code) with
  denser writer options: integer columns delta-encoded (DELTA_BINARY_PACKED),
  zstd level 9, no column statistics, no embedded Arrow schema;
* ``day_file``: one parquet file per day holding every code, sorted by code then
  time, the code dictionary-encoded, the same dense options: the densest layout
  (fewer, larger files share one footer and compress across codes).

Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.instruments import load_instruments
from core.simulator import simulate
from services.market_data import recorder

MASTER_PATH = Path(__file__).resolve().parent.parent / "configs" / "instruments.csv"
INT_COLUMNS = ("ts_ns", "open", "high", "low", "close", "volume", "value_won")


def folder_bytes(root: Path, suffix: str) -> int:
    """Total size of the files with a suffix under a folder."""
    return sum(p.stat().st_size for p in root.rglob(f"*{suffix}"))


def write_recorder_layout(bars: pd.DataFrame, root: Path, fmt: recorder.BarFormat) -> int:
    """Write bars as the recorder does (one file per KST day per code); returns the files written."""
    files = 0
    day = bars["ts_ns"].map(recorder.day_of)
    for (d, code), group in bars.groupby([day, bars["code"].astype(str)], sort=True, observed=True):
        table = recorder.columns_to_table(str(code), {c: group[c].to_numpy() for c in INT_COLUMNS})
        recorder.write_table(root, str(d), str(code), table, fmt)
        files += 1
    return files


DENSE_OPTIONS = {
    "compression": "zstd",
    "compression_level": 9,
    "column_encoding": {c: "DELTA_BINARY_PACKED" for c in INT_COLUMNS},
    "write_statistics": False,
    "store_schema": False,
}


def write_dense_code_files(bars: pd.DataFrame, root: Path) -> int:
    """Write one dense parquet file per KST day per code; returns the files written."""
    files = 0
    day = bars["ts_ns"].map(recorder.day_of)
    for (d, code), group in bars.groupby([day, bars["code"].astype(str)], sort=True, observed=True):
        folder = root / str(d)
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.table({c: pa.array(group[c].to_numpy()) for c in INT_COLUMNS})
        pq.write_table(table, folder / f"{code}.parquet", use_dictionary=False, **DENSE_OPTIONS)
        files += 1
    return files


def write_day_files(bars: pd.DataFrame, root: Path) -> int:
    """Write one dense parquet file per KST day with a code column; returns the files written."""
    files = 0
    day = bars["ts_ns"].map(recorder.day_of)
    for d, group in bars.groupby(day, sort=True):
        ordered = group.sort_values(["code", "ts_ns"], kind="stable")
        table = pa.table(
            {
                "code": pa.array(ordered["code"].astype(str).to_numpy()).dictionary_encode(),
                **{c: pa.array(ordered[c].to_numpy()) for c in INT_COLUMNS},
            }
        )
        root.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / f"{d}.parquet", use_dictionary=["code"], **DENSE_OPTIONS)
        files += 1
    return files


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    instruments = list(load_instruments(MASTER_PATH).values())
    bars, _ = simulate(instruments, args.seed, dt.date(2026, 3, 3), args.days)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        root = Path(tmp)
        csv_files = write_recorder_layout(bars, root / "csv", "csv")
        parquet_files = write_recorder_layout(bars, root / "recorder", "parquet")
        dense_files = write_dense_code_files(bars, root / "code_file_dense")
        day_files = write_day_files(bars, root / "day_file")
        csv_bytes = folder_bytes(root / "csv", ".csv")
        stored_bytes = folder_bytes(root / "recorder", ".parquet")
        dense_bytes = folder_bytes(root / "code_file_dense", ".parquet")
        day_bytes = folder_bytes(root / "day_file", ".parquet")
        for layout in ("code_file_dense", "day_file"):  # both dense layouts read back to the same bars
            back = pd.concat([pq.read_table(p).to_pandas() for p in sorted((root / layout).rglob("*.parquet"))])
            if len(back) != len(bars) or int(back["value_won"].sum()) != int(bars["value_won"].sum()):
                raise RuntimeError(f"{layout}: bars read back differ from those written")

    print(f"bars                    {len(bars):10d} ({args.days} days x {len(instruments)} codes)")
    print(f"csv, file per day+code  {csv_bytes:10d} bytes in {csv_files} files")
    print(f"recorder parquet        {stored_bytes:10d} bytes in {parquet_files} files  ratio {csv_bytes / stored_bytes:5.2f}x")
    print(f"dense, day+code files   {dense_bytes:10d} bytes in {dense_files} files  ratio {csv_bytes / dense_bytes:5.2f}x")
    print(f"parquet, file per day   {day_bytes:10d} bytes in {day_files} files  ratio {csv_bytes / day_bytes:5.2f}x")
    print(
        json.dumps(
            {
                "bench": "storage",
                "csv_bytes": csv_bytes,
                "stored_bytes": stored_bytes,
                "ratio": round(csv_bytes / stored_bytes, 2),
                "code_file_dense_bytes": dense_bytes,
                "code_file_dense_ratio": round(csv_bytes / dense_bytes, 2),
                "day_file_bytes": day_bytes,
                "day_file_ratio": round(csv_bytes / day_bytes, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
