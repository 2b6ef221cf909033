"""Relay forwarding: latching, strangers, re-latching, RTCP, timeouts, forks, ICE-lite STUN."""

from __future__ import annotations

import hmac
import random
import re
import struct
import zlib

from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import CallDeleted, Flags, MediaRelay, RelayConfig, StreamLatched
from sipedge.media.rtp import RtpPacket
from sipedge.stun.attributes import UseCandidate
from sipedge.stun.message import MAGIC_COOKIE

A = ("198.51.100.1", 2000)
B = ("198.51.100.2", 4000)


def sdp(addr: tuple[str, int], extra: str = "") -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {addr[0]}\r\ns=-\r\nc=IN IP4 {addr[0]}\r\nt=0 0\r\n"
        f"m=audio {addr[1]} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n{extra}"
    ).encode()


def port_of(out: bytes) -> int:
    m = re.search(rb"m=audio (\d+)", out)
    assert m
    return int(m.group(1))


def rtp(seq: int, ssrc: int = 0x1234, ts: int | None = None) -> bytes:
    return RtpPacket(0, seq & 0xFFFF, (seq * 160) if ts is None else ts, ssrc, b"\xff" * 160).serialize()


def setup(**cfg: object) -> tuple[MediaRelay, int, int]:
    r = MediaRelay(RelayConfig(advertised_address="203.0.113.1", **cfg), RangePortAllocator(40000, 40099, random.Random(3)))  # type: ignore[arg-type]
    to_b = r.offer("call", "ft", sdp(A), 0.0)
    to_a = r.answer("call", "ft", "tt", sdp(B), 0.0)
    return r, port_of(to_a), port_of(to_b)  # A sends to pa, B sends to pb


def test_forwarding_both_ways_and_stats() -> None:
    r, pa, pb = setup()
    for i in range(50):
        assert r.receive(rtp(i), pa, A, 1.0 + i * 0.02) == (pb, B, rtp(i))
        assert r.receive(rtp(i, 99), pb, B, 1.0 + i * 0.02) == (pa, A, rtp(i, 99))
    ev = r.events()
    assert [e for e in ev if isinstance(e, StreamLatched)] == [
        StreamLatched("call", "ft", 0, 1, A, False),
        StreamLatched("call", "tt", 0, 1, B, False),
    ]
    call = r.query("call")
    assert call is not None
    a_stream = call.legs[0].streams[0][0]
    assert a_stream.rtp_stats.packets == 50
    assert a_stream.rtp_stats.lost == 0
    totals = r.delete("call", 5.0)
    assert totals is not None and totals["rtp_packets"] == 100 and totals["bytes"] == 100 * 172
    assert r.ports == []
    assert r.stats()["media_packets_relayed"] == 100
    assert isinstance(r.events()[-1], CallDeleted)


def test_nat_latching_sends_to_real_source_not_sdp() -> None:
    r, pa, pb = setup()
    nat_b = ("192.0.2.77", 61000)  # B's SDP said 198.51.100.2:4000, its packets come from here
    assert r.receive(rtp(1), pa, A, 1.0) == (pb, B, rtp(1))  # before B speaks: SDP address
    assert r.receive(rtp(1, 7), pb, nat_b, 1.0) == (pa, A, rtp(1, 7))
    assert r.receive(rtp(2), pa, A, 1.02) == (pb, nat_b, rtp(2))  # latched


def test_strangers_dropped_and_counted_session_unaffected() -> None:
    r, pa, pb = setup()
    r.receive(rtp(1), pa, A, 1.0)
    for i in range(1000):
        assert r.receive(rtp(i, 0xBAD), pa, ("192.0.2.66", 1000 + i), 1.0 + i * 0.0001) is None
    assert r.stats()["media_packets_dropped_stranger"] == 1000
    assert r.receive(rtp(2), pa, A, 1.2) == (pb, B, rtp(2))
    # unknown port and empty datagram
    assert r.receive(rtp(1), 1, A, 1.0) is None
    assert r.receive(b"", pa, A, 1.0) is None
    s = r.stats()
    assert s["media_packets_dropped_unknown_port"] == 1 and s["media_packets_dropped_malformed"] == 1


