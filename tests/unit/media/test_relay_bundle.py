"""BUNDLE across the WebRTC bridge and the relay's own sender reports, in the core with
real DTLS associations on both ends: a browser's audio and video on one 5-tuple reach a
phone with a port per m= line and come back on the one association; a phone's two-port
offer reaches the browser as one BUNDLE group; the SR the relay sends the browser carries
the NTP time, the RTP timestamp of that instant and what it sent."""

from __future__ import annotations

import random
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.ice_check import binding_request
from sipedge.media.bundle import MID_URI, Bundle, mid_of
from sipedge.media.ng import flags_from_request, flags_to_request
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig, RelayError, Stream
from sipedge.media.rtcp import NTP_EPOCH_OFFSET, RELAY_SSRC, RR, SR, RtcpPacket, sender_report
from sipedge.media.srtp import SrtpTransform
from sipedge.server.dtls import DtlsContext

BROWSER = ("203.0.113.20", 50000)
PHONE_AUDIO, PHONE_VIDEO = ("198.51.100.9", 4000), ("198.51.100.9", 4002)
TO_PHONE = Flags(transport_protocol="RTP/AVP", ice="remove", rtcp_mux=("demux",))
TO_BROWSER = Flags(transport_protocol="UDP/TLS/RTP/SAVPF", ice="force", rtcp_mux=("require",))
WALL = 1_800_000_000.0  # the relay's wall clock (Unix time) at now = 0


def browser_offer(fingerprint: str) -> bytes:
    """aiortc's shape: audio and video in one BUNDLE group, the MID extension as id 1."""
    common = ("a=ice-ufrag:brow\r\na=ice-pwd:browserpasswordbrowser00\r\n"
              f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\na=rtcp-mux\r\n"
              f"a=extmap:1 {MID_URI}\r\n")
    return (
        "v=0\r\no=- 1 1 IN IP4 203.0.113.20\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
        "m=audio 50000 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 203.0.113.20\r\na=mid:0\r\n" + common +
        "a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
        "m=video 50000 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 203.0.113.20\r\na=mid:1\r\n" + common +
        "a=rtpmap:96 VP8/90000\r\n"
    ).encode()


PHONE_SDP = (
    b"v=0\r\no=p 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    b"m=video 4002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
)


def rtp(seq: int, pt: int = 0, ssrc: int = 0xB0B, ext: bytes = b"", size: int = 160) -> bytes:
    b0 = 0x90 if ext else 0x80
    head = struct.pack("!BBHII", b0, pt, seq, seq * 160, ssrc)
    if ext:
        ext += b"\x00" * (-len(ext) % 4)
        head += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    return head + bytes([seq & 0xFF]) * size


def one_byte_mid(mid: bytes, ident: int = 1) -> bytes:
    return bytes([(ident << 4) | (len(mid) - 1)]) + mid


def _port(sdp: str, media: str) -> int:
    found = re.search(rf"^m={media} (\d+)", sdp, re.M)
    assert found is not None, sdp
    return int(found.group(1))


def _handshake(r: MediaRelay, relay_ctx: DtlsContext, browser_ctx: DtlsContext, to_browser: str,
               client: bool) -> SrtpTransform:
    """ICE check from the browser, then the DTLS flights until both ends have keys."""
    port = _port(to_browser, "audio")
    ufrag = re.search(r"a=ice-ufrag:(\S+)", to_browser).group(1)  # type: ignore[union-attr]
    pwd = re.search(r"a=ice-pwd:(\S+)", to_browser).group(1)  # type: ignore[union-attr]
    assert r.receive(binding_request(ufrag, pwd), port, BROWSER, 0.2) is not None
    browser = browser_ctx("client" if client else "server", [relay_ctx.fingerprint])
    pending = browser.start(0.3) if client else []
    for _ in range(8):
        for datagram in pending:
            assert r.receive(datagram, port, BROWSER, 0.3) is None
        pending = []
        for _, dest, datagram in r.output():
            assert dest == BROWSER
            pending += browser.receive(datagram, 0.3)
        if browser.keys is not None and r.stats()["media_dtls_established"]:
            break
    assert browser.keys is not None and r.stats()["media_dtls_established"] == 1
    return SrtpTransform(browser.keys)


def _relay(tmp: Path) -> tuple[MediaRelay, DtlsContext, DtlsContext]:
    relay_ctx, browser_ctx = DtlsContext(tmp / "relay"), DtlsContext(tmp / "browser")
    r = MediaRelay(RelayConfig(advertised_address="192.0.2.1"), RangePortAllocator(40000, 40099, random.Random(3)),
                   dtls=relay_ctx, wall_clock=lambda: WALL)
    return r, relay_ctx, browser_ctx


