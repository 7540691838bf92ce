"""Market data for a back-test: bars, investor flows and earnings from the simulator, recorded days or a user's file.

Every source ends as one ``MarketData``: a long table of one-minute (or any
interval) bars sorted by time then code, with int64 prices in won and volumes
in shares, the investor flows and the earnings announcements that ride along,
the instrument records of the codes and each code's base price for the first
day.

Sources:

- ``from_simulator(codes, days, seed, world=...)``: ``core.simulator`` bars,
  flows and announcements, the first day's base the master's last close (as
  the simulator uses it). ``world="null"`` is the null world
  (``SimulatorParams.null``): the same volatility, none of the effects.
- ``from_bar_dir(root)``: what ``trader sim`` and the market-data recorder
  write, ``<root>/<YYYYMMDD>/<code>.parquet`` (or ``.csv``) in the recorder's
  schema (``services.market_data.recorder``), with ``<root>/flows.parquet``
  and ``<root>/fundamentals.parquet`` when ``trader sim`` wrote them.
- ``from_file(path)``: a user's CSV or parquet with the columns ``code``,
  ``open``, ``high``, ``low``, ``close``, ``volume`` and either ``ts`` (ns
  since the epoch UTC, or an ISO date-time; naive times are KST) or ``date``
  plus ``time`` (KST, e.g. ``2025-03-04`` and ``09:01``). Codes are read as
  text (leading zeros kept). Extra columns are ignored.

Bad data raises ``DataError`` naming the file, the row (1-based, as a person
counts data rows) and the column: a missing column, a non-positive price, a
high below the low, a negative volume, a code not in the instrument master,
rows out of time order within a code, or a repeated bar.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from agents.strategy import FlowData, FundData
from core import krx
from core.fundamentals import Announcement
from core.instruments import Instrument
from core.simulator import FUNDAMENTAL_COLUMNS, SimulatorParams, simulate_world

WORLDS = ("sim", "null")

REQUIRED_PRICE_COLUMNS = ("code", "open", "high", "low", "close", "volume")
KST = dt.timezone(dt.timedelta(hours=9))


class DataError(ValueError):
    """Bars that cannot be back-tested: names the source, the row and the column where known."""

    def __init__(self, source: str, reason: str, *, row: int | None = None, column: str | None = None) -> None:
        self.source, self.reason, self.row, self.column = source, reason, row, column
        where = source
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {reason}")


@dataclass(slots=True)
class MarketData:
    """Bars and flows of some codes over some days, sorted and checked, ready for the engine."""

    bars: pd.DataFrame  # ts_ns, code (str), open, high, low, close, volume: int64, sorted by ts_ns then code
    instruments: dict[str, Instrument]
    flows: pd.DataFrame = field(default_factory=lambda: _empty_flows())  # ts_ns, code, foreign/institution/individual_net_qty, provisional
    first_base_prices: dict[str, int] = field(default_factory=dict)
    source: str = ""
    # ts_ns (when published), code, effective_date (YYYYMMDD), eps, bps, dps, source
    fundamentals: pd.DataFrame = field(default_factory=lambda: _empty_fundamentals())

    def side_events(self) -> list[tuple[int, FlowData | FundData]]:
        """The flow reports and announcements of the codes as the agents hear them, in time order.

        An announcement comes before a flow report of the same instant; ties keep the tables' order.
        """
        f = self.flows
        n = len(f)
        zeros = [0] * n
        inst = f["institution_net_qty"].to_numpy(dtype=np.int64).tolist() if "institution_net_qty" in f else zeros
        indiv = f["individual_net_qty"].to_numpy(dtype=np.int64).tolist() if "individual_net_qty" in f else zeros
        flows = [
            (t, 1, FlowData(c, t, q, i, d, p))
            for t, c, q, i, d, p in zip(
                f["ts_ns"].to_numpy(dtype=np.int64).tolist(), f["code"].astype(str).tolist(),
                f["foreign_net_qty"].to_numpy(dtype=np.int64).tolist(), inst, indiv, f["provisional"].to_numpy(dtype=bool).tolist(),
            )
        ]
        u = self.fundamentals
        funds = [
            (t, 0, FundData(c, t, e, q, b, d, src))
            for t, c, e, q, b, d, src in zip(
                u["ts_ns"].to_numpy(dtype=np.int64).tolist(), u["code"].astype(str).tolist(), u["effective_date"].astype(str).tolist(),
                u["eps"].to_numpy(dtype=np.int64).tolist(), u["bps"].to_numpy(dtype=np.int64).tolist(),
                u["dps"].to_numpy(dtype=np.int64).tolist(), u["source"].astype(str).tolist(),
            )
        ]
        merged = sorted(funds + flows, key=lambda e: (e[0], e[1]))
        return [(t, rec) for t, _, rec in merged]

    def with_announcements(self, announcements: Sequence[Announcement]) -> MarketData:
        """The same data with a user's announcements (those of its codes) in place of any it had."""
        codes = set(self.instruments)
        rows = [a for a in announcements if a.code in codes]
        table = pd.DataFrame(
            {
                "ts_ns": np.array([a.published_ns for a in rows], dtype=np.int64),
                "code": [a.code for a in rows],
                "effective_date": [a.date_text for a in rows],
                "eps": np.array([a.eps for a in rows], dtype=np.int64),
                "bps": np.array([a.bps for a in rows], dtype=np.int64),
                "dps": np.array([a.dps for a in rows], dtype=np.int64),
                "source": [a.source for a in rows],
            }
        )
        return MarketData(self.bars, self.instruments, self.flows, self.first_base_prices, self.source, _sorted(table))

    @property
    def codes(self) -> list[str]:
        """The codes that have bars, sorted."""
        return sorted(self.bars["code"].unique().tolist())

    @property
    def days(self) -> list[dt.date]:
        """The KST trading dates covered, in order."""
        return sorted({krx.kst_date(int(t)) for t in _day_starts(self.bars["ts_ns"].to_numpy())})

    def select_days(self, first: int, last: int) -> MarketData:
        """The same data restricted to days ``first`` .. ``last - 1`` (0-based, as in ``days``)."""
        days = self.days[first:last]
        if not days:
            raise DataError(self.source, f"no days in the range {first}..{last} of {len(self.days)} days")
        lo = _kst_midnight(days[0])
        hi = _kst_midnight(days[-1] + dt.timedelta(days=1))
        ts = self.bars["ts_ns"].to_numpy()
        bars = self.bars[(ts >= lo) & (ts < hi)].reset_index(drop=True)
        fts = self.flows["ts_ns"].to_numpy()
        flows = self.flows[(fts >= lo) & (fts < hi)].reset_index(drop=True)
        base = dict(self.first_base_prices)
        if first > 0:
            prior = self.bars[ts < lo]
            base = {str(c): int(g["close"].iloc[-1]) for c, g in prior.groupby("code", sort=True, observed=True)}
        # the announcements in force on the first day come with it: a window starts knowing them
        u = self.fundamentals
        uts = u["ts_ns"].to_numpy()
        before = u[uts < lo].groupby("code", sort=True, observed=True).tail(1)
        funds = pd.concat([before, u[(uts >= lo) & (uts < hi)]], ignore_index=True)
        return MarketData(bars, self.instruments, flows, base, f"{self.source} days {first}..{last - 1}", _sorted(funds))


