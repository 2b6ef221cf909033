"""The RFC 4475 torture messages sent to a real ``sipedge serve`` over every transport:
UDP, TCP, TLS, WS and WSS. Whatever each message gets (an answer, a 4xx, silence, a
closed connection), the server answers the next good request on the same transport and
logs no traceback. (How each one must parse is pinned in tests/unit/sip.)"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.sipserver import Server, running_server
from helpers.ua import insecure_tls
from helpers.wsclient import WsClient
from sipedge.sip import message as m
from sipedge.sip.framing import StreamFramer

VECTORS = sorted((Path(__file__).resolve().parents[1] / "vectors" / "sip" / "rfc4475").glob("*.dat"))
# no name a torture message carries (example.com...) may be looked up outside
NO_DNS = '[dns]\nnameservers = ["127.0.0.1:9"]\nhosts_file = ""\ntimeout = 0.5\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("torture"), extra=NO_DNS) as s:
        yield s


class Link:
    """One client connection (or UDP socket) of a transport, bytes in and out."""

    def __init__(self, server: Server, transport: str) -> None:
        self.transport = transport
        self.ws: WsClient | None = None
        self.framer = StreamFramer()
        addr = (server.host, {"tls": server.tls, "ws": server.ws, "wss": server.wss}.get(transport, server.udp))
        if transport in ("ws", "wss"):
            self.ws = WsClient(f"{transport}://{addr[0]}:{addr[1]}/", "sip", insecure_tls() if transport == "wss" else None)
            self.sock = self.ws.socket
        elif transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.connect(addr)
        else:
            raw = socket.create_connection(addr, timeout=5)
            self.sock = insecure_tls().wrap_socket(raw) if transport == "tls" else raw
        self.sock.settimeout(0.2)
        self.local = self.sock.getsockname()

    def send(self, data: bytes) -> None:
        if self.ws is not None:
            self.ws.proto.send_binary(data)
            self.ws._flush()
        elif self.transport == "udp":
            self.sock.send(data)
        else:
            self.sock.sendall(data)

    def response(self, timeout: float = 3.0) -> m.Response | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self._read():
                msg = m.parse(data, stream=self.transport != "udp")
                if isinstance(msg, m.Response) and msg.status >= 200:
                    return msg
        return None

    def _read(self) -> list[bytes]:
        try:
            if self.ws is not None:
                got = self.ws.recv(0.2)
                return [got.encode() if isinstance(got, str) else got]
            if self.transport == "udp":
                return [self.sock.recv(65535)]
            data = self.sock.recv(65535)
        except (TimeoutError, ssl.SSLWantReadError):
            return []
        if not data:
            raise ConnectionError("closed")
        return [f.data for f in self.framer.feed(data) if f.data]

    def close(self) -> None:
        try:
            if self.ws is not None:
                self.ws.close()
            else:
                self.sock.close()
        except OSError:
            pass


def options(link: Link, n: int) -> bytes:
    t = link.transport.upper()
    host, port = link.local[0], link.local[1]
    return (
        f"OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/{t} {host}:{port};branch=z9hG4bKtort{n}x{time.monotonic_ns()}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag=t{n}\r\nTo: <sip:{host}>\r\n"
        f"Call-ID: torture-{n}-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls", "ws", "wss"])
def test_every_torture_message_then_still_serving(server: Server, transport: str) -> None:
    for n, vector in enumerate(VECTORS):
        bad = Link(server, transport)
        try:
            bad.send(vector.read_bytes())
            time.sleep(0.02)
        except OSError:
            pass  # the server may close a stream at once: that is an answer too
        finally:
            bad.close()
        good = Link(server, transport)
        try:
            good.send(options(good, n))
            resp = good.response()
            assert resp is not None and resp.status == 200, f"no answer after {vector.name} over {transport}"
        finally:
            good.close()
    assert "Traceback" not in server.log_text()
