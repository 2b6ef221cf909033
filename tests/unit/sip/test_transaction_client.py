"""Client transactions (RFC 3261 §17.1, RFC 6026 §7.2): Timer A/B/D/E/F/K/M, ACK for
non-2xx, 2xx in Accepted, CANCEL, reliable transports. FakeClock only, no sockets."""

from __future__ import annotations

import pytest

from sipedge._common.clock import FakeClock
from sipedge.config.sip import TimersConfig
from sipedge.errors import UsageError
from sipedge.sip.flow import Flow, Target
from sipedge.sip.message import Request, Response, make_response, parse
from sipedge.sip.transaction import TransactionLayer, make_cancel
from sipedge.sip.txevents import (
    ResponseReceived,
    Send,
    StrayResponse,
    Terminated,
    TimedOut,
    TransactionKey,
    TransportFailed,
    TxState,
)

T1, T2, T4 = 0.5, 4.0, 5.0
UDP_TARGET = Target("udp", "192.0.2.20", 5060)
TCP_TARGET = Target("tcp", "192.0.2.20", 5060)
UDP_FLOW = Flow("udp", ("127.0.0.1", 5060), ("192.0.2.20", 5060))


def outbound(method: str = "INVITE", branch: str = "z9hG4bKsE1.0", cseq: int = 314159) -> Request:
    """A request as the proxy forwards it: our Via on top of the caller's, a Route."""
    text = (
        f"{method} sip:bob@192.0.2.20 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n"
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.10\r\n"
        "Max-Forwards: 69\r\n"
        "Route: <sip:192.0.2.30;lr>, <sip:192.0.2.31;lr>\r\n"
        "Record-Route: <sip:127.0.0.1;lr>\r\n"
        "To: Bob <sip:bob@biloxi.com>\r\n"
        "From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@pc33.atlanta.com>\r\n"
        "Content-Type: application/sdp\r\n"
        "Content-Length: 4\r\n\r\nv=0\n"
    )
    r = parse(text.encode())
    assert isinstance(r, Request)
    return r


def reply(request: Request, status: int, tag: str | None = "314159") -> Response:
    resp = make_response(request, status, to_tag=tag)
    again = parse(resp.serialize())  # as it would arrive
    assert isinstance(again, Response)
    return again


def layer(**kw: object) -> TransactionLayer:
    timer_c = kw.pop("timer_c_value", 180.0)
    return TransactionLayer(TimersConfig(t1=T1, t2=T2, t4=T4, timer_c=timer_c), **kw)  # type: ignore[arg-type]


def run(tl: TransactionLayer, clock: FakeClock, until: float) -> list[tuple[float, Send]]:
    """Fire timers up to ``until`` (relative to the clock start), collecting the sends."""
    sent: list[tuple[float, Send]] = []
    end = 1000.0 + until
    while (t := tl.get_timer()) is not None and t <= end:
        clock.now = t
        tl.handle_timer(t)
        sent += [(round(t - 1000.0, 6), s) for s in tl.outgoing()]
    clock.now = end
    return sent


def test_invite_timer_a_doubles_until_timer_b() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, clock.now)
    first = tl.outgoing()
    assert [s.data for s in first] == [req.serialize()]
    assert first[0].target == UDP_TARGET and first[0].flow is None and first[0].key == key
    assert tl.state(key) is TxState.CALLING
    sent = run(tl, clock, 64 * T1)
    # Timer A: T1, 2T1, 4T1... with no T2 cap for INVITE; Timer B at 64*T1
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(s.data is first[0].data for _, s in sent)  # serialized once
    assert tl.events() == [TimedOut(key, "B"), Terminated(key)]
    assert tl.state(key) is None and tl.get_timer() is None
    assert tl.stats()["sip_tx_retransmissions"] == 6


