"""asyncio adapter of the STUN/TURN role: client listeners, relay sockets, the timer.

Every callback does the same four steps (STYLE.md B3): feed the core, get its actions,
perform them (send to a client flow, send from a relay socket to a peer), re-arm the one
timer. Relay sockets are plain non-blocking sockets watched with ``loop.add_reader`` and
bound synchronously by :class:`SocketPortAllocator`, so the core only ever hands out
ports that are really open.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import random
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from .._common.addr import Address
from ..config import Config
from ..config.turn import TurnConfig, split_address, split_listener
from ..errors import ConfigError
from ..stun.attributes import Family
from ..stun.server import BindingConfig
from ..turn.auth import Credentials, RestCredentials, UserStore
from ..turn.channel import Framer
from ..turn.policy import PeerPolicy
from ..turn.ports import RangeAllocator
from ..turn.server import (
    Action,
    AllocationCreated,
    AllocationDeleted,
    Flow,
    RequestRejected,
    ServerConfig,
    ToClient,
    ToPeer,
    TurnServer,
)

log = logging.getLogger(__name__)

_LISTENER_BATCH = 32
_STREAM_BACKLOG = 1 << 20
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
_RELAY_BATCH = 8
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
IP_PMTUDISC_DONT = getattr(socket, "IP_PMTUDISC_DONT", 0)
IPV6_DONTFRAG = getattr(socket, "IPV6_DONTFRAG", 62)


def set_dont_fragment(sock: socket.socket, on: bool) -> None:
    """DONT-FRAGMENT (RFC 8656 §14.8) on a relay socket: the DF bit for IPv4, no source
    fragmentation for IPv6 (routers never fragment IPv6). Raises OSError."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1 if on else 0)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO if on else IP_PMTUDISC_DONT)


def server_config(cfg: TurnConfig) -> ServerConfig:
    """The core's config from the ``[turn]`` section."""
    primary: Address | None = None
    other: Address | None = None
    if cfg.alt_address:
        udp = [split_listener(x) for x in cfg.listen if x.startswith("udp:")]
        if udp:
            _, host, port = udp[0]
            primary = (host, port)
            other = (cfg.alt_address, cfg.alt_port or port + 1)
    return ServerConfig(
        realm=cfg.realm,
        software=cfg.software,
        relay_ipv4=cfg.relay_ipv4 or None,
        relay_ipv6=cfg.relay_ipv6 or None,
        external_ipv4=cfg.external_ipv4 or None,
        external_ipv6=cfg.external_ipv6 or None,
        default_lifetime=cfg.default_lifetime,
        max_lifetime=cfg.max_lifetime,
        permission_lifetime=cfg.permission_lifetime,
        channel_lifetime=cfg.channel_lifetime,
        nonce_lifetime=cfg.nonce_lifetime,
        max_allocations=cfg.max_allocations,
        max_allocations_per_user=cfg.max_allocations_per_user,
        max_bandwidth=cfg.max_bandwidth,
        password_algorithms=cfg.password_algorithms,
        alternate_servers=tuple(split_address(a) for a in cfg.alternate_servers),
        alternate_domain=cfg.alternate_domain,
        policy=PeerPolicy.build(cfg.allow_peers, cfg.deny_peers, cfg.deny_private_peers),
        binding=BindingConfig(cfg.software, primary, other),
    )


