"""The TURN server core (RFC 8656, RFC 5766 clients), sans-I/O.

Inputs: bytes from a client flow (:meth:`TurnServer.handle_client`), bytes a relay socket
received from a peer (:meth:`TurnServer.handle_peer`), a closed stream flow
(:meth:`TurnServer.client_closed`) and the timer (:meth:`get_timer`/:meth:`handle_timer`).
Outputs: :class:`ToClient` and :class:`ToPeer` actions plus past-tense events the adapter
logs. Relay ports come from an injected :class:`~sipedge.turn.ports.PortAllocator`.

Request processing follows the RFC order: parse (400) → authentication (401 / 400 /
438 / 401) → unknown comprehension-required attributes (420, signed; RFC 8489 §6.3 puts
them after the authentication checks, and an unauthenticated Binding gets it at once) →
allocation lookup (437) → credentials match (441) → method checks (400, 403, 440, 442,
443, 486, 508).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from .._common.addr import Address
from ..errors import ParseError
from ..stun import attributes as at
from ..stun import message as sm
from ..stun.message import Class, Message, Method
from ..stun.server import BindingConfig, answer_binding
from . import channel as ch
from .auth import CredentialProvider, NonceFactory, UserKeys
from .policy import PeerPolicy
from .ports import PortAllocator

log = logging.getLogger(__name__)

TokenSource = Callable[[int], bytes]
UDP_PROTOCOL = 17


class Flow(NamedTuple):
    """A client 5-tuple: transport ("udp", "tcp", "tls"), our address, the client's."""

    transport: str
    local: Address
    remote: Address


# -- outputs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToClient:
    """Send ``data`` on ``flow`` (for UDP: from ``flow.local`` to ``flow.remote``)."""

    flow: Flow
    data: bytes


@dataclass(frozen=True, slots=True)
class ToPeer:
    """Send ``data`` from relay socket ``relay`` to ``peer``."""

    relay: Address
    peer: Address
    data: bytes
    dont_fragment: bool = False


@dataclass(frozen=True, slots=True)
class AllocationCreated:
    flow: Flow
    relays: tuple[Address, ...]
    account: str
    lifetime: int


