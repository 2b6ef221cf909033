"""aioice (an independent TURN client) against sipedge's TURN server on loopback.

Allocate, channel bind (which installs the permission), relay to a UDP echo peer and
back, CreatePermission, refresh, deallocate; over UDP and TCP; with long-term users from
the SQLite store and with TURN REST API credentials. Then bad input and denied peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

aioice_turn = pytest.importorskip("aioice.turn")
aioice_stun = pytest.importorskip("aioice.stun")

from sipedge.config.turn import TurnConfig  # noqa: E402
from sipedge.server.stun_turn import TurnService  # noqa: E402
from sipedge.store.turn_users import TurnUserStore  # noqa: E402
from sipedge.stun import attributes as at  # noqa: E402
from sipedge.stun import message as sm  # noqa: E402
from sipedge.turn.auth import rest_password  # noqa: E402

pytestmark = pytest.mark.timeout(30)
REALM = "sipedge.test"
SECRET = "rest-secret"


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


class Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)


async def start_service(tmp_path: Path, allow_loopback: bool = True) -> tuple[TurnService, TurnUserStore]:
    store = TurnUserStore(tmp_path / "turn.db")
    store.add("alice", REALM, "wonderland")
    cfg = TurnConfig(
        enabled=True,
        listen=["udp:127.0.0.1:0", "tcp:127.0.0.1:0"],
        realm=REALM,
        relay_ipv4="127.0.0.1",
        port_min=50000,
        port_max=59999,
        secrets=["old-secret", SECRET],
        allow_peers=["127.0.0.0/8"] if allow_loopback else [],
    )
    svc = TurnService.create(cfg, users=store)
    await svc.start()
    return svc, store


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[TurnService]:
    svc, store = await start_service(tmp_path)
    yield svc
    await svc.stop()
    store.close()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, int]]:
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    yield t.get_extra_info("sockname")[:2]
    t.close()


async def wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def rest_creds() -> tuple[str, str]:
    user = f"{int(time.time()) + 600}:webapp-user"
    return user, rest_password(SECRET, user)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("creds", ["long-term", "rest"])
async def test_relay_echo(service: TurnService, echo: tuple[str, int], transport: str, creds: str) -> None:
    user, password = ("alice", "wonderland") if creds == "long-term" else rest_creds()
    server = service.address(transport)
    turn, proto = await asyncio.wait_for(
        aioice_turn.create_turn_endpoint(
            Receiver, server_addr=server, username=user, password=password, transport=transport
        ),
        5,
    )
    try:
        relayed = turn.get_extra_info("sockname")
        assert relayed[0] == "127.0.0.1" and 50000 <= relayed[1] <= 59999
        assert service.stats()["turn_allocations"] == 1
        for i in range(20):
            turn.sendto(b"ping %d" % i, echo)
        got = set()
        for _ in range(20):
            data, addr = await asyncio.wait_for(proto.queue.get(), 5)
            assert addr == echo
            got.add(data)
        assert got == {b"ping %d" % i for i in range(20)}
        st = service.stats()
        assert st["turn_channels"] == 1 and st["turn_permissions"] == 1
        assert st["turn_packets_to_peer"] == 20 and st["turn_packets_from_peer"] == 20

        inner = turn._TurnTransport__inner_protocol
        # CreatePermission for a second peer, then Refresh.
        req = aioice_stun.Message(
            message_method=aioice_stun.Method.CREATE_PERMISSION,
            message_class=aioice_stun.Class.REQUEST,
        )
        req.attributes["XOR-PEER-ADDRESS"] = ("127.0.0.2", 9)
        await asyncio.wait_for(inner.request_with_retry(req), 5)
        assert service.stats()["turn_permissions"] == 2
        ref = aioice_stun.Message(
            message_method=aioice_stun.Method.REFRESH, message_class=aioice_stun.Class.REQUEST
        )
        ref.attributes["LIFETIME"] = 1200
        resp, _ = await asyncio.wait_for(inner.request_with_retry(ref), 5)
        assert resp.attributes["LIFETIME"] == 1200
    finally:
        turn.close()
    await wait_for(lambda: service.stats()["turn_allocations"] == 0)
    assert service.stats()["turn_relay_ports_used"] == 0


async def test_wrong_password_is_refused(service: TurnService) -> None:
    with pytest.raises(aioice_stun.TransactionFailed) as ei:
        await asyncio.wait_for(
            aioice_turn.create_turn_endpoint(
                Receiver, server_addr=service.address("udp"), username="alice", password="nope"
            ),
            5,
        )
    assert ei.value.response.attributes["ERROR-CODE"][0] == 401
    assert service.stats()["turn_auth_failures"] >= 1


async def test_denied_peer_and_bad_input(tmp_path: Path, echo: tuple[str, int]) -> None:
    svc, store = await start_service(tmp_path, allow_loopback=False)
    try:
        turn, proto = await asyncio.wait_for(
            aioice_turn.create_turn_endpoint(
                Receiver, server_addr=svc.address("udp"), username="alice", password="wonderland"
            ),
            5,
        )
        turn.sendto(b"to loopback", echo)
        exc = await asyncio.wait_for(proto.errors.get(), 5)
        assert isinstance(exc, aioice_stun.TransactionFailed)
        assert exc.response.attributes["ERROR-CODE"][0] == 403
        assert svc.stats()["turn_denied_peers"] == 1

        # Garbage, truncated and oversized datagrams; ChannelData for an unbound channel.
        host, port = svc.address("udp")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            binding = sm.request(sm.Method.BINDING, b"\x01" * 12).serialize()
            s.sendto(b"\xff" * 100, (host, port))
            s.sendto(b"\x40\x00\x00\x04ab", (host, port))
            s.sendto(b"\x40\x01\x00\x02ab", (host, port))
            oversized = sm.request(sm.Method.BINDING, b"\x03" * 12).serialize() + b"\x00" * 2000
            s.sendto(oversized, (host, port))
            s.sendto(binding[:10], (host, port))
            truncated = sm.request(sm.Method.ALLOCATE, b"\x02" * 12, [at.Software("x" * 40)]).serialize()[:-8]
            s.sendto(truncated, (host, port))
            for tid in (b"\x03" * 12, b"\x02" * 12):
                r = sm.Message.parse(await asyncio.wait_for(loop.sock_recv(s, 2048), 3))
                assert r.error_code == 400 and r.transaction_id == tid
            # Still serving: a Binding request answers with our mapped address.
            s.sendto(binding, (host, port))
            r = sm.Message.parse(await asyncio.wait_for(loop.sock_recv(s, 2048), 3))
            assert r.get(at.XorMappedAddress) == at.XorMappedAddress("127.0.0.1", s.getsockname()[1])
        finally:
            s.close()
        st = svc.stats()
        assert st["turn_drops_malformed"] >= 2 and st["turn_drops_no_allocation"] >= 2
        assert st["turn_allocations"] == 1
        turn.close()
        await wait_for(lambda: svc.stats()["turn_allocations"] == 0)
    finally:
        await svc.stop()
        store.close()


async def test_tcp_close_frees_allocation(service: TurnService) -> None:
    turn, _ = await asyncio.wait_for(
        aioice_turn.create_turn_endpoint(
            Receiver, server_addr=service.address("tcp"), username="alice", password="wonderland",
            transport="tcp",
        ),
        5,
    )
    assert service.stats()["turn_allocations"] == 1
    inner = turn._TurnTransport__inner_protocol
    inner.refresh_task.cancel()
    inner.transport.close()  # drop the connection without deleting
    await wait_for(lambda: service.stats()["turn_allocations"] == 0)


async def test_tcp_garbage_closes_only_that_connection(service: TurnService) -> None:
    host, port = service.address("tcp")
    good_r, good_w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    bad_r, bad_w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    bad_w.write(b"\xff\xfe not STUN, not ChannelData")
    assert await asyncio.wait_for(bad_r.read(), 5) == b""  # closed by the server
    assert service.stats()["turn_stream_framing_errors"] == 1
    # A Binding request split in two writes still gets its answer on the other connection.
    req = sm.request(sm.Method.BINDING, b"\x05" * 12).serialize()
    good_w.write(req[:7])
    await good_w.drain()
    good_w.write(req[7:])
    head = await asyncio.wait_for(good_r.readexactly(20), 5)
    body = await asyncio.wait_for(good_r.readexactly(int.from_bytes(head[2:4], "big")), 5)
    r = sm.Message.parse(head + body)
    assert r.cls is sm.Class.SUCCESS and r.transaction_id == b"\x05" * 12
    good_w.close()
    bad_w.close()


async def test_idle_stream_without_allocation_is_closed() -> None:
    svc = TurnService.create(TurnConfig(listen=["tcp:127.0.0.1:0"], stream_idle_timeout=0.3, port_min=40000, port_max=40010))
    await svc.start()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(*svc.address("tcp")), 5)
        w.write(b"\x00\x01")  # half a header, then silence
        assert await asyncio.wait_for(r.read(), 5) == b""
        assert svc.stats()["turn_connections_idle_closed"] == 1
        w.close()
    finally:
        await svc.stop()


async def test_icmp_error_reported_in_data_indication(service: TurnService) -> None:
    """RFC 8656 §11.5: a port-unreachable from a peer comes back as a Data indication with
    an ICMP attribute (a raw client: aioice ignores ICMP)."""
    from sipedge.stun import integrity

    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.bind(("127.0.0.1", 0))
    server = service.address("udp")
    key = integrity.long_term_key("alice", REALM, "wonderland")

    async def ask(msg: sm.Message, signed: bool = True) -> sm.Message:
        s.sendto(msg.serialize(key if signed else None), server)
        return sm.Message.parse(await asyncio.wait_for(loop.sock_recv(s, 2048), 3))

    try:
        r = await ask(sm.request(sm.Method.ALLOCATE, b"\x01" * 12, [at.RequestedTransport(17)]), False)
        nonce = r.get(at.Nonce)
        assert nonce is not None
        auth = [at.Username("alice"), at.Realm(REALM), nonce]
        ok = await ask(sm.request(sm.Method.ALLOCATE, b"\x02" * 12, [at.RequestedTransport(17), *auth]))
        assert ok.cls is sm.Class.SUCCESS
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()
        closed.close()
        perm = await ask(sm.request(sm.Method.CREATE_PERMISSION, b"\x03" * 12, [at.XorPeerAddress(*dead), *auth]))
        assert perm.cls is sm.Class.SUCCESS
        s.sendto(sm.indication(sm.Method.SEND, b"\x04" * 12, [at.XorPeerAddress(*dead), at.Data(b"hello?")]).serialize(), server)
        ind = sm.Message.parse(await asyncio.wait_for(loop.sock_recv(s, 2048), 3))
        assert (ind.method, ind.cls) == (sm.Method.DATA, sm.Class.INDICATION)
        assert ind.get(at.XorPeerAddress) == at.XorPeerAddress(*dead)
        icmp = ind.get(at.Icmp)
        assert icmp is not None and (icmp.icmp_type, icmp.icmp_code) == (3, 3)  # port unreachable
        assert service.stats()["turn_icmp_reported"] == 1
    finally:
        s.close()


async def test_tcp_client_that_stops_reading_gets_drops(service: TurnService, echo: tuple[str, int]) -> None:
    turn, proto = await asyncio.wait_for(
        aioice_turn.create_turn_endpoint(
            Receiver, server_addr=service.address("tcp"), username="alice", password="wonderland",
            transport="tcp",
        ),
        5,
    )
    try:
        turn.sendto(b"hello", echo)  # binds a channel: permission for 127.0.0.1
        await asyncio.wait_for(proto.queue.get(), 5)
        relayed = turn.get_extra_info("sockname")
        inner = turn._TurnTransport__inner_protocol
        inner.transport.pause_reading()
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.setblocking(False)
        flood.bind(("127.0.0.1", 0))
        payload = bytes(1200)
        try:
            for _ in range(150):
                for _ in range(100):
                    with contextlib.suppress(BlockingIOError):
                        flood.sendto(payload, relayed)
                await asyncio.sleep(0.002)
                if service.stats()["turn_drops_client_backlog"]:
                    break
        finally:
            flood.close()
        assert service.stats()["turn_drops_client_backlog"] > 0
        assert service.stats()["turn_allocations"] == 1  # the allocation lives on
        inner.transport.resume_reading()
    finally:
        turn.close()


async def test_garbage_flood_leaves_other_allocations_working(service: TurnService, echo: tuple[str, int]) -> None:
    turn, proto = await asyncio.wait_for(
        aioice_turn.create_turn_endpoint(
            Receiver, server_addr=service.address("udp"), username="alice", password="wonderland"
        ),
        5,
    )
    try:
        turn.sendto(b"before", echo)
        assert (await asyncio.wait_for(proto.queue.get(), 5))[0] == b"before"
        rng = random.Random(5)
        target = service.address("udp")
        relay = turn.get_extra_info("sockname")
        blaster = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        blaster.setblocking(False)
        try:
            for i in range(600):
                kind = i % 4
                if kind == 0:
                    junk = rng.randbytes(rng.randrange(0, 200))
                elif kind == 1:  # STUN-looking header, random body
                    body = rng.randbytes(rng.randrange(0, 50) * 4)
                    junk = bytes([0, rng.randrange(0, 64)]) + len(body).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + rng.randbytes(12) + body
                elif kind == 2:  # ChannelData for channels we never bound
                    junk = rng.randrange(0x4000, 0x8000).to_bytes(2, "big") + (4).to_bytes(2, "big") + b"junk"
                else:  # at the relay port: 127.0.0.1 has a permission (IP-wide), so relayed
                    with contextlib.suppress(BlockingIOError):
                        blaster.sendto(rng.randbytes(40), relay)
                    continue
                with contextlib.suppress(BlockingIOError):
                    blaster.sendto(junk, target)
                if i % 50 == 0:
                    await asyncio.sleep(0)
        finally:
            blaster.close()
        turn.sendto(b"after", echo)
        while (await asyncio.wait_for(proto.queue.get(), 5))[0] != b"after":
            pass
        st = service.stats()
        assert st["turn_allocations"] == 1 and st["turn_internal_errors"] == 0
        assert st["turn_drops_malformed"] + st["turn_drops_no_allocation"] > 100
    finally:
        turn.close()
