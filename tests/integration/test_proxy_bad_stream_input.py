"""Bad input over TCP and TLS against `sipedge serve`: what can be answered is answered
(400, 513) on that connection, what cannot closes only that connection, and the server
keeps serving good requests on the same or a new connection."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from helpers.sipserver import Server, running_server
from sipedge.sip import message as m
from sipedge.sip.framing import StreamFramer

TRANSPORTS = ["tcp", "tls"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("badstream")) as s:
        yield s


class Conn:
    """One client connection with a framer for what the server sends back."""

    def __init__(self, server: Server, transport: str) -> None:
        port = server.tls if transport == "tls" else server.tcp
        raw = socket.create_connection((server.host, port), timeout=5)
        if transport == "tls":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            raw = ctx.wrap_socket(raw)
        self.sock = raw
        self.transport = transport
        self.port = raw.getsockname()[1]
        self.framer = StreamFramer()

    def request(self, cid: str, extra: str = "", drop: str = "", method: str = "OPTIONS") -> bytes:
        lines = [
            f"{method} sip:127.0.0.1 SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} 127.0.0.1:{self.port};branch=z9hG4bK{cid}",
            "Max-Forwards: 70",
            "From: <sip:x@127.0.0.1>;tag=1",
            "To: <sip:127.0.0.1>",
            f"Call-ID: {cid}",
            f"CSeq: 1 {method}",
        ]
        lines = [ln for ln in lines if not (drop and ln.startswith(drop))]
        return ("\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n").encode()

    def reply(self, timeout: float = 3.0) -> m.Response | None:
        """The next response, or None when the server closed the connection."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except (ConnectionError, ssl.SSLError):
                return None
            if not data:
                return None
            for frame in self.framer.feed(data):
                if frame.data:
                    msg = m.parse(frame.data, stream=True)
                    assert isinstance(msg, m.Response)
                    return msg
        raise AssertionError("no reply and no close within the timeout")

    def close(self) -> None:
        self.sock.close()


def served(server: Server, transport: str) -> None:
    """A new connection gets its OPTIONS answered 200."""
    c = Conn(server, transport)
    try:
        c.sock.sendall(c.request(f"ok{time.monotonic_ns()}"))
        resp = c.reply()
        assert resp is not None and resp.status == 200
    finally:
        c.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("case", "status"),
    [("missing-call-id", 400), ("cseq-mismatch", 400), ("no-via", 400), ("unknown-method", 407)],
)
def test_answerable_bad_requests_get_their_4xx_and_the_connection_goes_on(
    server: Server, transport: str, case: str, status: int
) -> None:
    c = Conn(server, transport)
    try:
        cid = f"bad{time.monotonic_ns()}"
        data = {
            "missing-call-id": lambda: c.request(cid, drop="Call-ID"),
            "cseq-mismatch": lambda: c.request(cid).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 BYE"),
            "no-via": lambda: c.request(cid, drop="Via"),
            "unknown-method": lambda: c.request(cid, method="FOOBAR"),  # from a local user: auth first
        }[case]()
        c.sock.sendall(data)
        if case == "no-via":
            # nowhere to send a response (RFC 3261 §18.2.2 needs the Via): dropped, or the
            # connection closed; either way the server goes on
            try:
                c.reply(timeout=1.0)
            except AssertionError:
                pass
        else:
            resp = c.reply()
            assert resp is not None and resp.status == status, resp and resp.reason
            c.sock.sendall(c.request(cid + "ok"))  # the same connection still works
            again = c.reply()
            assert again is not None and again.status == 200
    finally:
        c.close()
    served(server, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_huge_header_gets_513_then_close(server: Server, transport: str) -> None:
    c = Conn(server, transport)
    try:
        c.sock.sendall(c.request(f"huge{time.monotonic_ns()}", extra="Subject: " + "x" * 70000 + "\r\n"))
        resp = c.reply()
        assert resp is not None and resp.status == 513
        assert c.reply() is None  # then the connection is closed
    finally:
        c.close()
    served(server, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "data",
    [
        b"\x00\xff garbage that is no SIP at all \r\n\r\n",
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKt\r\nCall-ID: x\r\n\r\n",
    ],
    ids=["garbage", "no-content-length"],
)
def test_unframeable_input_closes_only_that_connection(server: Server, transport: str, data: bytes) -> None:
    c = Conn(server, transport)
    other = Conn(server, transport)
    try:
        c.sock.sendall(data)
        while (resp := c.reply()) is not None:
            assert resp.status >= 400  # at most an error before the close
        other.sock.sendall(other.request(f"other{time.monotonic_ns()}"))
        ok = other.reply()
        assert ok is not None and ok.status == 200
    finally:
        c.close()
        other.close()
    served(server, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", ["content-length-lie", "cut-message"])
def test_a_content_length_lie_or_a_cut_message_then_disconnect(server: Server, transport: str, case: str) -> None:
    c = Conn(server, transport)
    if case == "content-length-lie":
        data = c.request("lie").replace(b"Content-Length: 0", b"Content-Length: 999")
    else:
        data = b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKc\r\nFrom"
    c.sock.sendall(data)  # the server waits for the rest...
    time.sleep(0.2)
    c.close()  # ...which never comes
    served(server, transport)
