"""Flood control inside ProxyCore, bytes in and bytes out: requests and garbage count
against their source, challenges are limited, and nothing of a dropped INVITE stays."""

from __future__ import annotations

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import load_router
from sipedge.sip import message as m
from sipedge.sip.flow import Flow

ME = ("127.0.0.1", 5060)
FLOODER = Flow("udp", ME, ("192.0.2.7", 5999))


def make_core(flood: dict[str, object]) -> tuple[ProxyCore, FakeClock]:
    clock = FakeClock()
    subscribers = MemorySubscriberStore()
    subscribers.add("alice", "127.0.0.1", "pw")
    core = ProxyCore(
        parse_config({"sip": {"flood": flood}}), Identity([Listener("udp", *ME)]), MemoryLocationStore(),
        subscribers, load_router("sipedge.proxy.default_routing"), clock, secret=b"s" * 32,
    )
    return core, clock


def invite(i: int) -> bytes:
    return (
        f"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5999;branch=z9hG4bKfl{i}\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=f{i}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: flood-{i}\r\n"
        "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def statuses(core: ProxyCore) -> list[int]:
    out = []
    for s in core.outgoing():
        msg = m.parse(s.data)
        assert isinstance(msg, m.Response)
        out.append(msg.status)
    return out


def test_challenges_stop_at_max_challenges_and_the_dropped_invite_leaves_nothing() -> None:
    core, clock = make_core({"max_requests": 1000, "max_challenges": 5})
    sent: list[int] = []
    for i in range(20):
        core.receive(invite(i), FLOODER, clock.now)
        sent += statuses(core)
    assert sent.count(407) == 5
    assert sent.count(100) == 6  # the sixth INVITE had its 100 Trying, then was dropped
    stats = core.stats()
    assert stats["sip_flood_challenges_refused"] == 1 and stats["sip_flood_bans"] == 1
    assert stats["sip_banned_dropped"] == 14  # the rest never reached the parser
    assert stats["sip_tx_discarded"] == 1 and stats["sip_tx_live"] == 0  # challenges keep nothing


def test_garbage_counts_towards_the_ban_and_the_ban_ends() -> None:
    core, clock = make_core({"max_requests": 10, "ban_time": 5.0})
    for _ in range(11):
        core.receive(b"\x7f not SIP at all", FLOODER, clock.now)
    core.receive(b"SIP/2.0 ??? garbage that looks like a response", FLOODER, clock.now)
    stats = core.stats()
    assert stats["sip_parse_errors"] == 11 and stats["sip_banned_dropped"] == 2  # a "response" is parsed first
    assert stats["sip_flood_banned_sources"] == 1
    assert core.get_timer() == clock.now + 5.0
    clock.advance(5.0)
    core.handle_timer(clock.now)
    assert core.stats()["sip_flood_banned_sources"] == 0
    core.receive(invite(1), FLOODER, clock.now)
    assert 407 in statuses(core)


def test_a_challenge_is_stateless_and_its_ack_is_absorbed() -> None:
    """RFC 3261 §8.2.7: the 407 is sent once, nothing is kept, a retransmitted INVITE gets
    the same answer afresh, and the ACK of the 407 is recognised by its To tag."""
    core, clock = make_core({})
    core.receive(invite(1), FLOODER, clock.now)
    first = [m.parse(s.data) for s in core.outgoing()]
    assert [r.status for r in first if isinstance(r, m.Response)] == [100, 407]
    assert core.stats()["sip_tx_live"] == 0 and core.stats()["sip_tx_stateless_replies"] == 1
    for _ in range(10):  # Timer G would have retransmitted the 407 by now
        clock.advance(4.0)
        core.handle_timer(clock.now)
    assert core.outgoing() == []
    core.receive(invite(1), FLOODER, clock.now)  # the caller never got it: asks again
    again = [m.parse(s.data) for s in core.outgoing()]
    challenge = again[-1]
    assert isinstance(challenge, m.Response) and challenge.status == 407
    assert challenge.to.tag == first[-1].to.tag  # type: ignore[union-attr]
    ack = (
        "ACK sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5999;branch=z9hG4bKfl1\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=f1\r\nTo: <sip:bob@127.0.0.1>;tag={challenge.to.tag}\r\n"
        "Call-ID: flood-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    core.receive(ack, FLOODER, clock.now)
    assert core.outgoing() == []
    assert core.stats()["sip_acks_absorbed"] == 1