def test_a_browsers_bundle_reaches_a_phone_with_a_port_per_section(tmp_path: Path) -> None:
    r, relay_ctx, browser_ctx = _relay(tmp_path)
    to_phone = r.offer("c", "browser", browser_offer(browser_ctx.fingerprint.value), 0.0, TO_PHONE).decode()
    assert "a=group:BUNDLE" not in to_phone and _port(to_phone, "audio") != _port(to_phone, "video")
    assert "a=rtcp-mux" not in to_phone and to_phone.count("a=rtcp:") == 2  # separate RTCP ports
    to_browser = r.answer("c", "browser", "phone", PHONE_SDP, 0.1, TO_PHONE.for_answer()).decode()
    assert "a=group:BUNDLE 0 1" in to_browser
    port = _port(to_browser, "audio")
    assert _port(to_browser, "video") == port and to_browser.count(f"a=extmap:1 {MID_URI}") == 2
    assert len(set(re.findall(r"a=ice-ufrag:(\S+)", to_browser))) == 1
    srtp = _handshake(r, relay_ctx, browser_ctx, to_browser, client=True)
    assert r.stats()["media_dtls_associations"] == 1  # one association for the group
    audio_port, video_port = _port(to_phone, "audio"), _port(to_phone, "video")

    # browser -> phone: by MID, then by the SSRC that taught, then by payload type
    video = rtp(1, 96, 0xF1DE0, one_byte_mid(b"1"))
    assert r.receive(srtp.protect(video, False), port, BROWSER, 0.4) == (video_port, PHONE_VIDEO, video)
    again = rtp(2, 96, 0xF1DE0)
    assert r.receive(srtp.protect(again, False), port, BROWSER, 0.42) == (video_port, PHONE_VIDEO, again)
    audio = rtp(1, 0, 0xA0D10)  # (PCMU: the answer kept only what the phone takes)
    assert r.receive(srtp.protect(audio, False), port, BROWSER, 0.44) == (audio_port, PHONE_AUDIO, audio)
    stray = rtp(1, 77, 0x5757)  # no MID, unknown SSRC, a payload type of no section
    assert r.receive(srtp.protect(stray, False), port, BROWSER, 0.46) is None
    assert r.stats()["media_bundle_unmatched"] == 1 and r.stats()["media_bundle_demuxed"] == 3

    # phone -> browser: both sections out of the one port, encrypted with the one association
    for i, (src, dest_port) in enumerate(((PHONE_AUDIO, audio_port), (PHONE_VIDEO, video_port))):
        sent = r.receive(rtp(5, 0 if i == 0 else 96, 0x1000 + i), dest_port, src, 0.5)
        assert sent is not None and sent[:2] == (port, BROWSER)
        assert srtp.unprotect(sent[2], False) == rtp(5, 0 if i == 0 else 96, 0x1000 + i)
    # browser RTCP about the phone's video SSRC goes to the phone's video RTCP port
    rr = RtcpPacket(RR, 1, 0xA0D10, struct.pack("!IIIIII", 0x1001, 0, 5, 0, 0, 0)).serialize()
    got = r.receive(srtp.protect(rr, True), port, BROWSER, 0.6)
    assert got == (video_port + 1, (PHONE_VIDEO[0], PHONE_VIDEO[1] + 1), rr)
    # the phone's video RTCP goes to the browser on the bundled port
    phone_sr = sender_report(0x1001, WALL, 800, 1, 160)
    sent = r.receive(phone_sr, video_port + 1, (PHONE_VIDEO[0], PHONE_VIDEO[1] + 1), 0.7)
    assert sent is not None and sent[:2] == (port, BROWSER) and srtp.unprotect(sent[2], True) == phone_sr

    # a re-offer (same ICE and fingerprint) keeps the group, its port and its association
    r.offer("c", "browser", browser_offer(browser_ctx.fingerprint.value), 1.0, TO_PHONE)
    again = r.answer("c", "browser", "phone", PHONE_SDP, 1.1, TO_PHONE.for_answer()).decode()
    assert _port(again, "audio") == _port(again, "video") == port and "a=group:BUNDLE 0 1" in again
    later = rtp(3, 96, 0xF1DE0)
    assert r.receive(srtp.protect(later, False), port, BROWSER, 1.2) == (video_port, PHONE_VIDEO, later)
    assert r.stats()["media_dtls_associations"] == 1