class SocketPortAllocator:
    """Binds relay UDP sockets from the port range and watches them with add_reader."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ips: dict[Family, str],
        low: int,
        high: int,
        on_readable: Callable[[socket.socket, Address], None],
        rng: random.Random | None = None,
    ) -> None:
        self._loop = loop
        self._ips = ips
        self._range = RangeAllocator(low, high, rng)
        self._on_readable = on_readable
        self.sockets: dict[Address, socket.socket] = {}
        self._watched: set[Address] = set()
        self.bind_failures = 0

    def _bind(self, family: Family, port: int) -> socket.socket | None:
        ip = self._ips.get(family)
        if ip is None:
            return None
        af = socket.AF_INET6 if family == Family.IPV6 else socket.AF_INET
        s = socket.socket(af, socket.SOCK_DGRAM)
        try:
            if af == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            # ICMP errors on the error queue, reported to the client (RFC 8656 §11.5).
            with contextlib.suppress(OSError):
                if af == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
                else:
                    s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            s.bind((ip, port))
        except OSError:
            s.close()
            self.bind_failures += 1
            return None
        self.sockets[(ip, port)] = s
        return s

    def _watch(self, family: Family, port: int) -> None:
        addr = (self._ips[family], port)
        s = self.sockets[addr]
        self._loop.add_reader(s.fileno(), self._on_readable, s, addr)
        self._watched.add(addr)

    def acquire(self, family: Family, even: bool = False, reserve_next: bool = False) -> tuple[int, int | None] | None:
        if family not in self._ips:
            return None
        for p in self._range.candidates(family, even or reserve_next, reserve_next):
            if self._bind(family, p) is None:
                continue
            if reserve_next and self._bind(family, p + 1) is None:
                self._close((self._ips[family], p))
                continue
            self._range.mark(family, p)
            self._watch(family, p)
            if reserve_next:
                self._range.mark(family, p + 1)
                return p, p + 1
            return p, None
        return None

    def activate(self, family: Family, port: int) -> bool:
        addr = (self._ips.get(family, ""), port)
        if addr not in self.sockets:
            return False
        if addr not in self._watched:
            self._watch(family, port)
        return True

    def release(self, family: Family, port: int) -> None:
        self._range.release(family, port)
        ip = self._ips.get(family)
        if ip is not None:
            self._close((ip, port))

    def _close(self, addr: Address) -> None:
        s = self.sockets.pop(addr, None)
        if s is None:
            return
        if addr in self._watched:
            self._watched.discard(addr)
            self._loop.remove_reader(s.fileno())
        s.close()

    def close_all(self) -> None:
        for addr in list(self.sockets):
            self._close(addr)

    def stats(self) -> dict[str, int | float]:
        out = self._range.stats()
        out["turn_relay_bind_failures"] = self.bind_failures
        return out


class _UdpListener:
    """One client-facing UDP socket, read with ``loop.add_reader``. ChannelData
    takes a fast path straight to the relay socket; the rest goes through
    :meth:`TurnService.feed`."""

    def __init__(self, service: TurnService, sock: socket.socket, local: Address) -> None:
        self.service = service
        self.sock = sock
        self.local = local
        self.flows: dict[tuple[str | int, ...], Flow] = {}

    def readable(self) -> None:
        # Many clients share this socket: drain a bounded batch per wake-up.
        recv = self.sock.recvfrom
        svc = self.service
        for _ in range(_LISTENER_BATCH):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                svc.counters["turn_udp_errors"] += 1
                return
            flow = self.flows.get(addr)
            if flow is None:
                if len(self.flows) >= 65536:
                    self.flows.clear()
                flow = self.flows[addr] = Flow("udp", self.local, (str(addr[0]), int(addr[1])))
            if data and 0x40 <= data[0] <= 0x7F:
                try:
                    out = svc.core.channel_data(flow, data, svc.loop.time())
                except Exception:
                    svc.counters["turn_internal_errors"] += 1
                    log.exception("x TURN: internal error on ChannelData from %s", flow.remote)
                    continue
                if out is not None:
                    svc.send_peer(out)
            else:
                svc.feed(flow, data)

    def sendto(self, data: bytes, remote: Address) -> None:
        try:
            self.sock.sendto(data, remote)
        except OSError:
            self.service.counters["turn_send_errors"] += 1


class _StreamConn(asyncio.Protocol):
    """One TCP/TLS client connection. A connection that holds no allocation and has been
    idle for ``stream_idle_timeout`` seconds is closed (slow or silent clients)."""

    def __init__(self, service: TurnService, transport_name: str) -> None:
        self.service = service
        self.name = transport_name
        self.framer = Framer()
        self.flow: Flow | None = None
        self.transport: asyncio.Transport | None = None
        self.last = 0.0
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        if len(self.service.conns) >= self.service.config.max_connections:
            self.service.counters["turn_connections_refused"] += 1
            transport.close()
            return
        self.transport = transport
        local = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        self.flow = Flow(self.name, (str(local[0]), int(local[1])), (str(peer[0]), int(peer[1])))
        self.service.conns[self.flow] = transport
        transport.set_write_buffer_limits(high=1 << 20)
        self.last = self.service.loop.time()
        self._arm_idle()

    def _arm_idle(self) -> None:
        timeout = self.service.config.stream_idle_timeout
        if timeout > 0:
            self.idle = self.service.loop.call_at(self.last + timeout, self._check_idle)

    def _check_idle(self) -> None:
        self.idle = None
        if self.flow is None or self.transport is None or self.transport.is_closing():
            return
        svc = self.service
        if svc.core.allocation(self.flow) is None and svc.loop.time() - self.last >= svc.config.stream_idle_timeout:
            svc.counters["turn_connections_idle_closed"] += 1
            self.transport.close()
            return
        if svc.core.allocation(self.flow) is not None:
            self.last = svc.loop.time()
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.flow is None or self.transport is None:
            return
        svc = self.service
        self.last = svc.loop.time()
        try:
            frames = self.framer.feed(data)
        except ValueError:
            svc.counters["turn_stream_framing_errors"] += 1
            self.transport.close()
            return
        for f in frames:
            if 0x40 <= f[0] <= 0x7F:
                out = svc.core.channel_data(self.flow, f, self.last)
                if out is not None:
                    svc.send_peer(out)
            else:
                svc.feed(self.flow, f)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        if self.flow is not None:
            self.service.conns.pop(self.flow, None)
            self.service.closed(self.flow)


@dataclass
class TurnService:
    """The running STUN/TURN role: build with :meth:`create`, then ``await start()``."""

    core: TurnServer
    config: TurnConfig
    ports: SocketPortAllocator
    loop: asyncio.AbstractEventLoop
    ssl_context: ssl.SSLContext | None = None
    udp: dict[Address, _UdpListener] = field(default_factory=dict)
    conns: dict[Flow, asyncio.Transport] = field(default_factory=dict)
    servers: list[asyncio.Server] = field(default_factory=list)
    bound: list[tuple[str, str, int]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    _timer: asyncio.TimerHandle | None = None
    _timer_at: float | None = None
    _df: dict[Address, bool] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        config: TurnConfig,
        users: UserStore | None = None,
        ssl_context: ssl.SSLContext | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> TurnService:
        loop = loop or asyncio.get_running_loop()
        core_cfg = server_config(config)
        rest = RestCredentials(config.secrets, wall_clock) if config.secrets else None
        creds = Credentials(users, rest)
        if creds.supports_userhash:
            core_cfg = dataclasses.replace(core_cfg, username_anonymity=True)
        ips: dict[Family, str] = {}
        if config.relay_ipv4:
            ips[Family.IPV4] = config.relay_ipv4
        if config.relay_ipv6:
            ips[Family.IPV6] = config.relay_ipv6
        holder: list[TurnService] = []

        def readable(sock: socket.socket, relay: Address) -> None:
            holder[0].relay_readable(sock, relay)

        ports = SocketPortAllocator(loop, ips, config.port_min, config.port_max, readable)
        core = TurnServer(core_cfg, creds, ports)
        svc = cls(core, config, ports, loop, ssl_context)
        svc.counters = dict.fromkeys(
            (
                "turn_udp_errors", "turn_connections_refused", "turn_stream_framing_errors",
                "turn_send_errors", "turn_internal_errors", "turn_connections_idle_closed",
                "turn_drops_client_backlog",
            ),
            0,
        )
        holder.append(svc)
        return svc

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listener (and the RFC 5780 alternates); raises OSError on failure."""
        binding = self.core.config.binding
        udp_addrs: list[Address] = []
        for item in self.config.listen:
            proto, host, port = split_listener(item)
            if proto == "udp":
                udp_addrs.append((host, port))
            else:
                if proto == "tls" and self.ssl_context is None:
                    raise OSError(f"turn.listen {item!r}: TLS listener needs a certificate")
                name = proto

                def factory(name: str = name) -> _StreamConn:
                    return _StreamConn(self, name)

                srv = await self.loop.create_server(
                    factory, host, port, ssl=self.ssl_context if proto == "tls" else None,
                    reuse_address=True,
                )
                self.servers.append(srv)
                sock_port = srv.sockets[0].getsockname()[1]
                self.bound.append((proto, host, sock_port))
        if binding.primary is not None and binding.other is not None:
            (a1, p1), (a2, p2) = binding.primary, binding.other
            for extra in ((a1, p2), (a2, p1), (a2, p2)):
                if extra not in udp_addrs:
                    udp_addrs.append(extra)
        for host, port in udp_addrs:
            af = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(af, socket.SOCK_DGRAM)
            try:
                if af == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                sock.setblocking(False)
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
            bound: Address = (host, int(sock.getsockname()[1]))
            listener = _UdpListener(self, sock, bound)
            self.loop.add_reader(sock.fileno(), listener.readable)
            self.udp[bound] = listener
            self.bound.append(("udp", host, bound[1]))
        log.info("- TURN listening on %s", ", ".join(f"{t}:{h}:{p}" for t, h, p in self.bound))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for srv in self.servers:
            srv.close()
        for t in list(self.conns.values()):
            t.close()
        for srv in self.servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 2)
            except TimeoutError:
                pass
        for u in self.udp.values():
            self.loop.remove_reader(u.sock.fileno())
            u.sock.close()
        self.udp.clear()
        self.ports.close_all()

    def stats(self) -> dict[str, int | float]:
        out = self.core.stats()
        out.update(self.counters)
        out["turn_connections"] = len(self.conns)
        return out

    def address(self, transport: str = "udp") -> Address:
        """The first bound address of ``transport`` (tests bind port 0)."""
        for t, h, p in self.bound:
            if t == transport:
                return (h, p)
        raise KeyError(transport)

    # -- inputs ----------------------------------------------------------------------

    def feed(self, flow: Flow, data: bytes) -> None:
        try:
            actions = self.core.handle_client(flow, data, self.loop.time())
        except Exception:
            self.counters["turn_internal_errors"] += 1
            log.exception("x TURN: internal error on a message from %s", flow.remote)
            return
        if actions:
            self.perform(actions)

    def closed(self, flow: Flow) -> None:
        self.perform(self.core.client_closed(flow, self.loop.time()))

    def relay_readable(self, sock: socket.socket, relay: Address) -> None:
        """Drain a bounded batch from one relay socket. (Reading one datagram per wake-up
        saves the EAGAIN call but measured 10-40 ms RTT under load with uvloop.)"""
        for _ in range(_RELAY_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # A pending ICMP error (e.g. port unreachable): read the error queue.
                self._relay_errors(sock, relay)
                return
            try:
                out = self.core.handle_peer(relay, (addr[0], addr[1]), data, self.loop.time())
            except Exception:
                self.counters["turn_internal_errors"] += 1
                log.exception("x TURN: internal error on a peer datagram from %s", addr)
                continue
            if out is not None:
                self._send_client(out.flow, out.data)

    def _relay_errors(self, sock: socket.socket, relay: Address) -> None:
        now = self.loop.time()
        for _ in range(_RELAY_BATCH):
            try:
                _, anc, _, addr = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters["turn_send_errors"] += 1
                return
            for _level, _type, cdata in anc:
                if len(cdata) < _EE.size:
                    continue
                _errno, origin, icmp_type, icmp_code, _pad, info, _data = _EE.unpack_from(cdata)
                if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6) or not addr:
                    continue
                out = self.core.handle_peer_icmp(relay, (str(addr[0]), int(addr[1])), icmp_type, icmp_code, info, now)
                if out is not None:
                    self._send_client(out.flow, out.data)

    def on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.perform(self.core.handle_timer(self.loop.time()))

    # -- outputs ---------------------------------------------------------------------

    def perform(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, ToClient):
                self._send_client(a.flow, a.data)
            elif isinstance(a, ToPeer):
                self.send_peer(a)
            elif isinstance(a, AllocationCreated):
                log.info("- TURN allocation %s for %s relays %s", a.flow.remote, a.account, a.relays)
            elif isinstance(a, AllocationDeleted):
                log.info("- TURN allocation %s ended: %s", a.flow.remote, a.reason)
                for relay in a.relays:
                    self._df.pop(relay, None)
            elif isinstance(a, RequestRejected):
                log.debug("> TURN %#x from %s rejected %d %s", a.method, a.flow.remote, a.code, a.reason)
        self._arm()

    def _send_client(self, flow: Flow, data: bytes) -> None:
        if flow.transport == "udp":
            t = self.udp.get(flow.local)
            if t is not None:
                t.sendto(data, flow.remote)
            return
        c = self.conns.get(flow)
        if c is not None and not c.is_closing():
            if c.get_write_buffer_size() > _STREAM_BACKLOG:
                # A TCP/TLS client that does not read: drop relayed data, like UDP would.
                self.counters["turn_drops_client_backlog"] += 1
                return
            c.write(data)

    def send_peer(self, a: ToPeer) -> None:
        s = self.ports.sockets.get(a.relay)
        if s is None:
            return
        if a.dont_fragment != self._df.get(a.relay, False):
            try:
                set_dont_fragment(s, a.dont_fragment)
                self._df[a.relay] = a.dont_fragment
            except OSError:
                pass
        try:
            s.sendto(a.data, a.peer)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNREFUSED, errno.EMSGSIZE):
                log.debug("x TURN relay send to %s failed: %s", a.peer, exc)
            self.counters["turn_send_errors"] += 1

    def _arm(self) -> None:
        when = self.core.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self.loop.call_at(when, self.on_timer)



