"""RTP/RTCP/ICE-lite parsers: arbitrary bytes parse or raise ParseError; round trips hold."""

from __future__ import annotations

import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.errors import ParseError
from sipedge.media import icelite, rtp
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import MediaRelay, RelayConfig
from sipedge.media.rtcp import RtcpPacket
from sipedge.stun.attributes import UseCandidate
from sipedge.stun.message import MAGIC_COOKIE

packets = st.builds(
    rtp.RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 65535),
    timestamp=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 65535), st.binary(max_size=16).map(lambda b: b + bytes(-len(b) % 4))),
    padding=st.integers(0, 255),
)


@settings(max_examples=200, deadline=None)
@given(packets)
def test_rtp_round_trip(p: rtp.RtpPacket) -> None:
    assert rtp.RtpPacket.parse(p.serialize()) == p


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_garbage(data: bytes) -> None:
    for parse in (rtp.RtpPacket.parse, RtcpPacket.parse_compound):
        try:
            parse(data)
        except ParseError:
            pass
    rtp.peek(data)
    assert icelite.check_binding(data, "u", "p") is None
    seen = icelite.peek(data)
    assert seen is None or (0 <= seen.cls <= 3 and len(seen.transaction_id) == 12)


stun_messages = st.builds(
    lambda mtype, txid, nominate, pad: (
        struct.pack("!HHI", mtype, 4 * nominate + len(pad), MAGIC_COOKIE) + bytes([txid]) * 12
        + (struct.pack("!HH", UseCandidate.TYPE, 0) if nominate else b"") + pad
    ),
    st.sampled_from([0x0001, 0x0101, 0x0111, 0x0011, 0x0003]), st.integers(0, 3), st.booleans(),
    st.sampled_from([b"", b"\x00\x06\x00\x00", b"\xff\xff\x00\x10"]),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(stun_messages | st.binary(max_size=30), st.integers(0, 3), st.integers(0, 3)), max_size=40))
def test_relay_candidate_mode_survives_any_stun(packets_in: list[tuple[bytes, int, int]]) -> None:
    """Checks and answers from any address, in any order, to either side: passed on or
    dropped, never a crash, and the routes table stays bounded."""
    r = MediaRelay(RelayConfig(ice="relay"), RangePortAllocator(40000, 40009, random.Random(0)))
    body = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 10 RTP/AVP 0\r\n"
    r.offer("c", "f", body, 0.0)
    r.answer("c", "f", "t", body.replace(b"1.2.3.4", b"5.6.7.8"), 0.0)
    ports = r.ports
    for i, (data, which, src) in enumerate(packets_in):
        out = r.receive(data, ports[which % len(ports)], (f"192.0.2.{src}", 5000 + src), float(i))
        assert out is None or out[0] in ports
    assert r.calls() == ["c"] and len(r._packets._stun_routes) <= 40


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 3), st.integers(1, 65535)), max_size=40))
def test_relay_survives_any_datagram(packets_in: list[tuple[bytes, int, int]]) -> None:
    r = MediaRelay(RelayConfig(ice="force"), RangePortAllocator(40000, 40009, random.Random(0)))
    r.offer("c", "f", b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 10 RTP/AVP 0\r\n", 0.0)
    ports = [*r.ports, 1]
    for i, (data, which, sport) in enumerate(packets_in):
        r.receive(data, ports[which % len(ports)], ("192.0.2.1", sport), float(i))
    assert r.calls() == ["c"]
