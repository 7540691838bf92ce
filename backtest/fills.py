"""The fill assumption of a back-test: when and at what price the strategy's orders meet the market.

The venue is always ``core.matching`` (same fees, dated taxes, tick and limit
rules, order book, depth and participation as the paper exchange); the fill
model only decides *when* orders enter and *how* each bar is shown to the venue.
With the order book on (``MatchingParams.book``, the default) a marketable
buy pays the ask and a sell hits the bid, walking the levels; resting orders
wait for the queue ahead of them; volatility interruptions hold trading:

- ``next_open`` (the default): orders are held until the next bar of their
  code and enter against the book at that bar's open (the spread paid, depth
  walked); then the bar is fed, and resting orders fill when its range trades
  through them or, reaching them exactly, once its volume at their price has
  worked off their queue, at most ``participation_pct`` percent of the bar's
  volume.
- ``close``: orders enter right after the bar that triggered them, against the
  book at that bar's close; then as above. Optimistic: the order trades on the
  very price that made the signal, a price nobody could have traded on once
  the bar was known.
- ``intrabar``: like ``next_open``, but every bar is fed as four prints
  (open, then low and high in the order the bar most likely took them, then
  close), each carrying a quarter of the volume; resting orders fill at their
  limit when a print reaches them, at most ``participation_pct`` percent of
  each print's volume (volume participation).

The closing auction bar is a single price: it is crossed by
``MatchingEngine.run_auction`` in every model.
"""

from __future__ import annotations

from enum import StrEnum


class FillModel(StrEnum):
    """When orders enter and how bars are shown to the venue (see the module docstring)."""

    CLOSE = "close"
    NEXT_OPEN = "next_open"
    INTRABAR = "intrabar"

    @property
    def describe(self) -> str:
        """One line for the report saying what was assumed."""
        return _DESCRIPTIONS[self]


DEFAULT_FILL_MODEL = FillModel.NEXT_OPEN

_DESCRIPTIONS = {
    FillModel.CLOSE: "optimistic: orders enter after the signal bar against the book at its close, the price that made the signal; resting orders fill when a later bar trades through them or works off their queue",
    FillModel.NEXT_OPEN: "orders enter against the book at the next bar's open (the spread paid, depth walked); resting orders fill when a later bar trades through them or works off their queue",
    FillModel.INTRABAR: "orders enter at the next bar's open; each bar is fed as four prints (open, low/high, close) and resting orders fill with volume participation",
}


def intrabar_path(o: int, h: int, l: int, c: int) -> tuple[int, int, int, int]:  # noqa: E741
    """The four prints a bar is taken to have made: open, the nearer extreme first, then the other, close."""
    if abs(o - l) <= abs(h - o):
        return (o, l, h, c)
    return (o, h, l, c)


def split_volume(volume: int, parts: int = 4) -> list[int]:
    """A bar's volume shared among its prints, the remainder on the last, so the parts sum exactly."""
    share = volume // parts
    return [share] * (parts - 1) + [volume - share * (parts - 1)]
