"""Config section of the DNS resolver (RFC 3263 next-hop lookups, docs/dns.md)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ._schema import non_negative, option, positive


def parse_nameserver(text: str) -> tuple[str, int] | None:
    """``"192.0.2.1"``, ``"192.0.2.1:5353"``, ``"::1"``, ``"[::1]:5353"`` -> (ip, port)."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not p.isdigit():
            return None
        port = int(p)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not 0 < port <= 65535:
        return None
    return str(ip), port


def _nameservers(v: Any) -> str | None:
    for item in v:
        if parse_nameserver(item) is None:
            return f'a list of IP addresses with optional port, like ["192.0.2.53", "[::1]:5353"]; {item!r} is not'
    return None


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """DNS lookups of next hops named by host: NAPTR, SRV, A/AAAA (RFC 3263), cached."""

    nameservers: list[str] = option(
        [], "DNS servers as IP or IP:port, \"[v6]:port\" (empty = the system's /etc/resolv.conf)", _nameservers
    )
    hosts_file: str = option(
        "/etc/hosts", "hosts file answered before DNS for A/AAAA, like the system resolver (empty = none)"
    )
    timeout: float = option(
        5.0, "seconds one next-hop lookup (the whole NAPTR/SRV/A chain) may take", positive
    )
    ipv6: bool = option(True, "also look up AAAA records (IPv4 addresses are tried first)")
    down_time: float = option(
        30.0, "seconds a target that failed a send is moved to the end of the failover list", non_negative
    )
    cache_size: int = option(4096, "most answers kept in the cache", positive)
    min_ttl: float = option(5.0, "shortest time an answer is cached, seconds (raises tiny TTLs)", non_negative)
    max_ttl: float = option(3600.0, "longest time an answer is cached, seconds", positive)
    negative_ttl: float = option(
        60.0, "longest time a 'no such name/record' answer is cached, seconds (0 = never)", non_negative
    )