def test_relatch_on_nat_rebinding_needs_silence_and_same_ssrc() -> None:
    r, pa, pb = setup(relatch_idle=0.5)
    r.receive(rtp(1), pa, A, 1.0)
    moved = ("198.51.100.1", 2999)
    assert r.receive(rtp(2), pa, moved, 1.1) is None  # old binding still fresh
    assert r.receive(rtp(2, ssrc=0xEE), pa, moved, 2.0) is None  # silent, but a foreign SSRC
    assert r.receive(rtp(3), pa, moved, 2.0) == (pb, B, rtp(3))  # same SSRC after silence
    assert r.receive(rtp(4), pa, A, 2.01) is None  # old address is now the stranger
    latched = [e for e in r.events() if isinstance(e, StreamLatched)]
    assert latched[-1] == StreamLatched("call", "ft", 0, 1, moved, True)


def test_strict_source_only_expected_address() -> None:
    r, pa, _pb = setup(strict_source=True)
    assert r.receive(rtp(1), pa, ("192.0.2.1", 2000), 1.0) is None
    assert r.receive(rtp(1), pa, A, 1.0) is not None


def test_asymmetric_sends_to_sdp_address() -> None:
    r = MediaRelay(RelayConfig(), RangePortAllocator(40000, 40099, random.Random(1)))
    to_b = r.offer("c", "f", sdp(A), 0.0, Flags(symmetric=False))
    to_a = r.answer("c", "f", "t", sdp(B), 0.0, Flags(symmetric=False))
    pa, pb = port_of(to_a), port_of(to_b)
    assert r.receive(rtp(1), pa, ("192.0.2.1", 1), 1.0) == (pb, B, rtp(1))
    assert r.receive(rtp(1), pb, ("192.0.2.2", 2), 1.0) == (pa, A, rtp(1))


def test_rtcp_on_pair_port_and_muxed() -> None:
    r, pa, pb = setup()
    rtcp_rr = bytes([0x80, 201, 0, 1]) + struct.pack("!I", 0x1234)
    assert r.receive(rtcp_rr, pa + 1, (A[0], A[1] + 1), 1.0) == (pb + 1, (B[0], B[1] + 1), rtcp_rr)
    # a muxing pair: RTCP arrives on the RTP port and leaves on the RTP port
    r2 = MediaRelay(RelayConfig(), RangePortAllocator(40000, 40099, random.Random(1)))
    to_b = r2.offer("c", "f", sdp(A, "a=rtcp-mux\r\n"), 0.0)
    to_a = r2.answer("c", "f", "t", sdp(B, "a=rtcp-mux\r\n"), 0.0)
    qa, qb = port_of(to_a), port_of(to_b)
    assert r2.receive(rtcp_rr, qa, A, 1.0) == (qb, B, rtcp_rr)
    call = r2.query("c")
    assert call is not None and call.legs[0].streams[0][0].rtcp_stats.packets == 1


def test_loss_and_jitter() -> None:
    r, pa, _pb = setup()
    for i in list(range(10)) + list(range(15, 20)):
        r.receive(rtp(i), pa, A, 1.0 + i * 0.02)
    call = r.query("call")
    assert call is not None
    st = call.legs[0].streams[0][0].rtp_stats
    assert (st.expected, st.rtp_packets, st.lost) == (20, 15, 5)
    assert st.jitter_ms < 0.01
    # sequence wrap-around is not loss
    r2, qa, _ = setup()
    for i in range(65530, 65546):
        r2.receive(rtp(i), qa, A, 1.0 + (i - 65530) * 0.02)
    c2 = r2.query("call")
    assert c2 is not None and c2.legs[0].streams[0][0].rtp_stats.lost == 0
    assert c2.legs[0].streams[0][0].rtp_stats.expected == 16


def test_timeout_deletes_and_reports() -> None:
    r, pa, _pb = setup(timeout=10.0, sweep_interval=1.0)
    r.receive(rtp(1), pa, A, 5.0)
    t = r.get_timer()
    assert t is not None
    now = t
    while r.calls() and now < 30:
        r.handle_timer(now)
        nxt = r.get_timer()
        now = nxt if nxt is not None else now + 1
    assert r.calls() == []
    assert 15.0 <= now <= 16.5
    deleted = [e for e in r.events() if isinstance(e, CallDeleted)]
    assert deleted == [CallDeleted("call", "timeout", deleted[0].totals)]
    assert deleted[0].totals["rtp_packets"] == 1
    assert r.get_timer() is None and r.ports == []


