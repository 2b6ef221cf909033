"""Hypothesis: whatever a client or a peer sends, the TURN core answers or drops, never raises,
and an existing allocation keeps relaying."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipedge.stun import attributes as at
from sipedge.stun import integrity
from sipedge.stun import message as sm
from sipedge.stun.message import Class, Message, Method
from sipedge.turn import channel as ch
from sipedge.turn.auth import Credentials, StaticUsers
from sipedge.turn.policy import PeerPolicy
from sipedge.turn.ports import RangeAllocator
from sipedge.turn.server import Flow, ServerConfig, ToClient, ToPeer, TurnServer

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REALM = "r"
KEY = integrity.long_term_key("u", REALM, "p")
PEER = ("198.51.100.1", 7)

attrs = st.one_of(
    st.builds(at.XorPeerAddress, st.sampled_from(["198.51.100.1", "10.0.0.1", "::1", "2001:db8::1"]), st.integers(0, 65535)),
    st.builds(at.ChannelNumber, st.integers(0x3FF0, 0x8010)),
    st.builds(at.Lifetime, st.integers(0, 2**32 - 1)),
    st.builds(at.RequestedTransport, st.sampled_from([17, 6, 0])),
    st.builds(at.RequestedAddressFamily, st.sampled_from(at.Family)),
    st.builds(at.AdditionalAddressFamily, st.sampled_from(at.Family)),
    st.builds(at.EvenPort, st.booleans()),
    st.builds(at.ReservationToken, st.binary(min_size=8, max_size=8)),
    st.builds(at.Data, st.binary(max_size=30)),
    st.builds(at.DontFragment),
    st.builds(at.ChangeRequest, st.booleans(), st.booleans()),
    st.builds(at.Username, st.sampled_from(["u", "x", "1:u"])),
    st.builds(at.Realm, st.sampled_from([REALM, "other"])),
    st.builds(at.Nonce, st.text(max_size=10)),
    st.builds(at.PasswordAlgorithm, st.integers(0, 3)),
    st.builds(at.UnknownAttribute, st.integers(0x0050, 0x0060), st.binary(max_size=4)),
)


def make() -> tuple[TurnServer, Flow, str]:
    rng = random.Random(3)
    server = TurnServer(
        ServerConfig(realm=REALM, relay_ipv4="192.0.2.10", policy=PeerPolicy.build()),
        Credentials(StaticUsers(REALM, {"u": "p"})),
        RangeAllocator(50000, 50015, rng),
        token_source=lambda n: rng.randbytes(n),
    )
    flow = Flow("udp", ("192.0.2.1", 3478), ("203.0.113.9", 5000))
    r = server.handle_client(flow, sm.request(Method.ALLOCATE, bytes(12), [at.RequestedTransport(17)]).serialize(), 0.0)
    challenge = Message.parse(next(a for a in r if isinstance(a, ToClient)).data)
    nonce = challenge.get(at.Nonce)
    assert nonce is not None
    auth = [at.Username("u"), at.Realm(REALM), nonce]
    req = sm.request(Method.ALLOCATE, bytes([1]) * 12, [at.RequestedTransport(17), *auth])
    server.handle_client(flow, req.serialize(KEY), 0.0)
    bind = sm.request(Method.CHANNEL_BIND, bytes([2]) * 12, [at.ChannelNumber(0x4000), at.XorPeerAddress(*PEER), *auth])
    server.handle_client(flow, bind.serialize(KEY), 0.0)
    return server, flow, nonce.value


inputs = st.one_of(
    st.binary(max_size=120),
    st.tuples(st.integers(0, 0xFFF), st.sampled_from(Class), st.lists(attrs, max_size=6), st.booleans(), st.booleans()),
    st.tuples(st.integers(0x3FFF, 0x8000), st.binary(max_size=40)),
)


@SETTINGS
@given(st.lists(inputs, min_size=1, max_size=8), st.lists(st.floats(0, 700), min_size=1, max_size=8))
def test_client_input_never_raises(items: list[object], times: list[float]) -> None:
    server, flow, nonce = make()
    now = 0.0
    for i, item in enumerate(items):
        now += times[i % len(times)]
        if isinstance(item, bytes):
            data = item
        elif len(item) == 2:  # type: ignore[arg-type]
            num, payload = item  # type: ignore[misc]
            data = ch.encode(num, payload, False)
        else:
            method, cls, a, sign, with_auth = item  # type: ignore[misc]
            if with_auth:
                a = [*a, at.Username("u"), at.Realm(REALM), at.Nonce(nonce)]
            msg = Message(method, cls, random.Random(i).randbytes(12), tuple(a))
            data = msg.serialize(KEY if sign else None)
        server.handle_client(flow, data, now)
        server.handle_peer(("192.0.2.10", 50000), PEER, b"x", now)
        if server.get_timer() is not None and server.get_timer() <= now:  # type: ignore[operator]
            server.handle_timer(now)
    st_ = server.stats()
    assert st_["turn_allocations"] in (0, 1)


@SETTINGS
@given(st.lists(st.binary(max_size=80), max_size=10))
def test_allocation_survives_garbage(junk: list[bytes]) -> None:
    server, flow, _ = make()
    alloc = server.allocation(flow)
    assert alloc is not None
    relay = alloc.relays[at.Family.IPV4]
    other = Flow("udp", ("192.0.2.1", 3478), ("203.0.113.66", 1))
    for j in junk:
        server.handle_client(other, j, 1.0)
        server.handle_client(flow, j, 1.0)
    out = server.handle_client(flow, ch.ChannelData(0x4000, b"still").serialize(), 1.0)
    assert out == [ToPeer(relay, PEER, b"still")]
