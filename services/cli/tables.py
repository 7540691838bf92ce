"""Tables that fit the terminal: every ``trader`` listing declares its essential columns and the rest.

A command builds a :class:`FitTable` from :class:`Col` declarations and rows,
then prints it with ``show(console, wide)``. When the console (its width, or
``COLUMNS`` when set) is too narrow for every column, the essential columns are
shown together with as many of the others, in their declared order, as still
fit without cutting a word; a dim footer line names the columns left out and
says that ``--wide`` shows them. With ``--wide`` every column is shown: in a
terminal rich wraps the cells as needed, and when the output is not a terminal
(a pipe, a file) the table is printed at its full natural width.

Numbers are right-aligned, and a column is never narrower than its header, so a
header is never cut down to "n…".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import typer
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

UNBOUNDED = 100_000  # "no width limit" for measuring a table's natural width
WRAP_MIN = 20  # a column of free text is given at least this much room (or its longest word, if shorter)

WIDE_HELP = "Show every column, even when the terminal is too narrow for them (rich wraps the cells)."


def wide_option() -> Any:
    """The ``--wide`` option every table-printing command takes."""
    return typer.Option(False, "--wide", help=WIDE_HELP)


@dataclass(frozen=True)
class Col:
    """One column: its header, whether it is always shown, whether it holds numbers, whether its text may wrap."""

    header: str
    essential: bool = False
    numeric: bool = False
    wrap: bool = False  # long free text (a reason, a list of problems) that may fold onto several lines


class FitTable:
    """A table of declared columns that picks the columns the console has room for."""

    def __init__(self, title: str | None, columns: Sequence[Col], **table_kwargs: Any) -> None:
        if not columns:
            raise ValueError("a table needs at least one column")
        self.title = title
        self.columns = list(columns)
        self.rows: list[tuple[RenderableType, ...]] = []
        self.table_kwargs = table_kwargs

    def add_row(self, *cells: RenderableType) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(cells)

    def build(self, indices: Sequence[int], widths: Sequence[int] | None = None) -> Table:
        """The rich table of the columns at ``indices`` (in the declared order), none narrower than ``widths``."""
        table = Table(title=self.title, **self.table_kwargs)
        for i in indices:
            c = self.columns[i]
            table.add_column(c.header, justify="right" if c.numeric else "left", no_wrap=not c.wrap,
                             overflow="fold" if c.wrap else "ellipsis",
                             min_width=widths[i] if widths is not None else cell_len(c.header))
        for row in self.rows:
            table.add_row(*(row[i] for i in indices))
        return table

    def min_widths(self, console: Console) -> list[int]:
        """How narrow each column can be without cutting its header, a cell (or, when it wraps, a word)."""
        options = console.options.update_width(UNBOUNDED)
        out = []
        for i, c in enumerate(self.columns):
            width = cell_len(c.header)
            for row in self.rows:
                least, most = _extent(console, options, row[i])
                width = max(width, min(least, WRAP_MIN) if c.wrap else most)
            out.append(width)
        return out

    def select(self, console: Console, wide: bool = False) -> tuple[list[int], list[str], list[int] | None]:
        """The columns to show on ``console``, the headers of those left out, and the columns' least widths."""
        every = list(range(len(self.columns)))
        if wide:
            return every, [], None
        widths = self.min_widths(console)
        options = console.options.update_width(UNBOUNDED)

        def fits(indices: list[int]) -> bool:
            # The columns' least widths are known: a table of no rows measures the padding and borders around them.
            bare = FitTable(self.title, [self.columns[i] for i in indices], **self.table_kwargs)
            return Measurement.get(console, options, bare.build(range(len(indices)), [widths[i] for i in indices])
                                   ).minimum <= console.width

        if fits(every):
            return every, [], widths
        shown = [i for i, c in enumerate(self.columns) if c.essential] or [0]
        for i in every:
            if i not in shown and fits(sorted([*shown, i])):
                shown = sorted([*shown, i])
        return shown, [self.columns[i].header for i in every if i not in shown], widths

    def renderable(self, console: Console, wide: bool = False) -> RenderableType:
        """The table for ``console``'s width, with the footer naming what was left out (for rich.live too)."""
        shown, hidden, widths = self.select(console, wide)
        table = self.build(shown, widths)
        if not hidden:
            return table
        return Group(table, footer(hidden))

    def show(self, console: Console, wide: bool = False) -> list[str]:
        """Print the table; the headers of the columns left out (empty when all are shown)."""
        shown, hidden, widths = self.select(console, wide)
        table = self.build(shown, widths)
        if wide and not console.is_terminal:
            natural = Measurement.get(console, console.options.update_width(UNBOUNDED), table).maximum
            limit = console.width
            console.width = max(limit, natural)  # Console.print never goes past the console's own width
            try:
                console.print(table)
            finally:
                console.width = limit
        else:
            console.print(table)
        if hidden:
            console.print(footer(hidden))
        return hidden


def _extent(console: Console, options: ConsoleOptions, cell: RenderableType) -> tuple[int, int]:
    """A cell's longest word and longest line (rich's measurement where the cell holds markup or a renderable)."""
    if isinstance(cell, str) and "[" not in cell:
        lines = cell.split("\n")
        return max((cell_len(w) for w in cell.split()), default=0), max(cell_len(line) for line in lines)
    m = Measurement.get(console, options, console.render_str(cell) if isinstance(cell, str) else cell)
    return m.minimum, m.maximum


def footer(hidden: Sequence[str]) -> Text:
    """The dim line under a table that names the columns left out."""
    return Text(f"{len(hidden)} column(s) not shown for the terminal's width: {', '.join(hidden)}; "
                "`--wide` shows all", style="dim")
