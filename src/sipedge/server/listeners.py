"""SIP listener addresses and sockets: :class:`Listener`, ``sip.listen`` entries
(:func:`parse_listen`), the bound sockets the supervisor shares with its workers
(:func:`bind_listener`), and the address forms the transports compare (IP literals only:
names are resolved before, RFC 3263)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from .._common.addr import Address, strip_brackets
from ..errors import ConfigError, Error

STREAM_TRANSPORTS = ("tcp", "tls")
ALL_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


class TransportError(Error, OSError):
    """A message could not be sent: no listener, connect failure, connection gone.

    An ``OSError`` too, so callers catching socket errors catch it."""


@dataclass(frozen=True, slots=True)
class Listener:
    """One bound listener: transport, local host and the port really bound."""

    transport: str
    host: str
    port: int

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def family(self) -> int:
        return 6 if ":" in self.host else 4

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def parse_listen(item: str) -> tuple[str, str, int]:
    """``"tls:[::1]:5061"`` -> ``("tls", "::1", 5061)``; ConfigError when malformed."""
    proto, _, rest = item.partition(":")
    host, _, port = rest.rpartition(":")
    host = strip_brackets(host)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = ""
    if proto not in ALL_TRANSPORTS or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"sip.listen: {item!r} is not transport:ip:port "
            f"(transport one of {', '.join(ALL_TRANSPORTS)}, an IP literal, a port 0..65535)"
        )
    return proto, host, int(port)


def family_of(host: str) -> int:
    """4 or 6: the address family of an IP literal."""
    return 6 if ":" in host else 4


def norm_host(host: str) -> str:
    """An IP literal in the form peername reports it (IPv6 compressed, no brackets)."""
    h = strip_brackets(host)
    try:
        return ipaddress.ip_address(h).compressed
    except ValueError:
        raise TransportError(f"{host!r} is not an IP address; resolve it first (RFC 3263)") from None



UDP_BUFFER = 4 << 20


def bind_listener(transport: str, host: str, port: int) -> socket.socket:
    """A bound socket for one ``sip.listen`` entry (a listening one for a stream
    transport); ConfigError naming it when that fails. The supervisor binds every
    listener this way once and its workers share them (docs/workers.md)."""
    fam = socket.AF_INET6 if family_of(host) == 6 else socket.AF_INET
    udp = transport == "udp"
    sock = socket.socket(fam, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if udp:
            _big_buffers(sock)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if not udp:
            sock.listen(512)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"sip.listen: cannot bind {transport}:{host}:{port}: {exc.strerror}") from exc
    return sock


def _big_buffers(sock: socket.socket) -> None:
    """Ask for 4 MB socket buffers so bursts queue instead of being dropped by the kernel
    (as root past ``net.core.rmem_max`` with the FORCE options; best effort)."""
    for force, plain in ((getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
                         (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)):
        for opt in (force, plain):
            if opt is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)
                break
            except OSError:
                continue


def norm_peer(host: str) -> str:
    """A peer address as the connection registry keys it (IPv6 compressed)."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host

