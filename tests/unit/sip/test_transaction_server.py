"""Server transactions (RFC 3261 §17.2, RFC 6026 §7.1): 100 Trying, retransmission
absorption, Timer G/H/I/J/L, ACK and CANCEL matching, the RFC 2543 fallback, the
transaction limit and malformed input. FakeClock only, no sockets."""

from __future__ import annotations

import pytest

from sipedge._common.clock import FakeClock
from sipedge.config.sip import TimersConfig
from sipedge.errors import UsageError
from sipedge.sip.flow import Flow
from sipedge.sip.message import Request, Response, make_response, parse
from sipedge.sip.transaction import TransactionLayer
from sipedge.sip.txevents import (
    AckReceived,
    CancelReceived,
    MessageDropped,
    RequestReceived,
    RequestRefused,
    Send,
    Terminated,
    TimedOut,
    TransactionKey,
    TransportFailed,
    TxKind,
    TxState,
)

T1, T2, T4 = 0.5, 4.0, 5.0
UDP = Flow("udp", ("127.0.0.1", 5060), ("192.0.2.10", 5070))
TCP = Flow("tcp", ("127.0.0.1", 5060), ("192.0.2.10", 40000), 7)
BRANCH = "z9hG4bK776asdhds"


def inbound(
    method: str = "INVITE",
    branch: str | None = BRANCH,
    sent_by: str = "pc33.atlanta.com",
    cseq: int = 314159,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    uri: str = "sip:bob@biloxi.com",
    transport: str = "UDP",
    extra: str = "",
) -> Request:
    via_branch = f";branch={branch}" if branch is not None else ""
    to = "Bob <sip:bob@biloxi.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by}{via_branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: {to}\r\n"
        "From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:alice@pc33.atlanta.com>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    r = parse(text.encode())
    assert isinstance(r, Request)
    return r


def layer(**kw: object) -> TransactionLayer:
    return TransactionLayer(TimersConfig(t1=T1, t2=T2, t4=T4), **kw)  # type: ignore[arg-type]


def only_request(tl: TransactionLayer) -> RequestReceived:
    events = tl.events()
    assert len(events) == 1 and isinstance(events[0], RequestReceived), events
    return events[0]


def statuses(sends: list[Send]) -> list[int]:
    out = []
    for s in sends:
        r = parse(s.data)
        assert isinstance(r, Response)
        out.append(r.status)
    return out


def run(tl: TransactionLayer, clock: FakeClock, until: float) -> list[tuple[float, Send]]:
    sent: list[tuple[float, Send]] = []
    end = 1000.0 + until
    while (t := tl.get_timer()) is not None and t <= end:
        clock.now = t
        tl.handle_timer(t)
        sent += [(round(t - 1000.0, 6), s) for s in tl.outgoing()]
    clock.now = end
    return sent


# -- INVITE -------------------------------------------------------------------------------


def test_invite_gets_100_trying_at_once_and_retransmits_are_absorbed() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    invite = inbound(extra="Timestamp: 54\r\n")
    tl.receive(invite, UDP, clock.now)
    ev = only_request(tl)
    assert ev.key == TransactionKey(False, BRANCH, "INVITE", "pc33.atlanta.com:")
    assert ev.request is invite and ev.flow == UDP
    out = tl.outgoing()
    assert len(out) == 1 and out[0].flow == UDP and out[0].target is None and out[0].key == ev.key
    trying = parse(out[0].data)
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.get("via") == invite.get("via") and trying.to.tag is None
    assert trying.get("timestamp") == "54"
    assert tl.state(ev.key) is TxState.PROCEEDING and tl.kind(ev.key) is TxKind.SERVER_INVITE
    # a retransmitted INVITE re-sends the latest provisional, nothing goes up
    tl.receive(inbound(), UDP, clock.now + 0.5)
    again = tl.outgoing()
    assert [s.data for s in again] == [out[0].data] and tl.events() == []
    ringing = make_response(invite, 180, to_tag="bobtag")
    assert tl.respond(ev.key, ringing, clock.now)
    ring_bytes = tl.outgoing()[0].data
    tl.receive(inbound(), UDP, clock.now + 1)
    assert [s.data for s in tl.outgoing()] == [ring_bytes]
    assert tl.get_timer() is None  # no timers while Proceeding (the TU owns Timer C)
    assert tl.stats()["sip_tx_requests_absorbed"] == 2


