"""TCP and TLS transport over real loopback sockets (server/transport.py).

Framing at every byte boundary and coalesced, connection reuse both ways, dead flows,
idle timeout, max_connections, RFC 5626 CRLF keepalive, oversize (513) and garbage.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipedge.config.sip import LimitsConfig, SipConfig
from sipedge.server import tls
from sipedge.server.transport import TransportError, TransportLayer
from sipedge.sip import message
from sipedge.sip.flow import Flow, Target

T = 5.0  # timeout of every await


def options(n: int = 1, body: bytes = b"hello") -> bytes:
    return (
        f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-{n}\r\n"
        f"From: <sip:a@127.0.0.1>;tag={n}\r\nTo: <sip:x@127.0.0.1>\r\n"
        f"Call-ID: c{n}@t\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Echo:
    """on_message that records and, when ``reply``, answers requests with 200 on the flow."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[tuple[bytes, Flow]] = asyncio.Queue()
        self.layer: TransportLayer | None = None
        self.reply = True
        self.closed: list[Flow] = []

    def __call__(self, data: bytes, flow: Flow) -> None:
        self.q.put_nowait((data, flow))
        if self.reply and self.layer is not None:
            msg = message.parse(data, stream=flow.transport in ("tcp", "tls"))
            if isinstance(msg, message.Request):
                self.layer.send(message.make_response(msg, 200).serialize(), flow)

    async def get(self) -> tuple[bytes, Flow]:
        return await asyncio.wait_for(self.q.get(), T)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tls.Certificate:
    d = tmp_path_factory.mktemp("tls")
    return tls.ensure_certificate(d / "cert.pem", d / "key.pem")


async def make_layer(
    name: str, cert: tls.Certificate, host: str = "127.0.0.1", **limits: float
) -> tuple[TransportLayer, Echo]:
    echo = Echo()
    h = f"[{host}]" if ":" in host else host
    cfg = SipConfig(listen=[f"{name}:{h}:0"], limits=LimitsConfig(**limits))  # type: ignore[arg-type]
    layer = TransportLayer(
        cfg, echo, server_ssl=tls.server_context(cert.cert, cert.key),
        client_ssl=tls.client_context(), on_flow_closed=echo.closed.append,
    )
    echo.layer = layer
    await layer.start()
    return layer, echo


@pytest.fixture(params=["tcp", "tls"])
async def server(
    request: pytest.FixtureRequest, cert: tls.Certificate
) -> AsyncIterator[tuple[TransportLayer, Echo, str]]:
    layer, echo = await make_layer(request.param, cert)
    yield layer, echo, request.param
    await asyncio.wait_for(layer.close(), T)


