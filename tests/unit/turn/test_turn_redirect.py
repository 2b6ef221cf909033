"""300 Try Alternate by load (turn/redirect.py and the TURN core): the threshold, the
server-side loop guard, retransmissions, reservation tokens, bounds."""

from __future__ import annotations

from sipedge._common.clock import FakeClock
from sipedge.stun import attributes as at
from sipedge.stun.message import Method
from sipedge.turn.redirect import Redirector
from sipedge.turn.server import Flow
from unit.turn.test_turn_server import Client, make_server

ALT = ("198.51.100.1", 3478)


def client(server: object, clock: FakeClock, port: int, user: str = "alice", password: str = "secret") -> Client:
    return Client(server, clock, user, password, Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", port)))  # type: ignore[arg-type]


def test_only_allocations_above_the_threshold_are_redirected() -> None:
    clock = FakeClock()
    server = make_server(clock, alternate_servers=(ALT,), alternate_threshold=2)
    served = [client(server, clock, 100 + i).allocate() for i in range(2)]
    assert [r.error_code for r in served] == [None, None]
    third = client(server, clock, 200).allocate()
    assert third.error_code == 300 and third.get(at.AlternateServer) == at.AlternateServer(*ALT)
    stats = server.stats()
    assert (stats["turn_allocations"], stats["turn_redirects"]) == (2, 1)


def test_a_client_this_node_redirected_is_served_when_it_comes_back() -> None:
    """Two loaded nodes that name each other cannot bounce a client for ever: the second
    time the same client (user, address) asks, it is served here."""
    clock = FakeClock()
    server = make_server(clock, alternate_servers=(ALT,))  # threshold 0: every new allocation
    c = client(server, clock, 100)
    assert c.allocate().error_code == 300
    clock.advance(1.0)
    assert c.allocate().error_code is None
    stats = server.stats()
    assert stats["turn_redirect_loops_avoided"] == 1 and stats["turn_allocations"] == 1
    # another client is redirected as before
    assert client(server, clock, 101, "bob", "hunter2").allocate().error_code == 300


def test_a_retransmitted_redirected_allocate_gets_the_same_300() -> None:
    clock = FakeClock()
    server = make_server(clock, alternate_servers=(ALT, ("198.51.100.2", 3478)))
    c = client(server, clock, 100)
    tid = b"\x01" * 12
    first = c.request(Method.ALLOCATE, [at.RequestedTransport(17)], tid)
    again = c.request(Method.ALLOCATE, [at.RequestedTransport(17)], tid)
    assert first.error_code == again.error_code == 300
    assert first.get(at.AlternateServer) == again.get(at.AlternateServer)
    assert server.stats()["turn_redirects"] == 1 and server.stats()["turn_allocations"] == 0


def test_an_allocate_with_a_reservation_token_is_never_redirected() -> None:
    clock = FakeClock()
    server = make_server(clock, alternate_servers=(ALT,), alternate_threshold=1)
    rtp = client(server, clock, 100).allocate(at.EvenPort(True))
    token = rtp.get(at.ReservationToken)
    assert rtp.error_code is None and token is not None
    rtcp = client(server, clock, 101).allocate(token)
    assert rtcp.error_code is None  # the port reserved here, although the node is "loaded"


def test_redirector_forgets_after_its_memory_and_is_bounded() -> None:
    r = Redirector([ALT, ("2001:db8::1", 3478)], threshold=0, memory=300.0, max_entries=2)
    a = ("203.0.113.5", 1)
    assert r.target("u", a, b"t1", 0, 0.0) == ALT
    assert r.target("u", a, b"t2", 0, 10.0) is None  # came back: served
    assert r.target("u", a, b"t3", 0, 301.0) == ALT  # five minutes later: a new client
    for port in range(2, 6):
        r.target("u", ("203.0.113.5", port), b"t", 0, 302.0)
    assert len(r._sent) == 2
    assert r.target("u", ("2001:db8::5", 1), b"t", 0, 303.0) == ("2001:db8::1", 3478)
    assert Redirector([]).target("u", a, b"t", 99, 0.0) is None
