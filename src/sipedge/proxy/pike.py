"""Per-source flood detection, after Kamailio's pike module (sans-I/O, ``now`` passed in).

Each source IP gets a count of requests per sampling window (``window`` seconds). One
more than ``max_requests`` in a window bans the source for ``ban_time`` seconds; so does
one more digest challenge than ``max_challenges`` (an unauthenticated flood costs a
challenge each, and answers from a spoofed source would be reflected at its victim).
While banned, everything from the source is dropped before it is parsed: the transport
asks :meth:`FloodDetector.banned` first.

Memory is bounded under a spoofed-source flood: at most ``max_sources`` sources are
counted, least recently seen forgotten first (a source not seen for a window has a count
of zero anyway, so forgetting it loses nothing), and at most as many bans are kept.
Trusted networks are never counted against (checked only when a source crosses a
threshold, so the common path stays one dictionary lookup).

Failed digest responses are counted apart, over ``auth_window`` (fail2ban's job, done
in-process): ``max_auth_failures`` from one source bans it; past ``max_user_auth_failures``
for one username from all sources together, any source failing for that user is banned
at its first failure, so a guess spread over many addresses gets one try per address
while the user's right password keeps working (no lock-out to abuse). Requests whose
User-Agent names a known scanner are dropped and their source banned
(:meth:`is_scanner`).

Bans end at :meth:`handle_timer`; :meth:`events` reports bans starting and ending, for
the application to log. An operator lists, adds and lifts bans through :meth:`bans`,
:meth:`ban` and :meth:`lift` (``sipedge ctl ban ...``).

Several nodes share their bans through a :class:`BanStore` (Redis, in ``store/redis.py``):
every ban made here, and every lift, is written to it; :meth:`sync`, called by the
application every second or so, adopts the bans other nodes made and drops the ones an
operator lifted elsewhere. Without a store (the default) nothing changes: the packet path
never waits on it either way, since :meth:`banned` only reads the local table.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from ..config.flood import FloodConfig
from ..config.sip import SipConfig
from ..errors import StorageError
from .ratelimit import Window, window


@dataclass(frozen=True, slots=True)
class SourceBanned:
    """``source`` crossed a threshold (``reason``: "requests", "challenges",
    "auth-failures"), is a scanner ("scanner"), or an operator banned it ("operator")."""

    source: str
    reason: str
    until: float


@dataclass(frozen=True, slots=True)
class SourceUnbanned:
    """``source``'s ban ended; ``dropped`` messages were refused while it lasted."""

    source: str
    dropped: int


FloodEvent = SourceBanned | SourceUnbanned

SHARED = "shared"
"""The reason of a ban adopted from another node through the :class:`BanStore`."""


class BanStore(Protocol):
    """Bans shared by several nodes. Times are durations, so nodes need not share a clock;
    any method may raise StorageError (the ban then holds on this node only)."""

    def publish(self, source: str, seconds: float) -> None:
        """``source`` is banned for ``seconds`` from now (a longer ban in place stays)."""
        ...

    def withdraw(self, source: str) -> None:
        """``source``'s ban was lifted."""
        ...

    def active(self) -> dict[str, float]:
        """Every ban in force: source -> seconds left."""
        ...


