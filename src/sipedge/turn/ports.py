"""Relay port allocation from a configured range (sans-I/O bookkeeping).

The TURN core asks a :class:`PortAllocator` for ports; the asyncio adapter's allocator
wraps :class:`RangeAllocator` and binds the sockets, so a port that the OS refuses is
skipped and the core only ever sees ports that are really open.
"""

from __future__ import annotations

import random
from typing import Protocol

from ..stun.attributes import Family


class PortAllocator(Protocol):
    def acquire(self, family: Family, even: bool = False, reserve_next: bool = False) -> tuple[int, int | None] | None:
        """A free port (even if asked) and, with ``reserve_next``, port+1 held in reserve."""
        ...

    def activate(self, family: Family, port: int) -> bool:
        """Turn a reserved port into a live relay port (RESERVATION-TOKEN)."""
        ...

    def release(self, family: Family, port: int) -> None: ...

    def stats(self) -> dict[str, int | float]: ...


class RangeAllocator:
    """Random free ports in [low, high] per family; no sockets."""

    def __init__(self, low: int, high: int, rng: random.Random | None = None, attempts: int = 64) -> None:
        if not 0 < low <= high <= 65535:
            raise ValueError(f"bad relay port range {low}-{high}")
        self.low = low
        self.high = high
        self._rng = rng or random.Random()
        self._attempts = attempts
        self._used: dict[Family, set[int]] = {Family.IPV4: set(), Family.IPV6: set()}

    def in_use(self, family: Family) -> set[int]:
        return self._used[family]

    def candidates(self, family: Family, even: bool, pair: bool) -> list[int]:
        """Up to ``attempts`` free ports to try, random order, then a linear scan."""
        used = self._used[family]
        size = self.high - self.low + 1
        if len(used) >= size:
            return []
        out: list[int] = []
        seen: set[int] = set()

        def ok(p: int) -> bool:
            if p in used or p in seen or (even and p % 2):
                return False
            return not (pair and (p + 1 > self.high or p + 1 in used))

        for _ in range(self._attempts):
            p = self._rng.randint(self.low, self.high)
            if ok(p):
                seen.add(p)
                out.append(p)
                if len(out) >= 8:
                    return out
        start = self._rng.randint(self.low, self.high)
        for i in range(size):
            p = self.low + (start - self.low + i) % size
            if ok(p):
                out.append(p)
                seen.add(p)
                if len(out) >= 8:
                    break
        return out

    def mark(self, family: Family, port: int) -> None:
        self._used[family].add(port)

    def acquire(self, family: Family, even: bool = False, reserve_next: bool = False) -> tuple[int, int | None] | None:
        for p in self.candidates(family, even or reserve_next, reserve_next):
            self.mark(family, p)
            if reserve_next:
                self.mark(family, p + 1)
                return p, p + 1
            return p, None
        return None

    def activate(self, family: Family, port: int) -> bool:
        return port in self._used[family]

    def release(self, family: Family, port: int) -> None:
        self._used[family].discard(port)

    def stats(self) -> dict[str, int | float]:
        return {
            "turn_relay_ports_used": sum(len(s) for s in self._used.values()),
            "turn_relay_ports_total": self.high - self.low + 1,
        }
