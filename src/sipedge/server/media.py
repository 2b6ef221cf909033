"""asyncio adapter of the media relay: UDP ports bound on demand, the core's timer.

Sockets are plain non-blocking UDP sockets watched with ``loop.add_reader``; the reader
drains the socket, feeds each datagram to :meth:`MediaRelay.receive` and sends what it
returns. Ports are bound synchronously when the core allocates them (the injected
:class:`SocketPortAllocator`), so an offer's reply never advertises an unbound port.

The in-process control API the proxy uses is :class:`MediaServer`'s ``offer`` /
``answer`` / ``delete`` coroutines (the same signatures as :class:`server.ng.NgRemote`,
so routing code can use a local or a remote relay alike).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

from ..config.media import MediaConfig
from ..media.ports import RangePortAllocator
from ..media.relay import (
    CallDeleted,
    DtlsEstablished,
    DtlsFailed,
    Event,
    Flags,
    MediaRelay,
    RelayConfig,
    StreamLatched,
)
from ..media.secure import DtlsFactory
from ..media.transcode import CodecFactory

log = logging.getLogger(__name__)

_BATCH = 64
_RECV = 65535
_RCVBUF = 1 << 20


class SocketPortAllocator:
    """A :class:`PortAllocator` that binds the UDP sockets of each block it hands out on
    the address of the interface asked for, skipping ports some other process holds.
    ``hosts`` maps interface names to listen addresses; the first is the default."""

    def __init__(self, hosts: dict[str, str], low: int, high: int, rng: random.Random | None = None) -> None:
        self._inner = RangePortAllocator(low, high, rng)
        self._hosts = hosts
        self._default = next(iter(hosts.values()))
        self.sockets: dict[int, socket.socket] = {}
        self.on_bind: Any = None  # set by MediaServer: callable(port, sock)
        self.on_close: Any = None
        self.bind_failures = 0

    def allocate(self, count: int, interface: str = "") -> int | None:
        host = self._hosts.get(interface, self._default) if interface else self._default
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(16):
            base = self._inner.allocate(count)
            if base is None:
                return None
            opened: list[tuple[int, socket.socket]] = []
            try:
                for port in range(base, base + count):
                    sock = socket.socket(family, socket.SOCK_DGRAM)
                    opened.append((port, sock))
                    sock.setblocking(False)
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
                    except OSError:
                        pass
                    sock.bind((host, port))
            except OSError as exc:
                for _, sock in opened:
                    sock.close()
                self.bind_failures += 1
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    log.warning("x media port %d: %s", base, exc)
                continue  # leave the busy block marked used and try another
            for port, sock in opened:
                self.sockets[port] = sock
                if self.on_bind is not None:
                    self.on_bind(port, sock)
            return base
        return None

    def release(self, port: int, count: int) -> None:
        for p in range(port, port + count):
            sock = self.sockets.pop(p, None)
            if sock is not None:
                if self.on_close is not None:
                    self.on_close(p, sock)
                sock.close()
        self._inner.release(port, count)

    def close(self) -> None:
        for p in list(self.sockets):
            self.release(p, 1)


def relay_config(cfg: MediaConfig) -> RelayConfig:
    return RelayConfig(
        advertised_address=cfg.advertised_address,
        interfaces=tuple((name, adv) for name, _, adv in cfg.interface_list),
        timeout=cfg.timeout,
        hold_timeout=cfg.hold_timeout,
        offer_timeout=cfg.offer_timeout,
        strict_source=cfg.strict_source,
        relatch_idle=cfg.relatch_idle,
        ice=cfg.ice,
        max_calls=cfg.max_calls,
        max_media=cfg.max_media,
    )


def codec_library() -> CodecFactory | None:
    """PyAV's codecs for transcoding (server/codecs.py); None, and a warning, without PyAV
    or with an FFmpeg lacking one of them: codec flags then add no codec."""
    try:
        from . import codecs
    except ImportError as exc:
        log.warning("x no transcoding: %s", exc)
        return None
    if not codecs.available():
        log.warning("x no transcoding: FFmpeg lacks libopus, pcm_mulaw, pcm_alaw or g722")
        return None
    return codecs.PyAvCodecs()


class MediaServer:
    """Owns the relay core, its sockets and its timer on one event loop."""

    def __init__(self, config: MediaConfig, loop: asyncio.AbstractEventLoop | None = None,
                 dtls: DtlsFactory | None = None) -> None:
        self.config = config
        self.loop = loop or asyncio.get_running_loop()
        self.allocator = SocketPortAllocator(
            {name: listen for name, listen, _ in config.interface_list}, config.port_min, config.port_max
        )
        self.allocator.on_bind = self._watch
        self.allocator.on_close = self._unwatch
        self.relay = MediaRelay(relay_config(config), self.allocator, wall_clock=time.time, dtls=dtls,
                                codecs=codec_library())
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.send_errors = 0
        self.internal_errors = 0
        self.listeners: list[Callable[[Event], None]] = []
        """Called with every core event (after logging), e.g. to feed a call trace."""

    # -- control API (in-process "MediaControl") ---------------------------------
    async def offer(self, call_id: str, from_tag: str, sdp: bytes, flags: Flags | None = None,
                    to_tag: str | None = None, via_branch: str | None = None) -> bytes:
        out = self.relay.offer(call_id, from_tag, sdp, self.loop.time(), flags, to_tag, via_branch)
        self.after_signalling()
        return out

    async def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes,
                     flags: Flags | None = None, via_branch: str | None = None) -> bytes:
        out = self.relay.answer(call_id, from_tag, to_tag, sdp, self.loop.time(), flags, via_branch)
        self.after_signalling()
        return out

    async def delete(self, call_id: str, from_tag: str | None = None, to_tag: str | None = None,
                     branch_only: bool = False, via_branch: str | None = None) -> dict[str, int] | None:
        totals = self.relay.delete(call_id, self.loop.time(), from_tag, to_tag, branch_only, via_branch)
        self.after_signalling()
        return totals

    def after_signalling(self) -> None:
        """Drain events and output, re-arm the timer; call after any direct use of ``relay``."""
        self._drain()
        self._flush_output()
        self._arm()

    def stats(self) -> dict[str, int | float]:
        out = self.relay.stats()
        out["media_bind_failures"] = self.allocator.bind_failures
        out["media_send_errors"] = self.send_errors
        out["media_internal_errors"] = self.internal_errors
        return out

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for call_id in self.relay.calls():
            self.relay.delete(call_id, self.loop.time())
        self.allocator.close()
        self._drain()

    # -- sockets ------------------------------------------------------------------
    def _watch(self, port: int, sock: socket.socket) -> None:
        self.loop.add_reader(sock.fileno(), self._readable, port, sock)

    def _unwatch(self, port: int, sock: socket.socket) -> None:
        self.loop.remove_reader(sock.fileno())

    def _readable(self, port: int, sock: socket.socket) -> None:
        receive = self.relay.receive
        sockets = self.allocator.sockets
        now = self.loop.time()
        for _ in range(_BATCH):
            try:
                data, addr = sock.recvfrom(_RECV)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ICMP port unreachable reported on the socket
                continue
            try:
                out = receive(data, port, addr if len(addr) == 2 else addr[:2], now)
            except Exception:  # a bug in the core: log it once with context, keep relaying
                self.internal_errors += 1
                if self.internal_errors == 1:
                    log.exception("x media packet on port %d from %s", port, addr)
                continue
            if out is None:
                continue
            out_sock = sockets.get(out[0])
            if out_sock is None:
                continue
            try:
                out_sock.sendto(out[2], out[1])
            except (OSError, OverflowError):  # (OverflowError: a port the core let through)
                self.send_errors += 1
        if self.relay.has_events:  # latching and similar are rare: drain only when present
            self._drain()
        if self.relay.has_output:  # DTLS flights
            self._flush_output()
            self._arm()

    # -- timer --------------------------------------------------------------------
    def _arm(self) -> None:
        when = self.relay.get_timer()
        if when is None or (self._timer_at is not None and self._timer_at <= when and self._timer):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.relay.handle_timer(self.loop.time())
        self._drain()
        self._flush_output()
        self._arm()

    def _flush_output(self) -> None:
        sockets = self.allocator.sockets
        for port, dest, data in self.relay.output():
            sock = sockets.get(port)
            if sock is None:
                continue
            try:
                sock.sendto(data, dest)
            except (OSError, OverflowError):
                self.send_errors += 1

    def _drain(self) -> None:
        for ev in self.relay.events():
            for listener in self.listeners:
                listener(ev)
            if isinstance(ev, CallDeleted):
                log.info("- [%s] media session deleted (%s): %s", ev.call_id, ev.reason, ev.totals)
            elif isinstance(ev, DtlsEstablished):
                log.info("- [%s] %s m%d DTLS-SRTP established (%s)", ev.call_id, ev.tag, ev.index, ev.profile)
            elif isinstance(ev, DtlsFailed) and ev.closed:
                log.info("- [%s] %s m%d DTLS closed by the party", ev.call_id, ev.tag, ev.index)
            elif isinstance(ev, DtlsFailed):
                log.warning("x [%s] %s m%d DTLS failed, nothing decrypted: %s", ev.call_id, ev.tag, ev.index,
                            ev.reason)
            elif isinstance(ev, StreamLatched):
                log.debug("- [%s] %s m%d c%d latched to %s%s", ev.call_id, ev.tag, ev.index,
                          ev.component, ev.address, " (re-latch)" if ev.relatch else "")
