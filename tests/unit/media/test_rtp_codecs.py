"""RTP/RTCP codecs, RFC 7983 demux and RFC 3550 statistics."""

from __future__ import annotations

import struct

import pytest

from sipedge.errors import ParseError
from sipedge.media import rtp
from sipedge.media.demux import Kind, classify
from sipedge.media.rtcp import RR, SR, RtcpPacket
from sipedge.media.stats import StreamStats


def test_rtp_round_trip_with_csrc_extension_padding() -> None:
    p = rtp.RtpPacket(96, 65535, 2**32 - 1, 0xDEADBEEF, b"abc", True, (1, 2), (0xBEDE, b"\x10\xff\x00\x00"), 5)
    data = p.serialize()
    assert rtp.RtpPacket.parse(data) == p
    assert rtp.peek(data) == (96, 65535, 2**32 - 1, 0xDEADBEEF)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x00", "shorter than 12"),
        (b"\x40" + bytes(11), "version 1"),
        (b"\x81" + bytes(11), "CSRC"),
        (b"\x90" + bytes(11), "extension truncated"),
        (b"\x90" + bytes(11) + b"\x00\x00\x00\x05", "longer than the packet"),
        (b"\xa0" + bytes(11) + b"\x00", "padding"),
    ],
)
def test_rtp_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        rtp.RtpPacket.parse(data)
    assert rtp.peek(b"\x40" + bytes(11)) is None


def test_rtcp_compound() -> None:
    sr = RtcpPacket(SR, 0, 0x11, bytes(20))
    rr = RtcpPacket(RR, 1, 0x22, bytes(24))
    data = sr.serialize() + rr.serialize()
    assert RtcpPacket.parse_compound(data) == [sr, rr]
    with pytest.raises(ParseError):
        RtcpPacket.parse_compound(data[:-4])
    with pytest.raises(ParseError):
        RtcpPacket.parse_compound(b"\x80\xc8\x00")


def test_demux_rfc7983() -> None:
    assert classify(b"\x00\x01") is Kind.STUN
    assert classify(b"\x16\xfe") is Kind.DTLS
    assert classify(b"\x10") is Kind.ZRTP
    assert classify(b"\x40\x00") is Kind.TURN_CHANNEL
    assert classify(b"\x80\x00") is Kind.RTP
    assert classify(b"\x80\xc8") is Kind.RTCP
    assert classify(b"\x81\xc9") is Kind.RTCP
    assert classify(b"") is Kind.UNKNOWN
    assert classify(b"\xff") is Kind.UNKNOWN


def _pkt(seq: int, ts: int, ssrc: int = 1) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc)


def test_jitter_rfc3550() -> None:
    st = StreamStats(8000)
    # packets every 20 ms, timestamps every 160, but arrivals alternate +-5 ms
    for i in range(200):
        st.rtp(_pkt(i, i * 160), 10.0 + i * 0.02 + (0.005 if i % 2 else 0.0))
    # transit differences are 40 units (5 ms) each; the estimate converges to 5 ms
    assert 4.5 < st.jitter_ms < 5.01
    assert st.lost == 0 and st.expected == 200


def test_stats_duplicates_reorder_and_ssrc_change() -> None:
    st = StreamStats()
    for seq in (1, 2, 2, 4, 3, 5):
        st.rtp(_pkt(seq, seq * 160), 1.0)
    assert st.expected == 5 and st.rtp_packets == 6 and st.lost == 0
    st.rtp(_pkt(100, 0, ssrc=2), 2.0)
    assert st.ssrc == 2 and st.expected == 1
    st.rtp(_pkt(40000, 0, ssrc=2), 2.0)  # a big jump resynchronises
    assert st.expected == 1


def test_jitter_across_the_timestamp_wrap() -> None:
    """RFC 3550 A.8 takes timestamp differences modulo 2^32: evenly spaced packets whose
    timestamps wrap have no jitter (it was 25,920 s here)."""
    st = StreamStats(8000)
    start = 0xFFFFFFFF - 160 * 50
    for i in range(100):
        st.rtp(_pkt(i, (start + i * 160) & 0xFFFFFFFF), 10.0 + i * 0.02)
    assert st.jitter_ms < 0.01


def test_one_stray_sequence_number_keeps_the_loss_count() -> None:
    """RFC 3550 A.1: a single big jump is held until the next packet confirms it."""
    st = StreamStats()
    for seq in [s for s in range(1, 100) if s % 10]:  # 9 lost
        st.rtp(_pkt(seq, seq * 160), 1.0)
    st.rtp(_pkt(40000, 0), 1.0)  # one stray
    for seq in range(100, 110):
        st.rtp(_pkt(seq, seq * 160), 1.0)
    assert st.lost == 9 and st.expected == 109
    st.rtp(_pkt(50000, 0), 2.0)
    st.rtp(_pkt(50001, 160), 2.02)  # a confirmed jump: the source restarted its numbering
    assert st.expected == 1 and st.rtp_packets == 1 and st.lost == 0


def test_receiver_report_for_a_silent_phone() -> None:
    import struct

    from sipedge.media.rtcp import RR, RtcpPacket, receiver_report

    data = receiver_report(0x1111, 0x2222, expected=200, received=190, extended_max_seq=70000, jitter=12)
    (rr,) = RtcpPacket.parse_compound(data)
    assert rr.packet_type == RR and rr.count == 1 and rr.ssrc == 0x1111
    source, lost_word, ext_seq, jitter, lsr, dlsr = struct.unpack("!IIIIII", rr.body)
    assert source == 0x2222 and lost_word >> 24 == (10 * 256) // 200 and lost_word & 0xFFFFFF == 10
    assert (ext_seq, jitter, lsr, dlsr) == (70000, 12, 0, 0)