def _kst_midnight(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=KST).timestamp()) * 10**9


def _day_starts(ts: np.ndarray) -> np.ndarray:
    # one representative stamp per KST day (ts are sorted)
    days = (ts + 9 * 3600 * 10**9) // (86400 * 10**9)
    if len(days) == 0:
        return ts
    keep = np.ones(len(days), dtype=bool)
    keep[1:] = days[1:] != days[:-1]
    return ts[keep]


def _empty_flows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts_ns": np.zeros(0, np.int64),
            "code": np.zeros(0, dtype=object),
            "foreign_net_qty": np.zeros(0, np.int64),
            "institution_net_qty": np.zeros(0, np.int64),
            "individual_net_qty": np.zeros(0, np.int64),
            "provisional": np.zeros(0, bool),
        }
    )


def _empty_fundamentals() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts_ns": np.zeros(0, np.int64),
            "code": np.zeros(0, dtype=object),
            "effective_date": np.zeros(0, dtype=object),
            "eps": np.zeros(0, np.int64),
            "bps": np.zeros(0, np.int64),
            "dps": np.zeros(0, np.int64),
            "source": np.zeros(0, dtype=object),
        }
    )


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["code"] = table["code"].astype(str)
    return table.sort_values(["ts_ns", "code"], kind="stable").reset_index(drop=True)


