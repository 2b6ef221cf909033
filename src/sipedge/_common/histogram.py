"""A histogram of durations for cores: bucket counts, a sum and a count, nothing else.

Cores observe with the ``now`` they already have (``h.observe(now - started)``); the
adapter that renders ``/metrics`` reads :meth:`Histogram.cumulative` and exports it as a
Prometheus histogram (``web/server.py``). Observing costs one ``bisect`` and three
additions: no locks, no labels, no import of any metrics library in a core.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

# Upper bounds in seconds (each bucket holds values <= its bound; a last, implicit +Inf).
SIP_RESPONSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SETUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Counts of observed values per bucket (``bounds`` ascending upper bounds, +Inf implied).

    A negative or NaN value (a clock that stepped back, a bug) is counted as 0: a
    histogram never raises on the packet or message path."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        if not self.bounds or any(b <= a for a, b in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError(f"histogram bounds must be non-empty and strictly ascending, got {self.bounds}")
        if not all(math.isfinite(b) for b in self.bounds):
            raise ValueError("histogram bounds must be finite (+Inf is implied)")
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if not value > 0.0:  # (also NaN)
            value = 0.0
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= it)`` per bucket, ending with ``(inf, count)``:
        Prometheus's ``le`` buckets."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


# What a role exports besides its ``stats()``: (metric name without the ``sipedge_``
# prefix, its labels, the histogram).
Observed = list[tuple[str, dict[str, str], Histogram]]
