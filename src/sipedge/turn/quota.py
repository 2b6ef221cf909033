"""Allocation quotas per TURN account (``turn.max_allocations_per_user``), sans-I/O.

The server core asks an :class:`AllocationQuota` before it grants an allocation and tells
it when one is refreshed or ends. :class:`LocalQuota` counts this process's allocations
(the default); the Redis one in ``store/redis.py`` counts those of every node sharing the
Redis, each allocation kept with its lifetime so that a node that dies frees its share
when its allocations would have expired.
"""

from __future__ import annotations

from typing import Protocol


class AllocationQuota(Protocol):
    """``allocation`` names one allocation uniquely within this process. ``acquire`` may
    raise StorageError (the Allocate then fails with 500); ``refresh`` and ``release``
    may too, and are then only counted."""

    def acquire(self, account: str, allocation: str, limit: int, lifetime: float) -> bool:
        """Take a slot of ``account`` for ``lifetime`` seconds; False when ``limit`` are
        in use already."""
        ...

    def refresh(self, account: str, allocation: str, lifetime: float) -> None:
        """The allocation lives ``lifetime`` seconds more."""
        ...

    def release(self, account: str, allocation: str) -> None:
        """The allocation ended."""
        ...


class LocalQuota:
    """Counts per account in a dict: the allocations of this process only."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def acquire(self, account: str, allocation: str, limit: int, lifetime: float) -> bool:
        n = self._counts.get(account, 0)
        if n >= limit:
            return False
        self._counts[account] = n + 1
        return True

    def refresh(self, account: str, allocation: str, lifetime: float) -> None:
        pass

    def release(self, account: str, allocation: str) -> None:
        n = self._counts.get(account, 1) - 1
        if n > 0:
            self._counts[account] = n
        else:
            self._counts.pop(account, None)

    def in_use(self, account: str) -> int:
        return self._counts.get(account, 0)
