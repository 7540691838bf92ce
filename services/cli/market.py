"""``trader sim`` and ``trader market``: simulated bars to files, and the live board.

``trader sim --days 5 --codes 005930,000660 --seed 7 --out data/sim`` writes the
simulated world: its one-minute bars (with the book's best bid and ask at each
bar's close) in the recorder's layout
(``<out>/<YYYYMMDD>/<code>.parquet`` or ``.csv``), so a replay or a back-test
reads them like recorded days, and beside them ``flows.<format>`` (per code and
report time: foreign, institution and individual net quantity, the day's
running totals, provisional or final) and ``fundamentals.<format>`` (every
code's EPS, BPS and DPS on the first day, then each announcement).

``trader market [--json]`` asks the market-data process for its snapshot
(Command ``snapshot`` on ``market_data_rpc``) and prints the board: last price,
change against the base price (the previous close), volume, VWAP, and the
discount of Samsung Electronics' preferred share (005935) to its common (005930).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from core import krx
from core.config import PROJECT_ROOT, StackSettings
from core.instruments import InstrumentError, load_instruments
from services.cli.service_call import call, load_settings
from services.cli.tables import Col, FitTable, wide_option

console = Console()
err = Console(stderr=True)



def _master_path(settings: StackSettings) -> Path:
    path = Path(settings.market.instruments_file)
    return path if path.is_absolute() else PROJECT_ROOT / path


def sim(
    days: int = typer.Option(1, "--days", min=1, help="How many trading days to simulate."),
    codes: str = typer.Option("005930,005935", "--codes", help="Comma-separated codes from the instrument master."),
    seed: int = typer.Option(42, "--seed", help="Random seed: the same seed gives the same bars."),
    out: Path = typer.Option(..., "--out", help="Folder to write <YYYYMMDD>/<code>.<format> files into."),
    start: str = typer.Option("", "--start", help="First day (YYYY-MM-DD); a non-trading day moves to the next one. Default: the next trading day."),
    fmt: str = typer.Option("parquet", "--format", help="parquet (zstd) or csv."),
    world: str = typer.Option("sim", "--world", help="sim (the simulated market) or null (the same volatility, none of the effects strategies look for)."),
) -> None:
    """Write a simulated world to files: bars per day per code (the recorder's layout), flows and fundamentals."""
    import pandas as pd

    from core.simulator import MarketSimulator, SimulatorParams
    from services.market_data import recorder

    if world not in ("sim", "null"):
        err.print(f"[bold red]error:[/] --world must be sim or null, not {world!r}")
        raise typer.Exit(2)

    if fmt not in recorder.FORMATS:
        err.print(f"[bold red]error:[/] --format must be one of {', '.join(recorder.FORMATS)}, not {fmt!r}")
        raise typer.Exit(2)
    settings = load_settings()
    try:
        master = load_instruments(_master_path(settings))
    except (OSError, InstrumentError) as exc:
        err.print(f"[bold red]error:[/] cannot read the instrument master: {exc}")
        raise typer.Exit(2)
    wanted = [c.strip() for c in codes.split(",") if c.strip()]
    if not wanted:
        err.print("[bold red]error:[/] --codes names no code")
        raise typer.Exit(2)
    bad = [(c, krx.validate_code(c, master)) for c in wanted]
    bad = [(c, why) for c, why in bad if why is not None]
    if bad:
        listed = "; ".join(f"{c}: {why}" for c, why in bad)
        err.print(f"[bold red]error:[/] unusable code(s): {listed}")
        raise typer.Exit(2)
    try:
        first = dt.date.fromisoformat(start) if start else krx.next_trading_day(dt.date.today())
        simulator = MarketSimulator([master[c] for c in dict.fromkeys(wanted)], seed, first,
                                    SimulatorParams.null() if world == "null" else None)
    except ValueError as exc:
        err.print(f"[bold red]error:[/] bad --start {start!r}: {exc}")
        raise typer.Exit(2)
    files = 0
    bars = 0
    flow_days: list[pd.DataFrame] = []
    fund_days: list[pd.DataFrame] = []
    with Progress(
        TextColumn("[bold]simulating[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=days)
        for _ in range(days):
            day = simulator.next_day()
            label = day.trading_date.strftime("%Y%m%d")
            progress.update(task, description=label)
            flow_days.append(day.flows_frame())
            fund_days.append(day.fundamentals_frame(every_code=not fund_days))
            for k, code in enumerate(day.codes):
                columns = {
                    "ts_ns": day.ts_ns,
                    "open": day.open[k],
                    "high": day.high[k],
                    "low": day.low[k],
                    "close": day.close[k],
                    "volume": day.volume[k],
                    "value_won": day.value_won[k],
                }
                if day.bid is not None and day.ask is not None:
                    columns["bid"], columns["ask"] = day.bid[k], day.ask[k]
                recorder.write_table(out, label, code, recorder.columns_to_table(code, columns), fmt)  # type: ignore[arg-type]
                files += 1
                bars += len(day.ts_ns)
            progress.advance(task)
    flows = pd.concat(flow_days, ignore_index=True)
    funds = pd.concat(fund_days, ignore_index=True)
    for frame in (flows, funds):
        frame["code"] = frame["code"].astype(str)
    funds["source"] = "sim"
    flows_path, funds_path = out / f"flows.{fmt}", out / f"fundamentals.{fmt}"
    for frame, path in ((flows, flows_path), (funds, funds_path)):
        tmp = path.with_name(f".{path.name}.tmp")
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False, compression="zstd")
        tmp.replace(path)
    console.print(
        f"wrote {bars:,} bars in {files} file(s) under {out}, {len(flows):,} flow reports to {flows_path.name} and "
        f"{len(funds):,} fundamentals rows to {funds_path.name} (seed {seed}, world {world}, from {first.isoformat()})"
    )


def market(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    wide: bool = wide_option(),
) -> None:
    """Print the current board from the market-data process (last, change, volume, VWAP, 005935 discount).

    Columns the terminal has no room for are named under the table; --wide shows them all.
    Example: `trader market`, `trader market --json`
    """
    from services.market_data.board import preferred_discount_pct

    settings = load_settings()
    snapshot = call("market_data_rpc", "snapshot", {"bars": 0}, settings=settings) or {}
    discount = preferred_discount_pct(snapshot)
    if as_json:
        print(json.dumps({**snapshot, "preferred_discount_pct": discount}, indent=2))
        return
    _print_board(snapshot, discount, _names(settings), wide)


def _names(settings: StackSettings) -> dict[str, str]:
    try:
        return {code: inst.name for code, inst in load_instruments(_master_path(settings)).items()}
    except (OSError, InstrumentError):
        return {}


def _print_board(snapshot: dict, discount: float | None, names: dict[str, str], wide: bool = False) -> None:
    session = snapshot.get("session") or {}
    title = f"market board: {session.get('trading_date', '-')} {session.get('phase', 'no session yet')} (feed {snapshot.get('feed', '?')})"
    table = FitTable(title, (Col("code", essential=True), Col("name"), Col("last", essential=True, numeric=True),
                             Col("change", essential=True, numeric=True), Col("change %", essential=True, numeric=True),
                             Col("volume", numeric=True), Col("VWAP", numeric=True)))
    codes = snapshot.get("codes") or {}
    for code in sorted(codes):
        row = codes[code]
        change = row.get("change")
        pct = row.get("change_pct")
        style = "green" if change and change > 0 else "red" if change and change < 0 else ""
        table.add_row(
            code,
            names.get(code, ""),
            _won(row.get("last")),
            f"[{style}]{change:+,}[/]" if change is not None and style else ("0" if change == 0 else "-"),
            f"{pct:+.2f}%" if pct is not None else "-",
            f"{row.get('volume') or 0:,}",
            _won(row.get("vwap")),
        )
    table.show(console, wide)
    if not codes:
        console.print("no market data yet: is the exchange (or the replay) feeding market-data?")
    if discount is not None:
        console.print(f"005935 trades at a {discount:.2f}% discount to 005930")


def _won(value: int | None) -> str:
    return f"{value:,}" if value is not None else "-"
