"""Per-branch offers (rtpengine's ``via-branch``): a call forked to a browser and a phone
gets a DTLS-SRTP offer on one branch and a plain RTP offer on the other, each on a leg of
its own that is pending until that branch answers; answers, early media from both
branches, and the deletion of the branches that lost or never answered."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from sipedge.media import bencode
from sipedge.media.ng import NgClient, NgServer
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import MAX_LEGS, Flags, MediaRelay, RelayConfig, RelayError
from sipedge.media.rtp import RtpPacket
from sipedge.server.dtls import DtlsContext

CALLER = ("198.51.100.1", 2000)
PHONE = ("198.51.100.2", 4000)
TO_BROWSER = Flags(transport_protocol="UDP/TLS/RTP/SAVPF", ice="force", rtcp_mux=("require",))
BROWSER_ANSWER = (
    "v=0\r\no=- 9 1 IN IP4 203.0.113.20\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=audio 50000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 203.0.113.20\r\na=mid:0\r\n"
    "a=ice-ufrag:brow\r\na=ice-pwd:browserpasswordbrowser00\r\n"
    "a=fingerprint:sha-256 {fp}\r\na=setup:active\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n"
)
VIA_BROWSER, VIA_PHONE = "z9hG4bKbr.0", "z9hG4bKbr.1"


def sdp(addr: tuple[str, int]) -> bytes:
    """A plain phone's audio SDP at ``addr``."""
    host, port = addr
    return f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n".encode()


def port_of(out: bytes) -> int:
    found = re.search(rb"m=audio (\d+)", out)
    assert found is not None
    return int(found.group(1))


def rtp(seq: int, ssrc: int = 0x1234) -> bytes:
    return RtpPacket(0, seq, seq * 160, ssrc, b"\x55" * 160).serialize()


def forked(tmp_path: Path) -> tuple[MediaRelay, bytes, bytes, DtlsContext]:
    """Call "c" from "ft": offered on the browser's branch and on the phone's."""
    ctx = DtlsContext(tmp_path / "relay")
    r = MediaRelay(RelayConfig(advertised_address="203.0.113.1"), RangePortAllocator(40000, 40199, random.Random(5)),
                   dtls=ctx)
    to_browser = r.offer("c", "ft", sdp(CALLER), 0.0, TO_BROWSER, via_branch=VIA_BROWSER)
    to_phone = r.offer("c", "ft", sdp(CALLER), 0.0, Flags(), via_branch=VIA_PHONE)
    return r, to_browser, to_phone, ctx


def browser_answer(tmp_path: Path) -> bytes:
    return BROWSER_ANSWER.format(fp=DtlsContext(tmp_path / "browser").fingerprint.value).encode()


def test_each_branch_gets_its_own_offer_on_a_pending_leg(tmp_path: Path) -> None:
    r, to_browser, to_phone, ctx = forked(tmp_path)
    b, p = to_browser.decode(), to_phone.decode()
    assert "UDP/TLS/RTP/SAVPF" in b and "a=ice-ufrag:" in b and f"a=fingerprint:{ctx.fingerprint}" in b
    assert " RTP/AVP " in p and "a=ice" not in p and "a=fingerprint" not in p
    assert port_of(to_browser) != port_of(to_phone)
    call = r.query("c")
    assert call is not None
    assert [(leg.branch, leg.tags) for leg in call.legs] == [(VIA_BROWSER, ["ft", ""]), (VIA_PHONE, ["ft", ""])]
    # a retransmitted (or repeated) offer for a branch keeps that branch's leg and ports
    again = r.offer("c", "ft", sdp(CALLER), 0.1, Flags(), via_branch=VIA_PHONE)
    assert port_of(again) == port_of(to_phone) and len(call.legs) == 2


