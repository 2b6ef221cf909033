"""DnsResolver end to end against a tiny authoritative DNS server of our own on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from helpers.dnszone import Zone, ZoneTable
from sipedge._common.clock import FakeClock
from sipedge.config.dns import DnsConfig
from sipedge.server.dns import DnsResolver
from sipedge.sip.flow import Target
from sipedge.sip.uri import SipUri

ZONE: ZoneTable = {
    ("example.com", "NAPTR"): (300, [
        '10 50 "s" "SIP+D2T" "" _sip._tcp.example.com.',
        '20 50 "s" "SIP+D2U" "" _sip._udp.example.com.',
        '5 50 "s" "SIP+D2X" "" _sip._sctp.example.com.',
    ]),
    ("_sip._tcp.example.com", "SRV"): (300, [
        "20 0 5070 backup.example.com.",
        "10 0 5060 primary.example.com.",
    ]),
    ("_sip._udp.example.com", "SRV"): (300, ["10 0 5062 primary.example.com."]),
    ("primary.example.com", "A"): (300, ["127.0.0.10"]),
    ("primary.example.com", "AAAA"): (300, ["::1"]),
    ("backup.example.com", "A"): (300, ["127.0.0.20"]),
    ("plain.example.com", "A"): (300, ["127.0.0.30"]),
}


class ZoneServer(asyncio.DatagramProtocol):
    """helpers.dnszone.Zone on an asyncio UDP endpoint of the test's loop."""

    def __init__(self, records: ZoneTable) -> None:
        self.zone = Zone(records)
        self.queries = self.zone.queries
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.zone.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    @property
    def silent(self) -> bool:
        return self.zone.silent

    @silent.setter
    def silent(self, value: bool) -> None:
        self.zone.silent = value

    @property
    def total(self) -> int:
        return self.zone.total


@pytest.fixture
async def server() -> AsyncIterator[tuple[ZoneServer, int]]:
    loop = asyncio.get_running_loop()
    proto = ZoneServer(ZONE)
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    yield proto, port
    transport.close()


def resolver(port: int, clock: FakeClock | None = None, **kw: object) -> DnsResolver:
    cfg = DnsConfig(nameservers=[f"127.0.0.1:{port}"], **{"timeout": 2.0, "hosts_file": "", **kw})  # type: ignore[arg-type]
    return DnsResolver(cfg, transports=("udp", "tcp", "tls"), rng=random.Random(7), clock=clock)


async def test_naptr_srv_a_chain_in_failover_order(server: tuple[ZoneServer, int]) -> None:
    zs, port = server
    r = resolver(port)
    targets = await asyncio.wait_for(r.resolve(SipUri.parse("sip:bob@example.com")), 5)
    assert targets == [
        Target("tcp", "127.0.0.10", 5060),
        Target("tcp", "::1", 5060),
        Target("tcp", "127.0.0.20", 5070),  # priority 20: tried after the priority-10 host
        Target("udp", "127.0.0.10", 5062),
        Target("udp", "::1", 5062),
    ]
    assert zs.queries[("example.com", "NAPTR")] == 1
    assert zs.queries[("_sip._sctp.example.com", "SRV")] == 0
    assert zs.queries[("primary.example.com", "A")] == 1  # one lookup for both SRV records
    s = r.stats()
    assert s["dns_failures"] == 0 and s["dns_resolves"] == 1


async def test_repeat_is_served_from_cache(server: tuple[ZoneServer, int]) -> None:
    zs, port = server
    r = resolver(port)
    first = await asyncio.wait_for(r.resolve(SipUri.parse("sip:bob@example.com")), 5)
    sent = zs.total
    second = await asyncio.wait_for(r.resolve(SipUri.parse("sip:alice@example.com")), 5)
    assert set(second) == set(first)
    assert zs.total == sent
    s = r.stats()
    assert s["dns_cache_hits"] >= 5 and s["dns_queries"] == sent


async def test_concurrent_lookups_share_queries(server: tuple[ZoneServer, int]) -> None:
    zs, port = server
    r = resolver(port)
    uri = SipUri.parse("sip:bob@example.com")
    results = await asyncio.wait_for(asyncio.gather(*(r.resolve(uri) for _ in range(5))), 5)
    assert all(len(res) == 5 for res in results)
    assert max(zs.queries.values()) == 1


