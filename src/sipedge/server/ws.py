"""SIP over WebSocket (RFC 7118): the WS and WSS connections of :class:`TransportLayer`.

``ws:host:port`` and ``wss:host:port`` entries of ``SipConfig.listen`` are served by
the same :class:`~sipedge.server.transport.TransportLayer` as UDP/TCP/TLS, with the same
contract: every SIP message arrives as ``on_message(data, flow)`` with
``flow.transport`` ``"ws"`` or ``"wss"`` (parse it with ``stream=False``: one SIP message
per WebSocket message, text or binary), and ``send(data, flow)`` goes down that very
connection, returning ``False`` once it is gone (nothing else can reach a browser:
``.invalid`` Via/Contact hosts never resolve). ``send_to`` to a ws/wss target only
reuses an open connection from that address.

Each connection is a plain ``asyncio.Protocol`` driving websockets' sans-I/O
``ServerProtocol`` (no task per connection or message):

- the opening handshake must offer the ``sip`` subprotocol; otherwise HTTP 400 with a
  body saying so. With :attr:`WsOptions.origins` set, other ``Origin`` values get 403
  (``sip_ws_origins_refused``; a request without ``Origin`` — not a browser — is
  allowed). ``sipedge serve`` sets them to :func:`own_origins` unless
  ``sip.websocket.origins`` says otherwise, so a page on another site cannot use a
  visitor's browser to reach us (cross-site WebSocket hijacking);
- messages over ``max_message_size`` close the connection with 1009, bad frames with
  1002 (websockets does both); a text message that is not valid UTF-8 with 1007
  (RFC 6455 §8.1, checked here frame by frame: websockets' sans-I/O core leaves UTF-8 to
  its I/O layers);
- a WebSocket message ``CRLFCRLF`` is an RFC 5626 ping, answered ``CRLF``;
- after :attr:`WsOptions.ping_interval` seconds without traffic from the peer the
  server sends a WebSocket ping; no pong within :attr:`WsOptions.ping_timeout` closes
  the connection. Pongs do not count as activity for ``limits.idle_timeout``.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from websockets.exceptions import InvalidOrigin, NegotiationError
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol

from ..sip.flow import Flow
from .stream import ConnectionBase

if TYPE_CHECKING:
    from .transport import TransportLayer

log = logging.getLogger(__name__)
_ws_log = logging.getLogger("sipedge.server.ws.protocol")
_ws_log.setLevel(logging.WARNING)  # websockets logs every open/close at INFO

SUBPROTOCOL = Subprotocol("sip")
_TEXT, _BINARY, _CONT, _PING, _PONG = (
    Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG,
)
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


@dataclass(frozen=True, slots=True)
class WsOptions:
    """WebSocket settings (the lead may map these to config options)."""

    origins: tuple[str, ...] | None = None
    """Allowed ``Origin`` values (e.g. ``"https://phone.example.com"``); None = any."""
    ping_interval: float = 30.0
    """Seconds without traffic from the peer before a WebSocket ping (0 = never)."""
    ping_timeout: float = 20.0
    """Seconds to wait for the pong before closing the connection."""
    close_timeout: float = 2.0
    """Seconds to wait for the peer's close frame before dropping the TCP connection."""
    server_header: str = "sipedge"
    """``Server`` header of the handshake response (empty = none)."""


_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_NAMES = {"0.0.0.0": ("127.0.0.1", "localhost"), "::": ("::1", "127.0.0.1", "localhost")}


def origin(scheme: str, host: str, port: int) -> str:
    """``scheme://host[:port]`` as browsers send it in ``Origin`` (RFC 6454 §6.1):
    lower case, IPv6 in brackets, no default port."""
    host = host.strip("[]").lower()
    h = f"[{host}]" if ":" in host else host
    return f"{scheme}://{h}" if _DEFAULT_PORTS.get(scheme) == port else f"{scheme}://{h}:{port}"


