"""The instrument master: the codes the firm may trade and their fundamentals."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from core import krx

COLUMNS = ("code", "name", "market", "sector", "shares_outstanding", "eps", "bps", "dividend", "last_close", "kospi200")


class InstrumentError(ValueError):
    """A bad row in an instrument master, naming the row and the reason."""


@dataclass(frozen=True, slots=True)
class Instrument:
    code: str
    name: str
    market: str  # KOSPI or KOSDAQ
    sector: str
    shares_outstanding: int
    eps: int  # won per share, constant within a quarter
    bps: int
    dividend: int
    last_close: int  # won; the base price of the first simulated day
    kospi200: bool = False

    @property
    def per(self) -> float:
        return self.last_close / self.eps if self.eps > 0 else float("inf")


def parse_instruments(text: str, source: str = "<text>") -> dict[str, Instrument]:
    """Parse a master in CSV form into instruments keyed by code."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InstrumentError(f"{source}: missing column(s): {', '.join(missing)}")
    out: dict[str, Instrument] = {}
    for lineno, row in enumerate(reader, start=2):
        code = (row["code"] or "").strip()
        if not krx.is_valid_code_syntax(code):
            raise InstrumentError(f"{source}: row {lineno}: bad code {code!r}")
        if code in out:
            raise InstrumentError(f"{source}: row {lineno}: duplicate code {code}")
        market = row["market"].strip().upper()
        if market not in ("KOSPI", "KOSDAQ"):
            raise InstrumentError(f"{source}: row {lineno}: market must be KOSPI or KOSDAQ, not {market!r}")
        try:
            ints = {k: int(row[k]) for k in ("shares_outstanding", "eps", "bps", "dividend", "last_close")}
        except (TypeError, ValueError) as exc:
            raise InstrumentError(f"{source}: row {lineno}: {exc}") from exc
        if ints["last_close"] <= 0 or not krx.is_on_tick(ints["last_close"]):
            raise InstrumentError(f"{source}: row {lineno}: last_close {ints['last_close']} is not a valid price on the tick grid")
        out[code] = Instrument(
            code=code,
            name=row["name"].strip(),
            market=market,
            sector=row["sector"].strip(),
            kospi200=(row.get("kospi200") or "0").strip() in ("1", "true", "True"),
            **ints,
        )
    return out


def load_instruments(path: str | Path) -> dict[str, Instrument]:
    """Read the instrument master file (``configs/instruments.csv`` by default)."""
    p = Path(path)
    return parse_instruments(p.read_text(encoding="utf-8"), str(p))