def _master_fundamentals(instruments: Mapping[str, Instrument], first_ns: int) -> pd.DataFrame:
    """The master's figures of each code, in force from the first bar (what a file of bars alone gives)."""
    rows = list(instruments.values())
    return pd.DataFrame(
        {
            "ts_ns": np.full(len(rows), first_ns, np.int64),
            "code": [i.code for i in rows],
            "effective_date": [""] * len(rows),
            "eps": np.array([i.eps for i in rows], dtype=np.int64),
            "bps": np.array([i.bps for i in rows], dtype=np.int64),
            "dps": np.array([i.dividend for i in rows], dtype=np.int64),
            "source": ["master"] * len(rows),
        }
    )


# --- sources -------------------------------------------------------------------


def from_simulator(
    codes: Sequence[str],
    days: int,
    seed: int,
    master: Mapping[str, Instrument],
    start_date: dt.date = dt.date(2025, 1, 2),
    world: str = "sim",
) -> MarketData:
    """Simulated bars, flows and announcements of ``codes`` for ``days`` trading days (same seed, same data).

    ``world`` is ``sim`` (the simulated market with its effects) or ``null``
    (the same volatility and volume, none of the effects: see ``SimulatorParams.null``).
    """
    source = f"simulator(seed={seed}, days={days}{'' if world == 'sim' else f', world={world}'})"
    if world not in WORLDS:
        raise DataError(source, f"unknown world {world!r}; expected one of {', '.join(WORLDS)}")
    unknown = [c for c in codes if c not in master]
    if unknown:
        raise DataError(source, f"code(s) not in the instrument master: {', '.join(unknown)}", column="code")
    if days <= 0:
        raise DataError(source, f"days must be positive, not {days}")
    instruments = [master[c] for c in codes]
    sim = simulate_world(instruments, seed, start_date, days, SimulatorParams.null() if world == "null" else None)
    bars = sim.bars[["ts_ns", "code", "open", "high", "low", "close", "volume"]].copy()
    bars["code"] = bars["code"].astype(str)
    bars = bars.sort_values(["ts_ns", "code"], kind="stable").reset_index(drop=True)
    funds = sim.fundamentals.copy()
    funds["source"] = "sim"
    return MarketData(
        bars, {c: master[c] for c in codes}, _sorted(sim.flows), {c: master[c].last_close for c in codes}, source, _sorted(funds)
    )


