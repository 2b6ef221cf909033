"""A bounded TTL cache for DNS answers, sans-I/O (``now`` is passed in).

Positive answers are kept for their TTL clamped to ``[min_ttl, max_ttl]``; negative ones
(NXDOMAIN, no records) for the TTL the server gave (RFC 2308: from its SOA) clamped to
``[negative_min_ttl, negative_ttl]``, or ``negative_ttl`` when it gave none. When full,
expired entries go first, then the least recently used.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(
        self,
        max_entries: int = 4096,
        *,
        min_ttl: float = 0.0,
        max_ttl: float = 86400.0,
        negative_min_ttl: float = 0.0,
        negative_ttl: float = 60.0,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.min_ttl = min_ttl
        self.max_ttl = max(max_ttl, min_ttl)
        self.negative_min_ttl = negative_min_ttl
        self.negative_ttl = max(negative_ttl, negative_min_ttl)
        # key -> (expires at, value, negative)
        self._entries: OrderedDict[K, tuple[float, V, bool]] = OrderedDict()
        self.hits = 0
        self.negative_hits = 0
        self.misses = 0
        self.evictions = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> tuple[V, bool] | None:
        """``(value, negative)`` if cached and fresh, else None (counted as a miss)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires, value, negative = entry
        if now >= expires:
            del self._entries[key]
            self.expired += 1
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        if negative:
            self.negative_hits += 1
        else:
            self.hits += 1
        return value, negative

    def ttl_left(self, key: K, now: float) -> float | None:
        entry = self._entries.get(key)
        if entry is None or now >= entry[0]:
            return None
        return entry[0] - now

    def put(self, key: K, value: V, ttl: float, now: float) -> float:
        """Cache a positive answer; returns the TTL actually used."""
        used = min(max(ttl, self.min_ttl), self.max_ttl)
        self._store(key, (now + used, value, False), now)
        return used

    def put_negative(self, key: K, value: V, now: float, ttl: float | None = None) -> float:
        """Cache a negative answer (``ttl`` from the server's SOA, if any)."""
        used = self.negative_ttl if ttl is None else min(max(ttl, self.negative_min_ttl), self.negative_ttl)
        self._store(key, (now + used, value, True), now)
        return used

    def _store(self, key: K, entry: tuple[float, V, bool], now: float) -> None:
        if entry[0] <= now:
            self._entries.pop(key, None)
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self.purge(now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    def purge(self, now: float) -> int:
        """Drop expired entries; returns how many."""
        stale = [k for k, (expires, _, _) in self._entries.items() if now >= expires]
        for k in stale:
            del self._entries[k]
        self.expired += len(stale)
        return len(stale)

    def clear(self) -> None:
        self._entries.clear()

    def stats(self) -> dict[str, int | float]:
        return {
            "dns_cache_entries": len(self._entries),
            "dns_cache_hits": self.hits,
            "dns_cache_negative_hits": self.negative_hits,
            "dns_cache_misses": self.misses,
            "dns_cache_evictions": self.evictions,
            "dns_cache_expired": self.expired,
        }
