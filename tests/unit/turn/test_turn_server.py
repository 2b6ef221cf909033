"""TURN server core (RFC 8656): requests in, actions out, FakeClock for lifetimes."""

from __future__ import annotations

import random

import pytest

from sipedge._common.clock import FakeClock
from sipedge.stun import attributes as at
from sipedge.stun import integrity
from sipedge.stun import message as sm
from sipedge.stun.message import Class, Message, Method
from sipedge.stun.server import BindingConfig
from sipedge.turn import channel as ch
from sipedge.turn.auth import Credentials, RestCredentials, StaticUsers, rest_password
from sipedge.turn.policy import PeerPolicy
from sipedge.turn.ports import RangeAllocator
from sipedge.turn.server import (
    Action,
    AllocationCreated,
    AllocationDeleted,
    Flow,
    ServerConfig,
    ToClient,
    ToPeer,
    TurnServer,
)

REALM = "example.org"
PEER = ("198.51.100.7", 4000)
PEER6 = ("2001:db8::7", 4000)
RELAY_IP = "192.0.2.10"


def make_server(clock: FakeClock, **kw: object) -> TurnServer:
    cfg = ServerConfig(realm=REALM, relay_ipv4=RELAY_IP, **kw)  # type: ignore[arg-type]
    users = StaticUsers(REALM, {"alice": "secret", "bob": "hunter2"})
    rest = RestCredentials(["old-secret", "new-secret"], clock.wall)
    rng = random.Random(7)
    lo, hi = 49152, 49152 + 63
    return TurnServer(
        cfg,
        Credentials(users, rest),
        RangeAllocator(lo, hi, rng),
        token_source=lambda n: rng.randbytes(n),
    )


class Client:
    """A sans-I/O TURN client for tests: long-term auth, one flow."""

    def __init__(
        self,
        server: TurnServer,
        clock: FakeClock,
        user: str = "alice",
        password: str = "secret",
        flow: Flow | None = None,
    ) -> None:
        self.s = server
        self.clock = clock
        self.user = user
        self.key = integrity.long_term_key(user, REALM, password)
        self.flow = flow or Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 50000))
        self.nonce: str | None = None
        self.rng = random.Random(1)

    def tid(self) -> bytes:
        return self.rng.randbytes(12)

    def send(self, data: bytes) -> list[Action]:
        return self.s.handle_client(self.flow, data, self.clock.now)

    def reply(self, actions: list[Action]) -> Message:
        msgs = [a for a in actions if isinstance(a, ToClient)]
        assert len(msgs) == 1, actions
        assert msgs[0].flow == self.flow
        return Message.parse(msgs[0].data)

    def raw_request(self, method: int, attrs: list[at.Attribute], tid: bytes | None = None) -> bytes:
        assert self.nonce is not None
        req = sm.request(
            method,
            tid or self.tid(),
            [*attrs, at.Username(self.user), at.Realm(REALM), at.Nonce(self.nonce)],
        )
        return req.serialize(self.key)

    def request(self, method: int, attrs: list[at.Attribute], tid: bytes | None = None) -> Message:
        if self.nonce is None:
            r = self.reply(self.send(sm.request(method, self.tid(), attrs).serialize()))
            assert r.error_code == 401
            nonce = r.get(at.Nonce)
            assert nonce is not None
            self.nonce = nonce.value
        r = self.reply(self.send(self.raw_request(method, attrs, tid)))
        if r.error_code == 438:
            nonce = r.get(at.Nonce)
            assert nonce is not None
            self.nonce = nonce.value
            r = self.reply(self.send(self.raw_request(method, attrs, tid)))
        if r.error_code not in (400, 401, 420, 438):
            assert r.check_integrity(self.key), r
        return r

    def allocate(self, *extra: at.Attribute) -> Message:
        return self.request(Method.ALLOCATE, [at.RequestedTransport(17), *extra])

    def relay(self) -> tuple[str, int]:
        r = self.allocate()
        assert r.cls is Class.SUCCESS, r
        x = r.get(at.XorRelayedAddress)
        assert x is not None
        return x.address


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> TurnServer:
    return make_server(clock)