def test_the_phone_answers_media_flows_and_the_browser_branch_is_released(tmp_path: Path) -> None:
    r, to_browser, to_phone, _ = forked(tmp_path)
    to_caller = r.answer("c", "ft", "phone", sdp(PHONE), 1.0, via_branch=VIA_PHONE)
    pa, pb = port_of(to_caller), port_of(to_phone)
    assert r.receive(rtp(1), pa, CALLER, 1.1) == (pb, PHONE, rtp(1))
    assert r.receive(rtp(2, 0x99), pb, PHONE, 1.1) == (pa, CALLER, rtp(2, 0x99))
    ports = len(r.ports)
    assert r.delete("c", 1.2, "ft", via_branch=VIA_BROWSER) is not None  # the CANCELled branch
    assert port_of(to_browser) not in r.ports and len(r.ports) < ports and r.calls() == ["c"]
    assert r.receive(rtp(3), pa, CALLER, 1.3) == (pb, PHONE, rtp(3))  # the call goes on
    assert r.delete("c", 1.4, "ft", via_branch=VIA_BROWSER) is None  # once
    r.delete("c", 2.0)  # BYE
    assert r.ports == [] and r.calls() == []


def test_the_browser_answers_and_gets_a_dtls_answer_leg(tmp_path: Path) -> None:
    r, to_browser, to_phone, _ = forked(tmp_path)
    to_caller = r.answer("c", "ft", "browser", browser_answer(tmp_path), 1.0, TO_BROWSER.for_answer(),
                         via_branch=VIA_BROWSER).decode()
    assert " RTP/AVP " in to_caller and "a=fingerprint" not in to_caller and "a=ice" not in to_caller
    call = r.query("c")
    assert call is not None
    legs = {leg.branch: leg for leg in call.legs}
    assert legs[VIA_BROWSER].tags == ["ft", "browser"] and legs[VIA_PHONE].tags == ["ft", ""]
    assert legs[VIA_BROWSER].streams[1][0].dtls is not None  # the relay terminates DTLS towards it
    r.delete("c", 1.1, "ft", via_branch=VIA_PHONE)
    assert [leg.branch for leg in call.legs] == [VIA_BROWSER]
    r.delete("c", 2.0)
    assert r.ports == []


def test_early_media_from_both_branches_each_on_its_own_leg(tmp_path: Path) -> None:
    r, to_browser, to_phone, _ = forked(tmp_path)
    early_phone = r.answer("c", "ft", "phone", sdp(PHONE), 0.5, via_branch=VIA_PHONE)
    early_browser = r.answer("c", "ft", "browser", browser_answer(tmp_path), 0.6, TO_BROWSER.for_answer(),
                             via_branch=VIA_BROWSER)
    assert port_of(early_phone) != port_of(early_browser)  # two early dialogs for the caller
    call = r.query("c")
    assert call is not None
    assert sorted((leg.branch or "", leg.tags[1]) for leg in call.legs) == [(VIA_BROWSER, "browser"), (VIA_PHONE, "phone")]
    # the phone's early media reaches the caller on the phone leg's port
    assert r.receive(rtp(1, 7), port_of(to_phone), PHONE, 0.7) == (port_of(early_phone), CALLER, rtp(1, 7))
    # the phone's 200 (same to-tag) completes its leg: no new one
    final = r.answer("c", "ft", "phone", sdp(PHONE), 1.0, via_branch=VIA_PHONE)
    assert port_of(final) == port_of(early_phone) and len(call.legs) == 2
    # a second to-tag on the phone's branch (forked again further on) shares that branch's offer
    r.answer("c", "ft", "phone2", sdp(("198.51.100.3", 4000)), 1.1, via_branch=VIA_PHONE)
    assert [leg.branch for leg in call.legs].count(VIA_PHONE) == 2
    r.delete("c", 2.0)
    assert r.ports == []


def test_a_branch_that_never_answers_goes_alone_and_the_last_leg_takes_the_call(tmp_path: Path) -> None:
    r, to_browser, to_phone, _ = forked(tmp_path)
    assert r.delete("c", 1.0, "ft", via_branch="z9hG4bKother") is None  # no such branch: nothing goes
    assert r.calls() == ["c"]
    r.delete("c", 1.0, "ft", via_branch=VIA_BROWSER)  # its Timer C fired, 487
    assert r.calls() == ["c"] and port_of(to_browser) not in r.ports and port_of(to_phone) in r.ports
    r.delete("c", 1.1, "ft", via_branch=VIA_PHONE)  # and the other one failed too
    assert r.calls() == [] and r.ports == []


def test_an_answer_from_a_branch_never_offered_is_refused(tmp_path: Path) -> None:
    r, *_ = forked(tmp_path)
    with pytest.raises(RelayError) as err:
        r.answer("c", "ft", "x", sdp(PHONE), 1.0, via_branch="z9hG4bKforged")
    assert err.value.hint[0] == 488
    call = r.query("c")
    assert call is not None and len(call.legs) == 2