def test_send_100_off() -> None:
    tl = layer(send_100=False)
    tl.receive(inbound(), UDP, 1000.0)
    only_request(tl)
    assert tl.outgoing() == []
    tl.receive(inbound(), UDP, 1000.5)  # nothing to re-send yet
    assert tl.outgoing() == [] and tl.events() == []


def test_non_2xx_timer_g_doubles_to_t2_until_timer_h() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    invite = inbound()
    tl.receive(invite, UDP, clock.now)
    key = only_request(tl).key
    tl.outgoing()
    assert tl.respond(key, make_response(invite, 486, to_tag="b1"), clock.now)
    first = tl.outgoing()
    assert statuses(first) == [486] and tl.state(key) is TxState.COMPLETED
    sent = run(tl, clock, 64 * T1)
    times = [t for t, _ in sent]
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]  # G: T1, 2T1, 4T1, then T2
    assert times[-1] == 31.5 and len(times) == 10
    assert all(s.data is first[0].data for _, s in sent)  # serialized once, reused
    assert tl.events() == [TimedOut(key, "H"), Terminated(key)]
    assert tl.stats()["sip_tx_timeouts"] == 1


def test_ack_confirms_and_timer_i_absorbs_ack_retransmits() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    invite = inbound()
    tl.receive(invite, UDP, clock.now)
    key = only_request(tl).key
    busy = make_response(invite, 486, to_tag="b1")
    tl.respond(key, busy, clock.now)
    clock.advance(0.7)
    tl.handle_timer(clock.now)  # one Timer G retransmit at 0.5
    assert statuses(tl.outgoing()) == [100, 486, 486]
    ack = inbound("ACK", to_tag="b1")
    tl.receive(ack, UDP, clock.now)
    assert tl.state(key) is TxState.CONFIRMED and tl.events() == []
    # in Confirmed: ACK and INVITE retransmissions are absorbed, nothing is re-sent
    tl.receive(ack, UDP, clock.now + 1)
    tl.receive(inbound(), UDP, clock.now + 1)
    assert tl.outgoing() == [] and tl.events() == []
    sent = run(tl, clock, 0.7 + T4 - 0.01)
    assert sent == [] and tl.state(key) is TxState.CONFIRMED
    run(tl, clock, 0.7 + T4)
    assert tl.events() == [Terminated(key)] and tl.get_timer() is None


def test_2xx_accepted_absorbs_invites_and_passes_acks_up() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    invite = inbound()
    tl.receive(invite, UDP, clock.now)
    key = only_request(tl).key
    tl.outgoing()
    ok = make_response(invite, 200, to_tag="b1")
    assert tl.respond(key, ok, clock.now)
    assert statuses(tl.outgoing()) == [200] and tl.state(key) is TxState.ACCEPTED
    clock.advance(0.5)
    tl.handle_timer(clock.now)
    tl.receive(inbound(), UDP, clock.now)  # RFC 6026: absorbed, not passed up, no re-send
    assert tl.outgoing() == [] and tl.events() == []
    # the TU (a UAS core, or a forking proxy with another 2xx) sends 2xx through it
    assert tl.respond(key, make_response(invite, 200, to_tag="b2"), clock.now)
    assert statuses(tl.outgoing()) == [200]
    assert not tl.respond(key, make_response(invite, 486, to_tag="b3"), clock.now)
    assert not tl.respond(key, make_response(invite, 180, to_tag="b3"), clock.now)
    # an ACK with the INVITE's branch goes up with the key; a proper 2xx ACK (new branch)
    # matches nothing and goes up statelessly
    same = inbound("ACK", to_tag="b1")
    other = inbound("ACK", branch="z9hG4bKack2xx", to_tag="b1")
    tl.receive(same, UDP, clock.now)
    tl.receive(other, UDP, clock.now)
    assert tl.events() == [AckReceived(key, same, UDP), AckReceived(None, other, UDP)]
    run(tl, clock, 64 * T1 - 0.01)
    assert tl.state(key) is TxState.ACCEPTED
    run(tl, clock, 64 * T1)
    assert tl.events() == [Terminated(key)]
    assert tl.stats()["sip_tx_acks_unmatched"] == 1