def test_binding_needs_no_auth(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    r = c.reply(c.send(sm.request(Method.BINDING, c.tid()).serialize(fingerprint=True)))
    assert r.cls is Class.SUCCESS
    assert r.get(at.XorMappedAddress) == at.XorMappedAddress("203.0.113.5", 50000)
    assert r.has(at.Fingerprint) and r.get(at.Software) == at.Software("sipedge")


def test_allocate_challenge_then_success(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    r = c.reply(c.send(sm.request(Method.ALLOCATE, c.tid(), [at.RequestedTransport(17)]).serialize()))
    assert r.error_code == 401
    assert r.get(at.Realm) == at.Realm(REALM)
    nonce = r.get(at.Nonce)
    assert nonce is not None and nonce.features == at.SecurityFeatures(password_algorithms=True)
    assert r.has(at.PasswordAlgorithms)
    tid = c.tid()
    ok = c.request(Method.ALLOCATE, [at.RequestedTransport(17)], tid)
    assert ok.cls is Class.SUCCESS
    relay = ok.get(at.XorRelayedAddress)
    assert relay is not None and relay.host == RELAY_IP and 49152 <= relay.port <= 49215
    assert ok.get(at.Lifetime) == at.Lifetime(600)
    assert ok.get(at.XorMappedAddress) == at.XorMappedAddress(*c.flow.remote)
    assert server.stats()["turn_allocations"] == 1
    # A retransmission gets the same answer; a new transaction gets 437.
    again = c.reply(c.send(c.raw_request(Method.ALLOCATE, [at.RequestedTransport(17)], tid)))
    assert again == ok
    assert c.allocate().error_code == 437


@pytest.mark.parametrize(
    ("attrs", "code"),
    [
        ([], 400),
        ([at.RequestedTransport(6)], 442),
        ([at.RequestedTransport(17), at.ReservationToken(b"12345678"), at.EvenPort()], 400),
        ([at.RequestedTransport(17), at.RequestedAddressFamily(at.Family.IPV6)], 440),
        (
            [
                at.RequestedTransport(17),
                at.RequestedAddressFamily(at.Family.IPV4),
                at.AdditionalAddressFamily(at.Family.IPV6),
            ],
            400,
        ),
        ([at.RequestedTransport(17), at.AdditionalAddressFamily(at.Family.IPV4)], 400),
        ([at.RequestedTransport(17), at.ReservationToken(b"unknown!")], 508),
        ([at.RequestedTransport(17), at.UnknownAttribute(0x0050, b"")], 420),
    ],
)
def test_allocate_errors(server: TurnServer, clock: FakeClock, attrs: list[at.Attribute], code: int) -> None:
    c = Client(server, clock)
    c.nonce = "x"
    r = c.request(Method.ALLOCATE, attrs)
    assert r.error_code == code
    if code == 420:
        assert r.get(at.UnknownAttributes) == at.UnknownAttributes((0x0050,))
        assert r.check_integrity(c.key)  # answered once authenticated, and signed
        # without valid credentials the same request is only challenged (RFC 8489 §6.3)
        stranger = Client(server, clock, password="wrong", flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.6", 9)))
        assert stranger.request(Method.ALLOCATE, attrs).error_code == 401
    assert server.stats()["turn_allocations"] == 0


def test_auth_failures(server: TurnServer, clock: FakeClock) -> None:
    bad = Client(server, clock, password="wrong")
    assert bad.allocate().error_code == 401
    nobody = Client(server, clock, user="mallory")
    assert nobody.allocate().error_code == 401
    # MESSAGE-INTEGRITY without REALM/NONCE: 400.
    c = Client(server, clock)
    req = sm.request(Method.ALLOCATE, c.tid(), [at.RequestedTransport(17), at.Username("alice")])
    assert c.reply(c.send(req.serialize(c.key))).error_code == 400
    assert server.stats()["turn_auth_failures"] >= 3
    # Tampered message: integrity fails -> 401.
    c.nonce = "x"
    c.allocate()  # learn a nonce (438 -> retry) and allocate
    data = bytearray(c.raw_request(Method.REFRESH, [at.Lifetime(600)]))
    data[26] ^= 0xFF  # inside the first attribute's value
    assert c.reply(c.send(bytes(data))).error_code == 401


def test_stale_and_replayed_nonce(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    c.relay()
    assert c.nonce is not None
    old = c.nonce
    clock.advance(601)
    r = c.reply(c.send(c.raw_request(Method.REFRESH, [])))
    assert r.error_code == 438 and r.get(at.Nonce) != at.Nonce(old)
    assert server.stats()["turn_stale_nonces"] == 1
    # A fresh nonce replayed from another address is stale there.
    c2 = Client(server, clock, flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.99", 1)))
    c.request(Method.REFRESH, [])
    c2.nonce = c.nonce
    r2 = c2.reply(c2.send(c2.raw_request(Method.ALLOCATE, [at.RequestedTransport(17)])))
    assert r2.error_code == 438


def test_allocate_replayed_from_another_port_is_stale(server: TurnServer, clock: FakeClock) -> None:
    """A captured Allocate sent again from a new 5-tuple (same host, new port; or another
    listener) gets 438 with a fresh nonce, not a second allocation on the user's quota."""
    c = Client(server, clock)
    c.nonce = "x"
    nonce = c.reply(c.send(c.raw_request(Method.ALLOCATE, [at.RequestedTransport(17)]))).get(at.Nonce)
    assert nonce is not None
    c.nonce = nonce.value
    captured = c.raw_request(Method.ALLOCATE, [at.RequestedTransport(17)])
    ok = c.reply(c.send(captured))
    assert ok.cls is Class.SUCCESS
    stale = server.stats()["turn_stale_nonces"]
    for remote, local in ((("203.0.113.5", 50001), ("192.0.2.1", 3478)), (("203.0.113.5", 50000), ("192.0.2.1", 3479))):
        replayer = Client(server, clock, flow=Flow("udp", local, remote))
        r = replayer.reply(replayer.send(captured))
        assert r.error_code == 438
        fresh = r.get(at.Nonce)
        assert fresh is not None and fresh.value != c.nonce
    assert server.stats()["turn_allocations"] == 1
    assert server.stats()["turn_stale_nonces"] == stale + 2
    assert c.reply(c.send(captured)) == ok  # on its own flow it is a retransmission
    # The legitimate client on a new port retries with the fresh nonce and succeeds.
    moved = Client(server, clock, flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 50002)))
    moved.nonce = c.nonce
    assert moved.allocate().cls is Class.SUCCESS
    assert server.stats()["turn_allocations"] == 2


def test_rest_credentials(server: TurnServer, clock: FakeClock) -> None:
    expiry = int(clock.wall()) + 3600
    user = f"{expiry}:carol"
    for secret in ("old-secret", "new-secret"):
        c = Client(server, clock, user=user, password=rest_password(secret, user),
                   flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 1000 + len(secret) + ord(secret[0]))))
        assert c.allocate().cls is Class.SUCCESS
    bad = Client(server, clock, user=user, password=rest_password("other", user),
                 flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 2000)))
    assert bad.allocate().error_code == 401
    expired = f"{int(clock.wall()) - 1}:carol"
    late = Client(server, clock, user=expired, password=rest_password("new-secret", expired),
                  flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 2001)))
    assert late.allocate().error_code == 401