def test_invite_provisional_stops_retransmissions_and_timer_b() -> None:
    clock = FakeClock(1000.0)
    tl = layer(timer_c=False)
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.outgoing()
    clock.advance(0.7)
    tl.handle_timer(clock.now)
    assert len(tl.outgoing()) == 1  # one Timer A retransmit
    ringing = reply(req, 180)
    tl.receive(ringing, UDP_FLOW, clock.now)
    assert tl.events() == [ResponseReceived(key, ringing, UDP_FLOW)]
    assert tl.state(key) is TxState.PROCEEDING
    assert run(tl, clock, 500) == [] and tl.get_timer() is None
    assert tl.state(key) is TxState.PROCEEDING  # no Timer B once proceeding, no Timer C
    ok = reply(req, 200)
    tl.receive(ok, UDP_FLOW, clock.now)
    assert tl.events() == [ResponseReceived(key, ok, UDP_FLOW)]


def test_non_2xx_final_gets_hop_by_hop_ack() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.outgoing()
    tl.receive(reply(req, 100, None), UDP_FLOW, clock.now)
    busy = reply(req, 486, "busytag")
    tl.receive(busy, UDP_FLOW, clock.now)
    out = tl.outgoing()
    assert len(out) == 1 and out[0].target == UDP_TARGET
    ack = parse(out[0].data)
    assert isinstance(ack, Request)
    # RFC 3261 §17.1.1.3: same R-URI, Call-ID, From, CSeq number, top Via only,
    # To from the response, Route from the INVITE
    assert ack.method == "ACK" and ack.uri == req.uri
    assert ack.get_all("via") == [req.get_all("via")[0]]
    assert ack.call_id == req.call_id
    assert ack.get("from") == req.get("from")
    assert ack.to.tag == "busytag" and ack.get("to") == busy.get("to")
    assert (ack.cseq.number, ack.cseq.method) == (314159, "ACK")
    assert ack.get_all("route") == req.get_all("route")
    assert ack.max_forwards == 69
    assert ack.body == b"" and not ack.has("contact") and not ack.has("record-route")
    events = tl.events()
    assert events[-1] == ResponseReceived(key, busy, UDP_FLOW)
    assert tl.state(key) is TxState.COMPLETED
    # a retransmitted 486 is absorbed: the same ACK bytes again, nothing passed up
    clock.advance(5)
    tl.receive(busy, UDP_FLOW, clock.now)
    again = tl.outgoing()
    assert [s.data for s in again] == [out[0].data] and again[0].data is out[0].data
    assert tl.events() == []
    # Timer D: 64*T1 (32 s at the default T1) after the first final response
    sent = run(tl, clock, 64 * T1 - 0.001)
    assert sent == [] and tl.state(key) is TxState.COMPLETED
    run(tl, clock, 64 * T1)
    assert tl.events() == [Terminated(key)]


def test_2xx_passed_up_and_retransmits_passed_up_in_accepted() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.outgoing()
    ok = reply(req, 200, "a")
    tl.receive(ok, UDP_FLOW, clock.now)
    assert tl.outgoing() == []  # the ACK for a 2xx belongs to the TU / the UAC
    assert tl.events() == [ResponseReceived(key, ok, UDP_FLOW)]
    assert tl.state(key) is TxState.ACCEPTED
    clock.advance(1)
    tl.receive(ok, UDP_FLOW, clock.now)  # retransmission
    forked = reply(req, 200, "b")  # another branch downstream answered too
    tl.receive(forked, UDP_FLOW, clock.now)
    tl.receive(reply(req, 180, "c"), UDP_FLOW, clock.now)  # late provisional: absorbed
    tl.receive(reply(req, 486, "d"), UDP_FLOW, clock.now)  # a final after 2xx: absorbed
    assert tl.events() == [
        ResponseReceived(key, ok, UDP_FLOW),
        ResponseReceived(key, forked, UDP_FLOW),
    ]
    assert tl.outgoing() == []
    # Timer M: 64*T1 after the first 2xx
    run(tl, clock, 64 * T1 - 0.01)
    assert tl.state(key) is TxState.ACCEPTED
    run(tl, clock, 64 * T1)
    assert tl.events() == [Terminated(key)]
    tl.receive(ok, UDP_FLOW, clock.now)
    assert tl.events() == [StrayResponse(ok, UDP_FLOW)]


