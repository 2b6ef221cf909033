"""Addresses: one ``Address = tuple[str, int]`` and helpers for IP literals."""

from __future__ import annotations

import ipaddress

Address = tuple[str, int]


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        return False


def host_for_uri(host: str) -> str:
    """Bracket an IPv6 literal for use in a URI or Via; leave others alone."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_private(host: str) -> bool:
    """RFC 1918, RFC 6598 shared space (100.64/10), loopback, link-local, ULA."""
    try:
        ip = ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        return False
    if ip.version == 4 and ip in ipaddress.ip_network("100.64.0.0/10"):
        return True
    return ip.is_private or ip.is_loopback or ip.is_link_local