def test_hold_uses_hold_timeout() -> None:
    r, pa, _pb = setup(timeout=10.0, hold_timeout=100.0)
    r.receive(rtp(1), pa, A, 0.5)
    r.offer("call", "ft", sdp(A, "a=sendonly\r\n"), 1.0)
    r.handle_timer(50.0)
    assert r.calls() == ["call"]
    r.handle_timer(200.0)
    assert r.calls() == []


def test_early_media_from_callee_before_answer() -> None:
    r = MediaRelay(RelayConfig(), RangePortAllocator(40000, 40099, random.Random(1)))
    pb = port_of(r.offer("c", "f", sdp(A), 0.0))
    # the callee streams before any answer reached the relay: latched, forwarded to A
    call = r.query("c")
    assert call is not None
    assert r.receive(rtp(1), pb, B, 0.5) is None  # no ports towards A exist yet
    pa = port_of(r.answer("c", "f", "t", sdp(B), 0.6))  # 183 with SDP
    assert r.receive(rtp(2), pb, B, 0.7) == (pa, A, rtp(2))
    assert r.answer("c", "f", "t", sdp(B), 1.0) == r.answer("c", "f", "t", sdp(B), 1.0)  # 200 OK
    assert r.receive(rtp(3), pa, A, 1.1) == (pb, B, rtp(3))


def test_forked_answers_get_their_own_ports_towards_caller() -> None:
    r = MediaRelay(RelayConfig(), RangePortAllocator(40000, 40099, random.Random(1)))
    pb = port_of(r.offer("c", "f", sdp(A), 0.0))
    b1, b2 = ("198.51.100.11", 5000), ("198.51.100.12", 6000)
    pa1 = port_of(r.answer("c", "f", "t1", sdp(b1), 0.1))
    pa2 = port_of(r.answer("c", "f", "t2", sdp(b2), 0.2))
    assert pa1 != pa2
    # each branch's media reaches A on its own port; A's media to each port reaches its branch
    assert r.receive(rtp(1, 1), pb, b1, 0.3) == (pa1, A, rtp(1, 1))
    assert r.receive(rtp(1, 2), pb, b2, 0.3) == (pa2, A, rtp(1, 2))
    assert r.receive(rtp(5), pa2, A, 0.4) == (pb, b2, rtp(5))
    assert r.receive(rtp(5, 9), pa1, A, 0.4) == (pb, b1, rtp(5, 9))
    # the losing branch goes away; the shared ports stay for the winner
    r.delete("c", 1.0, from_tag="f", to_tag="t1", branch_only=True)
    assert r.receive(rtp(6), pa2, A, 1.1) == (pb, b2, rtp(6))
    assert pa1 not in r.ports and pb in r.ports
    r.delete("c", 2.0)
    assert r.ports == []


def test_reinvite_from_callee_and_new_address() -> None:
    r, pa, pb = setup()
    r.receive(rtp(1), pb, B, 1.0)
    b_new = ("198.51.100.99", 7000)
    out = r.offer("call", "tt", sdp(b_new), 2.0, to_tag="ft")  # callee re-INVITEs
    assert port_of(out) == pa  # A keeps sending to the same relay port
    r.answer("call", "tt", "ft", sdp(A), 2.1)
    assert r.receive(rtp(2), pa, A, 2.2) == (pb, b_new, rtp(2))


def _binding_request(ufrag: str, pwd: str, use_candidate: bool = True) -> bytes:
    txid = bytes(range(12))
    user = f"{ufrag}:remote".encode()
    attrs = struct.pack("!HH", 0x0006, len(user)) + user + b"\x00" * (-len(user) % 4)
    if use_candidate:
        attrs += struct.pack("!HH", 0x0025, 0)
    head = struct.pack("!HHI", 1, len(attrs) + 24, MAGIC_COOKIE) + txid
    mi = hmac.new(pwd.encode(), head + attrs, "sha1").digest()
    attrs += struct.pack("!HH", 0x0008, 20) + mi
    head = struct.pack("!HHI", 1, len(attrs) + 8, MAGIC_COOKIE) + txid
    crc = (zlib.crc32(head + attrs) ^ 0x5354554E) & 0xFFFFFFFF
    return head + attrs + struct.pack("!HHI", 0x8028, 4, crc)


