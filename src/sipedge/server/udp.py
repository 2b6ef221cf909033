"""One SIP UDP listener socket of :class:`~sipedge.server.transport.TransportLayer`:
datagrams in (size limit, keepalives, RFC 5626 §4.4.2 STUN on the SIP port), datagrams
out. It uses only the layer's public connection interface."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

from .._common.addr import Address
from ..sip.flow import Flow
from .error_reply import error_reply
from .listeners import Listener

if TYPE_CHECKING:
    from .transport import TransportLayer

log = logging.getLogger("sipedge.server.transport")

_STUN_COOKIE = b"\x21\x12\xa4\x42"


class UdpSocket(asyncio.DatagramProtocol):
    """One UDP listener socket."""

    __slots__ = ("closed", "counters", "layer", "listener", "local", "transport")

    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer
        self.counters = layer.counters_for("udp")
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        self.listener: Listener | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        self.local = (sockname[0], sockname[1])

    def _refuse_oversize(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """A request over the size limit is answered 513 when its head parses within the
        limit (RFC 3261 §18.1.1); anything else is only dropped. Logged either way."""
        layer = self.layer
        reply = error_reply(data[: layer.max_message_size], (513, "Message Too Large"))
        log.info("x udp %s: %d-byte datagram over max_message_size %d%s", addr[:2], len(data),
                 layer.max_message_size, "; answered 513" if reply else "; dropped")
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        layer = self.layer
        if layer.source_banned is not None and layer.source_banned(addr[0]):
            return  # flood control: nothing from a banned source is looked at
        n = len(data)
        if n > layer.max_message_size:
            layer.count("sip_udp_dropped_oversize")
            self._refuse_oversize(data, addr)
            return
        first = data[0] if n else 0
        if first < 0x20:  # SIP starts with a letter: only keepalives and STUN get here
            if first < 2 and n >= 20 and data[4:8] == _STUN_COOKIE:
                self._stun(data, addr)  # RFC 5626 §4.4.2 keepalive on the SIP port: not SIP
                return
            if not data.strip(b"\r\n\0"):  # 4-byte zero keepalive, stray CRLFs, empty
                layer.count("sip_udp_keepalives")
                return
        c = self.counters
        c.messages_in += 1
        c.bytes_in += n
        try:
            layer.on_message(data, Flow("udp", self.local, (addr[0], addr[1])))
        except Exception:
            layer.callback_failed("udp", addr)

    def _stun(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """Send what ``on_stun`` answers (counted as a binding), else drop and count."""
        layer = self.layer
        reply = None
        if layer.on_stun is not None:
            try:
                reply = layer.on_stun(data, Flow("udp", self.local, (addr[0], addr[1])))
            except Exception:
                layer.callback_failed("stun", addr)
        if reply is None or self.transport is None:
            layer.count("sip_udp_stun_dropped")
            return
        layer.count("sip_udp_stun_bindings")
        self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        self.layer.count("sip_udp_errors")
        log.debug("x udp %s: %s", self.local, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def sendto(self, data: bytes, addr: Address) -> bool:
        t = self.transport
        if t is None or self.closed:
            return False
        t.sendto(data, addr)
        c = self.counters
        c.messages_out += 1
        c.bytes_out += len(data)
        return True
