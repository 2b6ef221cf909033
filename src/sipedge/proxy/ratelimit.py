"""Request rate limits, after Kamailio's ratelimit and pipelimit modules, and the
toll-fraud guard (sans-I/O: ``now`` and randomness passed in).

A *pipe* counts requests over ``interval`` seconds against a rate. The configured pipes
are per method for all sources together (``limits``), per method for each source IP
(``per_source``) and per foreign destination host (``per_destination``); a routing module
may add its own through :meth:`RateLimiter.check` with any key. Over its rate, a pipe
drops by the configured algorithm:

* ``taildrop``: every request past the rate until the interval ends;
* ``red`` (random early detection): from half the rate on, each request is dropped with a
  probability that grows linearly to 1 at the rate, so the load is shed before the pipe is
  full rather than in a burst at the end of every interval;
* ``network``: all of the pipe's requests while the host receives more packets per second
  than the rate (the adapter reads the kernel's counters and calls
  :meth:`RateLimiter.set_network_load`): the limit follows what the machine is taking in,
  whoever sends it.

Memory is bounded: at most ``max_keys`` per-source and per-destination pipes, least
recently used forgotten first (a pipe idle for an interval counts zero anyway).

With a :class:`PipeCounter` (``[redis] ratelimit``: ``store/redis.py``
``RedisPipeCounter``) every pipe but the ``network`` one is counted in fixed windows
shared by every node and worker, so a rate holds for the whole cluster. When the shared
counter fails, the pipe falls back to this process's own count for that request
(``sip_ratelimit_share_errors``): a limit never fails closed on a store outage.

:class:`FraudGuard` caps the INVITEs one authenticated user sends to foreign destinations
per window: stolen credentials used to call premium numbers abroad run into it.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from ..config.ratelimit import FraudConfig, RateLimitConfig, parse_pipe
from ..errors import StorageError


class Window:
    """A count since ``start``."""

    __slots__ = ("count", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0


def window(table: OrderedDict[str, Window], key: str, now: float, length: float, max_keys: int) -> Window:
    """``key``'s count in ``table``, started afresh once ``length`` seconds are over; the
    table holds at most ``max_keys``, the least recently used forgotten first."""
    w = table.get(key)
    if w is None or now - w.start >= length:
        if w is None:
            while len(table) >= max_keys:
                table.popitem(last=False)
        w = table[key] = Window(now)
    table.move_to_end(key)
    return w


class PipeCounter(Protocol):
    """Pipe counts shared by several nodes: fixed windows of ``interval`` seconds in the
    store's own clock (the nodes' clocks need not agree). May raise StorageError."""

    def incr(self, key: str, interval: float) -> int:
        """Count one request in ``key``'s current window; returns the window's count."""
        ...


class RateLimiter:
    """Counts requests in pipes; :meth:`allow` says whether one more may pass."""

    def __init__(
        self,
        config: RateLimitConfig,
        trusted: tuple[str, ...] = (),
        rand: Callable[[], float] = random.random,
        max_keys: int = 16384,
        shared: PipeCounter | None = None,
    ) -> None:
        self.config = config
        self.shared = shared
        self._rand = rand
        self._max_keys = max_keys
        self._limits = dict(parse_pipe(p) for p in config.limits)
        self._per_source = dict(parse_pipe(p) for p in config.per_source)
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted)
        self._pipes: OrderedDict[str, Window] = OrderedDict()
        self._network_load = 0.0
        self.counters: dict[str, int] = {"sip_ratelimit_dropped": 0, "sip_ratelimit_share_errors": 0}
        self.active = bool(self._limits or self._per_source)  # any method pipe

    def set_network_load(self, packets_per_second: float) -> None:
        """The host's inbound packet rate (for the ``network`` algorithm)."""
        self._network_load = packets_per_second

    def allow(self, method: str, source: str, now: float) -> str | None:
        """Count a request in the method pipes; None when it may pass, else which limit it
        is over (for the Reason of the 503)."""
        limits, per_source = self._limits, self._per_source
        # the source's own pipe first: what it is refused does not use up everyone's
        rate = per_source.get(method, per_source.get("*"))
        if rate is not None and not self._trusted_source(source):
            key = f"s|{method if method in per_source else '*'}|{source}"
            if not self.check(key, rate, now):
                return f"{method} rate limit per source"
        rate = limits.get(method, limits.get("*"))
        if rate is not None and not self.check(f"m|{method if method in limits else '*'}", rate, now):
            return f"{method} rate limit"
        return None

    def destination(self, host: str, now: float) -> bool:
        """Count a request relayed to the foreign ``host``: True when it may go."""
        rate = self.config.per_destination
        return rate <= 0 or self.check(f"d|{host.lower()}", rate, now)

    def check(self, key: str, rate: int, now: float) -> bool:
        """One request through pipe ``key`` at ``rate`` per interval: True to pass."""
        pipe = window(self._pipes, key, now, self.config.interval, self._max_keys)
        pipe.count += 1
        count = pipe.count
        if self.shared is not None and self.config.algorithm != "network":  # network: no count used
            try:
                count = self.shared.incr(key, self.config.interval)
            except StorageError:
                self.counters["sip_ratelimit_share_errors"] += 1
        if self._drops(count, rate):
            self.counters["sip_ratelimit_dropped"] += 1
            return False
        return True

    def _drops(self, count: int, rate: int) -> bool:
        algorithm = self.config.algorithm
        if algorithm == "network":
            return self._network_load > rate
        if count <= (rate if algorithm == "taildrop" else rate / 2):
            return False
        if algorithm == "taildrop" or count > rate:
            return True
        return self._rand() < (count - rate / 2) / (rate / 2 + 1)  # below 1 up to the rate

    def _trusted_source(self, source: str) -> bool:
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(address in net for net in self._trusted)

    def stats(self) -> dict[str, int | float]:
        return {**self.counters, "sip_ratelimit_pipes": len(self._pipes)}


class FraudGuard:
    """Foreign calls per authenticated user per window (0 = no limit)."""

    def __init__(self, config: FraudConfig, max_users: int = 16384) -> None:
        self.config = config
        self._max_users = max_users
        self._users: OrderedDict[str, Window] = OrderedDict()

    def foreign_call(self, user: str, now: float) -> bool:
        """Count a call of ``user`` to a foreign destination: True when it may go."""
        limit = self.config.max_foreign_calls
        if limit <= 0:
            return True
        tally = window(self._users, user, now, self.config.window, self._max_users)
        if tally.count >= limit:
            return False
        tally.count += 1
        return True