def test_ice_lite_answers_checks_and_latches() -> None:
    r = MediaRelay(RelayConfig(ice="force"), RangePortAllocator(40000, 40099, random.Random(1)))
    to_b = r.offer("c", "f", sdp(A), 0.0)
    m = re.search(rb"a=ice-ufrag:(\S+)\r\na=ice-pwd:(\S+)", to_b)
    assert m
    ufrag, pwd = m.group(1).decode(), m.group(2).decode()
    pb = port_of(to_b)
    src = ("192.0.2.50", 50000)
    out = r.receive(_binding_request(ufrag, pwd), pb, src, 0.5)
    assert out is not None and out[0] == pb and out[1] == src
    resp = out[2]
    assert struct.unpack_from("!HHI", resp)[0] == 0x0101
    assert resp[8:20] == bytes(range(12))
    # XOR-MAPPED-ADDRESS decodes to the source
    xport = struct.unpack_from("!H", resp, 26)[0] ^ 0x2112
    xip = struct.unpack_from("!I", resp, 28)[0] ^ MAGIC_COOKIE
    assert (xport, ".".join(str(b) for b in xip.to_bytes(4, "big"))) == (50000, "192.0.2.50")
    # wrong password: dropped
    assert r.receive(_binding_request(ufrag, "wrong"), pb, src, 0.6) is None
    call = r.query("c")
    assert call is not None and call.legs[0].streams[1][0].latched_rtp == src


def test_late_offer_in_200_answer_in_ack() -> None:
    """INVITE without SDP: the 200 OK carries the callee's offer (tags as Kamailio sends
    them for a reply: from-tag = To tag) and the ACK the caller's answer."""
    r = MediaRelay(RelayConfig(), RangePortAllocator(40000, 40099, random.Random(1)))
    pa = port_of(r.offer("late", "callee", sdp(B), 0.0, to_tag="caller"))  # towards the caller
    pb = port_of(r.answer("late", "callee", "caller", sdp(A), 0.1))  # towards the callee
    assert r.receive(rtp(1), pa, A, 0.2) == (pb, B, rtp(1))
    assert r.receive(rtp(1, 5), pb, B, 0.2) == (pa, A, rtp(1, 5))
    call = r.query("late")
    assert call is not None and call.legs[0].tags == ["callee", "caller"]


def test_transform_hooks_for_profile_bridging() -> None:
    """The seam DTLS-SRTP/SDES bridging will use: per-stream ingress/egress transforms."""
    r, pa, pb = setup()
    call = r.query("call")
    assert call is not None
    a_side, b_side = call.legs[0].streams[0][0], call.legs[0].streams[1][0]
    a_side.ingress = lambda data, rtcp: data[:-4] if data.endswith(b"TAG!") else None  # "decrypt"
    b_side.egress = lambda data, rtcp: data + b"<b>"  # "encrypt" towards B
    assert r.receive(rtp(1) + b"TAG!", pa, A, 1.0) == (pb, B, rtp(1) + b"<b>")
    assert r.receive(rtp(2), pa, A, 1.0) is None  # fails to "decrypt": dropped, counted
    assert r.stats()["media_srtp_dropped"] == 1
    assert a_side.rtp_stats.packets == 1  # stats count the plain packets


def test_ringing_call_without_media_uses_offer_timeout() -> None:
    r = MediaRelay(RelayConfig(timeout=10.0, offer_timeout=120.0), RangePortAllocator(40000, 40099, random.Random(1)))
    r.offer("ring", "f", sdp(A), 0.0)
    r.handle_timer(1.0)
    r.handle_timer(90.0)  # ringing for 90 s: still there
    assert r.calls() == ["ring"]
    r.answer("ring", "f", "t", sdp(B), 95.0)
    r.handle_timer(100.0)
    assert r.calls() == ["ring"]
    r.handle_timer(216.0)  # 120 s after the last signalling, never any media
    assert r.calls() == []


def _stun(mtype: int, txid: bytes, use_candidate: bool = False) -> bytes:
    attrs = struct.pack("!HH", UseCandidate.TYPE, 0) if use_candidate else b""
    return struct.pack("!HHI", mtype, len(attrs), MAGIC_COOKIE) + txid + attrs