def test_sha256_password_algorithm(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    r = c.reply(c.send(sm.request(Method.ALLOCATE, c.tid(), [at.RequestedTransport(17)]).serialize()))
    nonce, algs = r.get(at.Nonce), r.get(at.PasswordAlgorithms)
    assert nonce is not None and algs is not None
    key = integrity.long_term_key("alice", REALM, "secret", at.PasswordAlgorithmCode.SHA256)
    attrs: list[at.Attribute] = [
        at.RequestedTransport(17), at.Username("alice"), at.Realm(REALM), nonce, algs,
        at.PasswordAlgorithm(at.PasswordAlgorithmCode.SHA256),
    ]
    ok = c.reply(c.send(sm.request(Method.ALLOCATE, c.tid(), attrs).serialize(key, sha256=True)))
    assert ok.cls is Class.SUCCESS and ok.has(at.MessageIntegritySha256) and ok.check_integrity(key)
    # Dropping PASSWORD-ALGORITHMS (a downgrade) is refused (on the flow the nonce is for).
    attrs2 = [a for a in attrs if not isinstance(a, at.PasswordAlgorithms)]
    bad = c.reply(c.send(sm.request(Method.ALLOCATE, c.tid(), attrs2).serialize(key, sha256=True)))
    assert bad.error_code == 400  # RFC 8489 §9.2.4: the algorithms do not match what was offered


def test_userhash_anonymity(clock: FakeClock) -> None:
    server = make_server(clock, username_anonymity=True)
    c = Client(server, clock)
    r = c.reply(c.send(sm.request(Method.ALLOCATE, c.tid(), [at.RequestedTransport(17)]).serialize()))
    nonce, algs = r.get(at.Nonce), r.get(at.PasswordAlgorithms)
    assert nonce is not None and algs is not None
    assert nonce.features == at.SecurityFeatures(password_algorithms=True, username_anonymity=True)
    key = integrity.long_term_key("alice", REALM, "secret", at.PasswordAlgorithmCode.SHA256)
    attrs: list[at.Attribute] = [
        at.RequestedTransport(17), at.Userhash(integrity.userhash("alice", REALM)), at.Realm(REALM), nonce,
        algs, at.PasswordAlgorithm(at.PasswordAlgorithmCode.SHA256),
    ]
    ok = c.reply(c.send(sm.request(Method.ALLOCATE, c.tid(), attrs).serialize(key, sha256=True)))
    assert ok.cls is Class.SUCCESS and ok.check_integrity(key)
    a = server.allocation(c.flow)
    assert a is not None and a.username == "alice"
    # The same user by name owns it; an unknown hash is refused.
    assert c.request(Method.REFRESH, []).cls is Class.SUCCESS
    c2 = Client(server, clock, flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 77)))
    attrs[1] = at.Userhash(integrity.userhash("nobody", REALM))
    bad = c2.reply(c2.send(sm.request(Method.ALLOCATE, c2.tid(), attrs).serialize(key, sha256=True)))
    assert bad.error_code in (401, 438)
    # Without the feature, USERHASH alone is a missing USERNAME.
    plain = make_server(clock)
    c3 = Client(plain, clock)
    r3 = c3.reply(c3.send(sm.request(Method.ALLOCATE, c3.tid(), attrs).serialize(key, sha256=True)))
    assert r3.error_code == 400


