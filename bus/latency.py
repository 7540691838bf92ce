"""Latency histograms a process keeps and reports in its heartbeat, mergeable across processes.

A ``Histogram`` counts samples (microseconds) in fixed log-spaced buckets (each
``RATIO`` times the one below, from 1 µs to about 100 s), so the counts of many
processes add up exactly and a percentile read from the sum is within one
bucket (``RATIO - 1``, about 10 %) of the true one. ``counts()`` is sparse
(bucket index -> count, only the buckets that have samples) so a heartbeat
carries a few numbers, not the samples. ``percentile`` reads the sum of any
number of them; ``since`` takes one snapshot from a later one (a window of the
run).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

RATIO = 1.1
BUCKETS = int(math.log(1e8) / math.log(RATIO)) + 2  # 1 µs ... 100 s, one bucket above for anything longer
_LOG_RATIO = math.log(RATIO)


def bucket(us: float) -> int:
    """The bucket of a sample of ``us`` microseconds."""
    if us <= 1.0:
        return 0
    return min(BUCKETS - 1, int(math.log(us) / _LOG_RATIO) + 1)


def upper_us(index: int) -> float:
    """The upper edge of bucket ``index`` in microseconds (what a percentile in it reads as)."""
    return RATIO ** index


class Histogram:
    """Counts of latency samples by bucket."""

    __slots__ = ("_counts", "n")

    def __init__(self) -> None:
        self._counts = [0] * BUCKETS
        self.n = 0

    def add(self, us: float) -> None:
        self._counts[bucket(us)] += 1
        self.n += 1

    def counts(self) -> dict[str, int]:
        """Bucket index (as text: a msgpack/JSON map key) -> count, the empty buckets left out."""
        return {str(i): c for i, c in enumerate(self._counts) if c}


def merge(parts: Iterable[Mapping[str, int]]) -> dict[int, int]:
    """The sum of sparse counts (from ``Histogram.counts``)."""
    out: dict[int, int] = {}
    for part in parts:
        for k, c in part.items():
            i = int(k)
            out[i] = out.get(i, 0) + int(c)
    return out


def since(later: Mapping[str, int], earlier: Mapping[str, int]) -> dict[str, int]:
    """The samples of ``later`` not already in ``earlier`` (two snapshots of one histogram)."""
    out = {k: int(c) - int(earlier.get(k, 0)) for k, c in later.items()}
    return {k: c for k, c in out.items() if c > 0}


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The ``q``-th percentile (0-100) in microseconds of merged counts; None when there are none."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(total * q / 100.0))
    seen = 0
    for i in sorted(counts):
        seen += counts[i]
        if seen >= rank:
            return upper_us(i)
    return upper_us(max(counts))
