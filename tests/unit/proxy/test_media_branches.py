"""Per-branch media offers in the proxy core (rtpengine's ``via-branch``): when a forked
INVITE's branches need different media flags (``BranchTarget.media``), each branch's
INVITE leaves only after the relay rewrote the caller's offer for that branch, and every
later step names the branch: answers (183 and 200 from either branch), the release of the
branches that lost, failed, never rang or were CANCELled. Bytes in, bytes and media jobs
out (the default routing, a browser on a WebSocket and a UDP phone); the relay's answers
are given back by hand."""

from __future__ import annotations

from dataclasses import replace

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.media.relay import Flags
from sipedge.proxy import default_routing
from sipedge.proxy.context import BranchTarget, RequestContext
from sipedge.proxy.core import MediaJob, ProxyCore
from sipedge.proxy.default_routing import LATE_TO_BROWSER, LATE_TO_PHONE, TO_PHONE, webrtc_bridge
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import Binding, MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import Router
from sipedge.sip import message as m
from sipedge.sip.flow import Flow

ME = ("127.0.0.1", 5060)
CALLER = Flow("udp", ME, ("127.0.0.1", 6000))
# the phone's PCMU-only offer towards a browser gets Opus added for transcoding
TO_BROWSER = replace(default_routing.TO_BROWSER, codec_transcode=("opus",))
PHONE, BROWSER = 7001, 7002  # bob's two contacts (the "browser" one gets TO_BROWSER)
SDP = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
FOR = {PHONE: b"m=audio 30000 RTP/AVP 0", BROWSER: b"m=audio 30002 UDP/TLS/RTP/SAVPF 0"}


WS = Flow("ws", ("127.0.0.1", 8080), ("127.0.0.1", BROWSER), 7)  # the browser's connection


def make_core(ports: tuple[int, ...] = (PHONE, BROWSER), timers: dict[str, float] | None = None) -> tuple[ProxyCore, FakeClock]:
    """The default routing, no authentication; bob's contacts: UDP phones, except the one
    on port 7002, a browser registered over a WebSocket (so is 7003, on a second one)."""
    clock = FakeClock()
    cfg: dict[str, object] = {"auth": {"invite": False, "register": False}}
    if timers:
        cfg["sip"] = {"timers": timers}
    location = MemoryLocationStore()
    for port in ports:
        flow = Flow("ws", WS.local, ("127.0.0.1", port), port) if port >= BROWSER else None
        contact = f"sip:bob@{port}.invalid;transport=ws" if flow else f"sip:bob@127.0.0.1:{port}"
        location.put(Binding("sip:bob@127.0.0.1", contact, clock.wall() + 600, flow=flow.token if flow else ""))
    core = ProxyCore(parse_config(cfg), Identity([Listener("udp", *ME), Listener("ws", *WS.local)]), location,
                     MemorySubscriberStore(), Router(default_routing.request_route, default_routing.reply_route),
                     clock, secret=b"s" * 32)
    core.media_available = True
    return core, clock