def test_permission_send_and_data(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    relay = c.relay()
    send = sm.indication(Method.SEND, c.tid(), [at.XorPeerAddress(*PEER), at.Data(b"hi")]).serialize()
    assert c.send(send) == []
    assert server.stats()["turn_drops_no_permission"] == 1
    assert server.handle_peer(relay, PEER, b"early", clock.now) is None
    assert c.request(Method.CREATE_PERMISSION, [at.XorPeerAddress(*PEER)]).cls is Class.SUCCESS
    assert c.send(send) == [ToPeer(relay, PEER, b"hi")]
    df = sm.indication(Method.SEND, c.tid(), [at.XorPeerAddress(*PEER), at.Data(b"x"), at.DontFragment()])
    assert c.send(df.serialize()) == [ToPeer(relay, PEER, b"x", True)]
    out = server.handle_peer(relay, (PEER[0], 5555), b"reply", clock.now)  # any port of the IP
    assert out is not None and out.flow == c.flow
    ind = Message.parse(out.data)
    assert (ind.method, ind.cls) == (Method.DATA, Class.INDICATION)
    assert ind.get(at.XorPeerAddress) == at.XorPeerAddress(PEER[0], 5555)
    assert ind.get(at.Data) == at.Data(b"reply")
    st = server.stats()
    assert st["turn_packets_to_peer"] == 2 and st["turn_bytes_from_peer"] == 5
    # Permissions last 300 s unless refreshed.
    clock.advance(301)
    assert server.handle_peer(relay, PEER, b"late", clock.now) is None
    assert c.send(send) == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_channel_bind_and_data(clock: FakeClock, transport: str) -> None:
    server = make_server(clock)
    c = Client(server, clock, flow=Flow(transport, ("192.0.2.1", 3478), ("203.0.113.5", 50000)))
    relay = c.relay()
    assert c.send(ch.ChannelData(0x4001, b"x").serialize()) == []
    assert server.stats()["turn_drops_unbound_channel"] == 1
    ok = c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x4001), at.XorPeerAddress(*PEER)])
    assert ok.cls is Class.SUCCESS
    assert c.send(ch.ChannelData(0x4001, b"abc").serialize()) == [ToPeer(relay, PEER, b"abc")]
    out = server.handle_peer(relay, PEER, b"abcde", clock.now)
    assert out is not None
    assert out.data == ch.ChannelData(0x4001, b"abcde").serialize(pad=transport == "tcp")
    # Another port of the same IP is not bound: Data indication.
    out2 = server.handle_peer(relay, (PEER[0], 1), b"z", clock.now)
    assert out2 is not None and Message.parse(out2.data).method == Method.DATA
    # Rebinding refreshes; conflicting bindings are 400.
    assert c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x4001), at.XorPeerAddress(*PEER)]).cls is Class.SUCCESS
    assert c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x4001), at.XorPeerAddress(PEER[0], 1)]).error_code == 400
    assert c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x4002), at.XorPeerAddress(*PEER)]).error_code == 400
    assert c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x3FFF), at.XorPeerAddress(*PEER)]).error_code == 400
    assert c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x8000), at.XorPeerAddress(*PEER)]).error_code == 400
    assert c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x4003)]).error_code == 400
    assert c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x4003), at.XorPeerAddress(*PEER6)]).error_code == 443
    assert server.stats()["turn_channels"] == 1