def test_a_phones_two_port_offer_reaches_the_browser_as_one_bundle(tmp_path: Path) -> None:
    r, relay_ctx, browser_ctx = _relay(tmp_path)
    to_browser = r.offer("c", "phone", PHONE_SDP, 0.0, TO_BROWSER).decode()
    assert "a=group:BUNDLE 0 1" in to_browser and "a=mid:0" in to_browser and "a=mid:1" in to_browser
    assert _port(to_browser, "audio") == _port(to_browser, "video")
    assert to_browser.count("a=rtcp-mux") == 2 and to_browser.count(f"{MID_URI}") == 2
    assert len(set(re.findall(r"a=ice-ufrag:(\S+)", to_browser))) == 1
    assert len(set(re.findall(r"a=candidate:.* (\d+) typ host", to_browser))) == 1
    answer = browser_offer(browser_ctx.fingerprint.value).replace(b"a=setup:actpass", b"a=setup:active")
    to_phone = r.answer("c", "phone", "browser", answer, 0.1, TO_BROWSER.for_answer()).decode()
    assert "a=group" not in to_phone and _port(to_phone, "audio") != _port(to_phone, "video")
    srtp = _handshake(r, relay_ctx, browser_ctx, to_browser, client=True)
    port = _port(to_browser, "audio")
    video = rtp(1, 96, 0xF1DE0, one_byte_mid(b"1"))
    assert r.receive(srtp.protect(video, False), port, BROWSER, 0.4) == (_port(to_phone, "video"), PHONE_VIDEO, video)
    audio = rtp(1, 0, 0xA0D10, one_byte_mid(b"0"))
    assert r.receive(srtp.protect(audio, False), port, BROWSER, 0.4) == (_port(to_phone, "audio"), PHONE_AUDIO, audio)
    # the phone's re-offer (hold) keeps one group on the one port
    hold = r.offer("c", "phone", PHONE_SDP.replace(b"o=p 1 1", b"o=p 1 2") + b"a=sendonly\r\n", 1.0,
                   TO_BROWSER).decode()
    assert _port(hold, "audio") == _port(hold, "video") == port and "a=group:BUNDLE 0 1" in hold
    assert r.stats()["media_ports_in_use"] == 1 + 4  # the bundled port, the phone's two pairs


def _reports(r: MediaRelay, srtp: SrtpTransform, now: float,
             to_phone: list[tuple[int, tuple[str, int], bytes]] | None = None) -> list[RtcpPacket]:
    """The relay's reports to the browser, decrypted; those to the phone into ``to_phone``."""
    r.handle_timer(now)
    out: list[RtcpPacket] = []
    for port, dest, datagram in r.output():
        if dest != BROWSER and to_phone is not None:
            to_phone.append((port, dest, datagram))
            continue
        assert dest == BROWSER
        plain = srtp.unprotect(datagram, True)
        assert plain is not None
        out += RtcpPacket.parse_compound(plain)
    return out


