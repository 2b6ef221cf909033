"""Parked transactions: once a transaction only waits for its last timer (D, I, J, K, L,
M) the layer keeps it as one tuple of atoms that the garbage collector does not track,
and rebuilds a machine for the retransmissions, ACKs, 2xx and timers that still reach
it. These tests hold both halves: nothing for a full collection to walk, and the same
behaviour as a live transaction. FakeClock only, no sockets."""

from __future__ import annotations

import gc

from sipedge.sip.message import Request, Response, make_response, parse
from sipedge.sip.transaction import TransactionLayer
from sipedge.sip.txevents import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    Terminated,
    TransactionKey,
    TransportFailed,
    TxKind,
    TxState,
)

from .test_transaction_server import T1, T4, UDP, inbound, layer


def answered(tl: TransactionLayer, method: str, branch: str, status: int) -> TransactionKey:
    tl.receive(inbound(method, branch=branch), UDP, 0.0)
    ev = tl.events()[0]
    assert isinstance(ev, RequestReceived)
    assert tl.respond(ev.key, make_response(ev.request, status, to_tag="t1"), 0.0)
    tl.outgoing()
    return ev.key


def outbound(method: str, branch: str) -> Request:
    return inbound(method, branch=branch, sent_by="127.0.0.1:5060")


def test_parked_transactions_leave_nothing_for_the_collector() -> None:
    """Thousands of answered REGISTERs, INVITEs and relayed requests lingering over UDP:
    after one collection none of their state is tracked, so a full pass does not walk
    them (the object count does not grow with the number of transactions)."""
    tl = layer()
    gc.collect()
    before = len(gc.get_objects())
    n = 2000
    for i in range(n):
        answered(tl, "REGISTER", f"z9hG4bKr{i}", 200)
        answered(tl, "INVITE", f"z9hG4bKi{i}", 200)
        key = tl.send_request(outbound("BYE", f"z9hG4bKb{i}"), UDP.target, 0.0)
        tl.receive(make_response(outbound("BYE", f"z9hG4bKb{i}"), 200), UDP, 0.0)
        assert tl.state(key) is TxState.COMPLETED
        tl.events()
        tl.outgoing()
    gc.collect()
    gc.collect()  # nested tuples are untracked inside out: one pass per level
    assert len(tl) == 3 * n and tl.stats()["sip_tx_lingering"] == 3 * n
    assert not tl._table
    assert not any(gc.is_tracked(k) or gc.is_tracked(r) for k, r in tl._lingering.items())
    assert not any(gc.is_tracked(e) for e in tl._linger_heap)
    assert len(gc.get_objects()) - before < n // 10


def test_a_retransmitted_request_gets_the_stored_final_again() -> None:
    tl = layer()
    key = answered(tl, "REGISTER", "z9hG4bKr1", 200)
    assert tl.state(key) is TxState.COMPLETED and tl.kind(key) is TxKind.SERVER_NON_INVITE
    tl.receive(inbound("REGISTER", branch="z9hG4bKr1"), UDP, 1.0)
    sent = tl.outgoing()
    resp = parse(sent[0].data)
    assert len(sent) == 1 and isinstance(resp, Response) and resp.status == 200
    assert tl.events() == [] and tl.stats()["sip_tx_requests_absorbed"] == 1
    assert tl.stats()["sip_tx_retransmissions"] == 1


def test_the_last_timer_ends_a_parked_transaction() -> None:
    tl = layer()
    key = answered(tl, "REGISTER", "z9hG4bKr1", 200)
    assert tl.get_timer() == 64 * T1
    tl.handle_timer(64 * T1 - 0.01)
    assert tl.state(key) is TxState.COMPLETED
    tl.handle_timer(64 * T1)
    assert tl.events() == [Terminated(key)]
    assert len(tl) == 0 and tl.state(key) is None and tl.get_timer() is None