def test_channels_last_600_seconds(clock: FakeClock) -> None:
    """A channel binding expires after 600 s (RFC 8656 §12) unless rebound; the peer's
    permission, kept fresh on its own, then carries Data indications instead."""
    server = make_server(clock)
    c = Client(server, clock)
    relay = c.relay()
    assert c.request(Method.REFRESH, [at.Lifetime(3600)]).cls is Class.SUCCESS
    assert c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x4001), at.XorPeerAddress(*PEER)]).cls is Class.SUCCESS
    for step in (290, 290):
        clock.advance(step)
        server.handle_timer(clock.now)
        assert c.request(Method.CREATE_PERMISSION, [at.XorPeerAddress(*PEER)]).cls is Class.SUCCESS
    clock.advance(19)  # 599 s after the bind
    server.handle_timer(clock.now)
    out = server.handle_peer(relay, PEER, b"hi", clock.now)
    assert out is not None and out.data == ch.ChannelData(0x4001, b"hi").serialize()
    clock.advance(2)  # 601 s
    server.handle_timer(clock.now)
    out = server.handle_peer(relay, PEER, b"hi", clock.now)
    assert out is not None and Message.parse(out.data).method == Method.DATA
    # the number stays reserved 5 more minutes, then is gone
    assert server.stats()["turn_channels"] == 1
    clock.advance(300)
    server.handle_timer(clock.now)
    assert server.stats()["turn_channels"] == 0


def test_external_address_is_advertised(clock: FakeClock) -> None:
    server = make_server(clock, external_ipv4="203.0.113.77")
    c = Client(server, clock)
    relay = c.relay()
    assert relay[0] == "203.0.113.77"
    a = server.allocation(c.flow)
    assert a is not None and a.relays[at.Family.IPV4] == (RELAY_IP, relay[1])  # bound address
    assert c.request(Method.CREATE_PERMISSION, [at.XorPeerAddress("203.0.113.77", 9)]).error_code == 403


def test_alternate_server_redirect(clock: FakeClock) -> None:
    alternates = (("198.51.100.1", 3478), ("2001:db8::1", 3478), ("198.51.100.2", 3478))
    server = make_server(clock, alternate_servers=alternates)
    got = []
    for p in range(3):
        c = Client(server, clock, flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 100 + p)))
        r = c.allocate()
        assert r.error_code == 300 and r.check_integrity(c.key)
        alt = r.get(at.AlternateServer)
        assert alt is not None
        got.append(alt.address)
    # round robin over the alternates of the client's family only (RFC 8489 §14.15)
    assert got == [("198.51.100.1", 3478), ("198.51.100.2", 3478), ("198.51.100.1", 3478)]
    c6 = Client(server, clock, flow=Flow("udp", ("2001:db8::9", 3478), ("2001:db8::5", 100)))
    alt6 = c6.allocate().get(at.AlternateServer)
    assert alt6 is not None and alt6.address == ("2001:db8::1", 3478)
    assert server.stats()["turn_allocations"] == 0
    assert c6.allocate().get(at.AlternateDomain) is None  # not over TLS, none configured
    named = make_server(clock, alternate_servers=alternates, alternate_domain="turn2.example.net")
    tls_client = Client(named, clock, flow=Flow("tls", ("192.0.2.1", 5349), ("203.0.113.5", 40000)))
    assert tls_client.allocate().get(at.AlternateDomain) == at.AlternateDomain("turn2.example.net")
    udp_client = Client(named, clock)
    assert udp_client.allocate().get(at.AlternateDomain) is None
    # no alternate of that family: served here
    only6 = make_server(clock, alternate_servers=(("2001:db8::1", 3478),))
    assert Client(only6, clock).allocate().error_code is None


