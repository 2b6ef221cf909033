"""SIP over WebSocket (RFC 7118) through the TransportLayer, driven by the websockets
client library and by raw sockets: handshake rules, one SIP message per WS message,
flows and their end, limits, keepalives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sipedge.config.sip import LimitsConfig, SipConfig
from sipedge.errors import ParseError
from sipedge.server import tls
from sipedge.server.transport import TransportError, TransportLayer
from sipedge.server.ws import WsOptions
from sipedge.sip import message
from sipedge.sip.flow import Flow, Target

T = 5.0


def register(n: int = 1, body: bytes = b"") -> bytes:
    return (
        f"REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK-{n}\r\n"
        f"From: <sip:alice@example.com>;tag={n}\r\nTo: <sip:alice@example.com>\r\n"
        f"Call-ID: w{n}@t\r\nCSeq: {n} REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class App:
    """Records messages; answers requests with 200; counts what does not parse."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[tuple[bytes, Flow]] = asyncio.Queue()
        self.layer: TransportLayer | None = None
        self.bad = 0
        self.closed: list[Flow] = []

    def __call__(self, data: bytes, flow: Flow) -> None:
        self.q.put_nowait((data, flow))
        try:
            msg = message.parse(data)
        except ParseError:
            self.bad += 1
            return
        if isinstance(msg, message.Request) and self.layer is not None:
            self.layer.send(message.make_response(msg, 200).serialize(), flow)

    async def get(self) -> tuple[bytes, Flow]:
        return await asyncio.wait_for(self.q.get(), T)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tls.Certificate:
    d = tmp_path_factory.mktemp("wss")
    return tls.ensure_certificate(d / "cert.pem", d / "key.pem")


async def make(
    cert: tls.Certificate, name: str = "ws", options: WsOptions | None = None,
    handshake_timeout: float = 10.0, **limits: float,
) -> tuple[TransportLayer, App]:
    app = App()
    cfg = SipConfig(listen=[f"{name}:127.0.0.1:0"], limits=LimitsConfig(**limits))  # type: ignore[arg-type]
    layer = TransportLayer(
        cfg, app, server_ssl=tls.server_context(cert.cert, cert.key), ws_options=options,
        on_flow_closed=app.closed.append, handshake_timeout=handshake_timeout,
    )
    app.layer = layer
    await layer.start()
    return layer, app


@pytest.fixture(params=["ws", "wss"])
async def server(
    request: pytest.FixtureRequest, cert: tls.Certificate
) -> AsyncIterator[tuple[TransportLayer, App, str]]:
    layer, app = await make(cert, request.param)
    yield layer, app, request.param
    await asyncio.wait_for(layer.close(), T)


def url(layer: TransportLayer, name: str) -> str:
    lst = layer.listener(name)
    return f"{name}://127.0.0.1:{lst.port}/"


def client(layer: TransportLayer, name: str, **kw: object) -> connect:
    ctx = tls.client_context() if name == "wss" else None
    kw.setdefault("subprotocols", ["sip"])
    return connect(url(layer, name), ssl=ctx, open_timeout=T, close_timeout=1, **kw)  # type: ignore[arg-type]


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), T)


async def until(cond: object, timeout: float = T) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_round_trip_text_binary_fragments(server: tuple[TransportLayer, App, str]) -> None:
    layer, app, name = server
    async with client(layer, name) as ws:
        assert ws.subprotocol == "sip"
        await ws.send(register(1).decode())  # text
        data, flow = await app.get()
        assert data == register(1)
        assert flow.transport == name and flow.conn_id > 0
        assert flow.local == layer.listener(name).address
        reply = await recv(ws)
        assert isinstance(reply, str)  # UTF-8 SIP goes out as a text message
        resp = message.parse(reply.encode())
        assert isinstance(resp, message.Response) and resp.status == 200
        await ws.send(register(2, b"\xff\xfe binary body"))  # binary, not UTF-8
        data, flow2 = await app.get()
        assert data == register(2, b"\xff\xfe binary body") and flow2 == flow
        await recv(ws)
        m = register(3, b"x" * 3000)
        await ws.send([m[:10].decode(), m[10:2000].decode(), m[2000:].decode()])  # fragments
        data, _ = await app.get()
        assert data == m
        await recv(ws)
        # a request to the client goes down the same connection (send_to reuses it)
        port = ws.local_address[1]
        assert await layer.send_to(b"OPTIONS sip:x SIP/2.0\r\n\r\n", Target(name, "127.0.0.1", port)) == flow
        assert await recv(ws) == "OPTIONS sip:x SIP/2.0\r\n\r\n"
        layer.send(b"\xff\xfe", flow)
        assert await recv(ws) == b"\xff\xfe"
    st = layer.stats()
    assert st[f"sip_{name}_messages_in"] == 3 and st[f"sip_{name}_messages_out"] == 5