def test_accepted_invite_passes_acks_and_sends_2xx_again() -> None:
    tl = layer()
    tl.receive(inbound("INVITE", branch="z9hG4bKi1"), UDP, 0.0)
    ev = tl.events()[0]
    assert isinstance(ev, RequestReceived)
    ok = make_response(ev.request, 200, to_tag="t1")
    tl.respond(ev.key, ok, 0.0)
    tl.outgoing()
    assert tl.state(ev.key) is TxState.ACCEPTED and not tl._table
    assert tl.respond(ev.key, ok, 1.0)  # RFC 6026 §8.5: a 2xx again goes out
    assert len(tl.outgoing()) == 1
    ack = inbound("ACK", branch="z9hG4bKi1", to_tag="t1", cseq_method="ACK")
    tl.receive(ack, UDP, 1.0)
    assert tl.events() == [AckReceived(ev.key, ack, UDP)]
    tl.transport_error(ev.key, 1.0)
    assert tl.events() == [TransportFailed(ev.key)] and tl.state(ev.key) is TxState.ACCEPTED
    tl.handle_timer(64 * T1)
    assert tl.events() == [Terminated(ev.key)] and len(tl) == 0


def test_confirmed_invite_absorbs_acks_until_timer_i() -> None:
    tl = layer()
    key = answered(tl, "INVITE", "z9hG4bKi1", 486)
    ack = inbound("ACK", branch="z9hG4bKi1", to_tag="t1", cseq_method="ACK")
    tl.receive(ack, UDP, 0.1)
    assert tl.state(key) is TxState.CONFIRMED and not tl._table
    tl.receive(ack, UDP, 0.2)
    assert tl.events() == [] and tl.stats()["sip_tx_acks_absorbed"] == 1
    tl.handle_timer(0.1 + T4)
    assert tl.events() == [Terminated(key)] and len(tl) == 0


def test_client_invite_parked_in_accepted_and_completed() -> None:
    tl = layer()
    ok_req = outbound("INVITE", "z9hG4bKc1")
    ok_key = tl.send_request(ok_req, UDP.target, 0.0)
    busy_req = outbound("INVITE", "z9hG4bKc2")
    busy_key = tl.send_request(busy_req, UDP.target, 0.0)
    ok = make_response(ok_req, 200, to_tag="b")
    busy = make_response(busy_req, 486, to_tag="b")
    tl.receive(ok, UDP, 0.1)
    tl.receive(busy, UDP, 0.1)
    tl.events()
    tl.outgoing()
    assert tl.state(ok_key) is TxState.ACCEPTED and tl.state(busy_key) is TxState.COMPLETED
    assert not tl._table and not tl.cancel(ok_key, 0.2)
    tl.receive(ok, UDP, 0.2)  # a 2xx retransmission goes up to the proxy
    assert tl.events() == [ResponseReceived(ok_key, ok, UDP)]
    tl.receive(busy, UDP, 0.2)  # a 486 retransmission is ACKed again, absorbed
    again = tl.outgoing()
    ack = parse(again[0].data)
    assert isinstance(ack, Request) and ack.method == "ACK" and again[0].target == UDP.target
    assert tl.events() == []
    tl.handle_timer(0.1 + 64 * T1)
    assert sorted(map(str, tl.events())) == sorted(map(str, [Terminated(ok_key), Terminated(busy_key)]))
    assert len(tl) == 0


def test_a_parked_key_is_not_reused() -> None:
    """A new request with the branch of a lingering client transaction is refused as
    before; the table and the parked store together hold every transaction."""
    tl = layer()
    req = outbound("OPTIONS", "z9hG4bKo1")
    tl.send_request(req, UDP.target, 0.0)
    tl.receive(make_response(req, 200), UDP, 0.0)
    try:
        tl.send_request(outbound("OPTIONS", "z9hG4bKo1"), UDP.target, 0.1)
    except Exception as exc:  # UsageError
        assert "already exists" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("reused branch accepted")


def test_live_and_parked_timers_fire_in_deadline_order() -> None:
    """Parked transactions' last timers sit on their own heap; one handle_timer call
    runs both heaps' due timers in deadline order."""
    tl = layer()
    early = answered(tl, "REGISTER", "z9hG4bKr1", 200)  # parked: Timer J at 64*T1
    tl.receive(inbound("OPTIONS", branch="z9hG4bKu1"), UDP, 1.0)  # live: unanswered, U at 1+64*T1
    unanswered = tl.events()[0]
    assert isinstance(unanswered, RequestReceived)
    late = answered(tl, "REGISTER", "z9hG4bKr2", 200)  # parked at 0.0 too, after `early`
    tl.events()
    assert tl.get_timer() == 64 * T1
    tl.handle_timer(1 + 64 * T1)
    assert tl.events() == [Terminated(early), Terminated(late), Terminated(unanswered.key)]
    assert len(tl) == 0 and tl.get_timer() is None