def test_reliable_invite_no_retransmits_and_no_timer_d() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound()
    key = tl.send_request(req, TCP_TARGET, clock.now)
    assert len(tl.outgoing()) == 1
    assert tl.get_timer() == pytest.approx(1000.0 + 64 * T1)  # only Timer B
    clock.advance(2)
    busy = reply(req, 603)
    busy_flow = Flow("tcp", ("127.0.0.1", 5060), ("192.0.2.20", 5060), 3)
    tl.receive(busy, busy_flow, clock.now)
    out = tl.outgoing()
    assert len(out) == 1 and parse(out[0].data).method == "ACK"  # type: ignore[union-attr]
    assert tl.events() == [ResponseReceived(key, busy, busy_flow), Terminated(key)]
    assert tl.get_timer() is None and len(tl) == 0


def test_reliable_invite_timer_b() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    key = tl.send_request(outbound(), TCP_TARGET, clock.now)
    tl.outgoing()
    sent = run(tl, clock, 64 * T1)
    assert sent == []
    assert tl.events() == [TimedOut(key, "B"), Terminated(key)]


def test_non_invite_timer_e_caps_at_t2_then_timer_f() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound("OPTIONS")
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.outgoing()
    sent = run(tl, clock, 64 * T1)
    times = [t for t, _ in sent]
    # Timer E: T1, 2T1, 4T1, then T2 (4 s) intervals
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    gaps = [round(b - a, 6) for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert tl.events() == [TimedOut(key, "F"), Terminated(key)]
    assert tl.stats()["sip_tx_timeouts"] == 1


def test_non_invite_proceeding_retransmits_at_t2() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound("BYE")
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.outgoing()
    clock.advance(0.1)
    tl.receive(reply(req, 100, None), UDP_FLOW, clock.now)
    assert tl.state(key) is TxState.PROCEEDING
    sent = run(tl, clock, 13)
    assert [t for t, _ in sent] == [0.5, 4.5, 8.5, 12.5]


def test_non_invite_completed_absorbs_for_t4() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound("OPTIONS")
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.outgoing()
    ok = reply(req, 200)
    tl.receive(ok, UDP_FLOW, clock.now)
    assert tl.events() == [ResponseReceived(key, ok, UDP_FLOW)]
    clock.advance(T4 - 0.1)
    tl.handle_timer(clock.now)
    tl.receive(ok, UDP_FLOW, clock.now)
    assert tl.events() == [] and tl.outgoing() == []
    assert tl.stats()["sip_tx_responses_absorbed"] == 1
    clock.advance(0.1)
    tl.handle_timer(clock.now)
    assert tl.events() == [Terminated(key)]


def test_non_invite_reliable_terminates_on_final() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound("REGISTER")
    key = tl.send_request(req, TCP_TARGET, clock.now)
    tl.outgoing()
    assert tl.get_timer() == pytest.approx(1000.0 + 64 * T1)  # Timer F only
    ok = reply(req, 200)
    tl.receive(ok, UDP_FLOW, clock.now)
    assert tl.events() == [ResponseReceived(key, ok, UDP_FLOW), Terminated(key)]


def test_response_matching_uses_branch_and_cseq_method() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound()
    key = tl.send_request(req, UDP_FLOW, clock.now)
    assert tl.outgoing()[0].flow == UDP_FLOW
    other = reply(outbound(branch="z9hG4bKother"), 200)
    tl.receive(other, UDP_FLOW, clock.now)
    wrong_method = reply(outbound("CANCEL"), 200)  # same branch, CSeq CANCEL: no CANCEL tx
    tl.receive(wrong_method, UDP_FLOW, clock.now)
    assert tl.events() == [StrayResponse(other, UDP_FLOW), StrayResponse(wrong_method, UDP_FLOW)]
    assert tl.state(key) is TxState.CALLING
    assert tl.stats()["sip_tx_stray_responses"] == 2


def test_cancel_waits_for_provisional_then_487_acked() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.outgoing()
    assert tl.cancel(key, clock.now, reason='SIP;cause=200;text="elsewhere"')
    assert tl.outgoing() == []  # RFC 3261 §9.1: not before a provisional response
    clock.advance(0.2)
    tl.receive(reply(req, 180), UDP_FLOW, clock.now)
    out = tl.outgoing()
    assert len(out) == 1
    cancel = parse(out[0].data)
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.uri == req.uri and cancel.get_all("via") == [req.get_all("via")[0]]
    assert cancel.get("to") == req.get("to") and cancel.get("from") == req.get("from")
    assert (cancel.cseq.number, cancel.cseq.method) == (314159, "CANCEL")
    assert cancel.get_all("route") == req.get_all("route")
    assert cancel.get("reason") == 'SIP;cause=200;text="elsewhere"'
    assert tl.cancel(key, clock.now) and tl.outgoing() == []  # a second cancel sends nothing
    # the CANCEL's own 200 is absorbed silently; the INVITE's 487 is passed up and ACKed
    tl.events()
    tl.receive(reply(cancel, 200), UDP_FLOW, clock.now)
    assert tl.events() == []
    terminated = reply(req, 487)
    tl.receive(terminated, UDP_FLOW, clock.now)
    assert parse(tl.outgoing()[0].data).method == "ACK"  # type: ignore[union-attr]
    assert tl.events() == [ResponseReceived(key, terminated, UDP_FLOW)]
    assert not tl.cancel(key, clock.now)  # too late: a final response came
    run(tl, clock, 100)
    assert tl.events() == [Terminated(key)] and len(tl) == 0


def test_cancel_before_provisional_then_final_sends_nothing() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.outgoing()
    assert tl.cancel(key, clock.now)
    tl.receive(reply(req, 404), UDP_FLOW, clock.now)
    assert [parse(s.data).method for s in tl.outgoing()] == ["ACK"]  # type: ignore[union-attr]
    assert not tl.cancel(TransactionKey(True, "z9hG4bKnope", "INVITE"), clock.now)


def test_cancelled_invite_without_final_ends_64t1_after_cancel() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.receive(reply(req, 180), UDP_FLOW, clock.now)
    clock.advance(10)
    tl.cancel(key, clock.now)
    tl.events()
    run(tl, clock, 10 + 64 * T1 - 0.01)
    assert tl.state(key) is TxState.PROCEEDING
    run(tl, clock, 10 + 64 * T1)
    assert tl.events() == [TimedOut(key, "CANCEL"), Terminated(key)]
    assert len(tl) == 0  # the CANCEL's own transaction timed out as well (Timer F)


def test_timer_c_cancels_and_restarts_on_provisional() -> None:
    clock = FakeClock(1000.0)
    tl = layer(timer_c_value=60.0)
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.outgoing()
    tl.receive(reply(req, 100, None), UDP_FLOW, clock.now)
    clock.advance(50)
    tl.receive(reply(req, 180), UDP_FLOW, clock.now)  # restarts Timer C
    tl.events()
    assert run(tl, clock, 109.9) == []
    sent = run(tl, clock, 110)
    assert [parse(s.data).method for _, s in sent] == ["CANCEL"]  # type: ignore[union-attr]
    assert tl.events() == [TimedOut(key, "C")]
    assert tl.state(key) is TxState.PROCEEDING
    terminated = reply(req, 487)
    tl.receive(terminated, UDP_FLOW, clock.now)
    assert tl.events() == [ResponseReceived(key, terminated, UDP_FLOW)]


def test_tu_sent_cancel_is_an_ordinary_transaction() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, clock.now)
    tl.receive(reply(req, 180), UDP_FLOW, clock.now)
    tl.outgoing()
    ckey = tl.send_request(make_cancel(req), UDP_TARGET, clock.now)
    assert ckey == TransactionKey(True, key.branch, "CANCEL")
    assert [s.key for s in tl.outgoing()] == [ckey]
    assert tl.cancel(key, clock.now)  # already cancelled: nothing more is sent
    assert tl.outgoing() == []
    tl.events()
    ok = reply(make_cancel(req), 200)
    tl.receive(ok, UDP_FLOW, clock.now)
    assert tl.events() == [ResponseReceived(ckey, ok, UDP_FLOW)]


