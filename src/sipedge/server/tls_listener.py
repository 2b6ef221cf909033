"""TLS and WSS listeners that admit a connection before its handshake.

``loop.create_server(ssl=...)`` shows a connection to its protocol only once the TLS
handshake is done. A client that connects and never handshakes is then invisible to the
limits that look at peers: it holds a socket until ``ssl_handshake_timeout`` and is never
counted against ``max_connections`` or ``max_connections_per_ip``, so one address could
hold thousands. Here the listening socket is accepted by hand: each new socket first
gets a slot from :meth:`TransportLayer._admit` (or is closed at once), then
``loop.connect_accepted_socket`` runs the handshake under ``limits.handshake_timeout``.
A handshake that times out or fails is counted (``sip_tls_handshake_timeouts``,
``sip_tls_handshake_failures``) and gives its slot back; one that succeeds hands the slot
to the connection's protocol, which gives it back when the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from .._common.addr import Address
from ..errors import ConfigError

if TYPE_CHECKING:
    from .transport import TransportLayer

log = logging.getLogger(__name__)

ACCEPT_BURST = 64
"""Sockets accepted per readiness callback, so one busy listener cannot starve the loop."""
ACCEPT_RETRY_DELAY = 1.0
"""Seconds to stop accepting after the process ran out of file descriptors (as asyncio)."""


class SlotHolder(Protocol):
    """A connection protocol that holds a per-IP slot and gives it back once."""

    def release_slot(self) -> None: ...


class TlsListener:
    """One listening socket whose connections are admitted, then TLS-handshaken."""

    def __init__(
        self,
        layer: TransportLayer,
        name: str,
        sock: socket.socket,
        ctx: ssl.SSLContext,
        factory: Callable[[str | None], Any],
    ) -> None:
        self.layer = layer
        self.name = name
        self.sock = sock
        self.ctx = ctx
        self.factory = factory
        self.loop = asyncio.get_running_loop()
        sn = sock.getsockname()
        self.address: Address = (sn[0], sn[1])
        self._handshakes: set[asyncio.Task[None]] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self.loop.add_reader(sock.fileno(), self._accept)

    @classmethod
    def bind(
        cls,
        layer: TransportLayer,
        name: str,
        host: str,
        port: int,
        ctx: ssl.SSLContext,
        factory: Callable[[str | None], Any],
    ) -> TlsListener:
        """Listen on ``host:port``; ConfigError naming the listener when that fails."""
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(512)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"sip.listen: cannot bind {name}:{host}:{port}: {exc.strerror}") from exc
        return cls(layer, name, sock, ctx, factory)

    def _accept(self) -> None:
        layer = self.layer
        for _ in range(ACCEPT_BURST):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: back off, then try again
                layer.count("sip_accept_errors")
                log.warning("x %s %s: accept failed (%s); pausing %.0f s", self.name, self.address,
                            exc, ACCEPT_RETRY_DELAY)
                self.loop.remove_reader(self.sock.fileno())
                self._retry = self.loop.call_later(ACCEPT_RETRY_DELAY, self._resume)
                return
            slot = layer.admit(self.name, peer)
            if slot is None:
                conn.close()
                continue
            conn.setblocking(False)
            layer.handshake_started()
            task = self.loop.create_task(self._handshake(conn, peer, slot))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    def _resume(self) -> None:
        self._retry = None
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    async def _handshake(self, conn: socket.socket, peer: Any, slot: str) -> None:
        layer = self.layer
        proto: SlotHolder = self.factory(slot)
        try:
            await self.loop.connect_accepted_socket(
                lambda: cast(asyncio.Protocol, proto), conn, ssl=self.ctx,
                ssl_handshake_timeout=layer.handshake_timeout,
            )
        except ConnectionAbortedError:  # what asyncio and uvloop raise at the deadline
            layer.count("sip_tls_handshake_timeouts")
            log.info("x %s %s: no TLS handshake in %.0f s, closed", self.name, peer, layer.handshake_timeout)
            proto.release_slot()
        except (OSError, ssl.SSLError) as exc:
            layer.count("sip_tls_handshake_failures")
            log.info("x %s %s: TLS handshake failed: %s", self.name, peer, exc)
            proto.release_slot()
        except asyncio.CancelledError:
            proto.release_slot()
            raise
        finally:
            layer.handshake_ended()

    def close(self) -> None:
        """Stop accepting; handshakes under way are abandoned (their sockets closed)."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for task in list(self._handshakes):
            task.cancel()