def test_a_call_cannot_grow_legs_without_bound(tmp_path: Path) -> None:
    """An ng client (or a routing module) offering one call for ever more branches, or a
    callee side answering with ever more to-tags, stops at MAX_LEGS: 503, counted."""
    r = MediaRelay(RelayConfig(advertised_address="203.0.113.1"), RangePortAllocator(40000, 49999, random.Random(2)))
    for i in range(MAX_LEGS):
        r.offer("c", "ft", sdp(CALLER), 0.0, via_branch=f"z9hG4bK{i}")
    ports = len(r.ports)
    for attempt in (lambda: r.offer("c", "ft", sdp(CALLER), 0.0, via_branch="z9hG4bKmore"),
                    lambda: [r.answer("c", "ft", f"t{i}", sdp(PHONE), 0.1, via_branch="z9hG4bK0") for i in range(2)]):
        with pytest.raises(RelayError) as err:
            attempt()
        assert err.value.hint == (503, "Too many media branches")
    assert r.counters["media_legs_refused"] == 2 and len(r.ports) == ports + 2  # (t0 completed branch 0's leg)
    r.delete("c", 1.0)
    assert r.ports == []


def test_reinvites_in_the_dialog_find_the_winning_leg_by_tags(tmp_path: Path) -> None:
    r, to_browser, to_phone, _ = forked(tmp_path)
    to_caller = r.answer("c", "ft", "phone", sdp(PHONE), 1.0, via_branch=VIA_PHONE)
    r.delete("c", 1.1, "ft", via_branch=VIA_BROWSER)
    moved = ("198.51.100.2", 4100)
    out = r.offer("c", "phone", sdp(moved), 2.0, to_tag="ft")  # the phone re-INVITEs
    assert port_of(out) == port_of(to_caller)
    back = r.answer("c", "phone", "ft", sdp(CALLER), 2.1)
    assert port_of(back) == port_of(to_phone)
    assert r.receive(rtp(5), port_of(to_caller), CALLER, 2.2) == (port_of(to_phone), moved, rtp(5))


def ng(srv: NgServer, cookie: bytes, body: dict[str, Any]) -> dict[str, Any]:
    reply = srv.handle(cookie + b" " + bencode.encode(body), 1.0)
    assert reply is not None
    return NgClient.parse_reply(reply)[1]


def test_ng_via_branch_in_offer_answer_and_delete(tmp_path: Path) -> None:
    relay = MediaRelay(RelayConfig(advertised_address="203.0.113.1"), RangePortAllocator(30000, 30099, random.Random(1)))
    srv = NgServer(relay)
    client = NgClient()
    _, data = client.offer("c", "ft", sdp(CALLER), Flags(), via_branch=VIA_BROWSER)
    assert b"10:via-branch" in data
    base = {"call-id": "c", "from-tag": "ft", "sdp": sdp(CALLER)}
    for cookie, via in ((b"o1", VIA_BROWSER), (b"o2", VIA_PHONE)):
        assert ng(srv, cookie, {"command": "offer", "via-branch": via, **base})["result"] == "ok"
    call = relay.query("c")
    assert call is not None and [leg.branch for leg in call.legs] == [VIA_BROWSER, VIA_PHONE]
    answer = {"command": "answer", "call-id": "c", "from-tag": "ft", "to-tag": "t2", "sdp": sdp(PHONE)}
    assert ng(srv, b"a1", {**answer, "via-branch": VIA_PHONE})["result"] == "ok"
    assert [leg.tags[1] for leg in call.legs] == ["", "t2"]
    assert ng(srv, b"a2", {**answer, "to-tag": "t9", "via-branch": "z9hG4bKnone"})["result"] == "error"
    assert ng(srv, b"d1", {"command": "delete", "call-id": "c", "from-tag": "ft", "via-branch": VIA_BROWSER}) \
        ["result"] == "ok"
    assert [leg.branch for leg in call.legs] == [VIA_PHONE] and relay.calls() == ["c"]
    ng(srv, b"d2", {"command": "delete", "call-id": "c", "from-tag": "ft"})
    assert relay.calls() == [] and relay.ports == []
    assert re.search(rb"10:via-branch", client.delete("c", "ft", via_branch=VIA_PHONE)[1])