def from_bar_dir(root: str | Path, master: Mapping[str, Instrument], codes: Sequence[str] | None = None) -> MarketData:
    """Bars recorded under ``<root>/<YYYYMMDD>/<code>.parquet|csv`` (the recorder's and ``trader sim``'s layout)."""
    from services.market_data.recorder import day_dirs, read_table

    root = Path(root)
    folders = day_dirs(root)
    if not folders:
        raise DataError(str(root), "no <YYYYMMDD> day folders with bar files")
    frames = []
    wanted = set(codes) if codes else None
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix not in (".parquet", ".csv") or path.name.startswith("."):
                continue
            if wanted is not None and path.stem not in wanted:
                continue
            try:
                table = read_table(path)
            except Exception as exc:  # pyarrow raises many types for a broken file
                raise DataError(str(path), f"unreadable bar file: {exc}") from exc
            frames.append(table.to_pandas()[["ts_ns", "code", "open", "high", "low", "close", "volume"]])
    if not frames:
        raise DataError(str(root), f"no bar files for codes {sorted(wanted) if wanted else 'any'}")
    bars = pd.concat(frames, ignore_index=True)
    data = _finish(bars, master, str(root), codes)
    codes_kept = set(data.instruments)
    flows_path, funds_path = _side_file(root, "flows"), _side_file(root, "fundamentals")
    if flows_path is not None:
        flows = _read_side(flows_path)
        missing = [c for c in _empty_flows().columns if c not in flows.columns]
        if missing:
            raise DataError(str(flows_path), f"missing column(s) {', '.join(missing)}")
        flows["code"] = flows["code"].astype(str)
        data.flows = _sorted(flows[flows["code"].isin(codes_kept)][list(_empty_flows().columns)])
    if funds_path is not None:
        funds = _read_side(funds_path)
        missing = [c for c in FUNDAMENTAL_COLUMNS if c not in funds.columns]
        if missing:
            raise DataError(str(funds_path), f"missing column(s) {', '.join(missing)}")
        if "source" not in funds.columns:
            funds["source"] = "sim"
        funds["code"] = funds["code"].astype(str)
        data.fundamentals = _sorted(funds[funds["code"].isin(codes_kept)][list(_empty_fundamentals().columns)])
    return data


def _side_file(root: Path, name: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        if (root / f"{name}{suffix}").exists():
            return root / f"{name}{suffix}"
    return None


def _read_side(path: Path) -> pd.DataFrame:
    """A flows or fundamentals table ``trader sim`` wrote beside the day folders (parquet or CSV)."""
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path, dtype={"code": str, "effective_date": str, "source": str})
        return pd.read_parquet(path)
    except Exception as exc:  # pandas / pyarrow raise many types for a broken file
        raise DataError(str(path), f"unreadable: {exc}") from exc


