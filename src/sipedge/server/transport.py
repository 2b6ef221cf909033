"""SIP transports: UDP, TCP, TLS, WS and WSS listeners and connections (the asyncio adapter).

:class:`TransportLayer` binds the listeners, keeps the connection registry and the limits,
and sends. Its parts, each by job: ``listeners.py`` (listener addresses, ``sip.listen``
entries, bound sockets), ``udp.py`` (a UDP listener socket), ``stream.py`` (a TCP/TLS
connection and its framing), ``ws.py`` (WS/WSS), ``tls_listener.py`` (TLS accept with
admission before the handshake) and ``error_reply.py`` (the one stateless error reply a
listener gives itself). Those use only the layer's public connection interface
(``count``, ``admit``, ``register``... below "what connections use of the layer"). The
layer cuts bytes into SIP messages and hands each one up with the
:class:`~sipedge.sip.flow.Flow` it arrived on; beyond the framing it parses only the head
of a request it must refuse, and it knows nothing of transactions or routing.

Contract with the application
-----------------------------
``layer = TransportLayer(sip_config, on_message, server_ssl=...)`` then
``await layer.start()`` binds every ``transport:host:port`` of ``SipConfig.listen``
(port 0 = any free port; :attr:`TransportLayer.listeners` reports the bound one).

For every SIP message received the layer calls, synchronously from the event loop::

    on_message(data: bytes, flow: Flow) -> None

- once per UDP datagram, and once per complete stream message (cut by Content-Length,
  RFC 3261 §18.3). Keepalives (RFC 5626 CRLF pings/pongs, 4-byte zero UDP packets, stray
  CRLFs) never reach the callback: pings are answered here.
- ``data`` is one whole message; parse it with
  ``message.parse(data, stream=flow.transport in ("tcp", "tls"))``.
- The callback must not block. It may call :meth:`TransportLayer.send` directly, and
  start :meth:`TransportLayer.send_to` in a task. An exception escaping it is a bug: it is
  logged and counted (``sip_callback_errors``), and the layer keeps serving.

Sending
-------
- ``send(data, flow) -> bool`` sends back on that exact flow: the same UDP socket, or the
  same connection. It returns ``False`` (and counts ``sip_send_no_flow``) when the
  connection is gone; it never sends anywhere else (a registrar answers 480 then).
- ``await send_to(data, target) -> Flow`` reaches a :class:`~sipedge.sip.flow.Target`
  whose host is an IP literal (resolve names first, RFC 3263): UDP leaves from the
  listener of that transport and address family; TCP/TLS reuse an open connection to
  that remote address, else connect (``connect_timeout``) and register the new
  connection. It raises :class:`TransportError` when that fails.

Optional hooks: ``on_flow_closed(flow)`` when a TCP/TLS/WS connection ends (a
registrar can forget flows at once), and ``on_stun(data, flow) -> reply | None`` for STUN
Binding keepalives arriving on a SIP UDP port (RFC 5626 §4.4.2): a reply is sent back and
counted (``sip_udp_stun_bindings``); None, or no hook, drops it (``sip_udp_stun_dropped``).
``source_banned(ip)`` (flood control, proxy/pike.py) is asked first for every datagram
and new connection: a banned source's are dropped unread.
WS/WSS listeners (``ws:``/``wss:`` entries) are served by ``ws.py`` with the same API.

Limits: ``LimitsConfig.max_connections`` (new connections beyond it are closed at once,
outbound ones refused), ``max_connections_per_ip`` (inbound ones from one address beyond
it are closed at once; TLS/WSS ones are admitted before their handshake, by
``tls_listener.py``), ``handshake_timeout`` (TLS handshake, WebSocket upgrade),
``message_timeout`` (a TCP/TLS message must be whole this long after its first byte, else
the connection is dropped), ``idle_timeout`` (0 = never), ``max_message_size`` (a UDP request
over it gets 513 when its head parses, else it is dropped; both are counted; stream
messages over it get 513, unframeable ones 400 when the head is parseable enough, then
that connection is closed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._common.addr import Address
from ..config.sip import SipConfig
from ..errors import ConfigError
from ..sip.flow import Flow, Target
from .listeners import (
    ALL_TRANSPORTS,
    STREAM_TRANSPORTS,
    Listener,
    TransportError,
    bind_listener,
    family_of,
    norm_host,
    norm_peer,
    parse_listen,
)
from .stream import Conn, Counters, StreamConnection
from .tls_listener import TlsListener
from .udp import UdpSocket

if TYPE_CHECKING:
    from .ws import WsOptions

__all__ = [
    "ALL_TRANSPORTS", "STREAM_TRANSPORTS", "Conn", "Listener", "OnFlowClosed", "OnMessage", "OnStun",
    "TransportError", "TransportLayer", "parse_listen",
]

log = logging.getLogger(__name__)

OnMessage = Callable[[bytes, Flow], None]
"""``on_message(data, flow)``: one SIP message received on ``flow``."""

OnFlowClosed = Callable[[Flow], None]
"""``on_flow_closed(flow)``: a stream connection ended; sends on that flow now fail."""

OnStun = Callable[[bytes, Flow], "bytes | None"]
"""``on_stun(data, flow)``: a STUN message on a SIP UDP port (RFC 5626 §4.4.2 keepalive);
returns the reply to send back to its source, or None to drop it."""


class TransportLayer:
    """Every SIP listener and connection of one process; see the module docstring."""

    def __init__(
        self,
        config: SipConfig,
        on_message: OnMessage,
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        handshake_timeout: float | None = None,
        on_flow_closed: OnFlowClosed | None = None,
        ws_options: WsOptions | None = None,
        on_stun: OnStun | None = None,
        source_banned: Callable[[str], bool] | None = None,
        inherited: dict[str, socket.socket] | None = None,
        conn_ids: tuple[int, int] = (1, 1),
    ) -> None:
        self.config = config
        # a worker's listeners, bound by its supervisor (``listen`` entry -> socket), and
        # its connection ids (start, step): unique across workers, the owner is id % step
        self.inherited = inherited or {}
        # a worker's: told of every connection opened (the other workers learn of it)
        self.on_flow_opened: OnFlowClosed | None = None
        self.on_message = on_message
        self.on_flow_closed = on_flow_closed
        self.on_stun = on_stun
        # ``source_banned(ip)``: flood control's verdict, asked before anything else is
        # done with a datagram or a new connection (True: dropped, refused)
        self.source_banned = source_banned
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.connect_timeout = connect_timeout
        limits = config.limits
        self.handshake_timeout = limits.handshake_timeout if handshake_timeout is None else handshake_timeout
        self.max_message_size = limits.max_message_size
        self.max_connections = limits.max_connections
        self.max_connections_per_ip = limits.max_connections_per_ip
        self.idle_timeout = limits.idle_timeout
        self.message_timeout = limits.message_timeout
        self.max_write_buffer = max(16 * limits.max_message_size, 1 << 20)
        self._loop = asyncio.get_running_loop()
        self._counters = {t: Counters() for t in ALL_TRANSPORTS}
        self._stat: dict[str, int] = dict.fromkeys(
            (
                "sip_connections_accepted", "sip_connections_outbound", "sip_connections_refused",
                "sip_connections_closed", "sip_connections_closed_idle",
                "sip_connections_closed_overflow", "sip_connect_failures", "sip_udp_dropped_oversize",
                "sip_udp_keepalives", "sip_udp_stun_bindings", "sip_udp_stun_dropped", "sip_udp_errors", "sip_stream_pings",
                "sip_stream_errors", "sip_send_no_flow", "sip_callback_errors",
                "sip_ws_handshake_failures", "sip_ws_protocol_errors", "sip_ws_invalid_utf8",
                "sip_ws_origins_refused", "sip_ws_pings_sent",
                "sip_ws_ping_timeouts", "sip_connections_refused_per_ip", "sip_connections_closed_slow",
                "sip_tls_handshake_timeouts", "sip_tls_handshake_failures", "sip_accept_errors",
            ),
            0,
        )
        self._ids = itertools.count(*conn_ids)
        self._listeners: list[Listener] = []
        self._udp: dict[Address, UdpSocket] = {}
        self._servers: list[asyncio.Server] = []
        self._conns: dict[int, Conn] = {}
        self._by_remote: dict[tuple[str, str, int], Conn] = {}
        self._connecting: dict[tuple[str, str, int], asyncio.Future[Conn]] = {}
        self._handshaking = 0  # TLS/WS connections accepted, handshake or upgrade not done yet
        self._per_ip: dict[str, int] = {}  # inbound connections (handshaking too) per peer IP
        self._tls_listeners: list[TlsListener] = []
        self.ws_options = ws_options
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    # -- start / stop ----------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener of ``config.listen`` (ws/wss entries are left to ws.py)."""
        try:
            for item in self.config.listen:
                proto, host, port = parse_listen(item)
                sock = self.inherited.get(item)
                if proto == "udp":
                    await self._listen_udp(host, port, sock)
                else:
                    await self._listen_stream(proto, host, port, sock)
        except BaseException:
            await self.close()
            raise
        if self.idle_timeout > 0 or self.message_timeout > 0 or self._ws_pinging():
            self._arm_sweeper()

    async def _listen_udp(self, host: str, port: int, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = bind_listener("udp", host, port)
        _, proto = await self._loop.create_datagram_endpoint(lambda: UdpSocket(self), sock=sock)
        self._udp[proto.local] = proto
        lst = Listener("udp", proto.local[0], proto.local[1])
        proto.listener = lst
        self._listeners.append(lst)
        log.info("- listening on %s", lst)

    async def _listen_stream(self, name: str, host: str, port: int, sock: socket.socket | None = None) -> None:
        ctx: ssl.SSLContext | None = None
        if name in ("tls", "wss"):
            if self.server_ssl is None:
                raise ConfigError(f"sip.listen: {name}:{host}:{port} needs a certificate (server_ssl)")
            ctx = self.server_ssl
        factory: Callable[[str | None], asyncio.Protocol]
        if name in ("ws", "wss"):
            from .ws import WsConnection, WsOptions

            if self.ws_options is None:
                self.ws_options = WsOptions()
            opts = self.ws_options
            factory = lambda slot: WsConnection(self, name, opts, slot)  # noqa: E731
        else:
            factory = lambda slot: StreamConnection(self, name, inbound=True, slot=slot)  # noqa: E731
        if ctx is not None:
            if sock is not None:
                sock.setblocking(False)
                tls_listener = TlsListener(self, name, sock, ctx, factory)
            else:
                tls_listener = TlsListener.bind(self, name, host, port, ctx, factory)
            self._tls_listeners.append(tls_listener)
            lst = Listener(name, *tls_listener.address)
            self._listeners.append(lst)
            log.info("- listening on %s", lst)
            return
        try:
            if sock is not None:
                server = await self._loop.create_server(lambda: factory(None), sock=sock, backlog=512)
            else:
                server = await self._loop.create_server(
                    lambda: factory(None), host, port, reuse_address=True, backlog=512
                )
        except OSError as exc:
            raise ConfigError(f"sip.listen: cannot bind {name}:{host}:{port}: {exc.strerror}") from exc
        self._servers.append(server)
        for s in server.sockets:
            sn = s.getsockname()
            lst = Listener(name, sn[0], sn[1])
            self._listeners.append(lst)
            log.info("- listening on %s", lst)

    async def close(self) -> None:
        """Stop listening, close every connection (flushing), then abort stragglers."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self._servers:
            server.close()
        for tls_listener in self._tls_listeners:
            tls_listener.close()
        for fut in self._connecting.values():
            fut.cancel()
        for conn in list(self._conns.values()):
            conn.close()
        for _ in range(20):
            if not self._conns:
                break
            await asyncio.sleep(0.01)
        for conn in list(self._conns.values()):
            conn.abort()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except TimeoutError:
                pass
        for udp in self._udp.values():
            if udp.transport is not None:
                udp.transport.close()
        await asyncio.sleep(0)

    # -- introspection ---------------------------------------------------------------
    @property
    def listeners(self) -> list[Listener]:
        """Every bound listener, in config order, with the real port."""
        return list(self._listeners)

    def listener(self, transport: str, family: int = 4) -> Listener:
        """The first listener of a transport and address family (4 or 6)."""
        lst = self.listener_for(transport, family)
        if lst is None:
            raise TransportError(f"no {transport} listener for IPv{family}")
        return lst

    def listener_for(self, transport: str, family: int) -> Listener | None:
        for lst in self._listeners:
            if lst.transport == transport and lst.family == family:
                return lst
        return None

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def is_alive(self, flow: Flow) -> bool:
        """Whether ``send(…, flow)`` can still deliver (UDP: the listener is open). A
        connection must be that flow's: another node's flow (a binding in a shared
        database) may carry an id one of ours has, to another peer."""
        if flow.transport == "udp":
            u = self._udp.get(flow.local)
            return u is not None and not u.closed
        conn = self._conns.get(flow.conn_id)
        return conn is not None and not conn.closing and conn.flow.remote == flow.remote and conn.flow.local == flow.local

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {}
        for name, c in self._counters.items():
            out[f"sip_{name}_messages_in"] = c.messages_in
            out[f"sip_{name}_messages_out"] = c.messages_out
            out[f"sip_{name}_bytes_in"] = c.bytes_in
            out[f"sip_{name}_bytes_out"] = c.bytes_out
        out.update(self._stat)
        out["sip_connections_open"] = len(self._conns)
        return out

    # -- sending ---------------------------------------------------------------------
    def send(self, data: bytes, flow: Flow) -> bool:
        """Send on exactly this flow. ``False`` when its socket or connection is gone."""
        if flow.transport == "udp":
            u = self._udp.get(flow.local)
            if u is not None and u.sendto(data, flow.remote):
                return True
        else:
            conn = self._conns.get(flow.conn_id)
            if conn is not None and conn.flow.remote == flow.remote and conn.write(data):
                return True
        self._stat["sip_send_no_flow"] += 1
        return False

    async def send_to(self, data: bytes, target: Target, *, tls_name: str | None = None) -> Flow:
        """Send to a target (IP literal host), reusing or opening a connection.

        ``tls_name``: the name to check the server certificate against and send as SNI
        (when the client context verifies). Raises :class:`TransportError`.
        """
        name = target.transport
        host = norm_host(target.host)
        if name == "udp":
            lst = self.listener_for("udp", family_of(host))
            u = self._udp.get(lst.address) if lst is not None else None
            if u is None:
                raise TransportError(f"no udp listener for IPv{family_of(host)} to send to {host}")
            flow = Flow("udp", u.local, (host, target.port))
            if not u.sendto(data, flow.remote):
                raise TransportError(f"udp listener {lst} is closed")
            return flow
        key = (name, host, target.port)
        conn = self._by_remote.get(key)
        if conn is None or conn.closing:
            if name not in STREAM_TRANSPORTS:
                raise TransportError(f"no open {name} connection to {host}:{target.port}")
            conn = await self._connect(key, tls_name)
        if not conn.write(data):
            raise TransportError(f"{name} connection to {host}:{target.port} closed")
        return conn.flow

    def has_connection(self, target: Target) -> bool:
        """Whether an open connection of this process reaches ``target`` (IP host)."""
        conn = self._by_remote.get((target.transport, norm_host(target.host), target.port))
        return conn is not None and not conn.closing

    def close_flow(self, flow: Flow) -> bool:
        """Close a stream flow's connection after flushing (e.g. after a fatal 400)."""
        conn = self._conns.get(flow.conn_id)
        if conn is None:
            return False
        conn.close()
        return True

    async def _connect(self, key: tuple[str, str, int], tls_name: str | None) -> Conn:
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Conn] = self._loop.create_future()
        self._connecting[key] = fut
        try:
            conn = await self._open(key, tls_name)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, Exception) else TransportError("cancelled"))
                fut.exception()  # retrieved: no "never retrieved" warning
            raise
        else:
            fut.set_result(conn)
            return conn
        finally:
            self._connecting.pop(key, None)

    async def _open(self, key: tuple[str, str, int], tls_name: str | None) -> StreamConnection:
        name, host, port = key
        if self._closed:
            raise TransportError("transport layer is closed")
        if len(self._conns) >= self.max_connections:
            self._stat["sip_connect_failures"] += 1
            raise TransportError(
                f"cannot connect to {name}:{host}:{port}: {len(self._conns)} connections open "
                "(limits.max_connections)"
            )
        ctx: ssl.SSLContext | None = None
        server_hostname: str | None = None
        if name == "tls":
            if self.client_ssl is None:
                from .tls import client_context

                self.client_ssl = client_context()
            ctx = self.client_ssl
            server_hostname = tls_name or host
        lst = self.listener_for(name, family_of(host))
        local_addr = None
        if lst is not None and not ipaddress.ip_address(lst.host).is_unspecified:
            local_addr = (lst.host, 0)
        try:
            _, proto = await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: StreamConnection(self, name, inbound=False),
                    host, port, ssl=ctx, server_hostname=server_hostname, local_addr=local_addr,
                    ssl_handshake_timeout=self.handshake_timeout if ctx else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            self._stat["sip_connect_failures"] += 1
            raise TransportError(
                f"cannot connect to {name}:{host}:{port}: no answer within {self.connect_timeout} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            self._stat["sip_connect_failures"] += 1
            raise TransportError(f"cannot connect to {name}:{host}:{port}: {exc}") from exc
        if proto.closing or not proto.conn_id:
            raise TransportError(f"{name} connection to {host}:{port} closed at once")
        return proto

    # -- what connections use of the layer (udp.py, stream.py, ws.py, tls_listener.py) --
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def counters_for(self, transport: str) -> Counters:
        """The message and byte counters of one transport."""
        return self._counters[transport]

    def count(self, stat: str) -> None:
        """One more of an event counter of :meth:`stats` (e.g. ``sip_ws_pings_sent``)."""
        self._stat[stat] += 1

    def new_conn_id(self) -> int:
        """The id of a connection just opened (unique across workers, docs/workers.md)."""
        return next(self._ids)

    def handshake_started(self) -> None:
        """A TLS handshake or WebSocket upgrade began: it counts against max_connections."""
        self._handshaking += 1

    def handshake_ended(self) -> None:
        self._handshaking -= 1

    # -- connection registry ---------------------------------------------------------
    def admit(self, name: str, peer: Any) -> str | None:
        """A slot for a new inbound connection, or None when it is over max_connections or
        its address's max_connections_per_ip (the refusal is counted), or from a banned
        source (dropped unread, counted by flood control). The slot (the peer's IP) goes
        back to :meth:`release` when the connection ends."""
        if self.source_banned is not None and self.source_banned(peer[0]):
            return None
        if self._closed or len(self._conns) + self._handshaking >= self.max_connections:
            self._stat["sip_connections_refused"] += 1
            log.info("x %s connection from %s refused: %d connections open (max_connections)",
                     name, peer, len(self._conns) + self._handshaking)
            return None
        ip = norm_peer(str(peer[0]))
        held = self._per_ip.get(ip, 0)
        if 0 < self.max_connections_per_ip <= held:
            self._stat["sip_connections_refused_per_ip"] += 1
            log.info("x %s connection from %s refused: %d open from that address "
                     "(max_connections_per_ip)", name, peer, held)
            return None
        self._per_ip[ip] = held + 1
        return ip

    def release(self, slot: str | None) -> None:
        if slot is None:
            return
        held = self._per_ip.get(slot, 0) - 1
        if held > 0:
            self._per_ip[slot] = held
        else:
            self._per_ip.pop(slot, None)

    def register(self, conn: Conn) -> None:
        self._conns[conn.conn_id] = conn
        self._by_remote[(conn.name, norm_peer(conn.flow.remote[0]), conn.flow.remote[1])] = conn
        self._stat["sip_connections_accepted" if conn.inbound else "sip_connections_outbound"] += 1
        log.debug("- %s connection %d %s %s", conn.name, conn.conn_id,
                  "from" if conn.inbound else "to", conn.flow.remote)
        if self.on_flow_opened is not None:
            self.on_flow_opened(conn.flow)

    def unregister(self, conn: Conn, exc: Exception | None) -> None:
        if self._conns.pop(conn.conn_id, None) is None:
            return
        key = (conn.name, norm_peer(conn.flow.remote[0]), conn.flow.remote[1])
        if self._by_remote.get(key) is conn:
            del self._by_remote[key]
        self._stat["sip_connections_closed"] += 1
        log.debug("- %s connection %d closed%s", conn.name, conn.conn_id, f": {exc}" if exc else "")
        if self.on_flow_closed is not None:
            try:
                self.on_flow_closed(conn.flow)
            except Exception:
                self.callback_failed(conn.name, conn.flow.remote)

    def _ws_pinging(self) -> bool:
        return (
            self.ws_options is not None and self.ws_options.ping_interval > 0
            and any(lst.transport in ("ws", "wss") for lst in self._listeners)
        )

    def _arm_sweeper(self) -> None:
        periods = [t for t in (self.idle_timeout, self.message_timeout) if t > 0]
        if self._ws_pinging():
            assert self.ws_options is not None
            periods += [self.ws_options.ping_interval, self.ws_options.ping_timeout]
        interval = min(max(min(periods) / 4, 0.02), 5.0)
        self._sweeper = self._loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        now = self._loop.time()
        deadline = now - self.idle_timeout if self.idle_timeout > 0 else -1.0
        for conn in list(self._conns.values()):
            if conn.closing:
                continue
            if conn.last_activity < deadline:
                self._stat["sip_connections_closed_idle"] += 1
                log.debug("- %s connection %d idle, closing", conn.name, conn.conn_id)
                conn.close()
            else:
                conn.tick(now)
        if not self._closed:
            self._arm_sweeper()

    def callback_failed(self, transport: str, remote: Any) -> None:
        self._stat["sip_callback_errors"] += 1
        log.exception("on_message failed for a %s message from %s", transport, remote)