def test_transport_error_fails_client_transaction() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    key = tl.send_request(outbound(), TCP_TARGET, clock.now)
    tl.transport_error(key, clock.now)
    assert tl.events() == [TransportFailed(key), Terminated(key)]
    tl.transport_error(key, clock.now)  # unknown now: ignored
    assert tl.events() == [] and tl.stats()["sip_tx_transport_errors"] == 1


def test_send_request_misuse_is_a_usage_error() -> None:
    tl = layer()
    with pytest.raises(UsageError, match="send_stateless"):
        tl.send_request(outbound("ACK"), UDP_TARGET, 0.0)
    no_branch = outbound()
    no_branch.replace_first("via", "SIP/2.0/UDP 127.0.0.1:5060")
    with pytest.raises(UsageError, match="branch"):
        tl.send_request(no_branch, UDP_TARGET, 0.0)
    no_via = outbound()
    no_via.remove("via")
    with pytest.raises(UsageError, match="Via"):
        tl.send_request(no_via, UDP_TARGET, 0.0)
    tl.send_request(outbound(), UDP_TARGET, 0.0)
    with pytest.raises(UsageError, match="already exists"):
        tl.send_request(outbound(), UDP_TARGET, 0.0)


def test_send_stateless() -> None:
    tl = layer()
    ack = outbound("ACK")
    tl.send_stateless(ack, UDP_FLOW)
    assert tl.outgoing() == [Send(ack.serialize(), UDP_FLOW, None, None)]
    assert tl.stats()["sip_tx_stateless_sent"] == 1 and len(tl) == 0