def from_file(path: str | Path, master: Mapping[str, Instrument], codes: Sequence[str] | None = None) -> MarketData:
    """A user's CSV or parquet of bars with the documented columns (see the module docstring)."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise DataError(source, "file not found")
    try:
        if path.suffix == ".parquet":
            raw = pd.read_parquet(path)
        elif path.suffix in (".csv", ".txt"):
            raw = pd.read_csv(path, dtype={"code": str, "date": str, "time": str, "ts": str})
        else:
            raise DataError(source, "expected a .csv or .parquet file")
    except DataError:
        raise
    except Exception as exc:  # pandas / pyarrow parse errors come in many types
        raise DataError(source, f"unreadable: {exc}") from exc
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    for col in REQUIRED_PRICE_COLUMNS:
        if col not in raw.columns:
            raise DataError(source, f"missing column {col!r}; expected ts (or date and time), {', '.join(REQUIRED_PRICE_COLUMNS)}", column=col)
    if "ts" in raw.columns:
        ts = _parse_ts(raw["ts"], source, "ts")
    elif "date" in raw.columns and "time" in raw.columns:
        ts = _parse_ts(raw["date"].astype(str).str.strip() + " " + raw["time"].astype(str).str.strip(), source, "date/time")
    else:
        raise DataError(source, "missing column 'ts' (or the pair 'date' and 'time')", column="ts")
    bars = pd.DataFrame({"ts_ns": ts, "code": raw["code"].astype(str).str.strip().str.zfill(6)})
    for col in ("open", "high", "low", "close", "volume"):
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(source, f"not a number: {raw[col].iloc[row]!r}", row=row + 1, column=col)
        as_float = values.to_numpy(dtype=float)
        if col != "volume" and not np.all(as_float == np.round(as_float)):
            row = int(np.flatnonzero(as_float != np.round(as_float))[0])
            raise DataError(source, f"prices are whole won, not {as_float[row]}", row=row + 1, column=col)
        bars[col] = as_float.astype(np.int64)
    return _finish(bars, master, source, codes, rows_in_file_order=True)


def load(path: str | Path, master: Mapping[str, Instrument], codes: Sequence[str] | None = None) -> MarketData:
    """A recorded bar folder or a single CSV/parquet file, whichever ``path`` is."""
    p = Path(path)
    if p.is_dir():
        return from_bar_dir(p, master, codes)
    return from_file(p, master, codes)


def _parse_ts(col: pd.Series, source: str, name: str) -> np.ndarray:
    numeric = pd.to_numeric(col, errors="coerce")
    if not numeric.isna().any():
        return numeric.to_numpy(dtype=np.int64)
    parsed = pd.to_datetime(col, errors="coerce", format="mixed")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataError(source, f"not a time stamp: {col.iloc[row]!r}", row=row + 1, column=name)
    if parsed.dt.tz is None:
        parsed = parsed.dt.tz_localize(KST)
    return parsed.dt.tz_convert("UTC").astype("int64").to_numpy()


def _finish(
    bars: pd.DataFrame,
    master: Mapping[str, Instrument],
    source: str,
    codes: Sequence[str] | None,
    *,
    rows_in_file_order: bool = False,
) -> MarketData:
    """Check the bars row by row, keep the wanted codes, sort by time then code."""
    bars = bars.reset_index(drop=True)
    bars["code"] = bars["code"].astype(str)
    if len(bars) == 0:
        raise DataError(source, "no bars")
    code_arr = bars["code"].to_numpy()
    unknown = ~np.isin(code_arr, np.array(list(master), dtype=object))
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise DataError(source, f"code {code_arr[row]!r} is not in the instrument master", row=row + 1, column="code")
    o, h, l, c, v = (bars[k].to_numpy(dtype=np.int64) for k in ("open", "high", "low", "close", "volume"))
    for name, arr in (("open", o), ("high", h), ("low", l), ("close", c)):
        bad = arr <= 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(source, f"price must be positive, not {arr[row]}", row=row + 1, column=name)
    bad = (h < np.maximum(o, c)) | (l > np.minimum(o, c)) | (l > h)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(source, f"high {h[row]} / low {l[row]} do not bracket open {o[row]} and close {c[row]}", row=row + 1, column="high")
    if (v < 0).any():
        row = int(np.flatnonzero(v < 0)[0])
        raise DataError(source, f"volume must be >= 0, not {v[row]}", row=row + 1, column="volume")
    if rows_in_file_order:
        # within each code the rows must come in strictly increasing time
        for code, idx in bars.groupby("code", sort=True).indices.items():
            t = bars["ts_ns"].to_numpy()[idx]
            step = np.diff(t)
            if (step <= 0).any():
                k = int(np.flatnonzero(step <= 0)[0])
                what = "repeats the time of" if step[k] == 0 else "is earlier than"
                raise DataError(source, f"bar of {code} {what} row {idx[k] + 1} (data must be sorted by time)", row=int(idx[k + 1]) + 1, column="ts")
    else:
        dup = bars.duplicated(["code", "ts_ns"]).to_numpy()
        if dup.any():
            row = int(np.flatnonzero(dup)[0])
            raise DataError(source, f"repeated bar of {code_arr[row]} at {bars['ts_ns'].iloc[row]}", row=row + 1, column="ts")
    if codes:
        missing = [x for x in codes if x not in set(code_arr)]
        if missing:
            raise DataError(source, f"no bars for code(s) {', '.join(missing)}", column="code")
        bars = bars[bars["code"].isin(list(codes))]
    bars = bars.sort_values(["ts_ns", "code"], kind="stable").reset_index(drop=True)
    bars = bars.astype({"ts_ns": np.int64, "open": np.int64, "high": np.int64, "low": np.int64, "close": np.int64, "volume": np.int64})
    kept = sorted(bars["code"].unique().tolist())
    first = bars.groupby("code", sort=True).first()
    base = {str(code): int(first.loc[code, "open"]) for code in kept}
    instruments = {k: master[k] for k in kept}
    first_ns = int(bars["ts_ns"].iloc[0]) if len(bars) else 0
    return MarketData(bars[["ts_ns", "code", "open", "high", "low", "close", "volume"]], instruments, _empty_flows(), base, source,
                      _master_fundamentals(instruments, first_ns))