def invite(method: str = "INVITE", body: bytes = SDP, branch: str = "z9hG4bKc1") -> bytes:
    head = (
        f"{method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch={branch}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: c-1\r\n"
        f"CSeq: 1 {method}\r\nContact: <sip:alice@127.0.0.1:6000>\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class Call:
    """One forked call through ``core``: what went where, and the jobs made."""

    def __init__(self, core: ProxyCore, clock: FakeClock) -> None:
        self.core, self.clock = core, clock
        self.requests: dict[int, list[m.Request]] = {}
        self.to_caller: list[m.Response] = []

    def pump(self) -> None:
        for s in self.core.outgoing():
            port = s.flow.remote[1] if s.flow is not None else (s.target.port if s.target is not None else 0)
            msg = m.parse(s.data)
            if isinstance(msg, m.Request):
                self.requests.setdefault(port, []).append(msg)
            elif port == 6000:
                self.to_caller.append(msg)

    def jobs(self) -> list[MediaJob]:
        return list(self.core.media_jobs())

    def done(self, job: MediaJob, sdp: bytes | None, error: tuple[int, str] | None = None) -> None:
        self.core.media_done(job.token, sdp, error, self.clock.now)
        self.pump()

    def offers(self) -> dict[int, MediaJob]:
        """The INVITE's two offers, by the branch (contact port) each is for."""
        self.core.receive(invite(), CALLER, self.clock.now)
        self.pump()
        offers = self.jobs()
        assert [j.op for j in offers] == ["offer", "offer"]
        assert not any(p in self.requests for p in (PHONE, BROWSER))  # nothing rings before its offer
        by_port = {PHONE if j.flags == Flags() else BROWSER: j for j in offers}
        assert by_port[BROWSER].flags == TO_BROWSER and len({j.via_branch for j in offers}) == 2
        assert all(j.sdp == SDP and j.to_tag is None for j in offers)  # each from the caller's own SDP
        return by_port

    def ringing(self) -> dict[int, MediaJob]:
        offers = self.offers()
        for port, job in offers.items():
            self.done(job, SDP.replace(b"m=audio 4000 RTP/AVP 0", FOR[port]))
            (inv,) = self.requests[port]
            assert FOR[port] in inv.body and inv.top_via.branch == job.via_branch
        return offers

    def reply(self, port: int, status: int, tag: str, body: bytes = b"") -> None:
        inv = self.requests[port][0]
        resp = m.make_response(inv, status, to_tag=tag)
        for rr in inv.get_all("record-route"):
            resp.add("Record-Route", rr)
        resp.add("Contact", f"<sip:bob@127.0.0.1:{port}>")
        if body:
            resp.set("Content-Type", "application/sdp")
            resp.body = body
        flow = Flow("ws", WS.local, ("127.0.0.1", port), port) if port >= BROWSER else Flow("udp", ME, ("127.0.0.1", port))
        self.core.receive(resp.serialize(), flow, self.clock.now)
        self.pump()


def test_the_phone_answers_the_browser_is_cancelled_and_its_leg_released() -> None:
    call = Call(*make_core())
    offers = call.ringing()
    call.reply(PHONE, 180, "p1")
    call.reply(PHONE, 200, "p1", SDP)
    answer, release = call.jobs()  # the loser's leg goes as the winner's answer is made
    assert (answer.op, answer.from_tag, answer.to_tag) == ("answer", "a1", "p1")
    assert answer.via_branch == offers[PHONE].via_branch and answer.flags == Flags()
    assert (release.op, release.via_branch) == ("delete", offers[BROWSER].via_branch)
    call.done(answer, SDP)
    assert [r.status for r in call.to_caller] == [100, 180, 200]
    assert [r.method for r in call.requests[BROWSER]] == ["INVITE"]  # its CANCEL waits for a provisional
    call.reply(BROWSER, 180, "b1")
    assert [r.method for r in call.requests[BROWSER]] == ["INVITE", "CANCEL"]
    call.reply(BROWSER, 487, "b1")
    assert call.jobs() == []  # released once
    assert call.core.media_active("c-1")  # the call's media goes on: the BYE deletes it
    bye = invite("BYE", b"", "z9hG4bKbye").replace(b"To: <sip:bob@127.0.0.1>", b"To: <sip:bob@127.0.0.1>;tag=p1")
    route_set = "".join(f"Route: {rr}\r\n" for rr in call.requests[PHONE][0].get_all("record-route"))
    call.core.receive(bye.replace(b"Contact:", route_set.encode() + b"Contact:"), CALLER, call.clock.now)
    assert [(j.op, j.via_branch) for j in call.jobs()] == [("delete", None)]


def test_the_browser_answers_with_its_own_flags_for_the_answer() -> None:
    call = Call(*make_core())
    offers = call.ringing()
    call.reply(BROWSER, 200, "b1", SDP)
    answer, release = call.jobs()
    assert answer.via_branch == offers[BROWSER].via_branch and answer.flags == TO_BROWSER.for_answer()
    assert (release.op, release.via_branch) == ("delete", offers[PHONE].via_branch)
    call.done(answer, SDP)
    assert [r.status for r in call.to_caller][-1] == 200


def test_early_media_from_both_branches_each_answered_on_its_branch() -> None:
    call = Call(*make_core())
    offers = call.ringing()
    call.reply(PHONE, 183, "p1", SDP)
    call.reply(BROWSER, 183, "b1", SDP)
    answers = call.jobs()
    assert [(j.op, j.to_tag, j.via_branch) for j in answers] == [
        ("answer", "p1", offers[PHONE].via_branch), ("answer", "b1", offers[BROWSER].via_branch)]
    for j in answers:
        call.done(j, SDP)
    assert [r.status for r in call.to_caller] == [100, 183, 183]
    call.reply(BROWSER, 486, "b1")  # the browser declines: its leg goes, the phone rings on
    assert [(j.op, j.via_branch) for j in call.jobs()] == [("delete", offers[BROWSER].via_branch)]
    assert call.core.media_active("c-1")
    call.reply(PHONE, 200, "p1", SDP)
    (answer,) = call.jobs()
    assert answer.via_branch == offers[PHONE].via_branch
    call.done(answer, SDP)
    assert [r.status for r in call.to_caller][-1] == 200 and call.jobs() == []


def test_a_cancel_while_the_offers_are_at_the_relay_rings_nobody() -> None:
    call = Call(*make_core())
    offers = call.offers()
    call.core.receive(invite("CANCEL", b""), CALLER, call.clock.now)
    call.pump()
    assert [j.op for j in call.jobs()] == ["delete"]  # the whole call (whatever is at the relay by now)
    for job in offers.values():
        call.done(job, SDP)
    assert not any(p in call.requests for p in (PHONE, BROWSER))
    released = [(j.op, j.via_branch) for j in call.jobs()]
    assert released == [("delete", j.via_branch) for j in offers.values()] + [("delete", None)]  # (the 487's)
    assert [r.status for r in call.to_caller] == [100, 200, 487]


def test_an_offer_that_fails_for_one_branch_fails_that_branch_only() -> None:
    call = Call(*make_core())
    offers = call.offers()
    call.done(offers[BROWSER], None, (488, "Bad media flags"))
    call.done(offers[PHONE], SDP)
    assert BROWSER not in call.requests and len(call.requests[PHONE]) == 1
    assert call.jobs() == []  # nothing of the failed branch is at the relay
    call.reply(PHONE, 486, "p1")
    assert [(j.op, j.via_branch) for j in call.jobs()] == [("delete", offers[PHONE].via_branch), ("delete", None)]
    assert [r.status for r in call.to_caller] == [100, 486]  # the best of 486 and 488


def test_when_the_relay_fails_every_branch_the_caller_gets_its_503() -> None:
    call = Call(*make_core())
    for job in call.offers().values():
        call.done(job, None, (503, "Media relay timeout"))
    assert not any(p in call.requests for p in (PHONE, BROWSER))
    assert [(r.status, r.reason) for r in call.to_caller] == [(100, "Trying"), (503, "Media relay timeout")]


def test_a_branch_that_never_answers_is_released_when_timer_c_ends_it() -> None:
    call = Call(*make_core(timers={"timer_c": 200.0}))
    offers = call.ringing()
    call.reply(PHONE, 180, "p1")
    call.reply(BROWSER, 180, "b1")
    call.clock.advance(201)
    call.core.handle_timer(call.clock.now)
    call.pump()
    for port in (PHONE, BROWSER):
        assert call.requests[port][-1].method == "CANCEL"
    call.reply(BROWSER, 487, "b1")
    assert [(j.op, j.via_branch) for j in call.jobs()] == [("delete", offers[BROWSER].via_branch)]
    call.reply(PHONE, 487, "p1")
    assert [(j.op, j.via_branch) for j in call.jobs()] == [("delete", offers[PHONE].via_branch), ("delete", None)]
    assert call.to_caller[-1].status == 408


def test_branches_with_the_same_flags_share_one_offer_made_with_them() -> None:
    call = Call(*make_core(ports=(BROWSER, 7003)))
    call.core.receive(invite(), CALLER, call.clock.now)
    (offer,) = call.jobs()
    assert offer.via_branch is None and offer.flags == TO_BROWSER  # theirs, not rtpengine_manage()'s
    call.done(offer, SDP)
    assert len(call.requests[BROWSER]) == 1 and len(call.requests[7003]) == 1
    call.reply(7003, 200, "b3", SDP)
    answer, *_ = call.jobs()
    assert answer.via_branch is None and answer.flags == TO_BROWSER.for_answer()


def bridge_for(body: bytes, transports: list[str], caller: Flow = CALLER) -> list[Flags] | None:
    core, clock = make_core()
    ctx = RequestContext(core, m.parse(invite(body=body)), caller, clock.now)  # type: ignore[arg-type]
    ctx.targets = [BranchTarget(dest=Flow(t, ME, ("127.0.0.1", 9000 + i))) for i, t in enumerate(transports)]
    return webrtc_bridge(ctx)


def test_default_routing_bridges_a_mixed_fork_per_branch() -> None:
    browser_sdp = SDP + b"a=ice-ufrag:abcd\r\n"
    assert bridge_for(SDP, ["ws", "udp"]) == [TO_BROWSER, Flags()]  # a phone calls: the browser is bridged
    assert bridge_for(browser_sdp, ["wss", "udp", "tcp"]) == [Flags(), TO_PHONE, TO_PHONE]
    assert bridge_for(SDP, ["ws", "wss"]) == [TO_BROWSER, TO_BROWSER]  # all alike: one shared offer
    assert bridge_for(browser_sdp, ["udp"]) == [TO_PHONE]
    assert bridge_for(SDP, ["udp", "tcp"]) is None and bridge_for(browser_sdp, ["ws"]) is None


def test_default_routing_bridges_a_late_offer_by_the_callers_transport() -> None:
    """An INVITE without SDP: the callee's offer (in its 200) goes to the caller, so the
    flags are the caller's, alike on every branch; none when all callees are like it."""
    browser = Flow("wss", ME, ("127.0.0.1", 6001), conn_id=7)
    assert bridge_for(b"", ["ws"]) == [LATE_TO_PHONE]  # a phone calls a browser
    assert bridge_for(b"", ["ws", "udp"]) == [LATE_TO_PHONE, LATE_TO_PHONE]
    assert bridge_for(b"", ["udp"], caller=browser) == [LATE_TO_BROWSER]
    assert bridge_for(b"", ["wss", "udp"], caller=browser) == [LATE_TO_BROWSER, LATE_TO_BROWSER]
    assert bridge_for(b"", ["udp", "tcp"]) is None and bridge_for(b"", ["ws"], caller=browser) is None
    assert LATE_TO_PHONE.transport_protocol == "RTP/AVP" and LATE_TO_PHONE.codec_transcode == ("PCMU", "PCMA")
    assert LATE_TO_BROWSER.transport_protocol == "UDP/TLS/RTP/SAVPF" and LATE_TO_BROWSER.codec_transcode == ("opus",)