class _Count:
    """One source's window: when it started, requests and challenges in it."""

    __slots__ = ("challenges", "requests", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.requests = 0
        self.challenges = 0


class _Ban:
    __slots__ = ("dropped", "until")

    def __init__(self, until: float) -> None:
        self.until = until
        self.dropped = 0


def flood_detector(sip: SipConfig, shared: BanStore | None = None) -> FloodDetector:
    """The detector for a server: ``[sip.flood]``, with ``sip.trusted_peers`` exempt too
    (a trunk is trusted to relay, so it is trusted not to be a flooder)."""
    return FloodDetector(sip.flood, tuple(sip.trusted_peers), shared)


class FloodDetector:
    """Counts requests and challenges per source IP; bans the ones over the limits."""

    def __init__(
        self, config: FloodConfig, also_trusted: tuple[str, ...] = (), shared: BanStore | None = None
    ) -> None:
        self.config = config
        self.shared = shared
        self._in_store: set[str] = set()  # bans the shared store holds too (made here or adopted)
        self._trusted = tuple(
            ipaddress.ip_network(n, strict=False) for n in (*config.trusted, *also_trusted)
        )
        self._sources: OrderedDict[str, _Count] = OrderedDict()  # least recently seen first
        self._bans: dict[str, _Ban] = {}  # in ban order, so in order of expiry
        self._events: list[FloodEvent] = []
        self._auth_sources: OrderedDict[str, Window] = OrderedDict()
        self._auth_users: OrderedDict[str, Window] = OrderedDict()
        self._scanners = tuple(s.lower() for s in config.scanners if s)
        self.counters: dict[str, int] = {
            "sip_flood_bans": 0,
            "sip_banned_dropped": 0,
            "sip_flood_challenges_refused": 0,
            "sip_auth_failure_bans": 0,
            "sip_scanners_dropped": 0,
            "sip_flood_bans_adopted": 0,
            "sip_flood_share_errors": 0,
        }

    # -- the per-message path ------------------------------------------------------------
    def banned(self, source: str) -> bool:
        """Whether ``source`` is banned now; a True answer counts one dropped message."""
        ban = self._bans.get(source)
        if ban is None:
            return False
        ban.dropped += 1
        self.counters["sip_banned_dropped"] += 1
        return True

    def request(self, source: str, now: float) -> bool:
        """Count a request (or an unparseable message) from ``source``. False when the
        source is banned, now or already: the message is then to be dropped."""
        if self.banned(source):
            return False
        limit = self.config.max_requests
        if limit <= 0:
            return True
        count = self._count(source, now)
        count.requests += 1
        if count.requests <= limit or self._is_trusted(source, count):
            return True
        self._ban(source, "requests", now)
        self.banned(source)  # the message that crossed the line is dropped too
        return False

    def challenge(self, source: str, now: float) -> bool:
        """Whether ``source`` may be sent one more digest challenge. False bans it: the
        request is to be dropped unanswered."""
        limit = self.config.max_challenges
        if limit <= 0:
            return True
        count = self._count(source, now)
        count.challenges += 1
        if count.challenges <= limit or self._is_trusted(source, count):
            return True
        self.counters["sip_flood_challenges_refused"] += 1
        self._ban(source, "challenges", now)
        return False

    def auth_failed(self, source: str, user: str, now: float) -> bool:
        """Count a failed digest response from ``source`` for ``user``. True when that
        banned the source (then the request is to be dropped unanswered)."""
        cfg = self.config
        hot_user = False
        if cfg.max_user_auth_failures > 0 and user:
            tally = window(self._auth_users, user.lower(), now, cfg.auth_window, cfg.max_sources)
            tally.count += 1
            hot_user = tally.count > cfg.max_user_auth_failures
        over = False
        if cfg.max_auth_failures > 0:
            tally = window(self._auth_sources, source, now, cfg.auth_window, cfg.max_sources)
            tally.count += 1
            over = tally.count > cfg.max_auth_failures
        if not (over or hot_user) or self._trusted_address(source):
            return False
        self._auth_sources.pop(source, None)
        self.counters["sip_auth_failure_bans"] += 1
        self._ban(source, "auth-failures", now)
        return True

    def is_scanner(self, source: str, user_agent: str, now: float) -> bool:
        """Whether ``user_agent`` names a known SIP scanner; True bans ``source`` (unless
        trusted) and counts the request dropped."""
        if not self._scanners or not user_agent:
            return False
        ua = user_agent.lower()
        if not any(s in ua for s in self._scanners):
            return False
        self.counters["sip_scanners_dropped"] += 1
        if source not in self._bans and not self._trusted_address(source):
            self._ban(source, "scanner", now)
        return True

    # -- the operator's view (sipedge ctl ban ...) --------------------------------------
    def bans(self, now: float) -> list[tuple[str, float, int]]:
        """(source, seconds left, messages dropped) of every ban, the first to end first."""
        return [(source, max(0.0, ban.until - now), ban.dropped) for source, ban in self._bans.items()]

    def ban(self, source: str, seconds: float, now: float) -> None:
        """Ban ``source`` (an IP address) for ``seconds`` from ``now``, whatever its counts
        and even if trusted; a ban already in place is replaced."""
        self._bans.pop(source, None)
        last = next(reversed(self._bans.values()), None)
        self._ban(source, "operator", now, seconds)
        if last is not None and last.until > now + seconds:
            # bans are kept in order of expiry for get_timer/handle_timer
            self._bans = dict(sorted(self._bans.items(), key=lambda item: item[1].until))

    def lift(self, source: str) -> bool:
        """End ``source``'s ban now; False when it was not banned."""
        ban = self._bans.pop(source, None)
        if ban is not None:
            self._in_store.discard(source)
            self._events.append(SourceUnbanned(source, ban.dropped))
        if self.shared is not None:  # lifted on every node, even if not banned here
            try:
                self.shared.withdraw(source)
            except StorageError:
                self.counters["sip_flood_share_errors"] += 1
        return ban is not None

    def sync(self, now: float) -> None:
        """Adopt the bans other nodes made, and lift the bans no longer in the shared
        store (an operator lifted them on another node)."""
        if self.shared is None:
            return
        try:
            shared = self.shared.active()
        except StorageError:
            self.counters["sip_flood_share_errors"] += 1
            return
        for source in [s for s in self._in_store if s not in shared]:
            self._in_store.discard(source)
            ban = self._bans.pop(source, None)
            if ban is not None:
                self._events.append(SourceUnbanned(source, ban.dropped))
        added = False
        for source, left in shared.items():
            ban = self._bans.get(source)
            if left <= 0 or (ban is not None and ban.until >= now + left - 1.0):
                continue  # known here already (within a second: clocks and round trips)
            if ban is None:
                self.counters["sip_flood_bans_adopted"] += 1
            self._ban(source, SHARED, now, left)
            self._in_store.add(source)
            added = True
        if added:
            self._bans = dict(sorted(self._bans.items(), key=lambda item: item[1].until))

    # -- timer and events ----------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When the oldest ban ends (None without bans)."""
        for ban in self._bans.values():
            return ban.until
        return None

    def handle_timer(self, now: float) -> None:
        """End the bans that are over."""
        bans = self._bans
        while bans:
            source, ban = next(iter(bans.items()))
            if ban.until > now:
                break
            del bans[source]
            self._in_store.discard(source)
            self._events.append(SourceUnbanned(source, ban.dropped))

    def events(self) -> list[FloodEvent]:
        out, self._events = self._events, []
        return out

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counters)
        out["sip_flood_banned_sources"] = len(self._bans)
        out["sip_flood_tracked_sources"] = len(self._sources)
        out["sip_auth_failure_tracked"] = len(self._auth_sources) + len(self._auth_users)
        return out

    # -- inside ----------------------------------------------------------------------------
    def _count(self, source: str, now: float) -> _Count:
        sources = self._sources
        count = sources.get(source)
        if count is None:
            self._forget_stale(now)
            if len(sources) >= self.config.max_sources:
                sources.popitem(last=False)
            count = sources[source] = _Count(now)
        else:
            sources.move_to_end(source)
            if now - count.start >= self.config.window:
                count.start, count.requests, count.challenges = now, 0, 0
        return count

    def _forget_stale(self, now: float) -> None:
        """Drop up to two of the least recently seen sources whose window is over (what
        they counted no longer matters), so the table shrinks back after a flood."""
        sources = self._sources
        for _ in range(2):
            if not sources:
                return
            oldest = next(iter(sources.values()))
            if now - oldest.start < self.config.window:
                return
            sources.popitem(last=False)

    def _is_trusted(self, source: str, count: _Count) -> bool:
        """Checked only past a threshold; a trusted source starts its window afresh, so it
        is looked at again only after as many more."""
        if self._trusted_address(source):
            count.requests = count.challenges = 0
            return True
        return False

    def _trusted_address(self, source: str) -> bool:
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(address in net for net in self._trusted)

    def _ban(self, source: str, reason: str, now: float, seconds: float | None = None) -> None:
        bans = self._bans
        old = bans.pop(source, None)
        if len(bans) >= self.config.max_sources:
            oldest = next(iter(bans))
            self._in_store.discard(oldest)
            self._events.append(SourceUnbanned(oldest, bans.pop(oldest).dropped))
        seconds = self.config.ban_time if seconds is None else seconds
        until = now + seconds
        bans[source] = ban = _Ban(until)
        if old is not None:
            ban.dropped = old.dropped
        self._sources.pop(source, None)  # counted afresh once the ban is over
        self._events.append(SourceBanned(source, reason, until))
        if reason == SHARED:
            return
        self._in_store.discard(source)
        self.counters["sip_flood_bans"] += 1
        if self.shared is not None:
            try:
                self.shared.publish(source, seconds)
            except StorageError:
                self.counters["sip_flood_share_errors"] += 1
            else:
                self._in_store.add(source)
