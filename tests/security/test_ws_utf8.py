"""A WebSocket text message that is not UTF-8 (issue 10 item 10): RFC 6455 §8.1 says the
endpoint fails the connection with 1007 (invalid frame payload data). Through a real
``sipedge serve``, with a raw WebSocket client (websockets' sans-I/O ``ClientProtocol``,
which frames whatever bytes it is given): one bad frame, and a bad fragment of a
fragmented message, each close the connection with 1007 and are counted; a character
split across fragments is still valid; and the server keeps serving new connections."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from websockets.protocol import State

from helpers.metrics import metrics
from helpers.sipserver import Server, running_server
from helpers.ua import UA, insecure_tls
from helpers.wsclient import WsClient

USERS = {"alice": "alice-pw"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("ws-utf8"), users=USERS) as s:
        yield s


def connect(server: Server, transport: str) -> WsClient:
    port = server.ws if transport == "ws" else server.wss
    ctx = insecure_tls() if transport == "wss" else None
    return WsClient(f"{transport}://127.0.0.1:{port}/", "sip", ctx)


def options(server: Server, display: str = "probe") -> bytes:
    tag = uuid.uuid4().hex[:8]
    return (
        f"OPTIONS sip:127.0.0.1:{server.ws} SIP/2.0\r\n"
        f"Via: SIP/2.0/WS {tag}.invalid;branch=z9hG4bK{tag}\r\n"
        f'From: "{display}" <sip:probe@127.0.0.1>;tag={tag}\r\nTo: <sip:127.0.0.1:{server.ws}>\r\n'
        f"Call-ID: {tag}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def close_code(ws: WsClient, timeout: float = 5.0) -> int | None:
    """Read until the server's close frame; its code (None if it never came)."""
    deadline = time.monotonic() + timeout
    while ws.proto.close_rcvd is None and ws.proto.state is not State.CLOSED:
        if time.monotonic() > deadline:
            return None
        try:
            ws.recv(max(0.05, deadline - time.monotonic()))
        except (TimeoutError, ConnectionError):
            pass
    return ws.proto.close_rcvd.code if ws.proto.close_rcvd is not None else None


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_text_frame_with_invalid_utf8_closes_with_1007(server: Server, transport: str) -> None:
    before = metrics(server)
    ws = connect(server, transport)
    try:
        ws.proto.send_text(options(server).replace(b'"probe"', b'"pr\xffbe"'))
        ws._flush()
        assert close_code(ws) == 1007
    finally:
        ws.close()
    after = metrics(server)
    assert after["sip_ws_invalid_utf8"] == before["sip_ws_invalid_utf8"] + 1
    assert after["sip_ws_protocol_errors"] == before["sip_ws_protocol_errors"] + 1


def test_invalid_fragment_closes_before_the_message_ends(server: Server) -> None:
    """A text message in fragments fails at the fragment that cannot be UTF-8 (a UTF-16
    surrogate, ED A0 80), without waiting for the last fragment."""
    ws = connect(server, "ws")
    try:
        data = options(server)
        ws.proto.send_text(data[:20], fin=False)
        ws.proto.send_continuation(b"\xed\xa0\x80", fin=False)
        ws._flush()
        assert close_code(ws) == 1007
    finally:
        ws.close()


def test_character_split_across_fragments_is_valid(server: Server) -> None:
    """'é' (C3 A9) cut between two fragments is still valid UTF-8: answered, not closed."""
    ws = connect(server, "ws")
    try:
        data = options(server, display="café")
        cut = data.index(b"\xc3") + 1
        ws.proto.send_text(data[:cut], fin=False)
        ws.proto.send_continuation(data[cut:], fin=True)
        ws._flush()
        reply = ws.recv(5)
        assert isinstance(reply, str) and reply.startswith("SIP/2.0 200"), reply
        assert ws.proto.close_rcvd is None
    finally:
        ws.close()


def test_server_keeps_serving_after_invalid_utf8(server: Server) -> None:
    bad = connect(server, "ws")
    try:
        bad.proto.send_text(b"\xc0\xaf" + options(server))  # an overlong '/'
        bad._flush()
        assert close_code(bad) == 1007
    finally:
        bad.close()
    ua = UA("ws", ("127.0.0.1", server.ws), "alice", "127.0.0.1", USERS["alice"])
    try:
        assert ua.register().status == 200
    finally:
        ua.close()
