"""Which peers a relay may talk to (RFC 8656 §21.2.3, "open relay" safety).

Explicit allow ranges win, then explicit deny ranges, then the default deny list:
loopback, private (RFC 1918, ULA, CGNAT), link-local, multicast, unspecified, reserved and
the server's own relay addresses. Like coturn's ``allowed-peer-ip``/``denied-peer-ip`` and
``--allow-loopback-peers``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENY: tuple[str, ...] = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
)


def parse_networks(items: Iterable[str]) -> list[Network]:
    """Parse CIDR strings (a bare address is a /32 or /128); raises ValueError."""
    return [ipaddress.ip_network(i.strip(), strict=False) for i in items]


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    deny_defaults: bool = True
    own: tuple[IP, ...] = ()
    _default: tuple[Network, ...] = field(default=tuple(parse_networks(DEFAULT_DENY)), repr=False)

    @staticmethod
    def build(
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        deny_defaults: bool = True,
        own: Iterable[str] = (),
    ) -> PeerPolicy:
        return PeerPolicy(
            tuple(parse_networks(allow)),
            tuple(parse_networks(deny)),
            deny_defaults,
            tuple(ipaddress.ip_address(o) for o in own if o),
        )

    def with_own(self, hosts: Iterable[str]) -> PeerPolicy:
        """The same policy, also denying ``hosts`` (the relay addresses) unless allowed."""
        extra = tuple(ipaddress.ip_address(h) for h in hosts if h)
        return dataclasses.replace(self, own=self.own + extra)

    def permits(self, host: str) -> bool:
        try:
            ip: IP = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            v4 = _translated_ipv4(ip)
            if v4 is not None:
                return self._permits(v4)
            tunnelled = _tunnelled_ipv4(ip)
            if tunnelled is not None and not self._permits(tunnelled):
                return False
        return self._permits(ip)

    def _permits(self, ip: IP) -> bool:
        if any(ip in n for n in self.allow if n.version == ip.version):
            return True
        if any(ip in n for n in self.deny if n.version == ip.version):
            return False
        if ip in self.own:
            return False
        return not (self.deny_defaults and any(ip in n for n in self._default if n.version == ip.version))


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPAT = ipaddress.ip_network("::/96")


def _translated_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form stands for, where packets to it reach that IPv4 host:
    IPv4-mapped, IPv4-compatible (deprecated) and the NAT64 well-known prefix (RFC 6052)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _tunnelled_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 tunnel end a 6to4 or Teredo address carries: a relay must not become a way
    into a private IPv4 network through one."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None
