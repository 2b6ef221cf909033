"""The DNS adapter: dnspython's asyncio resolver driving the RFC 3263 plan of
``dns/naptr_srv.py``, with the TTL cache of ``dns/cache.py``.

``await DnsResolver(config).resolve(uri)`` returns the targets to try in turn; an empty
list when nothing resolves. DNS failures never raise: they are counted (``stats()``) and
give fewer targets. The proxy core asks for a branch's next hop by name
(``ProxyCore.resolve_jobs`` → :meth:`DnsResolver.resolve_next_hop`) and keeps the other
addresses as the branch's failover list (tried on a timeout, a send error or a 503, in
the same transaction: docs/dns.md, "Failover"); :meth:`DnsResolver.send_failover` serves
the sends outside a transaction (next address on a send error only).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace

import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.rdatatype
import dns.resolver

from .._common.addr import is_ip
from .._common.clock import Clock
from ..config.dns import DnsConfig, parse_nameserver
from ..dns import naptr_srv
from ..dns.cache import TtlCache
from ..dns.hosts import HostsTable, parse_hosts
from ..dns.naptr_srv import Naptr, Query, Srv
from ..errors import ParseError
from ..proxy import forwarding
from ..sip import message
from ..sip.flow import Target
from ..sip.uri import SipUri

log = logging.getLogger("sipedge.dns")

Records = tuple[object, ...]


def _soa_ttl(response: dns.message.Message | None) -> float | None:
    """RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM)."""
    if response is None:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return None


def _next_hop(data: bytes) -> SipUri | None:
    """The URI a serialized request is sent towards, or None (a response, or unparsable)."""
    try:
        msg = message.parse(data)
        if not isinstance(msg, message.Request):
            return None
        return forwarding.next_hop(msg)
    except ParseError:
        return None


def _convert(rtype: str, answer: dns.resolver.Answer) -> Records:
    out: list[object] = []
    rrset = answer.rrset
    if rrset is None:
        return ()
    for rd in rrset:
        if rtype == "NAPTR":
            out.append(
                Naptr(
                    rd.order,
                    rd.preference,
                    rd.flags.decode("ascii", "replace"),
                    rd.service.decode("ascii", "replace"),
                    rd.replacement.to_text(omit_final_dot=True),
                    rd.regexp.decode("ascii", "replace"),
                )
            )
        elif rtype == "SRV":
            out.append(Srv(rd.priority, rd.weight, rd.port, rd.target.to_text(omit_final_dot=True)))
        else:
            out.append(str(rd.address))
    return tuple(out)


class DnsResolver:
    """RFC 3263 next-hop resolution with cache, in-flight sharing and counters."""

    def __init__(
        self,
        config: DnsConfig | None = None,
        *,
        transports: Collection[str] = ("udp", "tcp", "tls"),
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config = config or DnsConfig()
        self.transports = frozenset(transports)
        self.rng = rng or random.Random()
        self.clock = clock  # None: the event loop's clock
        self.families: tuple[str, ...] = ("A", "AAAA") if config.ipv6 else ("A",)
        self.cache: TtlCache[Query, Records] = TtlCache(
            config.cache_size,
            min_ttl=config.min_ttl,
            max_ttl=config.max_ttl,
            negative_min_ttl=min(config.min_ttl, config.negative_ttl),
            negative_ttl=config.negative_ttl,
        )
        self._resolver = self._make_resolver(config)
        self.hosts: HostsTable = self._read_hosts(config.hosts_file)
        self._inflight: dict[Query, asyncio.Task[Records | None]] = {}
        self._down: dict[Target, float] = {}
        self.marked_down = 0
        self.hosts_hits = 0
        self.send_failures = 0
        self.resolves = 0
        self.resolves_empty = 0
        self.queries = 0
        self.failures = 0
        self.timeouts = 0
        self.negative = 0

    @staticmethod
    def _make_resolver(config: DnsConfig) -> dns.asyncresolver.Resolver:
        if config.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            servers: list[str | dns.nameserver.Nameserver] = []
            for item in config.nameservers:
                parsed = parse_nameserver(item)
                if parsed is not None:
                    servers.append(dns.nameserver.Do53Nameserver(*parsed))
            resolver.nameservers = servers
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.exception.DNSException as exc:  # no /etc/resolv.conf: every lookup fails
                log.warning("dns: no system resolver configuration (%s); set [dns] nameservers", exc)
                resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.timeout = config.timeout
        resolver.lifetime = config.timeout
        resolver.cache = None
        return resolver

    @staticmethod
    def _read_hosts(path: str) -> HostsTable:
        if not path:
            return {}
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return parse_hosts(f.read(1 << 20))
        except OSError as exc:
            log.info("dns: hosts file %s not read: %s", path, exc)
            return {}

    async def resolve(self, uri: SipUri) -> list[Target]:
        """The targets for ``uri`` in the order to try them; [] when nothing resolves."""
        self.resolves += 1
        plan = naptr_srv.select(uri, rng=self.rng, transports=self.transports, families=self.families)
        return self._finish(await self._drive(plan))

    async def resolve_target(self, target: Target) -> list[Target]:
        """A/AAAA only, keeping the transport and port (when the URI is no longer known)."""
        self.resolves += 1
        plan = naptr_srv.select_host(target.transport, target.host, target.port, families=self.families)
        return self._finish(await self._drive(plan))

    async def resolve_send(self, data: bytes, target: Target) -> list[Target]:
        """Targets for a core ``Send`` to ``target`` whose host is a name (see
        :meth:`resolve_next_hop`; the URI is the next hop of the serialized request)."""
        return await self.resolve_next_hop(_next_hop(data), target)

    async def resolve_next_hop(self, uri: SipUri | None, target: Target) -> list[Target]:
        """The addresses of ``target``, a name, in the order to try them, each naming it
        (``Target.name``, for TLS). When ``target`` is what ``forwarding.uri_target``
        makes of ``uri`` (the request's top Route, else its Request-URI), that URI gets
        the full RFC 3263 treatment, kept to ``target.transport`` (the core has stamped
        the Via for it); otherwise (a routing-chosen destination) A/AAAA of ``target``.
        """
        name = target.host
        if uri is not None and forwarding.uri_target(uri) == Target(
            target.transport, target.host.lower(), target.port
        ):
            self.resolves += 1
            plan = naptr_srv.select(uri, rng=self.rng, transports=(target.transport,), families=self.families)
            targets = await self._drive(plan)
            if targets:
                return [replace(t, name=name) for t in self._finish(targets)]
            self.resolves -= 1  # counted again below
        return [replace(t, name=name) for t in await self.resolve_target(target)]

    async def send_failover(
        self, data: bytes, target: Target, send: Callable[[Target], Awaitable[object]]
    ) -> Target | None:
        """Send ``data`` to the first of ``target``'s resolved addresses that takes it.

        ``send(t)`` puts the bytes on the wire (e.g. ``transports.send_to(data, t,
        tls_name=target.host)``) and raises ``OSError``/``TimeoutError``/``ValueError`` when
        it cannot; each such target is marked down and the next one tried. Returns the
        target used, or None when none took it (nothing resolved, or all failed).
        """
        candidates = [target] if is_ip(target.host) else await self.resolve_send(data, target)
        for t in candidates:
            try:
                await send(t)
            except (OSError, TimeoutError, ValueError) as exc:
                log.info("dns: send to %s:%s:%d failed (%s), trying the next target", t.transport, t.host, t.port, exc)
                self.send_failed(t)
                continue
            return t
        return None

    def send_failed(self, target: Target) -> None:
        """A send to ``target``, an address of a name, failed (the next one is tried)."""
        self.send_failures += 1
        self.mark_down(target)

    def mark_down(self, target: Target) -> None:
        """A send to ``target`` failed: later answers list it last for ``down_time``."""
        if self.config.down_time > 0:
            if len(self._down) >= self.config.cache_size:
                self._down.clear()
            self._down[target] = self._now() + self.config.down_time
            self.marked_down += 1

    def _now(self) -> float:
        return self.clock.monotonic() if self.clock is not None else asyncio.get_running_loop().time()

    def _finish(self, targets: list[Target]) -> list[Target]:
        if not targets:
            self.resolves_empty += 1
        elif self._down:
            now = self._now()
            for t in [t for t, until in self._down.items() if until <= now]:
                del self._down[t]
            if any(t in self._down for t in targets):
                targets = [t for t in targets if t not in self._down] + [t for t in targets if t in self._down]
        return targets

    async def _drive(self, plan: naptr_srv.Plan) -> list[Target]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout
        try:
            async with asyncio.timeout(self.config.timeout + 0.5):
                batch = next(plan)
                while True:
                    results = await asyncio.gather(*(self._lookup(q, deadline) for q in batch))
                    batch = plan.send(dict(zip(batch, results, strict=True)))
        except StopIteration as stop:
            result: list[Target] = stop.value
            return result
        except TimeoutError:
            self.timeouts += 1
            return []
        finally:
            plan.close()

    async def _lookup(self, q: Query, deadline: float) -> Records | None:
        if self.hosts and q.rtype in ("A", "AAAA"):
            local = self.hosts.get((q.name, q.rtype))
            other = (q.name, "AAAA" if q.rtype == "A" else "A")
            if local is not None or other in self.hosts:  # known there: DNS is not asked
                self.hosts_hits += 1
                return local or ()
        hit = self.cache.get(q, self._now())
        if hit is not None:
            return hit[0]
        task = self._inflight.get(q)
        if task is None:
            task = asyncio.create_task(self._query(q, deadline))
            self._inflight[q] = task
            task.add_done_callback(lambda _t: self._inflight.pop(q, None))
        return await asyncio.shield(task)

    async def _query(self, q: Query, deadline: float) -> Records | None:
        loop = asyncio.get_running_loop()
        lifetime = max(0.05, deadline - loop.time())
        self.queries += 1
        try:
            answer = await self._resolver.resolve(
                q.name, q.rtype, raise_on_no_answer=False, search=False, lifetime=lifetime
            )
        except dns.resolver.NXDOMAIN as exc:
            self.negative += 1
            responses = getattr(exc, "kwargs", {}).get("responses") or {}
            response = next(iter(responses.values()), None)
            self.cache.put_negative(q, (), self._now(), _soa_ttl(response))
            return ()
        except dns.exception.Timeout:
            self.timeouts += 1
            log.info("dns: %s %s timed out", q.rtype, q.name)
            return None
        except dns.exception.DNSException as exc:  # SERVFAIL, no servers, bad name, ...
            self.failures += 1
            log.info("dns: %s %s failed: %s", q.rtype, q.name, exc)
            return None
        except OSError as exc:
            self.failures += 1
            log.info("dns: %s %s failed: %s", q.rtype, q.name, exc)
            return None
        now = self._now()
        if answer.rrset is None:
            self.negative += 1
            self.cache.put_negative(q, (), now, _soa_ttl(answer.response))
            return ()
        try:
            records = _convert(q.rtype, answer)
        except (AttributeError, UnicodeError, ValueError) as exc:
            self.failures += 1
            log.info("dns: %s %s: unusable answer: %s", q.rtype, q.name, exc)
            return None
        self.cache.put(q, records, float(answer.rrset.ttl), now)
        return records

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {
            "dns_resolves": self.resolves,
            "dns_resolves_empty": self.resolves_empty,
            "dns_queries": self.queries,
            "dns_failures": self.failures,
            "dns_timeouts": self.timeouts,
            "dns_negative_answers": self.negative,
            "dns_inflight": len(self._inflight),
            "dns_targets_marked_down": self.marked_down,
            "dns_targets_down": len(self._down),
            "dns_hosts_file_hits": self.hosts_hits,
            "dns_send_failovers": self.send_failures,
        }
        out.update(self.cache.stats())
        return out
