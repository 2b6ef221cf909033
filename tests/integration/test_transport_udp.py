"""UDP transport over real loopback sockets (server/transport.py): round trip, send_to,
keepalives and oversize datagrams dropped and counted, IPv6."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from sipedge.config.sip import LimitsConfig, SipConfig
from sipedge.server.transport import Listener, TransportError, TransportLayer
from sipedge.sip import message
from sipedge.sip.flow import Flow, Target

T = 5.0


def options(n: int = 1, size: int = 0) -> bytes:
    return (
        f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{n}\r\n"
        f"From: <sip:a@127.0.0.1>;tag={n}\r\nTo: <sip:x@127.0.0.1>\r\n"
        f"Call-ID: u{n}@t\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode() + b"x" * size


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class Echo:
    def __init__(self) -> None:
        self.q: asyncio.Queue[tuple[bytes, Flow]] = asyncio.Queue()
        self.layer: TransportLayer | None = None

    def __call__(self, data: bytes, flow: Flow) -> None:
        self.q.put_nowait((data, flow))
        msg = message.parse(data)
        if isinstance(msg, message.Request) and self.layer is not None:
            self.layer.send(message.make_response(msg, 200).serialize(), flow)


@pytest.fixture
async def udp() -> AsyncIterator[tuple[TransportLayer, Echo]]:
    echo = Echo()
    listen = ["udp:127.0.0.1:0"] + (["udp:[::1]:0"] if _has_ipv6_loopback() else [])
    layer = TransportLayer(SipConfig(listen=listen, limits=LimitsConfig(max_message_size=1500)), echo)
    echo.layer = layer
    await layer.start()
    yield layer, echo
    await asyncio.wait_for(layer.close(), T)


def client(family: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    s.setblocking(False)
    return s


async def recv(s: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data, _ = await asyncio.wait_for(loop.sock_recvfrom(s, 65535), T)
    return data


async def test_round_trip(udp: tuple[TransportLayer, Echo]) -> None:
    layer, echo = udp
    lst = layer.listener("udp")
    assert isinstance(lst, Listener) and lst.port > 0
    with client() as c:
        c.sendto(options(1), lst.address)
        data, flow = await asyncio.wait_for(echo.q.get(), T)
        assert data == options(1)
        assert flow == Flow("udp", lst.address, c.getsockname())
        reply = message.parse(await recv(c))
        assert isinstance(reply, message.Response) and reply.status == 200
        # send_to leaves from the listener socket
        out = await layer.send_to(options(2), Target("udp", "127.0.0.1", c.getsockname()[1]))
        assert out == flow
        assert await recv(c) == options(2)
    st = layer.stats()
    assert st["sip_udp_messages_in"] == 1 and st["sip_udp_messages_out"] == 2
    assert st["sip_udp_bytes_in"] == len(options(1))


async def test_keepalives_dropped_oversize_refused(udp: tuple[TransportLayer, Echo]) -> None:
    layer, echo = udp
    lst = layer.listener("udp")
    with client() as c:
        for junk in (b"\0\0\0\0", b"\r\n", b"\r\n\r\n", b"\r\n" * 10, options(3, 2000)):
            c.sendto(junk, lst.address)
        too_large = message.parse(await recv(c))  # RFC 3261 §18.1.1: the oversize request is refused
        assert isinstance(too_large, message.Response) and too_large.status == 513
        assert too_large.cseq.number == 3
        c.sendto(b"\xff" * 2000, lst.address)  # oversize and unanswerable: only dropped
        c.sendto(options(4), lst.address)  # after the junk: still served
        data, _ = await asyncio.wait_for(echo.q.get(), T)
        assert data == options(4)
        assert message.parse(await recv(c)).status == 200  # type: ignore[union-attr]
    assert echo.q.empty()
    st = layer.stats()
    assert st["sip_udp_keepalives"] == 4
    assert st["sip_udp_dropped_oversize"] == 2
    assert st["sip_udp_messages_in"] == 1


async def test_callback_errors_are_contained(udp: tuple[TransportLayer, Echo]) -> None:
    layer, echo = udp
    lst = layer.listener("udp")
    with client() as c:
        c.sendto(b"garbage that the app fails to parse", lst.address)
        c.sendto(options(5), lst.address)
        assert message.parse(await recv(c)).status == 200  # type: ignore[union-attr]
    assert layer.stats()["sip_callback_errors"] == 1


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6(udp: tuple[TransportLayer, Echo]) -> None:
    layer, echo = udp
    lst6 = layer.listener("udp", 6)
    assert lst6.host == "::1" and str(lst6) == f"udp:[::1]:{lst6.port}"
    with client(socket.AF_INET6) as c:
        c.sendto(options(6), lst6.address)
        _, flow = await asyncio.wait_for(echo.q.get(), T)
        assert flow.local == lst6.address and flow.remote == c.getsockname()[:2]
        assert message.parse(await recv(c)).status == 200  # type: ignore[union-attr]
        # send_to picks the listener of the target's family
        out = await layer.send_to(options(7), Target("udp", "[::1]", c.getsockname()[1]))
        assert out.local == lst6.address
        assert await recv(c) == options(7)


async def test_send_to_without_listener_of_that_family() -> None:
    layer = TransportLayer(SipConfig(listen=["udp:127.0.0.1:0"]), lambda d, f: None)
    await layer.start()
    try:
        with pytest.raises(TransportError, match="no udp listener for IPv6"):
            await layer.send_to(b"x", Target("udp", "::1", 5060))
        assert layer.send(b"x", Flow("udp", ("127.0.0.1", 1), ("127.0.0.1", 2))) is False
    finally:
        await layer.close()
    assert layer.send(b"x", Flow("udp", layer.listeners[0].address, ("127.0.0.1", 2))) is False


async def test_stun_on_the_sip_port_goes_to_the_hook() -> None:
    stun_in: list[tuple[bytes, Flow]] = []
    layer = TransportLayer(SipConfig(listen=["udp:127.0.0.1:0"]), lambda d, f: None)
    hooked = TransportLayer(
        SipConfig(listen=["udp:127.0.0.1:0"]), lambda d, f: None,
        on_stun=lambda d, f: stun_in.append((d, f)),
    )
    await layer.start()
    await hooked.start()
    binding = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x07" * 12  # RFC 8489 Binding request
    try:
        with client() as c:
            me = c.getsockname()
            c.sendto(binding, layer.listener("udp").address)
            c.sendto(binding, hooked.listener("udp").address)
            await asyncio.sleep(0)
            for _ in range(200):
                if stun_in and layer.stats()["sip_udp_stun_dropped"]:
                    break
                await asyncio.sleep(0.005)
        assert layer.stats()["sip_udp_stun_dropped"] == 1
        assert stun_in == [(binding, Flow("udp", hooked.listener("udp").address, me))]
        assert hooked.stats()["sip_udp_messages_in"] == 0
    finally:
        await layer.close()
        await hooked.close()
