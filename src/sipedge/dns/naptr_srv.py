"""RFC 3263 §4 target selection for a SIP URI, sans-I/O.

:func:`select` is a generator: it yields batches of :class:`Query` ("NAPTR for X", "SRV for
Y", "A for Z"), is sent back a mapping of each query to its records (``None`` or an empty
sequence when the lookup failed or the name has none), and returns the ordered list of
:class:`~sipedge.sip.flow.Target` to try in turn. :func:`drive` runs it against a plain
function, which is how the tests feed canned answers; ``server/dns.py`` drives it with
dnspython.

The steps (RFC 3263 §4.1/§4.2, RFC 7118 for WebSocket):

- numeric host: used as is (port given or the transport's default);
- explicit port: A/AAAA of the host only;
- ``transport`` parameter: SRV for that transport, else A/AAAA with the default port;
- otherwise NAPTR, keeping the services we support (only ``SIPS+`` ones for ``sips:``),
  ordered by order then preference, each followed by its SRV; when NAPTR leads nowhere,
  SRV for each supported transport in our preference order; when that too is empty,
  A/AAAA of the host with the scheme's default transport and port.

SRV records are ordered as RFC 2782 says: by priority, then a weighted random draw (the
``random.Random`` is injected). Answers are peer data: records of the wrong kind, bad
addresses, port 0 and the root target are skipped, never raised on.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .._common.addr import is_ip, strip_brackets
from ..sip.flow import Target
from ..sip.uri import SipUri

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}
TRANSPORTS = frozenset(DEFAULT_PORTS)

NAPTR_SERVICES = {
    "SIP+D2U": "udp",
    "SIP+D2T": "tcp",
    "SIPS+D2T": "tls",
    "SIP+D2W": "ws",
    "SIPS+D2W": "wss",
}
SECURE_SERVICES = frozenset({"SIPS+D2T", "SIPS+D2W"})

SRV_PREFIXES = {
    "udp": "_sip._udp",
    "tcp": "_sip._tcp",
    "tls": "_sips._tcp",
    "ws": "_sip._ws",
    "wss": "_sips._ws",
}

# transports tried by SRV when there is no usable NAPTR (RFC 3263 §4.1: the client's own
# preference); WebSocket is left out, browsers are not SIP servers
SRV_FALLBACK = {"sip": ("udp", "tcp", "tls"), "sips": ("tls",)}

MAX_RECORDS = 32  # records of one answer looked at
MAX_HOSTS = 8  # distinct SRV targets whose addresses are looked up
MAX_TARGETS = 16  # length of the returned list


@dataclass(frozen=True, slots=True)
class Query:
    name: str  # lowercase, no trailing dot
    rtype: str  # "NAPTR" | "SRV" | "A" | "AAAA"


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str
    regexp: str = ""


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


Record = Naptr | Srv | str  # str: an address of an A or AAAA answer
Answers = Mapping[Query, Sequence[object] | None]
Plan = Generator[list[Query], Answers, list[Target]]


def normalize_name(name: object) -> str | None:
    """A DNS name as a query key (lowercase, no trailing dot), or None if it is not one."""
    if not isinstance(name, str):
        return None
    name = name.strip().rstrip(".").lower()
    if not name or len(name) > 253 or any(c in name for c in " \t\r\n/\\@[]"):
        return None
    labels = name.split(".")
    if any(not label or len(label) > 63 for label in labels):
        return None
    return name


def _address(record: object, rtype: str) -> str | None:
    if not isinstance(record, str):
        return None
    try:
        ip = ipaddress.ip_address(record)
    except ValueError:
        return None
    if ip.version != (4 if rtype == "A" else 6):
        return None
    return str(ip)


def _int(value: object, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def order_srv(records: Iterable[object], rng: random.Random) -> list[Srv]:
    """RFC 2782 order: ascending priority; within one priority, repeated weighted draws
    (zero-weight records first, so they are picked only when the draw is 0)."""
    groups: dict[int, list[Srv]] = {}
    for r in list(records)[:MAX_RECORDS]:
        if not isinstance(r, Srv):
            continue
        prio = _int(r.priority, 0, 65535)
        weight = _int(r.weight, 0, 65535)
        if prio is None or weight is None:
            continue
        groups.setdefault(prio, []).append(r)
    out: list[Srv] = []
    for prio in sorted(groups):
        group = [r for r in groups[prio] if r.weight == 0] + [r for r in groups[prio] if r.weight > 0]
        while group:
            pick = rng.randint(0, sum(r.weight for r in group))
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out


def usable_naptrs(records: Iterable[object], secure: bool, transports: Collection[str]) -> list[tuple[str, str]]:
    """(transport, SRV name) pairs of the NAPTR records we can follow, best first."""
    keep: list[tuple[int, int, int, str, str]] = []
    for i, r in enumerate(list(records)[:MAX_RECORDS]):
        if not isinstance(r, Naptr) or not isinstance(r.flags, str) or not isinstance(r.service, str):
            continue
        order = _int(r.order, 0, 65535)
        pref = _int(r.preference, 0, 65535)
        service = r.service.upper()
        transport = NAPTR_SERVICES.get(service)
        name = normalize_name(r.replacement)
        if order is None or pref is None or transport is None or name is None:
            continue
        if r.flags.lower() != "s" or transport not in transports:
            continue
        if secure and service not in SECURE_SERVICES:
            continue
        keep.append((order, pref, i, transport, name))
    keep.sort()
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []
    for _, _, _, transport, name in keep:
        if (transport, name) not in seen:
            seen.add((transport, name))
            out.append((transport, name))
    return out


def _uri_transport(uri: SipUri, secure: bool) -> str | None:
    t = uri.params.get("transport")
    if not t:
        return None
    t = t.lower()
    if secure:
        t = {"udp": "tls", "tcp": "tls", "ws": "wss"}.get(t, t)
    return t


def select(
    uri: SipUri,
    *,
    rng: random.Random,
    transports: Collection[str] = ("udp", "tcp", "tls"),
    families: Sequence[str] = ("A", "AAAA"),
    max_targets: int = MAX_TARGETS,
) -> Plan:
    """The RFC 3263 §4 plan for ``uri``: yields query batches, returns the targets."""
    supported = frozenset(transports) & TRANSPORTS
    scheme = uri.scheme.lower()
    if scheme not in SRV_FALLBACK:
        return []
    secure = scheme == "sips"
    default = "tls" if secure else "udp"
    transport = _uri_transport(uri, secure)
    host = strip_brackets(uri.host)
    port = uri.port if uri.port is not None and 0 < uri.port <= 65535 else None
    if is_ip(host):
        t = transport or default
        if t not in supported:
            return []
        try:
            ip = str(ipaddress.ip_address(host))
        except ValueError:
            return []
        return [Target(t, ip, port or DEFAULT_PORTS[t])]
    name = normalize_name(host)
    if name is None:
        return []
    fams = [f for f in families if f in ("A", "AAAA")]
    if port is not None:
        t = transport or default
        if t not in supported:
            return []
        return (yield from _addresses([(t, port, name)], fams, max_targets))
    if transport is not None:
        if transport not in supported:
            return []
        srv_name = f"{SRV_PREFIXES[transport]}.{name}"
        targets = yield from _srv_chain([(transport, srv_name)], rng, fams, max_targets)
        if targets:
            return targets
        return (yield from _addresses([(transport, DEFAULT_PORTS[transport], name)], fams, max_targets))
    answers = yield [Query(name, "NAPTR")]
    chain = usable_naptrs(answers.get(Query(name, "NAPTR")) or (), secure, supported)
    if chain:
        targets = yield from _srv_chain(chain, rng, fams, max_targets)
        if targets:
            return targets
    chain = [(t, f"{SRV_PREFIXES[t]}.{name}") for t in SRV_FALLBACK[scheme] if t in supported]
    if chain:
        targets = yield from _srv_chain(chain, rng, fams, max_targets)
        if targets:
            return targets
    for t in (default, *SRV_FALLBACK[scheme]):
        if t in supported:
            return (yield from _addresses([(t, DEFAULT_PORTS[t], name)], fams, max_targets))
    return []


def select_host(
    transport: str,
    host: str,
    port: int,
    *,
    families: Sequence[str] = ("A", "AAAA"),
    max_targets: int = MAX_TARGETS,
) -> Plan:
    """A/AAAA only for a known transport and port (a Target whose host is a name)."""
    host = strip_brackets(host)
    if transport not in TRANSPORTS or not 0 < port <= 65535:
        return []
    if is_ip(host):
        return [Target(transport, str(ipaddress.ip_address(host)), port)]
    name = normalize_name(host)
    if name is None:
        return []
    fams = [f for f in families if f in ("A", "AAAA")]
    return (yield from _addresses([(transport, port, name)], fams, max_targets))


def _srv_chain(
    chain: Sequence[tuple[str, str]], rng: random.Random, families: Sequence[str], max_targets: int
) -> Plan:
    """SRV for each (transport, name), in chain order, then addresses of their targets."""
    queries = list(dict.fromkeys(Query(srv_name, "SRV") for _, srv_name in chain))
    answers = yield queries
    hops: list[tuple[str, int, str]] = []
    for transport, srv_name in chain:
        for srv in order_srv(answers.get(Query(srv_name, "SRV")) or (), rng):
            port = _int(srv.port, 1, 65535)
            target = strip_brackets(srv.target) if isinstance(srv.target, str) else None
            if port is None or target is None:
                continue
            if is_ip(target):
                hops.append((transport, port, target))
                continue
            host = normalize_name(target)
            if host is not None:
                hops.append((transport, port, host))
    return (yield from _addresses(hops, families, max_targets))


def _addresses(hops: Sequence[tuple[str, int, str]], families: Sequence[str], max_targets: int) -> Plan:
    """Targets for (transport, port, host) hops in order, looking up A/AAAA of names."""
    names: list[str] = []
    for _, _, host in hops:
        if not is_ip(host) and host not in names and len(names) < MAX_HOSTS:
            names.append(host)
    answers: Answers = {}
    if names and families:
        answers = yield [Query(n, f) for n in names for f in families]
    out: list[Target] = []
    seen: set[Target] = set()
    for transport, port, host in hops:
        if is_ip(host):
            try:
                ips = [str(ipaddress.ip_address(host))]
            except ValueError:
                continue
        else:
            ips = []
            for f in families:
                for r in list(answers.get(Query(host, f)) or ())[:MAX_RECORDS]:
                    ip = _address(r, f)
                    if ip is not None:
                        ips.append(ip)
        for ip in ips:
            t = Target(transport, ip, port)
            if t not in seen:
                seen.add(t)
                out.append(t)
                if len(out) >= max_targets:
                    return out
    return out


def drive(plan: Plan, lookup: Callable[[Query], Sequence[object] | None]) -> list[Target]:
    """Run a plan synchronously, answering each query with ``lookup`` (tests, tools)."""
    try:
        batch = next(plan)
        while True:
            batch = plan.send({q: lookup(q) for q in batch})
    except StopIteration as stop:
        result: list[Target] = stop.value
        return result
