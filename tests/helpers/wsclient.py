"""A blocking, single-threaded WebSocket client for tests, on websockets' sans-I/O
``ClientProtocol``.

Why not ``websockets.sync.client``: it reads the socket in a background thread while
the caller writes from another, which on an ``ssl.SSLSocket`` means two threads in one
OpenSSL connection at once. Now and then the write of the opening handshake never
reaches the server (seen here: the server waited 10 s for the GET, the client then got
SSLEOFError). One thread doing both, as a browser's event loop does, removes the race.
"""

from __future__ import annotations

import socket
import ssl
import time

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri


class WsClient:
    """One WebSocket connection: :meth:`send` a text message, :meth:`recv` the next one."""

    def __init__(self, url: str, subprotocol: str, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = 5.0) -> None:
        uri = parse_uri(url)
        raw = socket.create_connection((uri.host, uri.port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.socket: socket.socket = (
            ssl_context.wrap_socket(raw, server_hostname=uri.host) if uri.secure and ssl_context else raw
        )
        self.proto = ClientProtocol(uri, subprotocols=[Subprotocol(subprotocol)])
        self._messages: list[str | bytes] = []
        self._parts: list[bytes] = []
        self._text = True
        self.proto.send_request(self.proto.connect())
        self._flush()
        deadline = time.monotonic() + timeout
        response: Response | None = None
        while response is None:
            if not self._read(deadline - time.monotonic()):
                raise TimeoutError(f"no WebSocket handshake answer from {url} in {timeout} s")
            for ev in self.proto.events_received():
                if isinstance(ev, Response):
                    response = ev
                else:
                    self._frame(ev)
        if self.proto.handshake_exc is not None:
            self.socket.close()
            raise self.proto.handshake_exc
        self.subprotocol = self.proto.subprotocol

    def send(self, text: str) -> None:
        self.proto.send_text(text.encode("utf-8", "surrogateescape"))
        self._flush()

    def recv(self, timeout: float) -> str | bytes:
        """The next whole message; TimeoutError when none comes in ``timeout`` seconds,
        ConnectionError when the server has closed."""
        deadline = time.monotonic() + timeout
        while not self._messages:
            if self.proto.state is State.CLOSED:
                raise ConnectionError(f"WebSocket closed: {self.proto.close_exc}")
            if not self._read(deadline - time.monotonic()):
                raise TimeoutError
            for ev in self.proto.events_received():
                self._frame(ev)
        return self._messages.pop(0)

    def close(self) -> None:
        """Close handshake (1000), then drop the TCP connection (again: a no-op)."""
        if self.proto.state is not State.OPEN:
            self.socket.close()
            return
        try:
            self.proto.send_close(1000)
            self._flush()
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.socket.close()

    # -- internals -------------------------------------------------------------------
    def _read(self, timeout: float) -> bool:
        """Feed what arrives within ``timeout`` to the protocol; False on timeout."""
        if timeout <= 0:
            return False
        self.socket.settimeout(timeout)
        try:
            data = self.socket.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return False
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
        self._flush()  # pongs and the close answer go out at once
        return True

    def _frame(self, ev: object) -> None:
        opcode = getattr(ev, "opcode", None)
        if opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            return
        if opcode is not Opcode.CONT:
            self._text = opcode is Opcode.TEXT
        self._parts.append(bytes(ev.data))  # type: ignore[attr-defined]
        if ev.fin:  # type: ignore[attr-defined]
            data = b"".join(self._parts)
            self._parts = []
            self._messages.append(data.decode("utf-8", "surrogateescape") if self._text else data)

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                self.socket.sendall(chunk)