async def test_flow_gone_after_close(server: tuple[TransportLayer, App, str]) -> None:
    layer, app, name = server
    async with client(layer, name) as ws:
        await ws.send(register(1))
        _, flow = await app.get()
        port = ws.local_address[1]
    await until(lambda: layer.connection_count == 0)
    assert app.closed == [flow]
    assert not layer.is_alive(flow)
    assert layer.send(register(2), flow) is False
    with pytest.raises(TransportError, match="no open"):
        await layer.send_to(b"x", Target(name, "127.0.0.1", port))


async def test_abrupt_disconnect_leaks_nothing(server: tuple[TransportLayer, App, str]) -> None:
    layer, app, name = server
    ws = await client(layer, name)
    await ws.send(register(1)[:-20])  # half a message... in one WS message: delivered as is
    _, flow = await app.get()
    assert app.bad == 1
    ws.transport.abort()  # no close frame
    await until(lambda: layer.connection_count == 0)
    assert app.closed == [flow]
    # server keeps serving
    async with client(layer, name) as ws2:
        await ws2.send(register(2))
        await app.get()
        reply = await recv(ws2)
        assert isinstance(reply, str) and reply.startswith("SIP/2.0 200 ")


@pytest.mark.parametrize(
    ("subprotocols", "needle"),
    [(None, "needs the 'sip' subprotocol"), (["chat"], "offered: chat")],
)
async def test_handshake_needs_sip_subprotocol(
    server: tuple[TransportLayer, App, str], subprotocols: list[str] | None, needle: str
) -> None:
    layer, _, name = server
    with pytest.raises(InvalidStatus) as info:
        async with client(layer, name, subprotocols=subprotocols):
            pass
    assert info.value.response.status_code == 400
    assert needle in info.value.response.body.decode()  # type: ignore[union-attr]
    assert layer.stats()["sip_ws_handshake_failures"] == 1
    assert layer.connection_count == 0


async def test_origin_allow_list(cert: tls.Certificate) -> None:
    layer, app = await make(cert, options=WsOptions(origins=("https://phone.example.com",)))
    try:
        async with client(layer, "ws", origin="https://phone.example.com") as ws:
            await ws.send(register(1))
            await recv(ws)
        with pytest.raises(InvalidStatus) as info:
            async with client(layer, "ws", origin="https://evil.example.net"):
                pass
        assert info.value.response.status_code == 403
        async with client(layer, "ws") as ws:  # no Origin: not a browser, allowed
            await ws.send(register(2))
            await recv(ws)
    finally:
        await asyncio.wait_for(layer.close(), T)


async def test_oversized_message_closes_1009(cert: tls.Certificate) -> None:
    layer, app = await make(cert, max_message_size=2000)
    try:
        async with client(layer, "ws") as ws:
            await ws.send(register(1, b"x" * 3000))
            with pytest.raises(ConnectionClosed) as info:
                await recv(ws)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        assert app.q.empty()
        assert layer.stats()["sip_ws_protocol_errors"] == 1
        async with client(layer, "ws") as ws:
            await ws.send(register(2))
            assert isinstance(await recv(ws), str)
    finally:
        await asyncio.wait_for(layer.close(), T)