@pytest.mark.parametrize("generate", [None, "on", "off"])
def test_the_relay_sends_the_browser_sender_reports_for_the_phones_media(tmp_path: Path, generate: str | None) -> None:
    r, relay_ctx, browser_ctx = _relay(tmp_path)
    flags = Flags(transport_protocol="RTP/AVP", ice="remove", rtcp_mux=("demux",), generate_rtcp=generate)
    to_phone_offer = r.offer("c", "browser", browser_offer(browser_ctx.fingerprint.value), 0.0, flags).decode()
    to_browser = r.answer("c", "browser", "phone", PHONE_SDP, 0.1, flags.for_answer()).decode()
    srtp = _handshake(r, relay_ctx, browser_ctx, to_browser, client=True)
    port, audio_port = _port(to_browser, "audio"), _port(to_phone_offer, "audio")
    for seq in range(1, 11):  # the browser's audio, and 50 of the phone's PCMU packets of 160 bytes
        r.receive(srtp.protect(rtp(seq, 0, 0xA0D10), False), port, BROWSER, 0.3 + seq * 0.02)
    for seq in range(50):
        assert r.receive(struct.pack("!BBHII", 0x80, 0, seq, 8000 + 160 * seq, 0x1000) + bytes(160),
                         audio_port, PHONE_AUDIO, 1.0 + seq * 0.02) is not None
    for seq in range(5):  # and 5 of its video packets, in the other section of the group
        assert r.receive(rtp(seq, 96, 0x2000, size=1000), _port(to_phone_offer, "video"), PHONE_VIDEO, 2.0) is not None
    last_arrival = 1.0 + 49 * 0.02
    at = 6.0
    to_phone: list[tuple[int, tuple[str, int], bytes]] = []
    reports = _reports(r, srtp, at, to_phone)
    if generate == "off":
        assert reports == [] and to_phone == [] and r.stats()["media_rtcp_generated"] == 0
        return
    if generate is None:
        assert to_phone == []  # by default only the browser gets the relay's reports
    else:  # "on": the phone too, plain RTCP on each section's RTCP port
        assert r.stats()["media_rtcp_generated"] == 4
        (audio_out, audio_to, audio_rtcp), (video_out, video_to, video_rtcp) = to_phone
        assert (audio_out, audio_to) == (audio_port + 1, (PHONE_AUDIO[0], PHONE_AUDIO[1] + 1))
        (sr,) = RtcpPacket.parse_compound(audio_rtcp)
        assert sr.packet_type == SR and sr.ssrc == 0xA0D10  # from the browser's SSRC
        assert struct.unpack_from("!QIII", sr.body)[2:] == (10, 10 * 160)  # what the relay forwarded
        assert struct.unpack_from("!II", sr.body, 20) == (0x1000, 0) and struct.unpack_from("!I", sr.body, 28)[0] == 49
        video_phone_port = _port(to_phone_offer, "video")
        assert (video_out, video_to) == (video_phone_port + 1, (PHONE_VIDEO[0], PHONE_VIDEO[1] + 1))
        (rr,) = RtcpPacket.parse_compound(video_rtcp)  # the browser sent no video: an RR from the relay
        assert rr.packet_type == RR and rr.ssrc == RELAY_SSRC and struct.unpack_from("!I", rr.body)[0] == 0x2000
    srs = [p for p in reports if p.packet_type == SR]
    assert [p.ssrc for p in srs] == [0x1000, 0x2000]  # the phone's SSRC of each section
    assert struct.unpack_from("!II", srs[1].body, 12) == (5, 5 * 1000)
    ntp, rtp_ts, packets, octets = struct.unpack_from("!QIII", srs[0].body)
    assert ntp == int((WALL + NTP_EPOCH_OFFSET) * 2**32)
    assert rtp_ts == 8000 + 160 * 49 + round((at - last_arrival) * 8000)  # the same instant, in RTP time
    assert (packets, octets) == (50, 50 * 160)
    block = srs[0].body[20:44]
    assert srs[0].count == 1 and struct.unpack_from("!I", block)[0] == 0xA0D10  # what the browser sent
    assert struct.unpack_from("!I", block, 8)[0] == 10  # its highest sequence number
    # the phone starts sending RTCP of its own for audio: by default the relay stops
    # reporting that section (only), "on" goes on
    r.receive(sender_report(0x1000, WALL, 0, 1, 1), audio_port + 1, (PHONE_AUDIO[0], PHONE_AUDIO[1] + 1), 8.0)
    r.output()
    later = [p.ssrc for p in _reports(r, srtp, 11.1, []) if p.packet_type == SR]
    assert later == ([0x1000, 0x2000] if generate == "on" else [0x2000])


def test_the_mid_extension_in_both_forms_and_what_is_no_mid() -> None:
    ids = frozenset({3})
    one = rtp(1, ext=b"\x10\xaa" + one_byte_mid(b"video", 3))  # another element, then the MID
    assert mid_of(one, ids) == b"video"
    two = struct.pack("!BBHII", 0x90, 96, 1, 0, 1) + struct.pack("!HH", 0x1000, 2) + b"\x03\x05video\x00"
    assert mid_of(two, ids) == b"video"
    assert mid_of(rtp(1, ext=one_byte_mid(b"x", 4)), ids) is None  # another id
    assert mid_of(rtp(1, ext=b"\xf0x"), ids) is None  # id 15 ends the list
    truncated = struct.pack("!BBHII", 0x90, 96, 1, 0, 1) + struct.pack("!HH", 0xBEDE, 9) + b"\x35vid"
    assert mid_of(truncated, ids) is None
    assert mid_of(rtp(1), ids) is None


def _bundle() -> tuple[Bundle, Stream, Stream]:
    from sipedge.media.model import Call, Leg

    call = Call("c", 0.0)
    leg = Leg(["a", "b"], 0.0)
    audio, video = Stream(call, leg, 0, 0), Stream(call, leg, 0, 1)
    audio.peer, video.peer = Stream(call, leg, 1, 0), Stream(call, leg, 1, 1)
    video.peer.rtp_stats.ssrc = 0x1001  # the phone's video SSRC
    return Bundle([audio, video], ["0", "1"], [{111, 0, 101}, {96, 101}], {1}), audio, video


