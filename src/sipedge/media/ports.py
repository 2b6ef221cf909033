"""Relay port allocation from a configured range (sans-I/O; the adapter binds the sockets)."""

from __future__ import annotations

import random
from collections import deque
from typing import Protocol


class PortAllocator(Protocol):
    """Hands out relay ports. ``count`` is 1 (rtcp-mux) or 2 (an even RTP port + RTCP).
    Port numbers are unique across interfaces (one range), so a port names its socket."""

    def allocate(self, count: int, interface: str = "") -> int | None:
        """The first port of a free block on the named interface ("" = the default), or
        None when the range is exhausted."""
        ...

    def release(self, port: int, count: int) -> None: ...


class RangePortAllocator:
    """Even-aligned port pairs from ``[low, high]`` in random order (a single port uses a
    whole pair, keeping RTP ports even as RFC 3550 §11 suggests)."""

    def __init__(self, low: int, high: int, rng: random.Random | None = None) -> None:
        if low < 1 or high > 65535 or high - low < 1:
            raise ValueError(f"bad port range {low}-{high}")
        first = low + (low & 1)
        bases = list(range(first, high, 2))
        (rng or random.Random()).shuffle(bases)
        self._free: deque[int] = deque(bases)
        self._used: set[int] = set()
        self.size = len(bases)

    def allocate(self, count: int, interface: str = "") -> int | None:
        if not self._free:
            return None
        base = self._free.popleft()
        self._used.add(base)
        return base

    def release(self, port: int, count: int) -> None:
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)

    @property
    def in_use(self) -> int:
        return len(self._used)

    @property
    def allocated(self) -> frozenset[int]:
        """The first port of every block handed out and not yet released."""
        return frozenset(self._used)
