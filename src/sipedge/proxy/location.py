"""The location service (RFC 3261 §10) and subscriber model: values and interfaces, no I/O.

A :class:`Binding` ties an address-of-record to one registered Contact. Stores implement
:class:`LocationStore` (in memory here; SQLite, PostgreSQL, Redis in ``store/``) and
:class:`SubscriberStore` (users with their HA1 hashes, never a password).

Times: ``expires_at`` and every ``now`` are wall-clock epoch seconds, so bindings survive a
restart and nodes sharing a store agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..errors import Error, ParseError
from ..sip.auth import ha1 as digest_ha1
from ..sip.uri import SipUri

SUBSCRIBER_ALGORITHMS = ("MD5", "SHA-256")
"""The HA1 variants kept for every subscriber (their -sess forms reuse them)."""


@dataclass(frozen=True, slots=True)
class Binding:
    aor: str  # normalized "sip:user@domain" (scheme sip, domain lowercased, no params)
    contact: str  # Contact URI exactly as registered (no header params)
    expires_at: float  # wall-clock epoch seconds
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    received: str = ""  # source of the REGISTER as a SIP URI ("" = same as contact)
    path: tuple[str, ...] = ()  # Path header values (RFC 3327), in order
    instance: str = ""  # +sip.instance (RFC 5626)
    reg_id: int = 0
    flow: str = ""  # opaque token of the flow (connection) the REGISTER came on
    user_agent: str = ""
    socket: str = ""  # local listener it came in on, e.g. "udp:127.0.0.1:5060"

    def expires_in(self, now: float) -> int:
        """Whole seconds left (0 when expired), as a registrar's 200 OK lists them."""
        return max(0, int(self.expires_at - now + 0.5))

    def replaces(self, other: Binding) -> bool:
        """Does putting ``self`` replace ``other``? Same AoR and the same contact, or the
        same (+sip.instance, reg-id) when an instance is set (RFC 5626 §6)."""
        if self.aor != other.aor:
            return False
        if self.contact == other.contact:
            return True
        return bool(self.instance) and self.instance == other.instance and self.reg_id == other.reg_id

    def with_changes(self, **changes: object) -> Binding:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class LocationStore(Protocol):
    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings of ``aor``, highest q first, then newest first."""
        ...

    def put(self, binding: Binding) -> None:
        """Insert, or replace every binding ``binding.replaces``."""
        ...

    def remove(self, aor: str, contact: str) -> None: ...

    def remove_aor(self, aor: str) -> None: ...

    def purge_expired(self, now: float) -> int:
        """Drop expired bindings; returns how many."""
        ...

    def bindings(self, now: float) -> list[Binding]:
        """Every unexpired binding (keepalives, admin)."""
        ...

    def count(self, aor: str, now: float) -> int: ...

    def on_flow(self, flow: str) -> list[Binding]:
        """The bindings registered over the flow (connection) token ``flow``, without
        scanning the store: a closed WebSocket's are dropped this way."""
        ...


class FlowIndex:
    """Which (aor, contact) each flow token registered: the stores keep one beside their
    bindings so that a closed connection's bindings are found without a scan."""

    __slots__ = ("_by_flow",)

    def __init__(self) -> None:
        self._by_flow: dict[str, set[tuple[str, str]]] = {}

    def add(self, b: Binding) -> None:
        if b.flow:
            self._by_flow.setdefault(b.flow, set()).add((b.aor, b.contact))

    def discard(self, b: Binding) -> None:
        keys = self._by_flow.get(b.flow)
        if keys is not None:
            keys.discard((b.aor, b.contact))
            if not keys:
                del self._by_flow[b.flow]

    def find(self, flow: str, by_aor: dict[str, dict[str, tuple[int, Binding]]]) -> list[Binding]:
        out = []
        for aor, contact in self._by_flow.get(flow, ()):
            entry = by_aor.get(aor, {}).get(contact)
            if entry is not None and entry[1].flow == flow:
                out.append(entry[1])
        return out

    def clear(self) -> None:
        self._by_flow.clear()


class DuplicateSubscriber(Error):
    """``SubscriberStore.add`` of a user that already exists."""


class SubscriberStore(Protocol):
    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """HA1 of ``username@realm`` (the realm is the domain) for "MD5" or "SHA-256"."""
        ...

    def add(self, username: str, domain: str, password: str) -> None:
        """Store HA1 for MD5 and SHA-256 (never the password); DuplicateSubscriber if
        the user exists."""
        ...

    def delete(self, username: str, domain: str) -> bool: ...

    def set_password(self, username: str, domain: str, password: str) -> bool: ...

    def list(self, domain: str | None = None) -> list[tuple[str, str]]:
        """``(username, domain)`` pairs, sorted by domain then username."""
        ...

    def exists(self, username: str, domain: str) -> bool: ...


# -- helpers -------------------------------------------------------------------


def normalize_aor(uri: str | SipUri) -> str:
    """``sip:user@domain`` for a SIP/SIPS URI: scheme sip, host lowercased, no port or
    params (RFC 3261 §10.3 step 5). ParseError for other schemes."""
    u = SipUri.parse(uri) if isinstance(uri, str) else uri
    if u.scheme not in ("sip", "sips"):
        raise ParseError(f"not a SIP address-of-record: {u}", (404, "Not Found"))
    return u.aor


