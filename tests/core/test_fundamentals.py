"""Announcements from a user's CSV: good rows load, each bad row is refused with the file, the row and the reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from core.fundamentals import FundamentalsError, in_force, load_announcements, parse_announcements

KNOWN = {"005930", "000660"}


def test_good_rows_load_sorted_and_bad_rows_are_refused_with_their_reason(tmp_path: Path) -> None:
    path = tmp_path / "announcements.csv"
    path.write_text(
        "code,date,eps,bps,dps\n"
        "005930,2026-04-30,5100,52000,1444\n"  # row 2
        "660,20260425,21000,99000,\n"  # row 3: leading zeros dropped by a spreadsheet, dps empty
        "123456,2026-04-30,10,10,0\n"  # row 4: unknown code
        "005930,2026-13-01,1,1,1\n"  # row 5: bad date
        "005930,2026-07-30,abc,1,1\n"  # row 6: not a number
        "005930,2026-07-30,10.5,1,1\n"  # row 7: not whole won
        "005930,2026-07-30,10,0,1\n"  # row 8: bps not positive
        "005930,2026-04-30,5200,52000,1444\n"  # row 9: a second one on the same day
        "005930,2026-07-30,-300,51000,1444\n",  # row 10: a loss is a negative EPS, allowed
        encoding="utf-8",
    )
    rows, refused = load_announcements(path, KNOWN)
    assert [(a.code, a.effective_date, a.eps, a.dps) for a in rows] == [
        ("000660", dt.date(2026, 4, 25), 21000, 0),
        ("005930", dt.date(2026, 4, 30), 5100, 1444),
        ("005930", dt.date(2026, 7, 30), -300, 1444),
    ]
    assert [r.row for r in refused] == [4, 5, 6, 7, 8, 9]
    text = [str(r) for r in refused]
    assert text[0] == f"{path}, row 4: code 123456 is not in the instrument master"
    assert "bad date '2026-13-01'" in text[1] and "'abc' is not a number" in text[2]
    assert "not a whole number" in text[3] and "bps 0 must be positive" in text[4] and "a second announcement" in text[5]
    latest = in_force(rows, dt.date(2026, 5, 1))
    assert latest["005930"].eps == 5100 and latest["000660"].bps == 99000
    assert rows[0].published_ns < rows[1].published_ns  # 08:00 KST of each day


def test_a_file_without_the_columns_or_missing_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FundamentalsError, match="missing column"):
        parse_announcements("code,eps\n005930,1\n", KNOWN, "x.csv")
    with pytest.raises(FundamentalsError, match="nope.csv"):
        load_announcements(tmp_path / "nope.csv", KNOWN)