async def connect(
    layer: TransportLayer, name: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    lst = layer.listener(name, 6 if ":" in layer.listeners[0].host else 4)
    ctx = tls.client_context() if name == "tls" else None
    return await asyncio.wait_for(asyncio.open_connection(lst.host, lst.port, ssl=ctx), T)


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
    found = re.search(rb"\r\n(?:Content-Length|l) *: *(\d+)", head, re.I)
    body = await asyncio.wait_for(reader.readexactly(int(found.group(1)) if found else 0), T)
    return head + body


async def expect_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the server still sends before it closes."""
    try:
        return await asyncio.wait_for(reader.read(), T)
    except (ConnectionResetError, ssl.SSLError):
        return b""


async def until(cond: object, timeout: float = T) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_split_at_every_byte_boundary(server: tuple[TransportLayer, Echo, str]) -> None:
    layer, echo, name = server
    echo.reply = False
    reader, writer = await connect(layer, name)
    m = options(7, b"v=0\r\n\r\nbody with a blank line\r\n")
    for i in range(1, len(m)):
        writer.write(m[:i])
        await writer.drain()
        if i % 40 == 0:  # now and then, prove a partial message is held, not delivered
            await asyncio.sleep(0.005)
            assert echo.q.empty()
        writer.write(m[i:])
        await writer.drain()
        data, flow = await echo.get()
        assert data == m
        assert flow.transport == name and flow.conn_id > 0
    writer.close()
    assert layer.stats()[f"sip_{name}_messages_in"] == len(m) - 1


async def test_coalesced_messages_and_keepalives(server: tuple[TransportLayer, Echo, str]) -> None:
    layer, echo, name = server
    echo.reply = False
    reader, writer = await connect(layer, name)
    msgs = [options(i, b"x" * i) for i in range(1, 40)]
    writer.write(b"\r\n".join(msgs))  # a lone CRLF between messages is a pong: ignored
    await writer.drain()
    got = [(await echo.get()) for _ in msgs]
    assert [d for d, _ in got] == msgs
    assert len({f.conn_id for _, f in got}) == 1
    writer.close()


async def test_reply_goes_back_on_the_inbound_connection(server: tuple[TransportLayer, Echo, str]) -> None:
    layer, echo, name = server
    reader, writer = await connect(layer, name)
    writer.write(options(1))
    _, flow = await echo.get()
    reply = message.parse(await read_message(reader), stream=True)
    assert isinstance(reply, message.Response) and reply.status == 200
    # send_to the client's address reuses the open connection, no new one
    sockname = writer.get_extra_info("sockname")
    out = await asyncio.wait_for(layer.send_to(options(2), Target(name, sockname[0], sockname[1])), T)
    assert out == flow
    assert await read_message(reader) == options(2)
    st = layer.stats()
    assert st["sip_connections_open"] == 1 and st["sip_connections_outbound"] == 0
    writer.close()


async def test_send_to_connects_then_reuses(cert: tls.Certificate, server: tuple[TransportLayer, Echo, str]) -> None:
    b, echo_b, name = server  # b answers 200
    a, echo_a = await make_layer(name, cert)
    echo_a.reply = False
    try:
        lst = b.listener(name)
        target = Target(name, lst.host, lst.port)
        flows = await asyncio.wait_for(
            asyncio.gather(*(a.send_to(options(i), target) for i in range(1, 4))), T
        )
        assert len({f.conn_id for f in flows}) == 1  # concurrent sends share one connect
        assert flows[0].local == a.listener(name).address  # advertised listener address
        for _ in range(3):
            data, flow_in = await echo_a.get()  # the 200s come back on a's outbound conn
            assert flow_in == flows[0]
            assert message.parse(data, stream=True).status == 200  # type: ignore[union-attr]
        again = await asyncio.wait_for(a.send_to(options(9), target), T)
        assert again == flows[0]
        assert a.stats()["sip_connections_outbound"] == 1
        assert b.stats()["sip_connections_accepted"] == 1
    finally:
        await asyncio.wait_for(a.close(), T)


async def test_send_on_a_closed_flow_fails(server: tuple[TransportLayer, Echo, str]) -> None:
    layer, echo, name = server
    echo.reply = False
    reader, writer = await connect(layer, name)
    writer.write(options(1))
    _, flow = await echo.get()
    assert layer.is_alive(flow)
    writer.close()
    await until(lambda: layer.connection_count == 0)
    assert echo.closed == [flow]
    assert not layer.is_alive(flow)
    assert layer.send(options(2), flow) is False
    assert layer.stats()["sip_send_no_flow"] == 1


async def test_send_to_unreachable_raises(server: tuple[TransportLayer, Echo, str]) -> None:
    layer, _, name = server
    # a port that was just free: connection refused, reported as TransportError
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(TransportError, match="cannot connect"):
        await asyncio.wait_for(layer.send_to(b"x", Target(name, "127.0.0.1", port)), T)
    with pytest.raises(TransportError, match="resolve it first"):
        await layer.send_to(b"x", Target(name, "example.invalid", 5060))


async def test_crlf_ping_gets_pong(server: tuple[TransportLayer, Echo, str]) -> None:
    layer, echo, name = server
    reader, writer = await connect(layer, name)
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), T) == b"\r\n"
    writer.write(b"\r\n")  # split ping
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.write(b"\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), T) == b"\r\n"
    assert echo.q.empty()
    assert layer.stats()["sip_stream_pings"] == 2
    writer.close()


async def test_oversized_message_gets_513_then_close(cert: tls.Certificate) -> None:
    for name in ("tcp", "tls"):
        layer, echo = await make_layer(name, cert, max_message_size=2000)
        try:
            reader, writer = await connect(layer, name)
            writer.write(options(1, b"x" * 3000))
            rest = await expect_eof(reader)
            reply = message.parse(rest, stream=True)
            assert isinstance(reply, message.Response) and reply.status == 513
            assert reply.call_id == "c1@t"
            # a header block that never ends is cut at the limit too
            reader, writer = await connect(layer, name)
            writer.write(options(2)[:-30] + b"X-Long: " + b"y" * 2100)
            reply = message.parse(await expect_eof(reader), stream=True)
            assert isinstance(reply, message.Response) and reply.status == 513
            assert echo.q.empty()
            assert layer.stats()["sip_stream_errors"] == 2
            await until(lambda: layer.connection_count == 0)  # noqa: B023
        finally:
            await asyncio.wait_for(layer.close(), T)


async def test_garbage_closes_connection_and_server_serves_on(server: tuple[TransportLayer, Echo, str]) -> None:
    layer, echo, name = server
    reader, writer = await connect(layer, name)
    writer.write(b"\x00\x01 this is not SIP\r\nat all\r\n\r\n")
    assert await expect_eof(reader) == b""  # unanswerable: closed without a reply
    # a request without Content-Length on a stream: 400, then close
    reader, writer = await connect(layer, name)
    writer.write(options(3).replace(b"Content-Length: 5\r\n", b"") )
    reply = message.parse(await expect_eof(reader), stream=True)
    assert isinstance(reply, message.Response) and reply.status == 400
    # a fresh connection is served normally
    reader, writer = await connect(layer, name)
    writer.write(options(4))
    reply = message.parse(await read_message(reader), stream=True)
    assert isinstance(reply, message.Response) and reply.status == 200
    writer.close()


@pytest.mark.parametrize("kind", ["tcp", "tls"])
async def test_idle_timeout_closes(cert: tls.Certificate, kind: str) -> None:
    layer, echo = await make_layer(kind, cert, idle_timeout=0.2)
    try:
        reader, writer = await connect(layer, kind)
        writer.write(options(1))
        await read_message(reader)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await expect_eof(reader) == b""
        assert 0.15 < loop.time() - t0 < 2.0
        await until(lambda: layer.connection_count == 0)
        assert layer.stats()["sip_connections_closed_idle"] == 1
    finally:
        await asyncio.wait_for(layer.close(), T)


@pytest.mark.parametrize("kind", ["tcp", "tls"])
async def test_max_connections_refuses(cert: tls.Certificate, kind: str) -> None:
    layer, echo = await make_layer(kind, cert, max_connections=2)
    try:
        conns = []
        for i in range(2):
            r, w = await connect(layer, kind)
            w.write(options(i))
            await read_message(r)
            conns.append((r, w))
        try:
            r3, _ = await connect(layer, kind)
        except (ConnectionResetError, ssl.SSLError):
            pass  # TLS: refused before the handshake
        else:
            assert await expect_eof(r3) == b""
        assert layer.stats()["sip_connections_refused"] == 1
        with pytest.raises(TransportError, match="max_connections"):
            await layer.send_to(b"x", Target(kind, "127.0.0.1", 9))
        conns[0][1].close()
        await until(lambda: layer.connection_count == 1)
        r4, w4 = await connect(layer, kind)
        w4.write(options(4))
        assert message.parse(await read_message(r4), stream=True).status == 200  # type: ignore[union-attr]
        for _, w in (*conns, (r4, w4)):
            w.close()
    finally:
        await asyncio.wait_for(layer.close(), T)


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("name", ["tcp", "tls"])
async def test_ipv6_listener(cert: tls.Certificate, name: str) -> None:
    layer, echo = await make_layer(name, cert, host="::1")
    try:
        (lst,) = layer.listeners
        assert lst.host == "::1" and lst.port > 0 and str(lst) == f"{name}:[::1]:{lst.port}"
        reader, writer = await connect(layer, name)
        writer.write(options(1))
        _, flow = await echo.get()
        assert flow.remote[0] == "::1" and flow.local == ("::1", lst.port)
        assert message.parse(await read_message(reader), stream=True).status == 200  # type: ignore[union-attr]
        port = writer.get_extra_info("sockname")[1]
        assert await layer.send_to(options(2), Target(name, "[::1]", port)) == flow
        assert await read_message(reader) == options(2)
        writer.close()
    finally:
        await asyncio.wait_for(layer.close(), T)


async def test_tls_listener_needs_a_context() -> None:
    from sipedge.errors import ConfigError

    layer = TransportLayer(SipConfig(listen=["tls:127.0.0.1:0"]), lambda d, f: None)
    with pytest.raises(ConfigError, match="needs a certificate"):
        await layer.start()


def test_cert_fixture_paths(cert: tls.Certificate) -> None:
    assert Path(cert.cert).exists() and len(cert.fingerprint) == 95


async def test_tls_handshake_deadline_and_per_ip_cap_before_the_handshake(cert: tls.Certificate) -> None:
    """On the plain asyncio loop too (``sipedge serve`` runs uvloop): a silent TLS client
    holds its address's slot until handshake_timeout closes it, and the slot comes back."""
    layer, echo = await make_layer("tls", cert, handshake_timeout=0.3, max_connections_per_ip=1)
    lst = layer.listener("tls")
    try:
        silent_r, silent_w = await asyncio.wait_for(asyncio.open_connection(lst.host, lst.port), T)
        await until(lambda: layer._handshaking == 1)
        with pytest.raises((ConnectionResetError, ssl.SSLError)):  # the cap: refused at once
            await connect(layer, "tls")
        assert layer.stats()["sip_connections_refused_per_ip"] == 1
        assert await expect_eof(silent_r) == b""  # the deadline
        silent_w.close()
        await until(lambda: layer.stats()["sip_tls_handshake_timeouts"] == 1)
        r, w = await connect(layer, "tls")  # the slot is free again
        w.write(options(1))
        assert message.parse(await read_message(r), stream=True).status == 200  # type: ignore[union-attr]
        w.close()
        await until(lambda: layer.connection_count == 0 and not layer._per_ip)
    finally:
        await asyncio.wait_for(layer.close(), T)


async def test_slow_message_is_dropped(cert: tls.Certificate) -> None:
    layer, echo = await make_layer("tcp", cert, message_timeout=0.3)
    try:
        r, w = await connect(layer, "tcp")
        m = options(1)
        w.write(m[:10])
        assert await expect_eof(r) == b""
        assert layer.stats()["sip_connections_closed_slow"] == 1
        assert echo.q.empty()
    finally:
        await asyncio.wait_for(layer.close(), T)