async def test_explicit_port_and_transport_shortcuts(server: tuple[ZoneServer, int]) -> None:
    zs, port = server
    r = resolver(port, ipv6=False)
    targets = await asyncio.wait_for(r.resolve(SipUri.parse("sip:plain.example.com:5099")), 5)
    assert targets == [Target("udp", "127.0.0.30", 5099)]
    assert set(zs.queries) == {("plain.example.com", "A")}
    targets = await asyncio.wait_for(r.resolve(SipUri.parse("sip:example.com;transport=tcp")), 5)
    assert targets == [Target("tcp", "127.0.0.10", 5060), Target("tcp", "127.0.0.20", 5070)]
    assert zs.queries[("example.com", "NAPTR")] == 0
    assert await r.resolve_target(Target("tls", "backup.example.com", 5061)) == [Target("tls", "127.0.0.20", 5061)]


async def test_nxdomain_is_cached_negatively(server: tuple[ZoneServer, int]) -> None:
    zs, port = server
    r = resolver(port)
    uri = SipUri.parse("sip:bob@nx.example.com")
    assert await asyncio.wait_for(r.resolve(uri), 5) == []
    sent = zs.total
    assert sent >= 4  # NAPTR, 3 SRV, A, AAAA
    assert await asyncio.wait_for(r.resolve(uri), 5) == []
    assert zs.total == sent
    s = r.stats()
    assert s["dns_negative_answers"] == sent and s["dns_cache_negative_hits"] == sent
    assert s["dns_resolves_empty"] == 2 and s["dns_failures"] == 0
    # the negative TTL comes from the SOA (30 s), within the configured ceiling
    left = r.cache.ttl_left(next(iter(r.cache._entries)), asyncio.get_running_loop().time())
    assert left is not None and 25 < left <= 30


async def test_silent_server_times_out_to_empty_list(server: tuple[ZoneServer, int]) -> None:
    zs, port = server
    zs.silent = True
    r = resolver(port, timeout=0.4)
    start = time.monotonic()
    targets = await asyncio.wait_for(r.resolve(SipUri.parse("sip:bob@example.com")), 5)
    assert targets == []
    assert time.monotonic() - start < 2.0
    s = r.stats()
    assert s["dns_timeouts"] >= 1 and s["dns_cache_entries"] == 0
    assert zs.total >= 1


async def test_no_server_listening_is_a_counted_failure() -> None:
    r = resolver(9, timeout=0.3)  # discard port on loopback: nothing answers
    assert await asyncio.wait_for(r.resolve(SipUri.parse("sip:bob@example.com")), 5) == []
    assert r.stats()["dns_resolves_empty"] == 1


