"""Config section of the media relay role (owned by the media work; see sdp/ and media/)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ._schema import non_negative, one_of, option, port, positive


def _ip(v: Any) -> str | None:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return "an IPv4 or IPv6 address literal"
    return None


def _ip_or_empty(v: Any) -> str | None:
    return None if v == "" else _ip(v)


def _hostport_or_empty(v: Any) -> str | None:
    if v == "":
        return None
    host, _, p = v.rpartition(":")
    host = host.strip("[]")
    if not host or not p.isdigit() or not 0 <= int(p) <= 65535 or _ip(host):
        return 'an "ip:port" like "127.0.0.1:22222" or "[::1]:22222", or "" to disable'
    return None


def parse_node(spec: str) -> tuple[str, int, int]:
    """``HOST:PORT`` or ``HOST:PORT;weight=N`` (one node of ``media.remote``) as (host, port,
    weight); ValueError when malformed."""
    addr, _, params = spec.partition(";")
    weight = 1
    if params:
        key, eq, value = params.partition("=")
        if key.strip().lower() != "weight" or not eq or not value.strip().isdigit():
            raise ValueError(spec)
        weight = int(value)
        if not 1 <= weight <= 1000:
            raise ValueError(spec)
    if not addr or _hostport_or_empty(addr.strip()):
        raise ValueError(spec)
    host, _, p = addr.strip().rpartition(":")
    return host.strip("[]"), int(p), weight


def _remote(v: Any) -> str | None:
    items = [v] if isinstance(v, str) else v
    if items == [""]:
        return None
    if isinstance(v, list) and not v:
        return '"" (built-in relay) or a non-empty list of nodes'
    seen: set[tuple[str, int]] = set()
    for item in items:
        try:
            host, p, _ = parse_node(item)
        except ValueError:
            return (
                '"ip:port", or a list of nodes like ["127.0.0.1:2223", "127.0.0.2:2223;weight=2"] '
                f"(weight 1..1000, default 1); {item!r} is not"
            )
        if (host, p) in seen:
            return f"distinct nodes; {item!r} appears twice"
        seen.add((host, p))
    return None


def parse_interface(spec: str) -> tuple[str, str, str]:
    """``NAME/IP`` or ``NAME/IP!ADVERTISED`` (rtpengine's --interface syntax) as (name, listen,
    advertised); ValueError when malformed."""
    name, slash, rest = spec.partition("/")
    listen, _, adv = rest.partition("!")
    if not slash or not name or _ip(listen) or (adv and _ip(adv)):
        raise ValueError(spec)
    if ipaddress.ip_address(listen).is_unspecified and not adv:
        raise ValueError(spec)
    return name, listen, adv or listen


def _interfaces(v: Any) -> str | None:
    names: set[str] = set()
    for item in v:
        try:
            name, _, _ = parse_interface(item)
        except (ValueError, TypeError):
            return (
                'a list like ["priv/10.0.0.5", "pub/10.0.1.5!203.0.113.10"] (name/listen-ip, '
                f"optionally !advertised-ip, needed when listening on 0.0.0.0); {item!r} is not"
            )
        if name in names:
            return f"interfaces with distinct names; {name!r} appears twice"
        names.add(name)
    return None


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """Media relay (rtpengine class)."""

    enabled: bool = option(True, "run the media relay inside `sipedge serve` (ports bound per call)")
    listen: str = option("127.0.0.1", "local address the relay's RTP/RTCP ports bind to", _ip)
    advertise: str = option(
        "", "address written into rewritten SDP (empty = listen); the public IP behind 1:1 NAT",
        _ip_or_empty,
    )
    interfaces: list[str] = option(
        [],
        "named interfaces for bridging networks, as rtpengine's --interface: "
        '["priv/10.0.0.5", "pub/10.0.1.5!203.0.113.10"]; the ng "direction" flag picks one per '
        "side; the first is the default (empty = one interface from listen/advertise)",
        _interfaces,
    )
    port_min: int = option(30000, "lowest relay port (RTP ports are even, RTCP = RTP + 1)", port)
    port_max: int = option(40000, "highest relay port", port)
    ng_listen: str = option(
        "",
        'UDP address of the rtpengine "ng" control socket, e.g. "127.0.0.1:22222" (empty = '
        "none in `sipedge serve`; `sipedge media serve` then uses 127.0.0.1:22222)",
        _hostport_or_empty,
    )
    remote: str | list[str] = option(
        "",
        'drive remote relays (other sipedge nodes, or rtpengine) over ng instead of the built-in '
        'one: "host:port" for one, or a pool ["127.0.0.1:2223", "127.0.0.2:2223;weight=2"] '
        "spread by weight, each call kept on its node (empty = built-in; docs/media.md)",
        _remote,
    )
    ping_interval: float = option(
        5.0, "seconds between ng pings of each remote node; one unanswered takes it out of the pool",
        positive,
    )
    remote_timeout: float = option(
        3.0, "seconds a remote node has to answer one ng request (retransmitted within) before "
        "the request fails and, for an offer, goes to the next node", positive,
    )
    timeout: float = option(60.0, "delete a call after this many seconds without media", positive)
    hold_timeout: float = option(
        3600.0, "the same for a call on hold (sendonly/inactive/c=0.0.0.0)", positive
    )
    offer_timeout: float = option(
        3600.0, "the same for a call offered and not answered yet, without early media (ringing)", positive
    )
    strict_source: bool = option(
        False, "accept media only from the address in the SDP (breaks NAT latching)"
    )
    relatch_idle: float = option(
        1.0, "seconds a latched source must be silent before a NAT rebinding may re-latch",
        non_negative,
    )
    ice: str = option(
        "auto",
        "ICE towards each party: auto (relay-only ICE-lite for ICE peers, none otherwise), "
        "remove, force (always ICE-lite), relay (keep candidates, add the relay as one), "
        "force-relay (the same, c=/m= left as they were)",
        one_of("auto", "remove", "force", "relay", "force-relay"),
    )
    max_calls: int = option(10000, "most concurrent relayed calls (503 above)", positive)
    max_media: int = option(16, "most m= sections in one SDP (488 above)", positive)

    def __post_init__(self) -> None:
        if not self.interfaces and not self.advertise and ipaddress.ip_address(self.listen).is_unspecified:
            raise ConfigError(
                f"media.listen = {self.listen!r} with media.advertise empty: expected an advertise "
                "address (the IP peers send media to) when listening on all interfaces"
            )
        if self.port_max - self.port_min < 1:
            raise ConfigError(
                f"media.port_min = {self.port_min}, media.port_max = {self.port_max}: "
                "expected port_min < port_max (a range holding at least one RTP/RTCP pair)"
            )

    @property
    def advertised_address(self) -> str:
        return self.interface_list[0][2]

    @property
    def interface_list(self) -> list[tuple[str, str, str]]:
        """(name, listen, advertised) of each interface; the first is the default."""
        if not self.interfaces:
            return [("default", self.listen, self.advertise or self.listen)]
        return [parse_interface(spec) for spec in self.interfaces]

    def describe_interfaces(self) -> str:
        """For the start-up log: where the relay ports bind and what SDP will say."""
        parts = []
        for name, listen, adv in self.interface_list:
            label = "" if not self.interfaces else f"{name} "
            parts.append(f"{label}{listen}" + (f" (as {adv})" if adv != listen else ""))
        return ", ".join(parts)

    @property
    def remote_nodes(self) -> list[tuple[str, int, int]]:
        """(host, port, weight) of each remote node; empty: the built-in relay."""
        items = [self.remote] if isinstance(self.remote, str) else self.remote
        return [parse_node(item) for item in items if item]

    @property
    def ng_address(self) -> tuple[str, int] | None:
        if not self.ng_listen:
            return None
        host, _, p = self.ng_listen.rpartition(":")
        return host.strip("[]"), int(p)