def test_reliable_invite_no_g_and_i_is_zero() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    invite = inbound(transport="TCP")
    tl.receive(invite, TCP, clock.now)
    key = only_request(tl).key
    assert statuses(tl.outgoing()) == [100]
    tl.respond(key, make_response(invite, 404, to_tag="x"), clock.now)
    assert tl.outgoing()[0].flow == TCP
    assert tl.get_timer() == pytest.approx(1000.0 + 64 * T1)  # H only, no G
    tl.receive(inbound("ACK", transport="TCP", to_tag="x"), TCP, clock.now + 1)
    assert tl.events() == [Terminated(key)] and len(tl) == 0


def test_reliable_invite_timer_h() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    invite = inbound(transport="TCP")
    tl.receive(invite, TCP, clock.now)
    key = only_request(tl).key
    tl.respond(key, make_response(invite, 500, to_tag="x"), clock.now)
    tl.outgoing()
    assert run(tl, clock, 64 * T1) == []
    assert tl.events() == [TimedOut(key, "H"), Terminated(key)]


def test_ack_before_final_is_absorbed() -> None:
    tl = layer()
    tl.receive(inbound(), UDP, 1000.0)
    key = only_request(tl).key
    tl.receive(inbound("ACK"), UDP, 1000.1)
    assert tl.events() == [] and tl.state(key) is TxState.PROCEEDING
    assert tl.stats()["sip_tx_acks_absorbed"] == 1


# -- non-INVITE --------------------------------------------------------------------------


def test_non_invite_trying_proceeding_completed_timer_j() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    bye = inbound("BYE", to_tag="b1")
    tl.receive(bye, UDP, clock.now)
    key = only_request(tl).key
    assert tl.outgoing() == [] and tl.state(key) is TxState.TRYING  # no 100 for non-INVITE
    tl.receive(bye, UDP, clock.now + 0.5)  # absorbed in Trying: nothing to re-send
    assert tl.outgoing() == [] and tl.events() == []
    tl.respond(key, make_response(bye, 100), clock.now + 0.6)
    assert tl.state(key) is TxState.PROCEEDING
    trying = tl.outgoing()[0].data
    tl.receive(bye, UDP, clock.now + 1)
    assert [s.data for s in tl.outgoing()] == [trying]
    clock.advance(2)
    ok = make_response(bye, 200)
    assert tl.respond(key, ok, clock.now)
    final = tl.outgoing()[0].data
    assert tl.state(key) is TxState.COMPLETED
    tl.receive(bye, UDP, clock.now + 3)
    assert [s.data for s in tl.outgoing()] == [final]
    assert not tl.respond(key, make_response(bye, 500), clock.now)  # one final only
    assert tl.outgoing() == []
    run(tl, clock, 2 + 64 * T1 - 0.01)
    assert tl.state(key) is TxState.COMPLETED
    run(tl, clock, 2 + 64 * T1)
    assert tl.events() == [Terminated(key)]


def test_non_invite_reliable_terminates_on_final() -> None:
    tl = layer()
    req = inbound("OPTIONS", transport="TCP")
    tl.receive(req, TCP, 1000.0)
    key = only_request(tl).key
    tl.respond(key, make_response(req, 200), 1000.0)
    assert tl.events() == [Terminated(key)] and tl.get_timer() is None


def test_non_invite_unanswered_by_tu_ends_after_64t1() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    tl.receive(inbound("MESSAGE"), UDP, clock.now)
    key = only_request(tl).key
    run(tl, clock, 64 * T1)
    assert tl.events() == [Terminated(key)]
    assert tl.stats()["sip_tx_unanswered"] == 1
    assert not tl.respond(key, make_response(inbound("MESSAGE"), 408), clock.now)


# -- matching ------------------------------------------------------------------------------


def test_branch_sent_by_and_method_separate_transactions() -> None:
    tl = layer(send_100=False)
    tl.receive(inbound(), UDP, 1000.0)
    tl.receive(inbound(sent_by="pc34.atlanta.com"), UDP, 1000.0)  # same branch, other host
    tl.receive(inbound(sent_by="pc33.atlanta.com:5062"), UDP, 1000.0)
    tl.receive(inbound("OPTIONS"), UDP, 1000.0)  # same branch, other method
    tl.receive(inbound(branch="z9hG4bKother"), UDP, 1000.0)
    tl.receive(inbound(sent_by="PC33.Atlanta.COM"), UDP, 1000.0)  # host compares caseless
    keys = {e.key for e in tl.events() if isinstance(e, RequestReceived)}
    assert len(keys) == 5 and len(tl) == 5