@dataclass(frozen=True, slots=True)
class AllocationDeleted:
    flow: Flow
    relays: tuple[Address, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class RequestRejected:
    flow: Flow
    method: int
    code: int
    reason: str


Action = ToClient | ToPeer | AllocationCreated | AllocationDeleted | RequestRejected


# -- configuration -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the core needs; the adapter builds it from ``[turn]`` config."""

    realm: str = "sipedge"
    software: str = "sipedge"
    relay_ipv4: str | None = "127.0.0.1"
    relay_ipv6: str | None = None
    external_ipv4: str | None = None
    """advertised in XOR-RELAYED-ADDRESS instead of relay_ipv4 (1:1 NAT, like coturn's
    external-ip); the sockets still bind relay_ipv4."""
    external_ipv6: str | None = None
    default_lifetime: int = 600
    max_lifetime: int = 3600
    permission_lifetime: int = 300
    channel_lifetime: int = 600
    nonce_lifetime: int = 600
    reservation_lifetime: int = 30
    max_allocations: int = 10000
    max_allocations_per_user: int = 100
    max_permissions: int = 1000
    max_bandwidth: int = 0
    """bytes per second per allocation, both directions (0 = unlimited)."""
    password_algorithms: bool = True
    """advertise RFC 8489 PASSWORD-ALGORITHMS (MD5, SHA-256) in the nonce cookie."""
    username_anonymity: bool = False
    """advertise and accept RFC 8489 USERHASH (needs a user store that maps hashes)."""
    alternate_servers: tuple[Address, ...] = ()
    """redirect new allocations there with 300 Try Alternate (RFC 8489 §10), round robin."""
    alternate_domain: str = ""
    """the name TLS clients check the alternates' certificates against (ALTERNATE-DOMAIN)."""
    policy: PeerPolicy = field(default_factory=PeerPolicy)
    binding: BindingConfig = field(default_factory=BindingConfig)


# -- state -------------------------------------------------------------------------------


@dataclass(slots=True)
class Channel:
    peer: Address
    expiry: float


@dataclass(slots=True)
class Allocation:
    flow: Flow
    username: str
    account: str
    key: bytes
    sha256: bool
    relays: dict[at.Family, Address]
    expiry: float
    alloc_tid: bytes
    alloc_response: bytes
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    peer_channel: dict[Address, int] = field(default_factory=dict)
    tokens: float = 0.0
    tokens_at: float = 0.0

    def relay_for(self, host: str) -> Address | None:
        return self.relays.get(at.family_of(host))


# Attributes the TURN/STUN server processes; other comprehension-required ones get 420.
UNDERSTOOD: frozenset[int] = frozenset(
    a.TYPE
    for a in (
        at.MappedAddress, at.XorMappedAddress, at.Username, at.MessageIntegrity,
        at.MessageIntegritySha256, at.ErrorCode, at.UnknownAttributes, at.ChannelNumber,
        at.Lifetime, at.XorPeerAddress, at.Data, at.Realm, at.Nonce, at.XorRelayedAddress,
        at.RequestedAddressFamily, at.EvenPort, at.RequestedTransport, at.DontFragment,
        at.PasswordAlgorithm, at.Userhash, at.ReservationToken, at.Padding,
    )
)


def _nonce_binding(flow: Flow) -> str:
    """What a nonce is bound to: the whole 5-tuple, so a request replayed from a new
    port or another listener is stale (438) rather than a second allocation."""
    return f"{flow.transport}|{flow.local[0]}|{flow.local[1]}|{flow.remote[0]}|{flow.remote[1]}"


def _f(code: int) -> str:
    return at.REASONS.get(code, "")


class TurnServer:
    """One TURN/STUN server: all allocations of one process."""

    def __init__(
        self,
        config: ServerConfig,
        credentials: CredentialProvider,
        ports: PortAllocator,
        token_source: TokenSource = secrets.token_bytes,
    ) -> None:
        own = [
            ip
            for ip in (config.relay_ipv4, config.relay_ipv6, config.external_ipv4, config.external_ipv6)
            if ip
        ]
        self._external = {at.Family.IPV4: config.external_ipv4, at.Family.IPV6: config.external_ipv6}
        self._policy = config.policy.with_own(own)
        self.config = config
        self._creds = credentials
        self._ports = ports
        self._token = token_source
        features = None
        if config.password_algorithms or config.username_anonymity:
            features = at.SecurityFeatures(config.password_algorithms, config.username_anonymity)
        self._nonces = NonceFactory(token_source(16), config.nonce_lifetime, features)
        self._algorithms = (
            at.PasswordAlgorithms(((at.PasswordAlgorithmCode.MD5, b""), (at.PasswordAlgorithmCode.SHA256, b"")))
            if config.password_algorithms
            else None
        )
        understood = set(UNDERSTOOD)
        if config.binding.rfc5780:
            understood |= {at.ChangeRequest.TYPE, at.ResponsePort.TYPE}
        self._understood = frozenset(understood)
        self._allocs: dict[Flow, Allocation] = {}
        self._by_relay: dict[Address, Allocation] = {}
        self._per_account: dict[str, int] = {}
        self._reservations: dict[bytes, tuple[at.Family, int, float]] = {}
        self._next_sweep: float | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "turn_allocations_total", "turn_allocations_expired", "turn_requests",
                "turn_binding_requests", "turn_errors_sent", "turn_auth_failures",
                "turn_stale_nonces", "turn_quota_rejections", "turn_capacity_rejections",
                "turn_denied_peers", "turn_packets_to_peer", "turn_bytes_to_peer",
                "turn_packets_from_peer", "turn_bytes_from_peer", "turn_drops_malformed",
                "turn_drops_no_allocation", "turn_drops_no_permission",
                "turn_drops_unbound_channel", "turn_drops_bandwidth", "turn_drops_unknown_relay",
                "turn_permissions_created", "turn_channels_bound", "turn_redirects",
                "turn_icmp_reported", "turn_reservations_made", "turn_reservations_used",
            ),
            0,
        )

    # -- public API ----------------------------------------------------------------------

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counters)
        out["turn_allocations"] = len(self._allocs)
        out["turn_permissions"] = sum(len(a.permissions) for a in self._allocs.values())
        out["turn_channels"] = sum(len(a.channels) for a in self._allocs.values())
        out["turn_reservations"] = len(self._reservations)
        out.update(self._ports.stats())
        return out

    def allocation(self, flow: Flow) -> Allocation | None:
        return self._allocs.get(flow)

    def flows(self) -> list[Flow]:
        """The client flows that hold an allocation."""
        return list(self._allocs)

    def get_timer(self) -> float | None:
        return self._next_sweep

    def handle_timer(self, now: float) -> list[Action]:
        """Expire allocations, permissions, channels and reservations (RFC 8656 §7, §9, §12)."""
        out: list[Action] = []
        for flow, a in list(self._allocs.items()):
            if a.expiry <= now:
                self.counters["turn_allocations_expired"] += 1
                out.append(self._delete(flow, "expired"))
                continue
            for peer, exp in list(a.permissions.items()):
                if exp <= now:
                    del a.permissions[peer]
            for num, c in list(a.channels.items()):
                # A channel stays reserved 5 minutes after it expires (RFC 8656 §12).
                if c.expiry + 300 <= now:
                    del a.channels[num]
                    a.peer_channel.pop(c.peer, None)
        for tok, (fam, port, exp) in list(self._reservations.items()):
            if exp <= now:
                del self._reservations[tok]
                self._ports.release(fam, port)
        self._schedule(now)
        return out

    def client_closed(self, flow: Flow, now: float) -> list[Action]:
        """A TCP/TLS client connection ended: its allocation goes with it (RFC 8656 §3.1)."""
        if flow in self._allocs:
            return [self._delete(flow, "connection closed")]
        return []

    def handle_client(self, flow: Flow, data: bytes, now: float) -> list[Action]:
        if data and 0x40 <= data[0] <= 0x7F:
            return self._client_channel_data(flow, data, now)
        try:
            msg = Message.parse(data)
        except ParseError as exc:
            head = sm.peek_header(data)
            if head is not None and head[1] is Class.REQUEST and exc.hint is not None:
                method, _, tid = head
                req = Message(method, Class.REQUEST, tid)
                return self._error(flow, req, 400, reason=f"{_f(400)}: {exc}")
            self.counters["turn_drops_malformed"] += 1
            return []
        if msg.cls is Class.INDICATION:
            if msg.method == Method.SEND and not msg.unknown_required(self._understood):
                return self._send_indication(flow, msg, now)
            self.counters["turn_drops_malformed"] += 1
            return []
        if msg.cls is not Class.REQUEST:
            self.counters["turn_drops_malformed"] += 1
            return []
        self.counters["turn_requests"] += 1
        unknown = msg.unknown_required(self._understood)
        if msg.method == Method.BINDING:
            if unknown:
                return self._error(flow, msg, 420, [at.UnknownAttributes(unknown)])
            return self._binding(flow, msg)
        handler = self._HANDLERS.get(msg.method)
        if handler is None:
            return self._error(flow, msg, 400, reason="Unsupported method")
        auth = self._authenticate(flow, msg, now)
        if not isinstance(auth, tuple):
            return auth
        keys, key, sha256 = auth
        if unknown:  # checked once authenticated (RFC 8489 §6.3), and signed
            return self._error(flow, msg, 420, [at.UnknownAttributes(unknown)], key, sha256)
        return handler(self, flow, msg, keys, key, sha256, now)

    def handle_peer(self, relay: Address, peer: Address, data: bytes, now: float) -> ToClient | None:
        """A datagram from ``peer`` on relay socket ``relay`` (RFC 8656 §10.3, §12.4)."""
        a = self._by_relay.get(relay)
        if a is None:
            self.counters["turn_drops_unknown_relay"] += 1
            return None
        exp = a.permissions.get(peer[0])
        if exp is None or exp <= now:
            self.counters["turn_drops_no_permission"] += 1
            return None
        if not self._spend(a, len(data), now):
            return None
        self.counters["turn_packets_from_peer"] += 1
        self.counters["turn_bytes_from_peer"] += len(data)
        num = a.peer_channel.get(peer)
        if num is not None:
            c = a.channels.get(num)
            if c is not None and c.expiry > now and len(data) <= 0xFFFF:
                return ToClient(a.flow, ch.encode(num, data, a.flow.transport != "udp"))
        ind = sm.indication(
            Method.DATA, self._token(12), [at.XorPeerAddress(*peer), at.Data(data)]
        )
        return ToClient(a.flow, ind.serialize())

    def handle_peer_icmp(
        self, relay: Address, peer: Address, icmp_type: int, icmp_code: int, info: int, now: float
    ) -> ToClient | None:
        """An ICMP error for a datagram sent from ``relay`` to ``peer`` (RFC 8656 §11.5):
        reported to the client in a Data indication with an ICMP attribute, if the peer
        has a permission."""
        a = self._by_relay.get(relay)
        if a is None:
            return None
        exp = a.permissions.get(peer[0])
        if exp is None or exp <= now:
            self.counters["turn_drops_no_permission"] += 1
            return None
        self.counters["turn_icmp_reported"] += 1
        ind = sm.indication(
            Method.DATA, self._token(12),
            [at.XorPeerAddress(*peer), at.Icmp(icmp_type, icmp_code, info & 0xFFFFFFFF)],
        )
        return ToClient(a.flow, ind.serialize())

    # -- relaying from the client ------------------------------------------------------

    def _client_channel_data(self, flow: Flow, data: bytes, now: float) -> list[Action]:
        out = self.channel_data(flow, data, now)
        return [out] if out is not None else []

    def channel_data(self, flow: Flow, data: bytes, now: float) -> ToPeer | None:
        """The ChannelData fast path (RFC 8656 §12.4): relay or drop-and-count.

        ``data`` starts with a byte in 0x40..0x7F. Adapters may call this directly for
        such datagrams; it never changes the timer.
        """
        a = self._allocs.get(flow)
        if a is None:
            self.counters["turn_drops_no_allocation"] += 1
            return None
        n = len(data)
        if n < 4:
            self.counters["turn_drops_malformed"] += 1
            return None
        length = (data[2] << 8) | data[3]
        extra = n - 4 - length
        if extra < 0 or extra > 3:
            self.counters["turn_drops_malformed"] += 1
            return None
        c = a.channels.get((data[0] << 8) | data[1])
        if c is None or c.expiry <= now:
            self.counters["turn_drops_unbound_channel"] += 1
            return None
        peer = c.peer
        exp = a.permissions.get(peer[0])
        if exp is None or exp <= now:
            self.counters["turn_drops_no_permission"] += 1
            return None
        relay = a.relays.get(at.Family.IPV6 if ":" in peer[0] else at.Family.IPV4)
        if relay is None:
            self.counters["turn_drops_no_permission"] += 1
            return None
        if self.config.max_bandwidth and not self._spend(a, length, now):
            return None
        counters = self.counters
        counters["turn_packets_to_peer"] += 1
        counters["turn_bytes_to_peer"] += length
        return ToPeer(relay, peer, data[4 : 4 + length] if extra or n > 4 + length else data[4:])

    def _send_indication(self, flow: Flow, msg: Message, now: float) -> list[Action]:
        a = self._allocs.get(flow)
        if a is None:
            self.counters["turn_drops_no_allocation"] += 1
            return []
        peer = msg.get(at.XorPeerAddress)
        data = msg.get(at.Data)
        if peer is None or data is None:
            self.counters["turn_drops_malformed"] += 1
            return []
        return self._to_peer(a, peer.address, data.value, msg.has(at.DontFragment), now)

    def _to_peer(self, a: Allocation, peer: Address, data: bytes, df: bool, now: float) -> list[Action]:
        exp = a.permissions.get(peer[0])
        if exp is None or exp <= now:
            self.counters["turn_drops_no_permission"] += 1
            return []
        relay = a.relay_for(peer[0])
        if relay is None:
            self.counters["turn_drops_no_permission"] += 1
            return []
        if not self._spend(a, len(data), now):
            return []
        self.counters["turn_packets_to_peer"] += 1
        self.counters["turn_bytes_to_peer"] += len(data)
        return [ToPeer(relay, peer, data, df)]

    def _spend(self, a: Allocation, n: int, now: float) -> bool:
        rate = self.config.max_bandwidth
        if rate <= 0:
            return True
        a.tokens = min(float(rate), a.tokens + (now - a.tokens_at) * rate)
        a.tokens_at = now
        if a.tokens < n:
            self.counters["turn_drops_bandwidth"] += 1
            return False
        a.tokens -= n
        return True

    # -- replies -----------------------------------------------------------------------

    def _reply(self, flow: Flow, req: Message, resp: Message, key: bytes | None = None, sha256: bool = False) -> ToClient:
        return ToClient(flow, resp.serialize(key, sha256=sha256, fingerprint=req.has(at.Fingerprint)))

    def _software(self) -> list[at.Attribute]:
        return [at.Software(self.config.software)] if self.config.software else []

    def _error(
        self,
        flow: Flow,
        req: Message,
        code: int,
        attrs: list[at.Attribute] | None = None,
        key: bytes | None = None,
        sha256: bool = False,
        reason: str | None = None,
    ) -> list[Action]:
        self.counters["turn_errors_sent"] += 1
        resp = sm.error(req, code, [*(attrs or []), *self._software()], reason)
        return [
            self._reply(flow, req, resp, key, sha256),
            RequestRejected(flow, req.method, code, reason or _f(code)),
        ]

    def _challenge(self, flow: Flow, req: Message, code: int, now: float) -> list[Action]:
        attrs: list[at.Attribute] = [
            at.Realm(self.config.realm),
            at.Nonce(self._nonces.make(_nonce_binding(flow), now)),
        ]
        if self._algorithms is not None:
            attrs.append(self._algorithms)
        return self._error(flow, req, code, attrs)

    def _binding(self, flow: Flow, req: Message) -> list[Action]:
        self.counters["turn_binding_requests"] += 1
        cfg = self.config.binding
        if not cfg.software and self.config.software:
            cfg = BindingConfig(self.config.software, cfg.primary, cfg.other)
        r = answer_binding(req, flow.transport, flow.local, flow.remote, cfg)
        out_flow = flow if (r.source, r.destination) == (flow.local, flow.remote) else Flow(flow.transport, r.source, r.destination)
        return [self._reply(out_flow, req, r.message)]

    # -- authentication (RFC 8489 §9.2.4, RFC 8656 §5) -----------------------------------

    def _authenticate(self, flow: Flow, req: Message, now: float) -> list[Action] | tuple[UserKeys, bytes, bool]:
        if not req.has_integrity:
            return self._challenge(flow, req, 401, now)
        user = req.get(at.Username)
        uhash = req.get(at.Userhash) if self.config.username_anonymity else None
        realm = req.get(at.Realm)
        nonce = req.get(at.Nonce)
        if (user is None and uhash is None) or realm is None or nonce is None:
            self.counters["turn_auth_failures"] += 1
            return self._error(flow, req, 400, reason="Missing USERNAME, REALM or NONCE")
        if not self._nonces.valid(nonce.value, _nonce_binding(flow), now):
            self.counters["turn_stale_nonces"] += 1
            return self._challenge(flow, req, 438, now)
        sha256 = req.has(at.MessageIntegritySha256)
        algorithm = at.PasswordAlgorithmCode.MD5
        if self._algorithms is not None and (req.has(at.PasswordAlgorithm) or req.has(at.PasswordAlgorithms)):
            # RFC 8489 §9.2.4: the client must echo our list and pick from it.
            pa = req.get(at.PasswordAlgorithm)
            if req.get(at.PasswordAlgorithms) != self._algorithms or pa is None or pa.algorithm not in (1, 2):
                self.counters["turn_auth_failures"] += 1
                return self._error(flow, req, 400, reason="PASSWORD-ALGORITHMS mismatch")
            algorithm = at.PasswordAlgorithmCode(pa.algorithm)
        if realm.value != self.config.realm:
            self.counters["turn_auth_failures"] += 1
            return self._challenge(flow, req, 401, now)
        if user is not None:
            username: str | None = user.value
        elif uhash is not None:
            # RFC 8489 §9.2.4: USERHASH instead of USERNAME (username anonymity).
            username = self._creds.username_for_hash(uhash.value, realm.value)
        else:
            username = None
        if username is not None:
            for keys in self._creds.candidates(username, realm.value):
                key = keys.key(algorithm)
                if key is not None and req.check_integrity(key):
                    return dataclasses.replace(keys, username=username), key, sha256
        self.counters["turn_auth_failures"] += 1
        return self._challenge(flow, req, 401, now)

    # -- methods -------------------------------------------------------------------------

    def _lifetime(self, req: Message) -> int:
        lt = req.get(at.Lifetime)
        if lt is None:
            return self.config.default_lifetime
        if lt.value == 0:
            return 0
        return max(min(lt.value, self.config.max_lifetime), self.config.default_lifetime)

    def _allocate(self, flow: Flow, req: Message, keys: UserKeys, key: bytes, sha: bool, now: float) -> list[Action]:
        """RFC 8656 §7.2."""
        err = self._err_factory(flow, req, key, sha)
        username = keys.username
        existing = self._allocs.get(flow)
        if existing is not None:
            if existing.alloc_tid == req.transaction_id:
                return [ToClient(flow, existing.alloc_response)]
            return err(437)
        # RFC 8489 §14.15: the alternate is of the family the client reached us over
        v6 = ":" in flow.remote[0]
        alts = [a for a in self.config.alternate_servers if (":" in a[0]) == v6]
        if alts:
            target = alts[self.counters["turn_redirects"] % len(alts)]
            self.counters["turn_redirects"] += 1
            redirect: list[at.Attribute] = [at.AlternateServer(*target)]
            if flow.transport == "tls" and self.config.alternate_domain:
                redirect.append(at.AlternateDomain(self.config.alternate_domain))  # RFC 8489 §14.16
            return self._error(flow, req, 300, redirect, key, sha)
        rt = req.get(at.RequestedTransport)
        if rt is None:
            return err(400, reason="Missing REQUESTED-TRANSPORT")
        if rt.protocol != UDP_PROTOCOL:
            return err(442)
        token = req.get(at.ReservationToken)
        even = req.get(at.EvenPort)
        raf = req.get(at.RequestedAddressFamily)
        aaf = req.get(at.AdditionalAddressFamily) or req.get(at.AdditionalAddressFamilyDraft)
        if token is not None and (even is not None or raf is not None or aaf is not None):
            return err(400, reason="RESERVATION-TOKEN with EVEN-PORT or an address family")
        if raf is not None and aaf is not None:
            return err(400, reason="Both REQUESTED- and ADDITIONAL-ADDRESS-FAMILY")
        if aaf is not None and aaf.family != at.Family.IPV6:
            return err(400, reason="ADDITIONAL-ADDRESS-FAMILY must be IPv6")
        if self._per_account.get(keys.account, 0) >= self.config.max_allocations_per_user:
            self.counters["turn_quota_rejections"] += 1
            return err(486)
        if len(self._allocs) >= self.config.max_allocations:
            self.counters["turn_quota_rejections"] += 1
            return err(486)
        families = {at.Family.IPV4: self.config.relay_ipv4, at.Family.IPV6: self.config.relay_ipv6}
        relays: dict[at.Family, Address] = {}
        extra: list[at.Attribute] = []
        if token is not None:
            res = self._reservations.pop(token.token, None)
            if res is None or res[2] <= now or not self._ports.activate(res[0], res[1]):
                if res is not None:
                    self._ports.release(res[0], res[1])
                self.counters["turn_capacity_rejections"] += 1
                return err(508, reason="Reservation token unknown or expired")
            ip = families[res[0]]
            if ip is None:
                self._ports.release(res[0], res[1])
                return err(440)
            relays[res[0]] = (ip, res[1])
            self.counters["turn_reservations_used"] += 1
        else:
            want = raf.family if raf is not None else at.Family.IPV4
            ip = families[want]
            if ip is None:
                return err(440)
            reserve = bool(even and even.reserve)
            grant = self._ports.acquire(want, even=even is not None, reserve_next=reserve)
            if grant is None:
                self.counters["turn_capacity_rejections"] += 1
                return err(508)
            port, reserved = grant
            relays[want] = (ip, port)
            if reserved is not None:
                tok = self._token(8)
                self._reservations[tok] = (want, reserved, now + self.config.reservation_lifetime)
                self.counters["turn_reservations_made"] += 1
                extra.append(at.ReservationToken(tok))
            if aaf is not None:
                ip6 = families[at.Family.IPV6]
                grant6 = self._ports.acquire(at.Family.IPV6) if ip6 else None
                if ip6 is None or grant6 is None:
                    code = 440 if ip6 is None else 508
                    extra.append(at.AddressErrorCode(at.Family.IPV6, code, _f(code)))
                else:
                    relays[at.Family.IPV6] = (ip6, grant6[0])
        lifetime = self._lifetime(req) or self.config.default_lifetime
        attrs: list[at.Attribute] = [
            at.XorRelayedAddress(self._external[fam] or r[0], r[1]) for fam, r in relays.items()
        ]
        attrs += [at.Lifetime(lifetime), *extra, at.XorMappedAddress(*flow.remote), *self._software()]
        resp = self._reply(flow, req, sm.success(req, attrs), key, sha)
        a = Allocation(
            flow, username, keys.account, key, sha, relays, now + lifetime,
            req.transaction_id, resp.data, tokens=float(self.config.max_bandwidth), tokens_at=now,
        )
        self._allocs[flow] = a
        for r in relays.values():
            self._by_relay[r] = a
        self._per_account[keys.account] = self._per_account.get(keys.account, 0) + 1
        self.counters["turn_allocations_total"] += 1
        self._schedule(now, now + lifetime)
        if any(isinstance(x, at.ReservationToken) for x in extra):
            self._schedule(now, now + self.config.reservation_lifetime)
        return [resp, AllocationCreated(flow, tuple(relays.values()), keys.account, lifetime)]

    def _owned(self, flow: Flow, req: Message, keys: UserKeys, key: bytes, sha: bool) -> Allocation | list[Action]:
        a = self._allocs.get(flow)
        if a is None:
            return self._err_factory(flow, req, key, sha)(437)
        if keys.username != a.username:
            return self._err_factory(flow, req, key, sha)(441)
        return a

    def _refresh(self, flow: Flow, req: Message, keys: UserKeys, key: bytes, sha: bool, now: float) -> list[Action]:
        """RFC 8656 §7.3."""
        a = self._owned(flow, req, keys, key, sha)
        if not isinstance(a, Allocation):
            return a
        raf = req.get(at.RequestedAddressFamily)
        if raf is not None and raf.family not in a.relays:
            return self._err_factory(flow, req, key, sha)(443)
        lifetime = self._lifetime(req)
        resp = self._reply(flow, req, sm.success(req, [at.Lifetime(lifetime), *self._software()]), key, sha)
        if lifetime == 0:
            return [resp, self._delete(flow, "deleted by client")]
        a.expiry = now + lifetime
        return [resp]

    def _peer_checks(self, a: Allocation, peer: at.XorPeerAddress) -> int | None:
        if peer.family not in a.relays:
            return 443
        if not self._policy.permits(peer.host):
            self.counters["turn_denied_peers"] += 1
            return 403
        return None

    def _create_permission(self, flow: Flow, req: Message, keys: UserKeys, key: bytes, sha: bool, now: float) -> list[Action]:
        """RFC 8656 §9."""
        a = self._owned(flow, req, keys, key, sha)
        if not isinstance(a, Allocation):
            return a
        err = self._err_factory(flow, req, key, sha)
        peers = req.get_all(at.XorPeerAddress)
        if not peers:
            return err(400, reason="Missing XOR-PEER-ADDRESS")
        for p in peers:
            code = self._peer_checks(a, p)
            if code is not None:
                return err(code)
        new = {p.host for p in peers} - a.permissions.keys()
        if len(a.permissions) + len(new) > self.config.max_permissions:
            return err(508, reason="Too many permissions")
        for p in peers:
            if p.host in new:
                self.counters["turn_permissions_created"] += 1
            a.permissions[p.host] = now + self.config.permission_lifetime
        return [self._reply(flow, req, sm.success(req, self._software()), key, sha)]

    def _channel_bind(self, flow: Flow, req: Message, keys: UserKeys, key: bytes, sha: bool, now: float) -> list[Action]:
        """RFC 8656 §11.2."""
        a = self._owned(flow, req, keys, key, sha)
        if not isinstance(a, Allocation):
            return a
        err = self._err_factory(flow, req, key, sha)
        num = req.get(at.ChannelNumber)
        peer = req.get(at.XorPeerAddress)
        if num is None or peer is None:
            return err(400, reason="Missing CHANNEL-NUMBER or XOR-PEER-ADDRESS")
        if not ch.valid_channel(num.number):
            return err(400, reason="Channel number out of range")
        bound = a.channels.get(num.number)
        if bound is not None and bound.peer != peer.address:
            return err(400, reason="Channel already bound to another peer")
        other = a.peer_channel.get(peer.address)
        if other is not None and other != num.number:
            return err(400, reason="Peer already bound to another channel")
        code = self._peer_checks(a, peer)
        if code is not None:
            return err(code)
        if bound is None:
            self.counters["turn_channels_bound"] += 1
        a.channels[num.number] = Channel(peer.address, now + self.config.channel_lifetime)
        a.peer_channel[peer.address] = num.number
        if peer.host not in a.permissions:  # a ChannelBind installs a permission too (§12)
            self.counters["turn_permissions_created"] += 1
        a.permissions[peer.host] = now + self.config.permission_lifetime
        return [self._reply(flow, req, sm.success(req, self._software()), key, sha)]

    _HANDLERS: dict[
        int, Callable[[TurnServer, Flow, Message, UserKeys, bytes, bool, float], list[Action]]
    ] = {
        Method.ALLOCATE: _allocate,
        Method.REFRESH: _refresh,
        Method.CREATE_PERMISSION: _create_permission,
        Method.CHANNEL_BIND: _channel_bind,
    }

    # -- helpers -----------------------------------------------------------------------

    def _err_factory(self, flow: Flow, req: Message, key: bytes, sha: bool) -> Callable[..., list[Action]]:
        def err(code: int, reason: str | None = None) -> list[Action]:
            return self._error(flow, req, code, key=key, sha256=sha, reason=reason)

        return err

    def _delete(self, flow: Flow, reason: str) -> AllocationDeleted:
        a = self._allocs.pop(flow)
        for fam, r in a.relays.items():
            self._by_relay.pop(r, None)
            self._ports.release(fam, r[1])
        n = self._per_account.get(a.account, 1) - 1
        if n > 0:
            self._per_account[a.account] = n
        else:
            self._per_account.pop(a.account, None)
        return AllocationDeleted(flow, tuple(a.relays.values()), reason)

    def _schedule(self, now: float, expiry: float | None = None) -> None:
        """Arm the sweep: the next expiry, at least every 30 s while allocations live.

        With ``expiry`` (a new allocation or reservation) this is O(1); the sweep in
        :meth:`handle_timer` recomputes from scratch.
        """
        if expiry is not None:
            nxt = min(expiry, now + 30.0)
            self._next_sweep = nxt if self._next_sweep is None else min(self._next_sweep, nxt)
            return
        times = [r[2] for r in self._reservations.values()]
        if self._allocs:
            times.append(now + 30.0)
            times.append(min(a.expiry for a in self._allocs.values()))
        self._next_sweep = min(times) if times else None