def parse_user_address(text: str) -> tuple[str, str]:
    """``user@domain`` (or ``sip:user@domain``) as ``(user, domain)``; ParseError if not."""
    s = text.strip()
    if not s.lower().startswith(("sip:", "sips:")):
        s = "sip:" + s
    try:
        u = SipUri.parse(s)
    except ParseError as exc:
        raise ParseError(f"{text!r} is not user@domain: {exc}") from exc
    if not u.user or u.password is not None or u.port is not None or u.params or u.headers:
        raise ParseError(f"{text!r} is not user@domain")
    return u.user, u.host.lower()


def order_bindings(bindings: Iterable[tuple[int, Binding]]) -> list[Binding]:
    """Sort ``(sequence, binding)`` pairs: q descending, then newest (highest
    sequence) first."""
    return [b for _, b in sorted(bindings, key=lambda sb: (-sb[1].q, -sb[0]))]


def subscriber_hashes(username: str, domain: str, password: str) -> dict[str, str]:
    """``{"MD5": ..., "SHA-256": ...}`` HA1 values with realm = domain."""
    return {alg: digest_ha1(username, domain, password, alg) for alg in SUBSCRIBER_ALGORITHMS}


# -- in-memory implementations -----------------------------------------------------


class MemoryLocationStore:
    """A :class:`LocationStore` in a dict (tests, single node without persistence)."""

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, tuple[int, Binding]]] = {}
        self._flows = FlowIndex()
        self._seq = 0

    def lookup(self, aor: str, now: float) -> list[Binding]:
        entries = self._by_aor.get(aor)
        if not entries:
            return []
        return order_bindings(sb for sb in entries.values() if sb[1].expires_at > now)

    def put(self, binding: Binding) -> None:
        entries = self._by_aor.setdefault(binding.aor, {})
        for contact in [c for c, (_, b) in entries.items() if binding.replaces(b) or c == binding.contact]:
            self._flows.discard(entries.pop(contact)[1])
        self._seq += 1
        entries[binding.contact] = (self._seq, binding)
        self._flows.add(binding)

    def remove(self, aor: str, contact: str) -> None:
        entries = self._by_aor.get(aor)
        if entries is not None:
            gone = entries.pop(contact, None)
            if gone is not None:
                self._flows.discard(gone[1])
            if not entries:
                del self._by_aor[aor]

    def remove_aor(self, aor: str) -> None:
        for _, b in self._by_aor.pop(aor, {}).values():
            self._flows.discard(b)

    def purge_expired(self, now: float) -> int:
        n = 0
        for aor in list(self._by_aor):
            entries = self._by_aor[aor]
            for contact in [c for c, (_, b) in entries.items() if b.expires_at <= now]:
                self._flows.discard(entries.pop(contact)[1])
                n += 1
            if not entries:
                del self._by_aor[aor]
        return n

    def on_flow(self, flow: str) -> list[Binding]:
        return self._flows.find(flow, self._by_aor)

    def bindings(self, now: float) -> list[Binding]:
        out: list[Binding] = []
        for aor in sorted(self._by_aor):
            out.extend(self.lookup(aor, now))
        return out

    def count(self, aor: str, now: float) -> int:
        entries = self._by_aor.get(aor)
        if not entries:
            return 0
        return sum(1 for _, b in entries.values() if b.expires_at > now)

    def stats(self) -> dict[str, int | float]:
        return {
            "location_aors": len(self._by_aor),
            "location_bindings": sum(len(e) for e in self._by_aor.values()),
        }


class MemorySubscriberStore:
    """A :class:`SubscriberStore` in a dict (tests, embedded demos)."""

    def __init__(self) -> None:
        self._users: dict[tuple[str, str], dict[str, str]] = {}

    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        hashes = self._users.get((username, realm.lower()))
        return None if hashes is None else hashes.get(algorithm)

    def add(self, username: str, domain: str, password: str) -> None:
        key = (username, domain.lower())
        if key in self._users:
            raise DuplicateSubscriber(f"user {username}@{key[1]} already exists")
        self._users[key] = subscriber_hashes(username, key[1], password)

    def delete(self, username: str, domain: str) -> bool:
        return self._users.pop((username, domain.lower()), None) is not None

    def set_password(self, username: str, domain: str, password: str) -> bool:
        key = (username, domain.lower())
        if key not in self._users:
            return False
        self._users[key] = subscriber_hashes(username, key[1], password)
        return True

    def list(self, domain: str | None = None) -> list[tuple[str, str]]:
        d = domain.lower() if domain is not None else None
        return sorted(
            ((u, dom) for u, dom in self._users if d is None or dom == d), key=lambda ud: (ud[1], ud[0])
        )

    def exists(self, username: str, domain: str) -> bool:
        return (username, domain.lower()) in self._users


__all__ = [
    "SUBSCRIBER_ALGORITHMS",
    "Binding",
    "DuplicateSubscriber",
    "LocationStore",
    "MemoryLocationStore",
    "MemorySubscriberStore",
    "SubscriberStore",
    "normalize_aor",
    "order_bindings",
    "parse_user_address",
    "subscriber_hashes",
]