def test_cancel_matches_invite_by_branch_and_sent_by() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    invite = inbound()
    tl.receive(invite, UDP, clock.now)
    ikey = only_request(tl).key
    cancel = inbound("CANCEL")
    tl.receive(cancel, UDP, clock.now)
    ev = tl.events()
    ckey = TransactionKey(False, BRANCH, "CANCEL", "pc33.atlanta.com:")
    assert ev == [CancelReceived(ckey, ikey, cancel, UDP)]
    assert tl.kind(ckey) is TxKind.SERVER_NON_INVITE
    tl.outgoing()
    # the CANCEL is its own transaction: retransmits absorbed, its 200 re-sent
    tl.respond(ckey, make_response(cancel, 200), clock.now)
    ok = tl.outgoing()[0].data
    tl.receive(cancel, UDP, clock.now + 0.5)
    assert [s.data for s in tl.outgoing()] == [ok] and tl.events() == []
    assert tl.state(ikey) is TxState.PROCEEDING
    tl.respond(ikey, make_response(invite, 487, to_tag="t"), clock.now)
    assert statuses(tl.outgoing()) == [487]


def test_cancel_not_found() -> None:
    tl = layer()
    tl.receive(inbound(), UDP, 1000.0)
    tl.events()
    for cancel in (
        inbound("CANCEL", branch="z9hG4bKunknown"),
        inbound("CANCEL", sent_by="elsewhere.example"),  # branch alone is not enough
    ):
        tl.receive(cancel, UDP, 1000.0)
        [ev] = tl.events()
        assert isinstance(ev, CancelReceived) and ev.invite_key is None
    assert tl.stats()["sip_tx_cancel_unmatched"] == 2


def test_ack_retransmission_after_termination_is_passed_up() -> None:
    tl = layer()
    invite = inbound(transport="TCP")
    tl.receive(invite, TCP, 1000.0)
    key = only_request(tl).key
    tl.respond(key, make_response(invite, 486, to_tag="x"), 1000.0)
    ack = inbound("ACK", to_tag="x", transport="TCP")
    tl.receive(ack, TCP, 1000.0)
    assert tl.events() == [Terminated(key)]
    tl.receive(ack, TCP, 1000.0)
    assert tl.events() == [AckReceived(None, ack, TCP)]


# -- RFC 2543 fallback (no magic cookie) ------------------------------------------------------


def test_rfc2543_invite_retransmission_ack_and_cancel() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    invite = inbound(branch=None)
    tl.receive(invite, UDP, clock.now)
    key = only_request(tl).key
    assert key.branch.startswith("2543.") and key.sent_by == ""
    tl.outgoing()
    tl.receive(inbound(branch=None), UDP, clock.now)  # retransmission: same fields
    assert statuses(tl.outgoing()) == [100] and tl.events() == []
    tl.receive(inbound(branch="1234"), UDP, clock.now)  # an old-style branch, other Via
    tl.receive(inbound(branch=None, cseq=314160), UDP, clock.now)  # a new request
    tl.receive(inbound(branch=None, uri="sip:carol@biloxi.com"), UDP, clock.now)
    assert len([e for e in tl.events() if isinstance(e, RequestReceived)]) == 3
    tl.outgoing()
    cancel = inbound("CANCEL", branch=None)
    tl.receive(cancel, UDP, clock.now)
    [ev] = tl.events()
    assert isinstance(ev, CancelReceived) and ev.invite_key == key
    tl.respond(key, make_response(invite, 487, to_tag="srvtag"), clock.now)
    tl.outgoing()
    # the ACK carries the tag of our response: that is what matches in RFC 2543
    wrong = inbound("ACK", branch=None, to_tag="othertag")
    tl.receive(wrong, UDP, clock.now)
    assert tl.events() == [AckReceived(None, wrong, UDP)]
    tl.receive(inbound("ACK", branch=None, to_tag="srvtag"), UDP, clock.now)
    assert tl.state(key) is TxState.CONFIRMED and tl.events() == []


def test_rfc2543_reinvite_with_to_tag() -> None:
    tl = layer()
    reinvite = inbound(branch=None, to_tag="dialog", cseq=2)
    tl.receive(reinvite, UDP, 1000.0)
    key = only_request(tl).key
    tl.respond(key, make_response(reinvite, 488), 1000.0)
    tl.receive(inbound("ACK", branch=None, to_tag="dialog", cseq=2), UDP, 1000.0)
    assert tl.state(key) is TxState.CONFIRMED