def invite(ruri: str, route: str = "") -> bytes:
    extra = f"Route: <{route}>\r\n" if route else ""
    return (
        f"INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx\r\nMax-Forwards: 70\r\n"
        f"From: <sip:a@example.org>;tag=1\r\nTo: <{ruri}>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_resolve_send_keeps_the_cores_transport(server: tuple[ZoneServer, int]) -> None:
    zs, port = server
    r = resolver(port, ipv6=False)
    # the core derived udp:example.com:5060 from the R-URI: NAPTR/SRV kept to UDP
    got = await asyncio.wait_for(r.resolve_send(invite("sip:bob@example.com"), Target("udp", "example.com", 5060)), 5)
    assert got == [Target("udp", "127.0.0.10", 5062)]
    # ... and via the top Route, with transport=tcp
    data = invite("sip:bob@elsewhere.invalid", "sip:example.com;transport=tcp;lr")
    got = await asyncio.wait_for(r.resolve_send(data, Target("tcp", "example.com", 5060)), 5)
    assert got == [Target("tcp", "127.0.0.10", 5060), Target("tcp", "127.0.0.20", 5070)]
    # a destination the URI does not lead to (routing chose it): A/AAAA only
    got = await asyncio.wait_for(r.resolve_send(invite("sip:bob@example.com"), Target("tcp", "plain.example.com", 5080)), 5)
    assert got == [Target("tcp", "127.0.0.30", 5080)]
    # sips with transport=ws: the core says ws, the selection wss; the target's own A/AAAA
    got = await r.resolve_send(invite("sips:bob@plain.example.com;transport=ws"), Target("ws", "plain.example.com", 80))
    assert got == [Target("ws", "127.0.0.30", 80)]
    # a response: A/AAAA only
    resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP plain.example.com;branch=z9hG4bKy\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    assert await r.resolve_send(resp, Target("udp", "plain.example.com", 5060)) == [Target("udp", "127.0.0.30", 5060)]


async def test_marked_down_targets_are_tried_last(server: tuple[ZoneServer, int]) -> None:
    _, port = server
    clock = FakeClock()
    r = resolver(port, clock, ipv6=False, down_time=30)
    uri = SipUri.parse("sip:bob@example.com;transport=tcp")
    first = await asyncio.wait_for(r.resolve(uri), 5)
    assert first == [Target("tcp", "127.0.0.10", 5060), Target("tcp", "127.0.0.20", 5070)]
    r.mark_down(first[0])
    assert await r.resolve(uri) == [first[1], first[0]]
    assert r.stats()["dns_targets_marked_down"] == 1
    clock.advance(30)
    assert await r.resolve(uri) == first
    assert r.stats()["dns_targets_down"] == 0


async def test_cache_expires_with_the_ttl(server: tuple[ZoneServer, int]) -> None:
    zs, port = server
    clock = FakeClock()
    r = resolver(port, clock, ipv6=False, min_ttl=0)
    uri = SipUri.parse("sip:plain.example.com:5060")
    assert await r.resolve(uri) == [Target("udp", "127.0.0.30", 5060)]
    clock.advance(299)
    assert await r.resolve(uri) == [Target("udp", "127.0.0.30", 5060)]
    assert zs.queries[("plain.example.com", "A")] == 1
    clock.advance(1)  # TTL 300 s is over
    assert await r.resolve(uri) == [Target("udp", "127.0.0.30", 5060)]
    assert zs.queries[("plain.example.com", "A")] == 2


async def test_hosts_file_answers_before_dns(server: tuple[ZoneServer, int], tmp_path: Path) -> None:
    zs, port = server
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n# x\n127.0.0.77 Plain.Example.Com pbx\nbad line\n")
    r = resolver(port, hosts_file=str(hosts))
    assert await r.resolve(SipUri.parse("sip:pbx:5080")) == [Target("udp", "127.0.0.77", 5080)]
    assert await r.resolve(SipUri.parse("sip:localhost:5060;transport=tcp")) == [
        Target("tcp", "127.0.0.1", 5060),
        Target("tcp", "::1", 5060),
    ]
    assert zs.total == 0
    assert r.stats()["dns_hosts_file_hits"] == 4
    r2 = resolver(port, hosts_file=str(tmp_path / "missing"))
    assert r2.hosts == {}


async def test_send_failover_skips_a_refusing_server() -> None:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[bytes] = loop.create_future()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65535)
        if not received.done():
            received.set_result(data)
        writer.close()

    live = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    live_port = live.sockets[0].getsockname()[1]
    dead_port = free_tcp_port()
    zone = {
        ("fo.example.com", "NAPTR"): (60, ['10 10 "s" "SIP+D2T" "" _sip._tcp.fo.example.com.']),
        ("_sip._tcp.fo.example.com", "SRV"): (60, [
            f"10 0 {dead_port} dead.fo.example.com.",
            f"20 0 {live_port} live.fo.example.com.",
        ]),
        ("dead.fo.example.com", "A"): (60, ["127.0.0.1"]),
        ("live.fo.example.com", "A"): (60, ["127.0.0.1"]),
    }
    proto = ZoneServer(zone)
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
    tried: list[Target] = []

    async def send(t: Target) -> None:
        tried.append(t)
        _, writer = await asyncio.wait_for(asyncio.open_connection(t.host, t.port), 2)
        writer.write(data)
        await writer.drain()
        writer.close()

    try:
        r = resolver(transport.get_extra_info("sockname")[1], ipv6=False)
        data = invite("sip:bob@fo.example.com;transport=tcp")
        used = await asyncio.wait_for(r.send_failover(data, Target("tcp", "fo.example.com", 5060), send), 5)
        assert used == Target("tcp", "127.0.0.1", live_port)
        assert tried == [Target("tcp", "127.0.0.1", dead_port), used]
        assert await asyncio.wait_for(received, 2) == data
        s = r.stats()
        assert s["dns_send_failovers"] == 1 and s["dns_targets_down"] == 1
        # the next request goes to the live server first
        tried.clear()
        assert await asyncio.wait_for(r.send_failover(data, Target("tcp", "fo.example.com", 5060), send), 5) == used
        assert tried == [used]
        # nothing resolves: None, nothing tried
        tried.clear()
        assert await r.send_failover(data, Target("tcp", "nx.fo.example.com", 5060), send) is None
        assert tried == []
    finally:
        transport.close()
        live.close()
        await live.wait_closed()


def free_tcp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port