def test_relay_candidate_passes_checks_of_every_candidate_and_latches_on_the_nominated() -> None:
    """ICE through the relay candidate (``ice = "relay"``): the relay is not an ICE agent,
    it passes the endpoints' checks on. A check from another of A's addresses is not a
    stranger: it reaches B, and B's answer goes back to that address by transaction id.
    When B accepts a nominating check (USE-CANDIDATE), A's media is expected from there."""
    ice = "a=ice-ufrag:{u}\r\na=ice-pwd:{u}{u}{u}{u}{u}{u}\r\na=candidate:1 1 udp 2130706431 {ip} {port} typ host\r\n"
    r = MediaRelay(RelayConfig(advertised_address="203.0.113.1", ice="relay"),
                   RangePortAllocator(40000, 40099, random.Random(3)))
    to_b = r.offer("call", "ft", sdp(A, ice.format(u="aaaa", ip=A[0], port=A[1])), 0.0)
    to_a = r.answer("call", "ft", "tt", sdp(B, ice.format(u="bbbb", ip=B[0], port=B[1])), 0.0)
    pa, pb = port_of(to_a), port_of(to_b)
    assert b"typ relay" in to_a and b"typ relay" in to_b
    a2 = ("198.51.100.9", 2002)  # A's other candidate (a second interface, say)
    check1, check2 = _stun(0x0001, b"1" * 12), _stun(0x0001, b"2" * 12)
    assert r.receive(check1, pa, A, 1.0) == (pb, B, check1)  # the first source latches, as RTP
    assert r.receive(check2, pa, a2, 1.1) == (pb, B, check2)  # passed on, not a stranger
    ok2 = _stun(0x0101, b"2" * 12)
    assert r.receive(ok2, pb, B, 1.2) == (pa, a2, ok2)  # back to the candidate that asked
    assert r.receive(rtp(1), pa, a2, 1.3) is None  # media still latched on A, not a2
    nominate = _stun(0x0001, b"3" * 12, use_candidate=True)
    assert r.receive(nominate, pa, a2, 1.4) == (pb, B, nominate)
    err = _stun(0x0111, b"3" * 12)  # an error answer does not move the latch
    assert r.receive(err, pb, B, 1.45) == (pa, a2, err)
    assert r.receive(nominate, pa, a2, 1.5) == (pb, B, nominate)
    r.events()
    ok3 = _stun(0x0101, b"3" * 12)
    assert r.receive(ok3, pb, B, 1.6) == (pa, a2, ok3)
    assert [e for e in r.events() if isinstance(e, StreamLatched)] == [StreamLatched("call", "ft", 0, 1, a2, True)]
    assert r.receive(rtp(2), pa, a2, 1.7) == (pb, B, rtp(2))  # the nominated pair carries media
    assert r.receive(rtp(3, 99), pb, B, 1.8) == (pa, a2, rtp(3, 99))
    # an answer nobody asked for takes the ordinary path (to A's latched address)
    stray = _stun(0x0101, b"9" * 12)
    assert r.receive(stray, pb, B, 1.9) == (pa, a2, stray)
    assert r.stats()["media_packets_dropped_stranger"] == 1  # only the early RTP from a2
    assert r.stats()["media_stun_relayed"] == 3


def test_rtp_on_port_65535_has_no_rtcp_port_to_send_to() -> None:
    """RTCP goes to the RTP port + 1 (RFC 3550 §11), which 65535 does not have: the relay
    expects none there instead of sending to port 65536."""
    hi = ("198.51.100.2", 65535)
    r = MediaRelay(RelayConfig(advertised_address="203.0.113.1"), RangePortAllocator(40000, 40099, random.Random(3)))
    to_b = r.offer("call", "ft", sdp(A), 0.0)
    r.answer("call", "ft", "tt", sdp(hi), 0.0)
    call = r.query("call")
    assert call is not None
    b_stream = call.legs[0].streams[1][0]
    assert b_stream.expected_rtp == hi and b_stream.expected_rtcp is None
    rtcp = struct.pack("!BBHI", 0x81, 201, 7, 0x1234) + bytes(24)
    out = r.receive(rtcp, port_of(to_b) + 1, A, 1.0)  # A's RTCP, towards B
    assert out is None or (0 < out[1][1] <= 65535)