# -- limits, malformed input, misuse ----------------------------------------------------------


def test_max_transactions_refuses_with_503() -> None:
    tl = layer(max_transactions=2, send_100=False)
    tl.receive(inbound(branch="z9hG4bK1"), UDP, 1000.0)
    tl.receive(inbound("OPTIONS", branch="z9hG4bK2"), UDP, 1000.0)
    over = inbound("OPTIONS", branch="z9hG4bK3")
    tl.receive(over, UDP, 1000.0)
    events = tl.events()
    assert events[-1] == RequestRefused(over, UDP, 503, "Service Unavailable")
    out = tl.outgoing()
    assert statuses(out) == [503] and out[0].key is None and out[0].flow == UDP
    assert len(tl) == 2 and tl.stats()["sip_tx_refused_overload"] == 1
    # retransmissions of live transactions and ACKs still work at the limit
    tl.receive(inbound(branch="z9hG4bK1"), UDP, 1000.0)
    tl.receive(inbound("ACK", branch="z9hG4bK9"), UDP, 1000.0)
    assert [type(e) for e in tl.events()] == [AckReceived]


def test_malformed_requests_refused_or_dropped() -> None:
    tl = layer()
    no_cseq = inbound("OPTIONS")
    no_cseq.remove("cseq")
    tl.receive(no_cseq, UDP, 1000.0)
    [ev] = tl.events()
    assert isinstance(ev, RequestRefused) and ev.status == 400 and "CSeq" in ev.reason
    assert statuses(tl.outgoing()) == [400]
    mismatch = inbound("OPTIONS", cseq_method="INVITE")
    tl.receive(mismatch, UDP, 1000.0)
    [ev] = tl.events()
    assert isinstance(ev, RequestRefused) and ev.reason == "CSeq method mismatch"
    tl.outgoing()
    no_via = inbound("OPTIONS")
    no_via.remove("via")
    tl.receive(no_via, UDP, 1000.0)
    bad_ack = inbound("ACK")
    bad_ack.set("cseq", "nonsense")
    tl.receive(bad_ack, UDP, 1000.0)
    bad_2543 = inbound("INVITE", branch=None)
    bad_2543.set("from", "<<garbage")
    tl.receive(bad_2543, UDP, 1000.0)
    events = tl.events()
    assert [type(e) for e in events] == [MessageDropped, MessageDropped, RequestRefused]
    assert len(tl) == 0
    resp = make_response(inbound(), 200)
    resp.remove("via")
    tl.receive(resp, UDP, 1000.0)
    assert [type(e) for e in tl.events()] == [MessageDropped]


def test_respond_misuse() -> None:
    tl = layer()
    invite = inbound()
    with pytest.raises(UsageError):
        tl.respond(TransactionKey(True, BRANCH, "INVITE"), make_response(invite, 200), 0.0)
    assert not tl.respond(
        TransactionKey(False, "z9hG4bKx", "INVITE", "h:"), make_response(invite, 200), 0.0
    )
    tl.receive(invite, UDP, 0.0)
    key = only_request(tl).key
    assert not tl.respond(key, make_response(invite, 99), 0.0)
    assert tl.stats()["sip_tx_responses_refused"] == 2
    assert tl.request(key) is invite and tl.request(TransactionKey(False, "x", "INVITE")) is None


def test_transport_error_on_server_transactions() -> None:
    tl = layer()
    a = inbound(branch="z9hG4bKa")
    b = inbound(branch="z9hG4bKb")
    tl.receive(a, UDP, 0.0)
    tl.receive(b, UDP, 0.0)
    ka, kb = (e.key for e in tl.events() if isinstance(e, RequestReceived))
    tl.transport_error(ka, 0.0)
    assert tl.events() == [TransportFailed(ka), Terminated(ka)]
    tl.respond(kb, make_response(b, 200, to_tag="t"), 0.0)
    tl.transport_error(kb, 0.0)  # RFC 6026: reported, but Accepted stays to catch ACKs
    assert tl.events() == [TransportFailed(kb)] and tl.state(kb) is TxState.ACCEPTED


def test_stats_counters_are_flat_numbers() -> None:
    tl = layer()
    tl.receive(inbound(), UDP, 0.0)
    stats = tl.stats()
    assert stats["sip_tx_server_invite"] == 1 and stats["sip_tx_live"] == 1
    assert all(k.startswith("sip_tx_") and isinstance(v, int) for k, v in stats.items())
