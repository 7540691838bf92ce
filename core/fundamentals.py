"""Earnings announcements: a code's EPS, BPS and DPS from a date on, and the file a user loads them from.

An announcement is in force from its ``effective_date`` until the code's next
one. The simulated world makes them (``core.simulator``), a user can load real
ones from a CSV with the columns ``code``, ``date`` (YYYY-MM-DD or YYYYMMDD),
``eps``, ``bps`` and ``dps`` (won per share; EPS the trailing four quarters,
DPS the annual dividend; an empty ``dps`` is 0), and the KIS gateway reads the
same figures from inquire-price. On the bus each is a
``core.messages.Fundamentals`` on ``md.fund.<code>``.

A bad row does not stop the load: it is refused with the file, the row (the
line number a person sees in an editor, header = 1) and the reason, and the
other rows load. An announcement is published at 08:00 KST of its day
(``published_ns``), before the pre-open, so no strategy acts on it earlier.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core import krx

COLUMNS = ("code", "date", "eps", "bps", "dps")
PUBLISHED_AT_KST = dt.time(8, 0)


@dataclass(frozen=True, slots=True)
class Announcement:
    """One code's per-share figures (won) in force from ``effective_date``."""

    code: str
    effective_date: dt.date
    eps: int
    bps: int
    dps: int
    source: str = "csv"

    @property
    def published_ns(self) -> int:
        """08:00 KST of the effective date, ns UTC: when the market hears of it."""
        at = dt.datetime.combine(self.effective_date, PUBLISHED_AT_KST, tzinfo=krx.KST)
        return int(at.timestamp()) * 1_000_000_000

    @property
    def date_text(self) -> str:
        return self.effective_date.strftime("%Y%m%d")


@dataclass(frozen=True, slots=True)
class RefusedRow:
    """A row of an announcements file that was not loaded, and why."""

    source: str
    row: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}, row {self.row}: {self.reason}"


class FundamentalsError(ValueError):
    """An announcements file that cannot be read at all (missing, unreadable, or without the columns)."""


def parse_announcements(
    text: str, known_codes: Iterable[str] | None = None, source: str = "<text>"
) -> tuple[list[Announcement], list[RefusedRow]]:
    """The announcements of a CSV text, sorted by date then code, and the rows refused with their reasons."""
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in fields and c != "dps"]
    if missing:
        raise FundamentalsError(f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    reader.fieldnames = fields
    known = set(known_codes) if known_codes is not None else None
    rows: dict[tuple[str, dt.date], Announcement] = {}
    refused: list[RefusedRow] = []
    for line, raw in enumerate(reader, start=2):
        reason, ann = _row(raw, known)
        if ann is None:
            refused.append(RefusedRow(source, line, reason))
            continue
        key = (ann.code, ann.effective_date)
        if key in rows:
            refused.append(RefusedRow(source, line, f"a second announcement of {ann.code} on {ann.effective_date}"))
            continue
        rows[key] = ann
    return sorted(rows.values(), key=lambda a: (a.effective_date, a.code)), refused


def load_announcements(path: str | Path, known_codes: Iterable[str] | None = None) -> tuple[list[Announcement], list[RefusedRow]]:
    """Read an announcements CSV (see the module docstring); raises FundamentalsError if it cannot be read."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise FundamentalsError(f"{p}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise FundamentalsError(f"{p}: not UTF-8 text ({exc.reason})") from exc
    return parse_announcements(text, known_codes, str(p))


def in_force(announcements: Iterable[Announcement], day: dt.date) -> dict[str, Announcement]:
    """Per code, the latest announcement effective on or before ``day``."""
    out: dict[str, Announcement] = {}
    for a in announcements:
        if a.effective_date <= day:
            prior = out.get(a.code)
            if prior is None or a.effective_date >= prior.effective_date:
                out[a.code] = a
    return out


def _row(raw: Mapping[str, str | None], known: set[str] | None) -> tuple[str, Announcement | None]:
    code = (raw.get("code") or "").strip()
    if code.isdigit() and len(code) < 6:
        code = code.zfill(6)  # a spreadsheet drops leading zeros
    if not krx.is_valid_code_syntax(code):
        return f"bad code {code!r}", None
    if known is not None and code not in known:
        return f"code {code} is not in the instrument master", None
    text = (raw.get("date") or "").strip()
    day = _date(text)
    if day is None:
        return f"bad date {text!r} (expected YYYY-MM-DD or YYYYMMDD)", None
    values: dict[str, int] = {}
    for name in ("eps", "bps", "dps"):
        cell = (raw.get(name) or "").strip().replace(",", "")
        if not cell and name == "dps":
            values[name] = 0
            continue
        try:
            number = float(cell)
        except ValueError:
            return f"{name} {cell!r} is not a number", None
        if number != number or number in (float("inf"), float("-inf")) or number != int(number):
            return f"{name} {cell!r} is not a whole number of won", None
        values[name] = int(number)
    if values["bps"] <= 0:
        return f"bps {values['bps']} must be positive", None
    if values["dps"] < 0:
        return f"dps {values['dps']} must not be negative", None
    return "", Announcement(code, day, values["eps"], values["bps"], values["dps"])


def _date(text: str) -> dt.date | None:
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None
