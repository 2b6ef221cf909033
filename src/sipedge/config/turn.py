"""Config section of the STUN/TURN role (owned by the TURN work; see stun/ and turn/)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ._schema import non_negative, option, port, positive

TURN_TRANSPORTS = ("udp", "tcp", "tls")


def split_listener(item: str) -> tuple[str, str, int]:
    """``"udp:127.0.0.1:3478"`` / ``"tls:[::1]:5349"`` -> (transport, host, port)."""
    proto, _, rest = item.partition(":")
    host, _, p = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return proto, host, int(p)


def _listeners(v: Any) -> str | None:
    for item in v:
        proto, _, rest = item.partition(":")
        host, _, p = rest.rpartition(":")
        host = host.strip("[]")
        ok = proto in TURN_TRANSPORTS and p.isdigit() and int(p) <= 65535
        if ok:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                ok = False
        if not ok:
            return (
                'a list like ["udp:127.0.0.1:3478", "tcp:[::1]:3478", "tls:0.0.0.0:5349"] '
                f"(transport udp, tcp or tls; an IP literal); {item!r} is not"
            )
    return None


def _cidrs(v: Any) -> str | None:
    for item in v:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f'a list of CIDR ranges like ["127.0.0.0/8", "::1"]; {item!r} is not'
    return None


def _addresses(v: Any) -> str | None:
    for item in v:
        host, _, p = item.rpartition(":")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            ok = p.isdigit() and 0 < int(p) < 65536
        except ValueError:
            ok = False
        if not ok:
            return f'a list like ["203.0.113.2:3478", "[2001:db8::2]:3478"]; {item!r} is not'
    return None


def split_address(item: str) -> tuple[str, int]:
    host, _, p = item.rpartition(":")
    return host.strip("[]"), int(p)


def _ip_or_empty(v: Any) -> str | None:
    if v == "":
        return None
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return "an IP address literal (or empty)"
    return None


@dataclass(frozen=True, slots=True)
class TurnConfig:
    """STUN/TURN server (RFC 8489/8656)."""

    enabled: bool = option(False, "run the STUN/TURN server inside `sipedge serve`")
    listen: list[str] = option(
        ["udp:127.0.0.1:3478", "tcp:127.0.0.1:3478"],
        "client listeners as transport:ip:port (udp, tcp, tls; tls uses the [tls] certificate)",
        _listeners,
    )
    realm: str = option("sipedge", "long-term credential realm")
    software: str = option("sipedge", "SOFTWARE attribute in responses (empty = none)")
    relay_ipv4: str = option("127.0.0.1", "IPv4 address relay sockets bind to (empty = no IPv4 relays)", _ip_or_empty)
    relay_ipv6: str = option("", "IPv6 address relay sockets bind to (empty = no IPv6 relays)", _ip_or_empty)
    external_ipv4: str = option(
        "", "public IPv4 advertised for relays when relay_ipv4 sits behind a 1:1 NAT (cloud VMs)", _ip_or_empty
    )
    external_ipv6: str = option("", "public IPv6 advertised for relays (like external_ipv4)", _ip_or_empty)
    port_min: int = option(49152, "lowest relay port", port)
    port_max: int = option(65535, "highest relay port", port)
    secrets: list[str] = option(
        [], "TURN REST API shared secrets (several for rotation; empty = REST auth off)"
    )
    rest_ttl: int = option(86400, "lifetime in seconds of credentials from the iceServers endpoint", positive)
    api_key: str = option(
        "", "key that opens the iceServers HTTP endpoint (?key= or Authorization: Bearer; empty = no key)"
    )
    ice_servers_open: bool = option(
        False,
        "serve /turn/ice-servers to anyone, without the api_key or a subscriber's digest "
        "credentials (only behind an authenticating front end: each answer is a TURN credential)",
    )
    ice_urls: list[str] = option(
        [], "turn:/stun: URLs handed out by the iceServers endpoint (empty = derived from listen)"
    )
    users_db: str = option(
        "", "database of long-term users: SQLite path or postgresql:// URL (empty = the [database] one)"
    )
    allow_peers: list[str] = option(
        [], "peer ranges always allowed (e.g. [\"127.0.0.0/8\"] for loopback tests)", _cidrs
    )
    deny_peers: list[str] = option([], "peer ranges denied in addition to the defaults", _cidrs)
    deny_private_peers: bool = option(
        True, "deny loopback, private, link-local, multicast and own relay addresses as peers"
    )
    max_allocations: int = option(10000, "most allocations in total (486 above)", positive)
    max_allocations_per_user: int = option(100, "most allocations per user (486 above)", positive)
    max_bandwidth: int = option(0, "bytes/s per allocation, both directions (0 = unlimited)", non_negative)
    default_lifetime: int = option(600, "allocation lifetime granted by default, seconds", positive)
    max_lifetime: int = option(3600, "longest allocation lifetime granted, seconds", positive)
    permission_lifetime: int = option(300, "permission lifetime, seconds", positive)
    channel_lifetime: int = option(600, "channel binding lifetime, seconds", positive)
    nonce_lifetime: int = option(600, "seconds before a nonce is stale (438)", positive)
    password_algorithms: bool = option(
        True, "offer RFC 8489 PASSWORD-ALGORITHMS (MD5, SHA-256) in the nonce cookie"
    )
    alt_address: str = option(
        "", "second IP for RFC 5780 NAT discovery (empty = off); UDP listeners also bind it", _ip_or_empty
    )
    alt_port: int = option(0, "second port for RFC 5780 (0 = first UDP port + 1)", port)
    alternate_servers: list[str] = option(
        [], "send new allocations to these ip:port with 300 Try Alternate, round robin (to drain a node, "
        "or above alternate_threshold to spread load)", _addresses
    )
    alternate_threshold: int = option(
        0, "redirect only while this node holds this many allocations or more (0 = every new one: draining)",
        non_negative,
    )
    alternate_domain: str = option(
        "", "certificate name of the alternate servers, sent as ALTERNATE-DOMAIN to TLS clients (empty = none)"
    )
    max_connections: int = option(10000, "most TCP/TLS client connections", positive)
    stream_idle_timeout: float = option(
        60.0, "close a TCP/TLS connection without an allocation after this many idle seconds (0 = never)", non_negative
    )
