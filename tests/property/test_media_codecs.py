"""RTP/RTCP/STUN-lite parsers: arbitrary bytes parse or raise ParseError; round trips hold."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.errors import ParseError
from sipedge.media import rtp, stunlite
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import MediaRelay, RelayConfig
from sipedge.media.rtcp import RtcpPacket

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
    assert stunlite.parse_binding(data, "u", "p") is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 3), st.integers(1, 65535)), max_size=40))
def test_relay_survives_any_datagram(packets_in: list[tuple[bytes, int, int]]) -> None:
    r = MediaRelay(RelayConfig(ice="force"), RangePortAllocator(40000, 40009, random.Random(0)))
    r.offer("c", "f", b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 10 RTP/AVP 0\r\n", 0.0)
    ports = [*r.ports, 1]
    for i, (data, which, sport) in enumerate(packets_in):
        r.receive(data, ports[which % len(ports)], ("192.0.2.1", sport), float(i))
    assert r.calls() == ["c"]
