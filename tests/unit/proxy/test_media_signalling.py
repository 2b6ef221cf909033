"""How the proxy drives the media relay through the signalling (rtpengine_manage) in the
corners of RFC 3261: a CANCEL while the offer is still at the relay, in-dialog failures
that end the dialog, Timer C, reliable provisionals (RFC 3262). Bytes in, bytes and media
jobs out; the relay's answers are given back by hand."""

from __future__ import annotations

from collections.abc import Callable

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.media.relay import Flags
from sipedge.proxy.context import RequestContext
from sipedge.proxy.core import MediaJob, ProxyCore
from sipedge.proxy.default_routing import TO_BROWSER, TO_PHONE
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import Binding, MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import Router
from sipedge.sip import message as m
from sipedge.sip.flow import Flow

ME = ("127.0.0.1", 5060)
CALLER = Flow("udp", ME, ("127.0.0.1", 6000))
CALLEE = Flow("udp", ME, ("127.0.0.1", 7001))
SDP = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
RELAYED = SDP.replace(b"10.0.0.1", b"127.0.0.1").replace(b"4000", b"30000")


def route(ctx: RequestContext) -> None:
    """The default recipe, short: every call's media is relayed, dialogs record-routed."""
    if not ctx.sanity_check():
        return
    if ctx.has_to_tag:
        if ctx.loose_route():
            if ctx.media_active():
                ctx.rtpengine_manage()
            ctx.relay()
        return
    ctx.record_route()
    if ctx.lookup() == 0:
        ctx.reply(404)
        return
    if ctx.method == "INVITE":
        ctx.rtpengine_manage()
    ctx.relay()


def make_core(timers: dict[str, float] | None = None,
              recipe: Callable[[RequestContext], None] = route) -> tuple[ProxyCore, FakeClock]:
    clock = FakeClock()
    cfg: dict[str, object] = {"auth": {"invite": False, "register": False}}
    if timers:
        cfg["sip"] = {"timers": timers}
    location = MemoryLocationStore()
    location.put(Binding("sip:bob@127.0.0.1", "sip:bob@127.0.0.1:7001", clock.wall() + 600))
    core = ProxyCore(parse_config(cfg), Identity([Listener("udp", *ME)]), location, MemorySubscriberStore(),
                     Router(recipe), clock, secret=b"s" * 32)
    core.media_available = True
    return core, clock


