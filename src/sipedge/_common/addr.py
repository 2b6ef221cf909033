"""Addresses: one ``Address = tuple[str, int]`` and helpers for IP literals."""

from __future__ import annotations

import functools
import ipaddress

Address = tuple[str, int]

_SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")

# These run several times per SIP message on the same few hosts; ipaddress parsing is
# slow next to a dictionary lookup, so answers are remembered (bounded, per host string).
_cached = functools.lru_cache(maxsize=4096)


@_cached
def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_ipv6(host: str) -> bool:
    # an IPv6 literal has a colon, and an IPv4 address or a host name never has one
    return ":" in host and _is_ipv6_literal(host)


@_cached
def _is_ipv6_literal(host: str) -> bool:
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


@_cached
def is_private(host: str) -> bool:
    """RFC 1918, RFC 6598 shared space (100.64/10), loopback, link-local, ULA."""
    try:
        ip = ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        return False
    if ip.version == 4 and ip in _SHARED_SPACE:
        return True
    return ip.is_private or ip.is_loopback or ip.is_link_local


@_cached
def canonical_host(host: str) -> str:
    """The one spelling of a host for comparisons: lower case, no brackets, no trailing
    dot of a fully qualified name, IP literals in their compressed form, and an
    IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it stands for.
    Every "is this us / one of our domains" test compares canonical hosts, so a caller
    cannot pass for a foreigner (or the reverse) by spelling our address differently."""
    h = strip_brackets(host.strip()).lower()
    if h.endswith(".") and len(h) > 1:
        h = h[:-1]
    if ":" in h or h[:1].isdigit():
        try:
            ip = ipaddress.ip_address(h)
        except ValueError:
            return h
        if ip.version == 6 and ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip)
    return h
