"""The fill assumption of a back-test: when and at what price the strategy's orders meet the market.

The venue is always ``core.matching`` (same fees, dated taxes, tick and limit
rules, depth and participation as the paper exchange); the fill model only
decides *when* orders enter and *how* each bar is shown to the venue:

- ``close`` (the default): orders enter right after the bar that triggered
  them, against a touch at that bar's close. A limit at or through the close
  (or a market order) takes liquidity at the close and walks price levels of
  ``depth_pct`` percent of recent volume; a limit away from it rests and fills
  on later bars only when their range trades through it, at most
  ``participation_pct`` percent of each bar's volume.
- ``next_open``: orders are held until the next bar of their code and enter
  against a touch at that bar's open; then the bar is fed as above.
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


DEFAULT_FILL_MODEL = FillModel.CLOSE

_DESCRIPTIONS = {
    FillModel.CLOSE: "orders enter after the signal bar against a touch at its close; resting orders fill when a later bar trades through them",
    FillModel.NEXT_OPEN: "orders enter at the next bar's open; resting orders fill when a later bar trades through them",
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
