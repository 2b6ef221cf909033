"""RFC 7983 demultiplexing of one media port (``media.demux.classify``), for any bytes:
the first byte alone decides STUN, ZRTP, DTLS, TURN ChannelData and RTP/RTCP (RFC 7983
§7), RTCP is told from RTP by the packet type (RFC 5761 §4), and nothing raises."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sipedge.media.demux import Kind, classify


def expected(data: bytes) -> Kind:
    if not data:
        return Kind.UNKNOWN
    b = data[0]
    if b <= 3:
        return Kind.STUN
    if 16 <= b <= 19:
        return Kind.ZRTP
    if 20 <= b <= 63:
        return Kind.DTLS
    if 64 <= b <= 79:
        return Kind.TURN_CHANNEL
    if 128 <= b <= 191:
        return Kind.RTCP if len(data) > 1 and 192 <= data[1] <= 223 else Kind.RTP
    return Kind.UNKNOWN


@given(st.binary(max_size=64))
def test_classify_follows_rfc_7983_for_any_bytes(data: bytes) -> None:
    assert classify(data) is expected(data)


@given(st.integers(0, 255), st.binary(max_size=32))
def test_only_the_first_two_bytes_matter(first: int, rest: bytes) -> None:
    head = bytes([first]) + rest[:1]
    assert classify(head + rest[1:]) is classify(head + b"\x00" * len(rest[1:]))