def test_demux_by_mid_then_ssrc_then_a_payload_type_of_one_section() -> None:
    b, audio, video = _bundle()
    assert b.route_rtp(rtp(1, 111, 7)) is audio  # payload type of the audio section only
    assert b.route_rtp(rtp(2, 96, 7)) is audio  # SSRC 7 was learned as audio's
    assert b.route_rtp(rtp(1, 0, 8, one_byte_mid(b"1"))) is video  # the MID beats the payload type
    assert b.route_rtp(rtp(1, 101, 9)) is None  # telephone-event is in both sections
    assert b.route_rtp(rtp(1, 96, 9)[:11]) is None
    rr_about_video = RtcpPacket(RR, 1, 0x999, struct.pack("!IIIIII", 0x1001, 0, 0, 0, 0, 0)).serialize()
    assert b.route_rtcp(rr_about_video) is video  # a report block on the phone's video SSRC
    assert b.route_rtcp(RtcpPacket(SR, 0, 7, bytes(20)).serialize()) is audio  # sender SSRC 7: audio's
    assert b.route_rtcp(RtcpPacket(RR, 0, 0x4242, b"").serialize()) is None


@given(st.binary(max_size=200))
def test_any_bytes_into_the_bundle_demux_never_raise(data: bytes) -> None:
    b, _, _ = _bundle()
    b.route_rtp(data)
    b.route_rtcp(data)
    mid_of(data, frozenset({1, 3}))


@given(st.lists(st.binary(max_size=120), max_size=8))
def test_any_datagrams_into_the_bundled_port_never_raise(tmp_path_factory: pytest.TempPathFactory,
                                                          datagrams: list[bytes]) -> None:
    """Arbitrary datagrams, plain and SRTP-protected with the browser's real keys (after
    a real RTP header, so they pass authentication), into the bundled port: dropped or
    routed, counted, never an exception."""
    r, srtp, port = _bundled_call(tmp_path_factory)
    for i, data in enumerate(datagrams):
        r.receive(data, port, BROWSER, 1.0 + i)
        wire = srtp.protect(struct.pack("!BBHII", 0x90 if i % 2 else 0x80, 96, i, 0, 0x77) + data, False)
        if wire is not None:
            r.receive(wire, port, BROWSER, 1.0 + i)
        wire = srtp.protect(RtcpPacket(RR, 0, 0x77, b"").serialize() + data, True)
        if wire is not None:
            r.receive(wire, port, BROWSER, 1.0 + i)


_CALLS: dict[str, tuple[MediaRelay, SrtpTransform, int]] = {}


def _bundled_call(factory: pytest.TempPathFactory) -> tuple[MediaRelay, SrtpTransform, int]:
    """One bundled call for all the examples (a handshake per example would be slow)."""
    if "call" not in _CALLS:
        r, relay_ctx, browser_ctx = _relay(factory.mktemp("bundle"))
        r.offer("c", "browser", browser_offer(browser_ctx.fingerprint.value), 0.0, TO_PHONE)
        to_browser = r.answer("c", "browser", "phone", PHONE_SDP, 0.1, TO_PHONE.for_answer()).decode()
        srtp = _handshake(r, relay_ctx, browser_ctx, to_browser, client=True)
        _CALLS["call"] = (r, srtp, _port(to_browser, "audio"))
    return _CALLS["call"]


def test_generate_rtcp_as_ng_key_and_as_kamailio_flag() -> None:
    assert flags_from_request({"generate-rtcp": b"off"}).generate_rtcp == "off"
    assert flags_from_request({"flags": [b"generate-RTCP"]}).generate_rtcp == "on"
    assert flags_from_request({"flags": [b"generate-RTCP=off"]}).generate_rtcp == "off"
    assert flags_from_request({}).generate_rtcp is None
    sent = flags_to_request(Flags(generate_rtcp="off"))  # our ng client, to our server or rtpengine
    assert sent["generate RTCP"] == "off"
    assert flags_from_request({k.lower().replace(" ", "-"): v for k, v in sent.items()}).generate_rtcp == "off"
    with pytest.raises(RelayError, match="generate-RTCP must be on or off"):
        flags_from_request({"generate-rtcp": b"sometimes"})
