"""TCP and TLS connections of :class:`~sipedge.server.transport.TransportLayer`: what the
layer needs of any connection (:class:`Conn`, WS/WSS in ws.py too), the per-transport
counters, and one stream connection that cuts its bytes into SIP messages (RFC 3261
§18.3, Content-Length) and drops slow senders. It uses only the layer's public
connection interface."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol, cast

from .._common.addr import Address
from ..errors import ParseError
from ..sip.flow import Flow
from ..sip.framing import StreamFramer
from .error_reply import error_reply
from .listeners import family_of

if TYPE_CHECKING:
    from .transport import TransportLayer

log = logging.getLogger("sipedge.server.transport")


class Conn(Protocol):
    """What the layer needs of a connection (TCP/TLS here, WS/WSS in ws.py)."""

    conn_id: int
    name: str
    inbound: bool
    flow: Flow
    closing: bool
    last_activity: float

    def write(self, data: bytes, count: bool = True) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def tick(self, now: float) -> None: ...


class Counters:
    __slots__ = ("bytes_in", "bytes_out", "messages_in", "messages_out")

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0


class ConnectionBase:
    """What every connection (TCP/TLS here, WS/WSS in ws.py) does with its peer's per-IP
    slot and with asyncio's write flow control."""

    if not TYPE_CHECKING:  # no instance dict in the connections that have __slots__
        __slots__ = ()
    layer: TransportLayer
    slot: str | None
    paused: bool
    name: str
    flow: Flow

    def abort(self) -> None:
        raise NotImplementedError

    def overflowing(self, t: asyncio.Transport) -> bool:
        """Whether a paused peer has let more than ``max_write_buffer`` pile up: then it is
        not reading, and the connection is aborted (``sip_connections_closed_overflow``)."""
        if t.get_write_buffer_size() <= self.layer.max_write_buffer:
            return False
        self.layer.count("sip_connections_closed_overflow")
        log.info("x %s %s: peer is not reading, closing", self.name, self.flow.remote)
        self.abort()
        return True

    def release_slot(self) -> None:
        """Give the peer's per-IP slot back (once; also when a TLS handshake failed)."""
        self.layer.release(self.slot)
        self.slot = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False


class StreamConnection(ConnectionBase, asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound."""

    __slots__ = (
        "closing",
        "conn_id",
        "counters",
        "flow",
        "framer",
        "inbound",
        "last_activity",
        "layer",
        "loop",
        "message_started",
        "name",
        "paused",
        "slot",
        "transport",
    )

    def __init__(self, layer: TransportLayer, name: str, inbound: bool, slot: str | None = None) -> None:
        self.layer = layer
        self.name = name
        self.inbound = inbound
        self.counters = layer.counters_for(name)
        self.framer = StreamFramer(layer.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.conn_id = 0
        self.flow = Flow(name, ("", 0), ("", 0))
        self.loop = layer.loop
        self.last_activity = 0.0
        self.closing = False
        self.paused = False
        self.slot = slot  # the peer's per-IP connection slot (inbound), given back at the end
        self.message_started = 0.0  # when the first byte of an incomplete message came, or 0

    # -- asyncio callbacks -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = self.transport = cast(asyncio.Transport, transport)
        layer = self.layer
        peer = transport.get_extra_info("peername")
        if self.inbound and self.slot is None:  # TLS connections were admitted before their handshake
            self.slot = layer.admit(self.name, peer)
            if self.slot is None:
                self.closing = True
                transport.abort()
                return
        sock = transport.get_extra_info("sockname")
        local: Address = (sock[0], sock[1])
        if not self.inbound:
            lst = layer.listener_for(self.name, family_of(sock[0]))
            if lst is not None:
                local = lst.address
        self.conn_id = layer.new_conn_id()
        self.flow = Flow(self.name, local, (peer[0], peer[1]), self.conn_id)
        self.last_activity = self.loop.time()
        layer.register(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = self.last_activity = self.loop.time()
        try:
            frames = self.framer.feed(data)
        except ParseError as exc:
            self._reject(exc)
            return
        if frames or not self.message_started:  # a message (or nothing) under way from now
            self.message_started = now if self.framer.buffered else 0.0
        layer = self.layer
        for f in frames:
            if f.data:
                c = self.counters
                c.messages_in += 1
                c.bytes_in += len(f.data)
                try:
                    layer.on_message(f.data, self.flow)
                except Exception:
                    layer.callback_failed(self.name, self.flow.remote)
                if self.closing:
                    return
            elif f.ping:
                layer.count("sip_stream_pings")
                self.write(b"\r\n", count=False)

    def eof_received(self) -> bool | None:
        return False  # half-closed: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.conn_id:
            self.layer.unregister(self, exc)
        self.release_slot()

    # -- ours ------------------------------------------------------------------------
    def write(self, data: bytes, count: bool = True) -> bool:
        t = self.transport
        if t is None or self.closing:
            return False
        if self.paused and self.overflowing(t):
            return False
        t.write(data)
        self.last_activity = self.loop.time()
        if count:
            c = self.counters
            c.messages_out += 1
            c.bytes_out += len(data)
        return True

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()  # flushes what is buffered, then closes

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def tick(self, now: float) -> None:
        """Periodic check from the layer's sweeper: a message started more than
        ``message_timeout`` ago and still incomplete is a slow sender (slowloris); the
        connection is dropped, since no answer can be given to half a request."""
        timeout = self.layer.message_timeout
        if self.message_started and timeout > 0 and now - self.message_started > timeout:
            self.layer.count("sip_connections_closed_slow")
            log.info("x %s %s: no complete message in %.0f s (%d bytes so far), closing",
                     self.name, self.flow.remote, timeout, self.framer.buffered)
            self.abort()

    def _reject(self, exc: ParseError) -> None:
        """Framing failed (too large, no Content-Length...): answer if we can, close."""
        layer = self.layer
        layer.count("sip_stream_errors")
        log.info("x %s %s: %s; closing", self.name, self.flow.remote, exc)
        if isinstance(exc.hint, tuple):
            reply = error_reply(bytes(self.framer._buf[: layer.max_message_size]), exc.hint)
            if reply is not None:
                self.write(reply)
        self.close()