async def test_crlf_ping_over_ws(server: tuple[TransportLayer, App, str]) -> None:
    layer, app, name = server
    async with client(layer, name) as ws:
        await ws.send("\r\n\r\n")
        assert await recv(ws) == "\r\n"
        await ws.send("\r\n")  # pong: ignored
        await ws.send(register(1))
        data, _ = await app.get()
        assert data == register(1)
    assert layer.stats()["sip_stream_pings"] == 1


async def _raw_ws(port: int, key: str = "dGhlIHNhbXBsZSBub25jZQ==") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), T)
    w.write(
        (
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: sip\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), T)
    assert head.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol: sip" in head
    return r, w


async def test_ping_keepalive_and_timeout(cert: tls.Certificate) -> None:
    layer, app = await make(cert, options=WsOptions(ping_interval=0.1, ping_timeout=0.2))
    try:
        port = layer.listener("ws").port
        # a client that answers pings (websockets does it by itself) stays connected
        async with client(layer, "ws", ping_interval=None) as ws:
            await until(lambda: layer.stats()["sip_ws_pings_sent"] >= 3)
            await ws.send(register(1))
            assert isinstance(await recv(ws), str)
        assert layer.stats()["sip_ws_ping_timeouts"] == 0
        # a raw peer that never answers is dropped after interval + timeout
        r, w = await _raw_ws(port)
        ping = await asyncio.wait_for(r.readexactly(2), T)
        assert ping == b"\x89\x00"  # FIN + PING, empty payload
        assert await asyncio.wait_for(r.read(), T) == b""
        assert layer.stats()["sip_ws_ping_timeouts"] == 1
        w.close()
    finally:
        await asyncio.wait_for(layer.close(), T)


async def test_handshake_timeout_garbage_and_max_connections(cert: tls.Certificate) -> None:
    layer, app = await make(cert, handshake_timeout=0.2, max_connections=2)
    try:
        port = layer.listener("ws").port
        r, w = await asyncio.open_connection("127.0.0.1", port)  # says nothing
        assert await asyncio.wait_for(r.read(), T) == b""
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"\x16\x03\x01 garbage, not HTTP\r\n\r\n")
        assert await asyncio.wait_for(r.read(), T) == b""
        assert layer.stats()["sip_ws_handshake_failures"] == 2
        # two open WebSockets fill max_connections: the third TCP connection is dropped
        async with client(layer, "ws") as a, client(layer, "ws") as b:
            await a.send(register(1))
            await b.send(register(2))
            await recv(a)
            await recv(b)
            r, w = await asyncio.open_connection("127.0.0.1", port)
            try:
                assert await asyncio.wait_for(r.read(), T) == b""
            except ConnectionResetError:
                pass
            assert layer.stats()["sip_connections_refused"] == 1
        await until(lambda: layer.connection_count == 0)
        assert layer._handshaking == 0
    finally:
        await asyncio.wait_for(layer.close(), T)


async def test_idle_timeout_ignores_pongs(cert: tls.Certificate) -> None:
    layer, app = await make(cert, options=WsOptions(ping_interval=0.05, ping_timeout=1.0), idle_timeout=0.3)
    try:
        async with client(layer, "ws", ping_interval=None) as ws:
            await ws.send(register(1))
            await recv(ws)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), T)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert layer.stats()["sip_connections_closed_idle"] == 1
    finally:
        await asyncio.wait_for(layer.close(), T)


async def test_close_says_going_away(cert: tls.Certificate) -> None:
    layer, app = await make(cert)
    async with client(layer, "ws") as ws:
        await ws.send(register(1))
        await recv(ws)
        await asyncio.wait_for(layer.close(), T)
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert layer.connection_count == 0


def test_wss_needs_certificate() -> None:
    from sipedge.errors import ConfigError

    async def go() -> None:
        layer = TransportLayer(SipConfig(listen=["wss:127.0.0.1:0"]), lambda d, f: None)
        await layer.start()

    with pytest.raises(ConfigError, match="needs a certificate"):
        asyncio.run(go())