def test_denied_peers(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    c.relay()
    for host in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.0.1", "224.0.0.1", RELAY_IP):
        port = 49152 if host == RELAY_IP else 9
        r = c.request(Method.CREATE_PERMISSION, [at.XorPeerAddress(host, port)])
        assert r.error_code in (403,), host
    # One bad peer in a list refuses the whole request.
    r = c.request(Method.CREATE_PERMISSION, [at.XorPeerAddress(*PEER), at.XorPeerAddress("10.0.0.1", 1)])
    assert r.error_code == 403
    assert c.request(Method.CREATE_PERMISSION, [at.XorPeerAddress(*PEER6)]).error_code == 443
    assert c.request(Method.CREATE_PERMISSION, []).error_code == 400
    assert server.stats()["turn_permissions"] == 0


def test_policy_allow_overrides() -> None:
    p = PeerPolicy.build(allow=["127.0.0.0/8"], deny=["198.51.100.0/24"], own=["203.0.113.1"])
    assert p.permits("127.0.0.1")
    assert not p.permits("198.51.100.9")
    assert not p.permits("203.0.113.1")
    assert not p.permits("::ffff:10.0.0.1")
    assert not p.permits("fe80::1") and not p.permits("ff02::1") and not p.permits("nonsense")
    assert p.permits("8.8.8.8") and p.permits("2001:4860::8888")
    assert PeerPolicy.build(deny_defaults=False).permits("10.0.0.1")


def test_policy_sees_ipv4_inside_ipv6_forms() -> None:
    """An IPv6 spelling of a denied IPv4 address is denied too: IPv4-compatible, NAT64
    (RFC 6052), 6to4 and Teredo; deprecated site-local fec0::/10 is denied by default."""
    p = PeerPolicy.build(own=["203.0.113.1"])
    for host in ("::10.0.0.1", "64:ff9b::a00:1", "64:ff9b::7f00:1", "2002:a00:1::1", "2002:c0a8:101::1",
                 "2001:0:4136:e378:8000:63bf:f5ff:fffe", "64:ff9b::cb00:7101", "fec0::1"):
        assert not p.permits(host), host
    for host in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"):
        assert p.permits(host), host
    assert PeerPolicy.build(allow=["127.0.0.0/8"]).permits("64:ff9b::7f00:1")


def test_rest_usernames_with_non_ascii_digits_are_just_unknown() -> None:
    rest = RestCredentials(["s"], lambda: 0.0)
    assert rest.candidates("\u00b2\u00b3:alice", "r") == []
    assert rest.candidates("99999999999:alice", "r") != []


def test_refresh_and_lifetimes(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    assert c.request(Method.REFRESH, []).error_code == 437
    r = c.allocate(at.Lifetime(10))
    assert r.get(at.Lifetime) == at.Lifetime(600)
    assert c.request(Method.REFRESH, [at.Lifetime(99999)]).get(at.Lifetime) == at.Lifetime(3600)
    other = Client(server, clock, user="bob", password="hunter2", flow=c.flow)
    assert other.request(Method.REFRESH, []).error_code == 441
    assert c.request(Method.REFRESH, [at.RequestedAddressFamily(at.Family.IPV6)]).error_code == 443
    # Expiry by the timer: 3600 s.
    clock.advance(3599)
    assert server.handle_timer(clock.now) == []
    clock.advance(2)
    t = server.get_timer()
    assert t is not None and t <= clock.now
    acts = server.handle_timer(clock.now)
    assert [type(a) for a in acts] == [AllocationDeleted]
    assert server.stats()["turn_allocations"] == 0 and server.stats()["turn_relay_ports_used"] == 0
    assert server.get_timer() is None


def test_refresh_zero_deletes(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    relay = c.relay()
    acts = c.send(c.raw_request(Method.REFRESH, [at.Lifetime(0)]))
    assert any(isinstance(a, AllocationDeleted) for a in acts)
    assert c.reply(acts).get(at.Lifetime) == at.Lifetime(0)
    assert server.handle_peer(relay, PEER, b"x", clock.now) is None
    assert server.stats()["turn_drops_unknown_relay"] == 1
    assert c.request(Method.REFRESH, [at.Lifetime(0)]).error_code == 437


def test_quotas_and_capacity(clock: FakeClock) -> None:
    server = make_server(clock, max_allocations_per_user=2, max_allocations=3)
    flows = [Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", p)) for p in range(1, 6)]
    assert Client(server, clock, flow=flows[0]).allocate().cls is Class.SUCCESS
    assert Client(server, clock, flow=flows[1]).allocate().cls is Class.SUCCESS
    assert Client(server, clock, flow=flows[2]).allocate().error_code == 486
    assert Client(server, clock, "bob", "hunter2", flows[3]).allocate().cls is Class.SUCCESS
    assert Client(server, clock, "bob", "hunter2", flows[4]).allocate().error_code == 486
    assert server.stats()["turn_quota_rejections"] == 2
    # Ports: 64 in the range.
    server = make_server(clock)
    codes = []
    for p in range(70):
        c = Client(server, clock, user="alice" if p % 2 else "bob", password="secret" if p % 2 else "hunter2",
                   flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.6", 1000 + p)))
        codes.append(c.allocate().error_code)
    assert codes.count(None) == 64 and codes.count(486) + codes.count(508) == 6


def test_quota_counts_rest_accounts(clock: FakeClock) -> None:
    server = make_server(clock, max_allocations_per_user=1)
    for i, stamp in enumerate((int(clock.wall()) + 100, int(clock.wall()) + 200)):
        user = f"{stamp}:dave"
        c = Client(server, clock, user=user, password=rest_password("new-secret", user),
                   flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 10 + i)))
        r = c.allocate()
        assert r.error_code == (None if i == 0 else 486)


def test_even_port_reservation(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    r = c.allocate(at.EvenPort(True))
    relay, token = r.get(at.XorRelayedAddress), r.get(at.ReservationToken)
    assert relay is not None and token is not None and relay.port % 2 == 0
    c2 = Client(server, clock, flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 2)))
    r2 = c2.allocate(token)
    relay2 = r2.get(at.XorRelayedAddress)
    assert relay2 is not None and relay2.port == relay.port + 1
    c3 = Client(server, clock, flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 3)))
    assert c3.allocate(token).error_code == 508  # used once
    # An unused reservation expires after 30 s and frees the port.
    c4 = Client(server, clock, flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 4)))
    assert c4.allocate(at.EvenPort(True)).cls is Class.SUCCESS
    used = server.stats()["turn_relay_ports_used"]
    clock.advance(31)
    server.handle_timer(clock.now)
    assert server.stats()["turn_relay_ports_used"] == used - 1


