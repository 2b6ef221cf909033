"""Config sections of the SIP roles: listeners, limits, timers, auth, registrar, routing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._schema import networks, non_negative, one_of, option, positive
from .flood import FloodConfig
from .ratelimit import FraudConfig, RateLimitConfig

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


def _listeners(v: Any) -> str | None:
    for item in v:
        proto, _, rest = item.partition(":")
        host, _, port = rest.rpartition(":")
        if proto not in TRANSPORTS or not host or not port.isdigit():
            return (
                "a list like [\"udp:127.0.0.1:5060\", \"tls:[::1]:5061\"] "
                f"(transport one of {', '.join(TRANSPORTS)}); {item!r} is not"
            )
    return None



@dataclass(frozen=True, slots=True)
class TimersConfig:
    """SIP transaction timers (RFC 3261 §17), in seconds."""

    t1: float = option(0.5, "T1: RTT estimate; Timer A/E start here, B/F/H/J are 64*T1", positive)
    t2: float = option(4.0, "T2: maximum retransmit interval for non-INVITE requests", positive)
    t4: float = option(5.0, "T4: maximum time a message stays in the network", positive)
    timer_c: float = option(180.0, "Timer C: proxy INVITE transaction timeout (408/CANCEL)", positive)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Hard limits; each has a reject path (413/513, 503, close)."""

    max_message_size: int = option(65535, "largest SIP message accepted, bytes (513 above)", positive)
    max_connections: int = option(4096, "most concurrent TCP/TLS/WS connections", positive)
    idle_timeout: float = option(
        600.0, "close a stream connection idle this many seconds (0 = never)", non_negative
    )
    message_timeout: float = option(
        10.0,
        "seconds a TCP/TLS connection has to complete a SIP message once its first byte "
        "arrived; slower senders (slowloris) are closed (0 = no limit)",
        non_negative,
    )
    handshake_timeout: float = option(
        5.0, "seconds a new TLS connection has for its handshake, a WebSocket one for its upgrade", positive
    )
    max_connections_per_ip: int = option(
        100, "most concurrent inbound TCP/TLS/WS connections from one IP address (0 = no cap)", non_negative
    )
    max_transactions: int = option(100000, "most live transactions (503 above)", positive)


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """SIP over WebSocket (RFC 7118) listeners: the ws/wss entries of sip.listen."""

    origins: list[str] = option(
        [],
        "Origin values of browser pages allowed to connect, e.g. \"https://phone.example.com\" "
        "(empty = this server's own web origins: its [web] and ws/wss listeners, sip.domains "
        "and sip.advertise; [\"*\"] = any); others get 403. Requests without Origin "
        "(SIP clients that are not browsers) always pass",
    )
    ping_interval: float = option(30.0, "seconds of silence before a WebSocket ping (0 = never)", non_negative)
    ping_timeout: float = option(20.0, "seconds to wait for the pong before closing", positive)


@dataclass(frozen=True, slots=True)
class SipConfig:
    """SIP listeners and identity."""

    listen: list[str] = option(
        [
            "udp:127.0.0.1:5060",
            "tcp:127.0.0.1:5060",
            "tls:127.0.0.1:5061",
            "ws:127.0.0.1:8080",
            "wss:127.0.0.1:4443",
        ],
        "listeners as transport:host:port (udp, tcp, tls, ws, wss; e.g. \"wss:0.0.0.0:8443\")",
        _listeners,
    )
    domains: list[str] = option(
        [], "domains this server is responsible for (empty = any domain, plus own addresses)"
    )
    advertise: str = option(
        "", "public address to put in Via/Record-Route instead of the listen address"
    )
    server_header: str = option("sipedge", "Server/User-Agent header value (empty = none)")
    trusted_peers: list[str] = option(
        [],
        "addresses or networks of peers (trunks, PBXs, other proxies) trusted like "
        "Kamailio's allow_trusted: no digest challenge, may relay to foreign destinations, "
        "and their P-Asserted-Identity is kept (RFC 3325); from anyone else it is removed",
        networks,
    )
    topology_hiding: bool = option(
        False,
        "the default routing hides each side's Vias, Record-Route entries and Contact from the "
        "other in the calls it record-routes (docs/operations.md, \"Topology hiding\")",
    )
    topology_mask_callid: bool = option(
        False,
        "with topology_hiding: the callee's side of a hidden call sees its Call-ID encrypted "
        "(Kamailio topoh's mask_callid)",
    )
    node_path: str = option(
        "auto",
        "registrations record this node and their flow as a signed Path entry, so other nodes "
        "sharing the location reach the phone through this node (docs/cluster.md): \"on\", "
        "\"off\", or \"auto\" (on when Redis holds the location and the nodes' secret: "
        "redis.location and redis.nonces; on PostgreSQL set \"on\", with the same "
        "DATA_DIR/nonce.key on every node)",
        one_of("auto", "on", "off"),
    )
    timers: TimersConfig = TimersConfig()
    limits: LimitsConfig = LimitsConfig()
    websocket: WebSocketConfig = WebSocketConfig()
    flood: FloodConfig = FloodConfig()
    ratelimit: RateLimitConfig = RateLimitConfig()
    fraud: FraudConfig = FraudConfig()


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Digest authentication (RFC 7616/8760)."""

    realm: str = option("", "digest realm (empty = the request's domain)")
    register: bool = option(True, "challenge REGISTER (401)")
    invite: bool = option(True, "challenge INVITE and other requests from local users (407)")
    algorithms: list[str] = option(
        ["MD5"],
        "algorithms offered, in order; JsSIP and SIPp answer only MD5 (add \"SHA-256\" for RFC 8760 clients)", lambda v: None if set(v) <= {"MD5", "SHA-256"} and v else "a non-empty list of \"MD5\", \"SHA-256\""
    )
    nonce_lifetime: float = option(300.0, "seconds a nonce is valid before stale=true", positive)


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    """Registrar (RFC 3261 §10)."""

    min_expires: int = option(60, "smallest Expires accepted (423 Interval Too Brief below)", positive)
    max_expires: int = option(3600, "largest Expires granted (larger values are lowered)", positive)
    default_expires: int = option(3600, "Expires used when the request gives none", positive)
    max_contacts: int = option(10, "most contacts per address-of-record (403 above)", positive)
    purge_interval: float = option(30.0, "seconds between sweeps deleting expired contacts from the store", positive)
    drop_on_disconnect: str = option(
        "ws",
        "remove bindings registered over a connection when it closes: ws (WebSocket only: "
        "nothing else can reach a browser), all (TCP/TLS too, like usrloc handle_lost_tcp), none",
        one_of("ws", "all", "none"),
    )
    db_mode: str = option(
        "write-through",
        "how bindings reach the database: write-through (committed before the 200 OK, like "
        "usrloc db_mode=1) or write-back (kept in memory and committed together every "
        "db_flush_interval and at shutdown, like db_mode=2: less CPU per REGISTER, and a "
        "crash loses at most that interval)",
        one_of("write-through", "write-back"),
    )
    db_flush_interval: float = option(10.0, "seconds between commits in write-back mode", positive)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """The routing module: plain Python (docs/routing.md)."""

    module: str = option(
        "sipedge.proxy.default_routing", "importable module or path to a .py file with route()"
    )
    record_route: bool = option(True, "stay in the path of dialogs (Record-Route)")
    forking: str = option("parallel", "fork to all contacts at once, or by q-value", one_of("parallel", "serial"))
