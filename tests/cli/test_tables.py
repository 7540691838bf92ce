"""The shared table logic of the ``trader`` listings: essential columns always, the rest as room allows."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from services.cli.tables import Col, FitTable
from tests.cli.conftest import assert_fits, tables

COLUMNS = (Col("name", essential=True), Col("state", essential=True), Col("uptime s", numeric=True),
           Col("rss MB", numeric=True), Col("holding", numeric=True), Col("realised (won)", numeric=True),
           Col("what", essential=True, wrap=True), Col("unrealised (won)", numeric=True))
EVERY = [c.header for c in COLUMNS]
ESSENTIAL = [c.header for c in COLUMNS if c.essential]


def table() -> FitTable:
    t = FitTable("processes", COLUMNS)
    t.add_row("order-manager", "running (late)", "12345.6", "120", "1,000", "12,345,678",
              "a reason long enough that it has to wrap onto a second line", "-1,234,567")
    t.add_row("sma-a", "[green]running[/]", "1.0", "80", "0", "0", "-", "0")
    return t


def render(t: FitTable, width: int, wide: bool = False) -> tuple[str, list[str]]:
    out = io.StringIO()
    hidden = t.show(Console(file=out, width=width), wide)
    return out.getvalue(), hidden


@pytest.mark.parametrize("width", [60, 80])
def test_a_narrow_console_gets_the_essential_columns_whole_and_a_footer_naming_the_rest(width: int) -> None:
    text, hidden = render(table(), width)
    (t,) = tables(text)
    assert_fits(t, EVERY, ESSENTIAL, width)
    assert t.hidden == hidden and hidden
    assert "order-manager" in text and "running (late)" in text, "a no-wrap cell is never cut"


def test_the_optional_columns_that_fit_are_kept_in_their_declared_order() -> None:
    (t80,) = tables(render(table(), 80)[0])
    (t120,) = tables(render(table(), 120)[0])
    assert set(t80.headers) < set(t120.headers)
    assert t120.headers == [h for h in EVERY if h in t120.headers]


def test_a_console_wide_enough_shows_everything_without_a_footer() -> None:
    text, hidden = render(table(), 300)
    (t,) = tables(text)
    assert t.headers == EVERY and hidden == [] and "not shown" not in text


def test_wide_shows_every_column_at_full_width_when_the_output_is_no_terminal() -> None:
    text, hidden = render(table(), 80, wide=True)
    (t,) = tables(text)
    assert t.headers == EVERY and hidden == [] and t.width > 80
    assert "a reason long enough that it has to wrap onto a second line" in text


def test_numbers_are_right_aligned_and_text_left_aligned() -> None:
    (t,) = tables(render(table(), 300)[0])
    row = t.rows[1]
    uptime = row[EVERY.index("uptime s")]
    assert uptime.endswith("1.0 ") and uptime.startswith("   "), uptime
    name = row[0]
    assert name.startswith(" sma-a ") and name.endswith("  "), name


def test_the_renderable_for_live_carries_the_footer_too() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80)
    console.print(table().renderable(console))
    (t,) = tables(out.getvalue())
    assert t.hidden and set(ESSENTIAL) <= set(t.headers)


def test_a_row_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="2 cells for 8 columns"):
        table().add_row("a", "b")