def test_ipv6_and_dual_allocation(clock: FakeClock) -> None:
    server = make_server(clock, relay_ipv6="2001:db8::10", policy=PeerPolicy.build())
    c = Client(server, clock)
    r = c.allocate(at.RequestedAddressFamily(at.Family.IPV6))
    relay = r.get(at.XorRelayedAddress)
    assert relay is not None and relay.host == "2001:db8::10"
    c2 = Client(server, clock, flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 9)))
    r2 = c2.allocate(at.AdditionalAddressFamily(at.Family.IPV6))
    relays = r2.get_all(at.XorRelayedAddress)
    assert [x.family for x in relays] == [at.Family.IPV4, at.Family.IPV6]
    assert c2.request(Method.CREATE_PERMISSION, [at.XorPeerAddress(*PEER), at.XorPeerAddress(*PEER6)]).cls is Class.SUCCESS
    send6 = sm.indication(Method.SEND, c2.tid(), [at.XorPeerAddress(*PEER6), at.Data(b"6")])
    assert c2.send(send6.serialize()) == [ToPeer(relays[1].address, PEER6, b"6")]
    # Dual allocation without a v6 relay: v4 only, with ADDRESS-ERROR-CODE.
    server4 = make_server(clock)
    r3 = Client(server4, clock).allocate(at.AdditionalAddressFamily(at.Family.IPV6))
    assert r3.cls is Class.SUCCESS
    aec = r3.get(at.AddressErrorCode)
    assert aec is not None and (aec.family, aec.code) == (at.Family.IPV6, 440)


def test_bad_input_is_answered_or_dropped(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    relay = c.relay()
    c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x4000), at.XorPeerAddress(*PEER)])
    good = c.raw_request(Method.REFRESH, [])
    # Truncated request: 400 from the header alone.
    r = c.reply(c.send(good[:-4]))
    assert r.error_code == 400
    # Oversized (length beyond the datagram) and garbage: dropped.
    assert c.send(b"\xff" * 50) == []
    assert c.send(good[:2] + b"\xff\xfc" + good[4:]) != []  # header intact: 400
    assert c.send(b"\x40\x00\x00\x10abc") == []  # truncated ChannelData
    assert c.send(b"\x80\x00\x00\x00") == []  # neither STUN nor ChannelData
    # Responses and unknown indications from a client are dropped.
    assert c.send(sm.success(sm.request(Method.BINDING, c.tid())).serialize()) == []
    assert c.send(sm.indication(Method.DATA, c.tid()).serialize()) == []
    assert c.send(sm.indication(Method.SEND, c.tid(), [at.Data(b"x")]).serialize()) == []
    assert server.stats()["turn_drops_malformed"] >= 5
    # Unknown method: 400.
    assert c.request(0x0FF, []).error_code == 400
    # The allocation still works.
    assert c.send(ch.ChannelData(0x4000, b"ok").serialize()) == [ToPeer(relay, PEER, b"ok")]


def test_bandwidth_cap(clock: FakeClock) -> None:
    server = make_server(clock, max_bandwidth=1000)
    c = Client(server, clock)
    relay = c.relay()
    c.request(Method.CHANNEL_BIND, [at.ChannelNumber(0x4000), at.XorPeerAddress(*PEER)])
    sent = sum(len(c.send(ch.ChannelData(0x4000, bytes(100)).serialize())) for _ in range(20))
    assert sent == 10
    assert server.stats()["turn_drops_bandwidth"] == 10
    clock.advance(0.5)
    assert server.handle_peer(relay, PEER, bytes(400), clock.now) is not None
    assert server.handle_peer(relay, PEER, bytes(400), clock.now) is None


