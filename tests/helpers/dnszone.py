"""A tiny authoritative DNS server of the test's own, on loopback (dnspython's message API).

``Zone`` answers from a table ``(name, type) -> (ttl, [rdata text])`` and counts every
question; ``serve_zone`` runs one on a UDP socket in a thread for tests that start a real
``sipedge serve`` (asyncio tests can feed ``Zone.answer`` from a DatagramProtocol).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Iterator

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

ZoneTable = dict[tuple[str, str], tuple[int, list[str]]]


class Zone:
    """Answers from ``records``; a name not in it is NXDOMAIN, a missing type NODATA,
    both with the SOA of ``origin`` (RFC 2308 negative caching)."""

    def __init__(self, records: ZoneTable, origin: str = "example.com") -> None:
        self.records = records
        self.origin = origin
        self.silent = False
        self.queries: Counter[tuple[str, str]] = Counter()

    @property
    def total(self) -> int:
        return sum(self.queries.values())

    def answer(self, data: bytes) -> bytes | None:
        """The response to one query datagram; None for garbage or when ``silent``."""
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        if not query.question:
            return None
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        self.queries[(name, rtype)] += 1
        if self.silent:
            return None
        response = dns.message.make_response(query)
        found = self.records.get((name, rtype))
        if found is not None:
            ttl, texts = found
            response.answer.append(dns.rrset.from_text(question.name, ttl, "IN", rtype, *texts))
        else:
            if all(n != name for n, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            soa = f"ns.{self.origin}. admin.{self.origin}. 1 3600 600 86400 30"
            response.authority.append(dns.rrset.from_text(f"{self.origin}.", 300, "IN", "SOA", soa))
        wire: bytes = response.to_wire()
        return wire


@contextlib.contextmanager
def serve_zone(zone: Zone, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve ``zone`` on a UDP port of ``host`` until the block ends; yields the port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = zone.answer(data)
            if reply is not None:
                sock.sendto(reply, addr)

    thread = threading.Thread(target=run, name="dns-zone", daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        sock.close()
