"""Config of far-end NAT traversal: keepalives of NAT bindings and advertised addresses
(docs/nat.md). The ``[nat]`` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._schema import non_negative, one_of, option, positive

_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


def _headers(v: Any) -> str | None:
    for item in v:
        name, colon, value = str(item).partition(":")
        if not colon or not name.strip() or " " in name.strip() or "\r" in item or "\n" in item:
            return f'a list of "Name: value" header lines; {item!r} is not'
    return None


def _advertise(v: Any) -> str | None:
    for item in v:
        left, eq, right = str(item).partition("=")
        proto, _, rest = left.partition(":")
        host, _, port = rest.rpartition(":")
        if not eq or proto not in _TRANSPORTS or not host or not port.isdigit() or not right:
            return (
                'a list like ["udp:10.0.0.5:5060=198.51.100.7:5060"] '
                f"(listener = public host[:port]); {item!r} is not"
            )
    return None


def _uri(v: Any) -> str | None:
    return None if str(v).lower().startswith(("sip:", "sips:")) else "a sip: URI"


@dataclass(frozen=True, slots=True)
class NatConfig:
    """Far-end NAT traversal: keepalives of NAT bindings (nathelper / nat_traversal)."""

    keepalive_interval: float = option(
        20.0, "seconds between keepalives to each NATed client (0 = no keepalives)", non_negative
    )
    keepalive_method: str = option(
        "udp",
        "udp: 4-byte zero UDP packet (double CRLF on TCP/TLS); OPTIONS or NOTIFY: a stateless "
        "SIP request that the client answers, which also refreshes bindings that only outbound "
        "traffic keeps open",
        one_of("udp", "OPTIONS", "NOTIFY"),
    )
    ping_nated_only: bool = option(
        True, "ping only registered contacts detected as NATed (Contact differs from the source)"
    )
    ping_from: str = option("sip:keepalive@sipedge.invalid", "From URI of SIP keepalives", _uri)
    ping_headers: list[str] = option([], 'extra header lines of SIP keepalives, "Name: value"', _headers)
    keepalive_timeout: float = option(
        0.0,
        "drop a registered contact that has answered no SIP keepalive for this many seconds "
        "(0 = never; make it a few keepalive intervals)",
        non_negative,
    )
    endpoints: bool = option(
        True,
        "keep alive the clients of registrations, subscriptions and dialogs the routing "
        "module marks with ctx.nat_keepalive() (nat_traversal style, saved in the database)",
    )
    dialog_lifetime: float = option(
        7200.0, "seconds a dialog keeps its client alive when no BYE is seen", positive
    )
    advertise: list[str] = option(
        [],
        'public address per listener, e.g. ["udp:10.0.0.5:5060=198.51.100.7:5060"]; '
        "overrides sip.advertise for the listeners it names",
        _advertise,
    )