def test_tcp_close_deletes(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock, flow=Flow("tcp", ("192.0.2.1", 3478), ("203.0.113.5", 50000)))
    c.relay()
    acts = server.client_closed(c.flow, clock.now)
    assert [type(a) for a in acts] == [AllocationDeleted]
    assert server.client_closed(c.flow, clock.now) == []


def test_created_event(server: TurnServer, clock: FakeClock) -> None:
    c = Client(server, clock)
    c.nonce = "x"
    c.send(c.raw_request(Method.ALLOCATE, [at.RequestedTransport(17)]))  # 438, learns nothing
    r = c.reply(c.send(c.raw_request(Method.ALLOCATE, [at.RequestedTransport(17)])))
    assert r.error_code == 438
    n = r.get(at.Nonce)
    assert n is not None
    c.nonce = n.value
    acts = c.send(c.raw_request(Method.ALLOCATE, [at.RequestedTransport(17)]))
    created = [a for a in acts if isinstance(a, AllocationCreated)]
    assert created and created[0].account == "alice" and created[0].lifetime == 600


def test_rfc5780_binding(clock: FakeClock) -> None:
    server = make_server(
        clock, binding=BindingConfig(primary=("192.0.2.1", 3478), other=("192.0.2.2", 3479))
    )
    c = Client(server, clock)
    req = sm.request(Method.BINDING, c.tid(), [at.ChangeRequest(True, True)])
    acts = server.handle_client(c.flow, req.serialize(), clock.now)
    assert len(acts) == 1 and isinstance(acts[0], ToClient)
    assert acts[0].flow == Flow("udp", ("192.0.2.2", 3479), c.flow.remote)
    r = Message.parse(acts[0].data)
    assert r.get(at.ResponseOrigin) == at.ResponseOrigin("192.0.2.2", 3479)
    assert r.get(at.OtherAddress) == at.OtherAddress("192.0.2.2", 3479)
    req2 = sm.request(Method.BINDING, c.tid(), [at.ResponsePort(7777), at.Padding(bytes(100))])
    acts2 = server.handle_client(c.flow, req2.serialize(), clock.now)
    assert isinstance(acts2[0], ToClient) and acts2[0].flow.remote == ("203.0.113.5", 7777)
    p = Message.parse(acts2[0].data).get(at.Padding)
    assert p is not None and len(p.value) == 100
    # Without RFC 5780 configured, CHANGE-REQUEST is an unknown attribute.
    plain = make_server(clock)
    r3 = Client(plain, clock).reply(plain.handle_client(c.flow, req.serialize(), clock.now))
    assert r3.error_code == 420
    # A listener of the other family (dual stack) answers as a plain Binding server: no
    # OTHER-ADDRESS of the wrong family, no change of source.
    v6 = Flow("udp", ("2001:db8::1", 3478), ("2001:db8::5", 4000))
    r4 = Message.parse(server.handle_client(v6, sm.request(Method.BINDING, c.tid()).serialize(), clock.now)[0].data)  # type: ignore[union-attr]
    assert r4.get(at.OtherAddress) is None
    assert r4.get(at.XorMappedAddress) == at.XorMappedAddress("2001:db8::5", 4000)


def test_an_unreachable_user_database_is_a_500_not_a_crash(clock: FakeClock, pg_url: str) -> None:
    """TURN users on PostgreSQL (docs/storage.md): a lookup the database cannot answer is
    a 500 (unsigned: no key was found to sign it), counted."""
    from sipedge.store.backend import open_url
    from sipedge.store.turn_users import TurnUserStore

    db = open_url(pg_url)
    users = TurnUserStore(db, owns=True)
    users.add("carol", REALM, "pw")
    rng = random.Random(7)
    server = TurnServer(ServerConfig(realm=REALM, relay_ipv4=RELAY_IP), Credentials(users),
                        RangeAllocator(49152, 49152 + 63, rng), token_source=lambda n: rng.randbytes(n))
    assert Client(server, clock, "carol", "pw").allocate().cls is Class.SUCCESS
    users.close()  # the pool is gone: every statement fails as on a dead server
    c = Client(server, clock, "carol", "pw", flow=Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", 50001)))
    challenge = c.reply(c.send(sm.request(Method.ALLOCATE, c.tid(), [at.RequestedTransport(17)]).serialize()))
    nonce = challenge.get(at.Nonce)
    assert challenge.error_code == 401 and nonce is not None
    c.nonce = nonce.value
    r = c.reply(c.send(c.raw_request(Method.ALLOCATE, [at.RequestedTransport(17)])))
    assert r.error_code == 500 and server.counters["turn_storage_errors"] == 1