def test_resuming_from_a_zero_address_hold_keeps_the_latched_address() -> None:
    """A NATed party (its SDP names a private address) holds with c=0.0.0.0, then resumes
    with its old SDP: that is no move, so media still goes where its packets come from."""
    private, public = ("10.0.0.1", 2000), ("198.51.100.1", 31000)
    r = MediaRelay(RelayConfig(advertised_address="203.0.113.1"), RangePortAllocator(40000, 40099, random.Random(3)))
    to_b = r.offer("call", "ft", sdp(private), 0.0)
    pa = port_of(r.answer("call", "ft", "tt", sdp(B), 0.0))
    pb = port_of(to_b)
    assert r.receive(rtp(1), pa, public, 1.0) == (pb, B, rtp(1))  # latched on the public side
    hold = sdp(private).replace(b"c=IN IP4 10.0.0.1", b"c=IN IP4 0.0.0.0")
    r.offer("call", "ft", hold, 2.0)
    r.answer("call", "ft", "tt", sdp(B), 2.0)
    r.offer("call", "ft", sdp(private), 3.0)  # resume
    r.answer("call", "ft", "tt", sdp(B), 3.0)
    assert r.receive(rtp(2, 99), pb, B, 3.1) == (pa, public, rtp(2, 99))


def test_offer_timeout_is_for_unanswered_calls_and_timeout_for_answered_silent_ones() -> None:
    """As rtpengine: a ringing call (offer, no answer, no media) lives offer_timeout; once
    answered, a call whose media never flows is gone after timeout."""
    def relay() -> MediaRelay:
        return MediaRelay(RelayConfig(timeout=10.0, offer_timeout=100.0, sweep_interval=1.0),
                          RangePortAllocator(40000, 40099, random.Random(3)))
    ringing = relay()
    ringing.offer("call", "ft", sdp(A), 0.0)
    ringing.handle_timer(0.0)
    ringing.handle_timer(50.0)
    assert ringing.calls() == ["call"]
    ringing.handle_timer(101.0)
    assert ringing.calls() == []
    silent = relay()
    silent.offer("call", "ft", sdp(A), 0.0)
    silent.answer("call", "ft", "tt", sdp(B), 1.0)
    silent.handle_timer(1.0)
    silent.handle_timer(12.0)
    assert silent.calls() == []


def test_a_held_video_section_does_not_keep_a_call_with_dead_audio() -> None:
    """Hold is per media section: audio live (and silent) beside a sendonly video is not a
    held call, so timeout applies; with every section held, hold_timeout does."""
    two = "m=audio {p} RTP/AVP 0\r\na=sendrecv\r\nm=video {v} RTP/AVP 96\r\na={d}\r\n"

    def media(addr: tuple[str, int], video: str) -> bytes:
        body = sdp(addr).split(b"m=audio")[0].decode()
        return (body + two.format(p=addr[1], v=addr[1] + 10, d=video)).encode()

    for video, kept in (("sendonly", False), ("inactive", False)):
        r = MediaRelay(RelayConfig(timeout=10.0, hold_timeout=100.0, sweep_interval=1.0),
                       RangePortAllocator(40000, 40099, random.Random(3)))
        r.offer("call", "ft", media(A, video), 0.0)
        r.answer("call", "ft", "tt", media(B, "recvonly" if video == "sendonly" else "inactive"), 0.5)
        call = r.query("call")
        assert call is not None and call.on_hold() is kept
        r.handle_timer(1.0)
        r.handle_timer(20.0)
        assert (r.calls() == ["call"]) is kept
    held = MediaRelay(RelayConfig(timeout=10.0, hold_timeout=100.0, sweep_interval=1.0),
                      RangePortAllocator(40000, 40099, random.Random(3)))
    held.offer("call", "ft", media(A, "sendonly").replace(b"a=sendrecv", b"a=sendonly"), 0.0)
    held.answer("call", "ft", "tt", media(B, "recvonly").replace(b"a=sendrecv", b"a=recvonly"), 0.5)
    call = held.query("call")
    assert call is not None and call.on_hold()
    held.handle_timer(1.0)
    held.handle_timer(20.0)
    assert held.calls() == ["call"]