def test_next_event_drains_one_at_a_time() -> None:
    tl = layer()
    req = outbound("OPTIONS")
    key = tl.send_request(req, TCP_TARGET, 0.0)
    ok = reply(req, 200)
    tl.receive(ok, UDP_FLOW, 0.0)
    assert tl.next_event() == ResponseReceived(key, ok, UDP_FLOW)
    assert tl.next_event() == Terminated(key)
    assert tl.next_event() is None


def test_state_changes_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    tl = layer()
    req = outbound()
    with caplog.at_level("DEBUG", logger="sipedge.sip.transaction"):
        key = tl.send_request(req, UDP_TARGET, 0.0)
        tl.receive(reply(req, 180), UDP_FLOW, 0.0)
    assert f"{key} - Calling -> Proceeding" in caplog.text


def test_transport_error_in_accepted_is_reported_only() -> None:
    tl = layer()
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, 0.0)
    tl.receive(reply(req, 200), UDP_FLOW, 0.0)
    tl.events()
    tl.transport_error(key, 0.0)
    assert tl.events() == [TransportFailed(key)] and tl.state(key) is TxState.ACCEPTED


def test_restarted_timers_do_not_pile_up() -> None:
    clock = FakeClock(1000.0)
    tl = layer()
    req = outbound()
    key = tl.send_request(req, UDP_TARGET, clock.now)
    ringing = reply(req, 180)
    for _ in range(1000):  # each 180 restarts Timer C: stale heap entries get compacted
        clock.advance(0.01)
        tl.receive(ringing, UDP_FLOW, clock.now)
    assert len(tl._heap) < 300
    assert tl.get_timer() == pytest.approx(clock.now + 180.0)
    tl.events()
    run(tl, clock, clock.now - 1000.0 + 180.0)
    assert tl.events() == [TimedOut(key, "C")]