async def start_from_config(
    config: Config, users: UserStore | None = None, ssl_context: ssl.SSLContext | None = None
) -> TurnService:
    """Build and start the STUN/TURN role from the whole config (``sipedge serve`` and
    ``sipedge turn serve``). ``users``: the long-term user store (the caller opens and
    closes it; see ``sipedge.store.turn_users``). Makes the TLS context when a ``tls:``
    listener is configured (generating a self-signed certificate like the SIP side) and
    binds every socket; raises ConfigError naming the problem."""
    cfg = config.turn
    if cfg.port_min > cfg.port_max:
        raise ConfigError(f"turn.port_min = {cfg.port_min} is above turn.port_max = {cfg.port_max}")
    if not cfg.relay_ipv4 and not cfg.relay_ipv6:
        raise ConfigError("turn.relay_ipv4 and turn.relay_ipv6 are both empty; set at least one")
    if cfg.default_lifetime > cfg.max_lifetime:
        raise ConfigError("turn.default_lifetime is above turn.max_lifetime")
    if ssl_context is None and any(x.startswith("tls:") for x in cfg.listen):
        from . import tls

        cert_p, key_p = tls.certificate_paths(config.tls.cert, config.tls.key, config.general.data_dir)
        cert = tls.ensure_certificate(cert_p, key_p)
        ssl_context = tls.server_context(cert.cert, cert.key)
    svc = TurnService.create(cfg, users=users, ssl_context=ssl_context)
    try:
        await svc.start()
    except OSError as exc:
        await svc.stop()
        raise ConfigError(
            f"turn.listen: cannot bind ({exc.strerror or exc}); is another server using the port?"
        ) from exc
    return svc