def own_origins(endpoints: Iterable[tuple[str, str, int]], names: Iterable[str]) -> tuple[str, ...]:
    """The origins of pages that are ours: each ``(scheme, host, port)`` of our HTTP and
    WebSocket listeners (a wildcard host stands for loopback: 127.0.0.1, ::1,
    localhost; a loopback address also for localhost), each ``names`` entry (SIP domains,
    advertised hosts) on each of those ports, and each name on the default http and
    https ports (a reverse proxy serving the page)."""
    hosts = [n.strip("[]").lower().rstrip(".") for n in names if n]
    out: dict[str, None] = {}
    for scheme, host, port in endpoints:
        bound = _LOOPBACK_NAMES.get(host.strip("[]"), (host,))
        if any(h in ("::1", "localhost") or h.startswith("127.") for h in bound):
            bound = (*bound, "localhost")
        if port:
            for h in (*bound, *hosts):
                out[origin(scheme, h, port)] = None
    for h in hosts:
        out[origin("https", h, 443)] = None
        out[origin("http", h, 80)] = None
    return tuple(out)


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _select_sip(protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    got = f" (offered: {', '.join(offered)})" if offered else ""
    raise NegotiationError(
        "SIP over WebSocket needs the 'sip' subprotocol (RFC 7118): "
        f"send 'Sec-WebSocket-Protocol: sip'{got}"
    )


class WsConnection(ConnectionBase, asyncio.Protocol):
    """One inbound WS/WSS connection: handshake, frames, keepalive, close."""

    __slots__ = (
        "_close_timer", "_handshake_timer", "_parts", "_ping_sent", "_text", "_we_closed",
        "closing", "conn_id", "counters", "flow", "inbound", "last_activity", "last_seen",
        "layer", "loop", "name", "opened", "options", "paused", "proto", "slot", "transport",
    )

    def __init__(self, layer: TransportLayer, name: str, options: WsOptions, slot: str | None = None) -> None:
        self.layer = layer
        self.name = name
        self.options = options
        self.inbound = True
        self.counters = layer.counters_for(name)
        self.loop = layer.loop
        self.transport: asyncio.Transport | None = None
        self.proto = ServerProtocol(
            origins=[*(Origin(o) for o in options.origins), None] if options.origins is not None else None,
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=_select_sip,
            max_size=layer.max_message_size,
            logger=_ws_log,
        )
        self.conn_id = 0
        self.flow = Flow(name, ("", 0), ("", 0))
        self.opened = False
        self.closing = False
        self.paused = False
        self.last_activity = 0.0
        self.last_seen = 0.0
        self._parts: list[bytes] | None = None
        self._text: codecs.IncrementalDecoder | None = None  # a fragmented text message's check
        self._ping_sent = 0.0
        self._we_closed = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self.slot = slot  # the peer's per-IP connection slot (WSS: taken before the TLS handshake)

    # -- asyncio callbacks -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.flow = Flow(self.name, (sock[0], sock[1]), (peer[0], peer[1]))
        if self.slot is None:
            self.slot = self.layer.admit(self.name, peer)
            if self.slot is None:
                self.closing = True
                transport.abort()
                return
        self.layer.handshake_started()
        self._handshake_timer = self.loop.call_later(
            self.layer.handshake_timeout, self._handshake_expired
        )

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        try:
            proto.receive_data(data)
        except EOFError:
            return
        self.last_seen = self.loop.time()
        for ev in proto.events_received():
            if isinstance(ev, Frame):
                self._frame(ev)
            elif isinstance(ev, Request):
                self._handshake(ev)
        self._flush()

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.release_slot()
        for timer in (self._handshake_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        if not self.opened:
            if self._handshake_timer is not None:
                self._handshake_timer = None
                self.layer.handshake_ended()
            return
        self.layer.unregister(self, exc)

    # -- handshake and frames --------------------------------------------------------
    def _handshake(self, request: Request) -> None:
        layer = self.layer
        response = self.proto.accept(request)
        if self.options.server_header:
            response.headers["Server"] = self.options.server_header
        self.proto.send_response(response)
        if response.status_code != 101:
            layer.count("sip_ws_handshake_failures")
            if isinstance(self.proto.handshake_exc, InvalidOrigin):
                layer.count("sip_ws_origins_refused")
            log.info("x %s handshake from %s refused: %d %s", self.name, self.flow.remote,
                     response.status_code, self.proto.handshake_exc)
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
            layer.handshake_ended()
        self.opened = True
        self.conn_id = layer.new_conn_id()
        self.flow = Flow(self.name, self.flow.local, self.flow.remote, self.conn_id)
        self.last_activity = self.last_seen
        layer.register(self)

    def _frame(self, frame: Frame) -> None:
        op = frame.opcode
        if op is _TEXT or op is _BINARY:
            if self.proto.state is not State.OPEN:
                return  # failed already (e.g. bad UTF-8 earlier in this read)
            data = bytes(frame.data)
            if frame.fin:
                if op is _TEXT and not _valid_utf8(data):
                    self._invalid_utf8()
                    return
                self._message(data)
                return
            self._text = _Utf8Decoder() if op is _TEXT else None
            if self._text is not None and not self._check_text(self._text, data, False):
                return
            self._parts = [data]
        elif op is _CONT:
            if self._parts is not None and self.proto.state is State.OPEN:
                data = bytes(frame.data)
                if self._text is not None and not self._check_text(self._text, data, frame.fin):
                    return
                self._parts.append(data)
                if frame.fin:
                    parts, self._parts, self._text = self._parts, None, None
                    self._message(b"".join(parts))
        elif op is _PONG:
            self._ping_sent = 0.0
        elif op is _PING:
            self.last_activity = self.last_seen  # the peer keeps its flow alive

    def _check_text(self, decoder: codecs.IncrementalDecoder, data: bytes, final: bool) -> bool:
        """Feed a fragment of a text message to its UTF-8 check; False (and the
        connection failing with 1007) as soon as the bytes cannot be UTF-8."""
        try:
            decoder.decode(data, final)
        except UnicodeDecodeError:
            self._parts = self._text = None
            self._invalid_utf8()
            return False
        return True

    def _invalid_utf8(self) -> None:
        """RFC 6455 §8.1: a text message that is not UTF-8 fails the connection with 1007
        (counted here and, as every protocol error, in ``sip_ws_protocol_errors``)."""
        self.layer.count("sip_ws_invalid_utf8")
        self.proto.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")

    def _message(self, data: bytes) -> None:
        self.last_activity = self.last_seen
        if self.closing:
            return
        layer = self.layer
        if not data.strip(b"\r\n"):
            if data == b"\r\n\r\n":  # RFC 5626 ping over WebSocket: pong
                layer.count("sip_stream_pings")
                self.write(b"\r\n", count=False)
            return
        c = self.counters
        c.messages_in += 1
        c.bytes_in += len(data)
        try:
            layer.on_message(data, self.flow)
        except Exception:
            layer.callback_failed(self.name, self.flow.remote)

    def _flush(self) -> None:
        t = self.transport
        if t is None:
            return
        proto = self.proto
        for chunk in proto.data_to_send():
            if chunk:
                t.write(chunk)
                continue
            # end of stream: handshake refused, protocol error, or close handshake done
            if self.opened and not self._we_closed and proto.close_rcvd is None:
                code = proto.close_sent.code if proto.close_sent is not None else 0
                self.layer.count("sip_ws_protocol_errors")
                log.info("x %s %s: protocol error, closed with %d (%s)", self.name,
                         self.flow.remote, code, proto.close_sent.reason if proto.close_sent else "")
            elif not self.opened and proto.handshake_exc is not None and not proto.accept_called:
                self.layer.count("sip_ws_handshake_failures")  # not even an HTTP request
                log.info("x %s %s: %s", self.name, self.flow.remote, proto.handshake_exc)
            self.closing = True
            t.close()
            return
        if proto.close_expected() and self._close_timer is None:
            self.closing = True
            self._close_timer = self.loop.call_later(self.options.close_timeout, self.abort)

    # -- ours (the Conn protocol of transport.py) ------------------------------------
    def write(self, data: bytes, count: bool = True) -> bool:
        t = self.transport
        if t is None or self.closing or not self.opened or self.proto.state is not State.OPEN:
            return False
        if self.paused and self.overflowing(t):
            return False
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            self.proto.send_binary(data)
        else:
            self.proto.send_text(data)
        self._flush()
        if count:
            self.last_activity = self.loop.time()
            c = self.counters
            c.messages_out += 1
            c.bytes_out += len(data)
        return True

    def close(self, code: int = 1001, reason: str = "") -> None:
        """Start the closing handshake (1001 going away by default); the TCP connection
        is dropped after ``close_timeout`` if the peer does not answer."""
        if self.transport is None:
            return
        self._we_closed = True
        if self.proto.state is State.OPEN:
            self.proto.send_close(code, reason)
            self._flush()
        else:
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def tick(self, now: float) -> None:
        """Keepalive: ping a quiet peer, close one that stopped answering."""
        opts = self.options
        if opts.ping_interval <= 0 or self.closing or self.proto.state is not State.OPEN:
            return
        if self._ping_sent:
            if now - self._ping_sent > opts.ping_timeout:
                self.layer.count("sip_ws_ping_timeouts")
                log.info("x %s %s: no pong in %.0f s, closing", self.name, self.flow.remote,
                         opts.ping_timeout)
                self.abort()
        elif now - self.last_seen >= opts.ping_interval:
            self._ping_sent = now
            self.layer.count("sip_ws_pings_sent")
            self.proto.send_ping(b"")
            self._flush()

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        self.layer.handshake_ended()
        self.layer.count("sip_ws_handshake_failures")
        log.info("x %s %s: no WebSocket handshake in %.0f s", self.name, self.flow.remote,
                 self.layer.handshake_timeout)
        self.abort()