def request(method: str, body: bytes = SDP, cseq: int = 1, to_tag: str = "", branch: str = "z9hG4bKc1",
            extra: str = "", uri: str = "sip:bob@127.0.0.1") -> bytes:
    to = f"<sip:bob@127.0.0.1>;tag={to_tag}" if to_tag else "<sip:bob@127.0.0.1>"
    head = (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch={branch}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: {to}\r\nCall-ID: c-1\r\n"
        f"CSeq: {cseq} {method}\r\nContact: <sip:alice@127.0.0.1:6000>\r\n{extra}"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def sent(core: ProxyCore) -> list[tuple[Flow | None, int | None, m.Request | m.Response]]:
    out = []
    for s in core.outgoing():
        port = s.flow.remote[1] if s.flow is not None else (s.target.port if s.target is not None else None)
        out.append((s.flow, port, m.parse(s.data)))
    return out


def to_caller(core: ProxyCore) -> list[int]:
    return [msg.status for _, port, msg in sent(core) if port == 6000 and isinstance(msg, m.Response)]


def jobs(core: ProxyCore) -> list[MediaJob]:
    return list(core.media_jobs())


def test_a_cancel_while_the_offer_is_at_the_relay_ends_the_invite_with_487() -> None:
    core, clock = make_core()
    core.receive(request("INVITE"), CALLER, clock.now)
    (offer,) = jobs(core)
    assert offer.op == "offer"
    sent(core)  # the 100 Trying
    core.receive(request("CANCEL", b"", branch="z9hG4bKc1"), CALLER, clock.now)
    assert to_caller(core) == [200]  # the CANCEL's own answer
    core.media_done(offer.token, RELAYED, None, clock.now)
    out = sent(core)
    assert [msg.status for _, port, msg in out if port == 6000 and isinstance(msg, m.Response)] == [487]
    assert not [msg for _, port, msg in out if isinstance(msg, m.Request)]  # the callee never rang
    assert [j.op for j in jobs(core)] == ["delete"]  # after the offer: nothing is left at the relay
    clock.advance(40)
    core.handle_timer(clock.now)
    sent(core)
    assert len(core.tl) == 0 and not core._proxied


def established(core: ProxyCore, clock: FakeClock) -> m.Request:
    """A relayed call up to the 200 (ACK sent); returns the INVITE the callee got."""
    core.receive(request("INVITE"), CALLER, clock.now)
    (offer,) = jobs(core)
    core.media_done(offer.token, RELAYED, None, clock.now)
    (inv,) = [msg for _, port, msg in sent(core) if port == 7001 and isinstance(msg, m.Request)]
    assert isinstance(inv, m.Request)
    core.receive(callee_ok(inv), CALLEE, clock.now)
    (answer,) = jobs(core)
    core.media_done(answer.token, RELAYED, None, clock.now)
    assert to_caller(core) == [200]
    return inv


def callee_ok(inv: m.Request) -> bytes:
    """The callee's 200 with its SDP answer and the Record-Route set echoed."""
    ok = m.make_response(inv, 200, to_tag="b1")
    for rr in inv.get_all("record-route"):
        ok.add("Record-Route", rr)
    ok.add("Contact", "<sip:bob@127.0.0.1:7001>")
    ok.set("Content-Type", "application/sdp")
    ok.body = SDP
    return ok.serialize()


def reinvite(core: ProxyCore, inv: m.Request) -> bytes:
    route = "".join(f"Route: {rr}\r\n" for rr in inv.get_all("record-route"))
    return request("INVITE", cseq=2, to_tag="b1", branch="z9hG4bKre2", extra=route, uri="sip:bob@127.0.0.1:7001")


def test_a_reinvite_answered_481_or_408_ends_the_calls_media_and_a_488_does_not() -> None:
    for status, deleted in ((488, False), (481, True), (408, True)):
        core, clock = make_core()
        inv = established(core, clock)
        core.receive(reinvite(core, inv), CALLER, clock.now)
        (offer,) = jobs(core)
        core.media_done(offer.token, RELAYED, None, clock.now)
        (re,) = [msg for _, port, msg in sent(core) if port == 7001 and isinstance(msg, m.Request)]
        assert isinstance(re, m.Request)
        core.receive(m.make_response(re, status, to_tag="b1").serialize(), CALLEE, clock.now)
        assert status in to_caller(core)
        assert [j.op for j in jobs(core)] == (["delete"] if deleted else []), status


def test_timer_c_tells_the_caller_408_not_the_487_of_its_cancel() -> None:
    core, clock = make_core(timers={"timer_c": 200.0})
    core.receive(request("INVITE"), CALLER, clock.now)
    (offer,) = jobs(core)
    core.media_done(offer.token, RELAYED, None, clock.now)
    (inv,) = [msg for _, port, msg in sent(core) if port == 7001 and isinstance(msg, m.Request)]
    assert isinstance(inv, m.Request)
    core.receive(m.make_response(inv, 180, to_tag="b1").serialize(), CALLEE, clock.now)
    assert to_caller(core) == [180]
    clock.advance(201)
    core.handle_timer(clock.now)
    (cancel,) = [msg for _, port, msg in sent(core) if port == 7001 and isinstance(msg, m.Request)]
    assert isinstance(cancel, m.Request) and cancel.method == "CANCEL"
    core.receive(m.make_response(cancel, 200, to_tag="b1").serialize(), CALLEE, clock.now)
    core.receive(m.make_response(inv, 487, to_tag="b1").serialize(), CALLEE, clock.now)
    assert to_caller(core) == [408]


def test_a_reply_route_cannot_drop_a_final_response() -> None:
    core, clock = make_core()

    def reply_route(ctx: object) -> None:
        ctx.drop()  # type: ignore[attr-defined]

    core.router = Router(route, reply_route)
    core.receive(request("INVITE", b""), CALLER, clock.now)
    (inv,) = [msg for _, port, msg in sent(core) if port == 7001 and isinstance(msg, m.Request)]
    assert isinstance(inv, m.Request)
    core.receive(m.make_response(inv, 180, to_tag="b1").serialize(), CALLEE, clock.now)
    assert to_caller(core) == []  # a provisional one is dropped
    core.receive(m.make_response(inv, 486, to_tag="b1").serialize(), CALLEE, clock.now)
    assert to_caller(core) == [486]  # the final one still ends the caller's transaction


def test_the_sdp_of_a_prack_answers_a_late_offer_made_in_a_reliable_183() -> None:
    """INVITE without SDP; the callee offers in a reliable 183 (RFC 3262); the caller's
    answer comes in the PRACK and goes through the relay like an ACK's would."""
    core, clock = make_core()
    core.receive(request("INVITE", b""), CALLER, clock.now)
    assert jobs(core) == []
    (inv,) = [msg for _, port, msg in sent(core) if port == 7001 and isinstance(msg, m.Request)]
    assert isinstance(inv, m.Request)
    ringing = m.make_response(inv, 183, to_tag="b1")
    for rr in inv.get_all("record-route"):
        ringing.add("Record-Route", rr)
    for k, v in (("Contact", "<sip:bob@127.0.0.1:7001>"), ("Require", "100rel"), ("RSeq", "1"),
                 ("Content-Type", "application/sdp")):
        ringing.add(k, v)
    ringing.body = SDP
    core.receive(ringing.serialize(), CALLEE, clock.now)
    (offer,) = jobs(core)
    assert (offer.op, offer.from_tag, offer.to_tag) == ("offer", "b1", "a1")  # the callee offers
    core.media_done(offer.token, RELAYED, None, clock.now)
    assert to_caller(core) == [183]
    route = "".join(f"Route: {rr}\r\n" for rr in inv.get_all("record-route"))
    prack = request("PRACK", cseq=2, to_tag="b1", branch="z9hG4bKpr1", uri="sip:bob@127.0.0.1:7001",
                    extra=route + "RAck: 1 1 INVITE\r\n")
    core.receive(prack, CALLER, clock.now)
    (answer,) = jobs(core)
    assert (answer.op, answer.from_tag, answer.to_tag, answer.sdp) == ("answer", "b1", "a1", SDP)
    core.media_done(answer.token, RELAYED, None, clock.now)
    (relayed,) = [msg for _, port, msg in sent(core) if port == 7001 and isinstance(msg, m.Request)]
    assert isinstance(relayed, m.Request) and relayed.method == "PRACK" and relayed.body == RELAYED


def test_the_default_routing_records_the_route_of_a_relayed_call_even_with_record_route_off() -> None:
    """Without it the BYE would bypass the proxy and the relay session would linger."""
    from sipedge.proxy.routing import load_router

    clock = FakeClock()
    location = MemoryLocationStore()
    location.put(Binding("sip:bob@127.0.0.1", "sip:bob@127.0.0.1:7001", clock.wall() + 600))
    config = parse_config({"auth": {"invite": False, "register": False}, "routing": {"record_route": False}})
    for body, relayed in ((SDP, True), (SDP.replace(b"10.0.0.1", b"198.51.100.1"), False)):
        core = ProxyCore(config, Identity([Listener("udp", *ME)]), location, MemorySubscriberStore(),
                         load_router("sipedge.proxy.default_routing"), clock, secret=b"s" * 32)
        core.media_available = True
        core.receive(request("INVITE", body), CALLER, clock.now)
        offers = jobs(core)
        for job in offers:
            core.media_done(job.token, RELAYED, None, clock.now)
        (inv,) = [msg for _, port, msg in sent(core) if port == 7001 and isinstance(msg, m.Request)]
        assert isinstance(inv, m.Request)
        assert bool(offers) is relayed
        assert bool(inv.get_all("record-route")) is relayed  # off, unless media is relayed


def test_a_2xx_retransmitted_after_the_bye_does_not_revive_the_call() -> None:
    core, clock = make_core()
    inv = established(core, clock)
    assert core.media_active("c-1")
    route = "".join(f"Route: {rr}\r\n" for rr in inv.get_all("record-route"))
    core.receive(request("BYE", b"", cseq=3, to_tag="b1", branch="z9hG4bKbye", extra=route,
                         uri="sip:bob@127.0.0.1:7001"), CALLER, clock.now)
    assert [j.op for j in jobs(core)] == ["delete"] and not core.media_active("c-1")
    ok = m.make_response(inv, 200, to_tag="b1")
    ok.add("Contact", "<sip:bob@127.0.0.1:7001>")
    ok.set("Content-Type", "application/sdp")
    ok.body = SDP
    core.receive(ok.serialize(), CALLEE, clock.now)  # the callee did not hear our ACK
    for job in jobs(core):
        core.media_done(job.token, None, (404, "Unknown call"), clock.now)
    assert not core.media_active("c-1")  # in-dialog requests of the ended call stay unrelayed


def test_a_bridged_calls_answer_leaves_out_the_keys_that_describe_the_offers_recipient() -> None:
    """The answer goes back to the offerer: ``RTP/AVP ICE=remove rtcp-mux-demux`` (or the
    browser-facing ``UDP/TLS/RTP/SAVPF ICE=force rtcp-mux-require DTLS=passive``) must not
    reach rtpengine with it, which would rewrite the answer to that profile; the rest stays."""
    for bridge in (TO_PHONE, TO_BROWSER, Flags(transport_protocol="RTP/AVP", dtls="off", replace_origin=True)):
        def recipe(ctx: RequestContext, flags: Flags = bridge) -> None:
            ctx.record_route()
            ctx.lookup()
            ctx.rtpengine_manage(flags)
            ctx.relay()

        core, clock = make_core(recipe=recipe)
        core.receive(request("INVITE"), CALLER, clock.now)
        (offer,) = jobs(core)
        assert offer.flags == bridge
        core.media_done(offer.token, RELAYED, None, clock.now)
        (inv,) = [msg for _, port, msg in sent(core) if port == 7001 and isinstance(msg, m.Request)]
        assert isinstance(inv, m.Request)
        ok = m.make_response(inv, 200, to_tag="b1")
        ok.add("Contact", "<sip:bob@127.0.0.1:7001>")
        ok.set("Content-Type", "application/sdp")
        ok.body = SDP
        core.receive(ok.serialize(), CALLEE, clock.now)
        (answer,) = jobs(core)
        assert answer.op == "answer" and answer.flags is not None
        assert (answer.flags.transport_protocol, answer.flags.ice, answer.flags.rtcp_mux, answer.flags.dtls) == (
            None, None, (), None)
        assert answer.flags.replace_origin == bridge.replace_origin
        assert answer.flags.trust_address == bridge.trust_address


def test_an_unbridged_calls_answer_keeps_the_offers_flags() -> None:
    flags = Flags(ice="remove", rtcp_mux=("demux",))
    assert flags.for_answer() is flags


def test_a_settled_invites_2xx_retransmission_is_relayed_as_the_first_was() -> None:
    """Once every branch is final the proxy keeps only a tuple per winner (``Accepted``);
    a 2xx again (the callee did not hear the caller's ACK) still goes through the media
    answer and ``reply_route`` to the caller, with the caller's Vias, until Timer M."""
    replies: list[int] = []
    router = Router(route, reply_route=lambda rctx: replies.append(rctx.response.status))
    core, clock = make_core()
    core.router = router
    inv = established(core, clock)
    assert core._proxied == {} and core._branch_of == {} and len(core._accepted) == 1  # settled
    core.receive(callee_ok(inv), CALLEE, clock.now)
    (answer,) = jobs(core)
    assert (answer.op, answer.call_id, answer.from_tag, answer.to_tag) == ("answer", "c-1", "a1", "b1")
    core.media_done(answer.token, RELAYED, None, clock.now)
    (again,) = [msg for _, port, msg in sent(core) if port == 6000 and isinstance(msg, m.Response)]
    assert isinstance(again, m.Response) and again.status == 200 and again.body == RELAYED
    assert [v.branch for v in again.vias] == ["z9hG4bKc1"]  # ours popped, the caller's kept
    assert replies == [200, 200]
    clock.advance(40)
    core.handle_timer(clock.now)
    core.outgoing()
    assert core._accepted == {}  # Timer M: a 2xx now is a stray, relayed by its Via


def test_an_invite_refused_on_every_branch_keeps_nothing_for_its_lingering() -> None:
    core, clock = make_core()
    core.receive(request("INVITE"), CALLER, clock.now)
    (offer,) = jobs(core)
    core.media_done(offer.token, RELAYED, None, clock.now)
    (inv,) = [msg for _, port, msg in sent(core) if port == 7001 and isinstance(msg, m.Request)]
    core.receive(m.make_response(inv, 486, to_tag="b1").serialize(), CALLEE, clock.now)
    assert to_caller(core) == [486]
    assert core._proxied == {} and core._branch_of == {} and core._accepted == {}
    core.receive(request("CANCEL", b"", branch="z9hG4bKc1"), CALLER, clock.now)
    assert to_caller(core) == [200]  # answered already: the CANCEL changes nothing (RFC 3261 §9.2)
