"""RTCP compound packets (RFC 3550 §6): split, type and sender SSRC of each part."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import ParseError

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = 200, 201, 202, 203, 204, 205, 206, 207


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """One packet of a compound: header fields, sender SSRC, and the body after the SSRC."""

    packet_type: int
    count: int
    ssrc: int
    body: bytes = b""
    padding: bool = False

    @staticmethod
    def parse_compound(data: bytes) -> list[RtcpPacket]:
        """Split a compound RTCP packet; raises ParseError (hint None: drop) when malformed."""
        out: list[RtcpPacket] = []
        pos = 0
        if len(data) < 8:
            raise ParseError("RTCP packet shorter than 8 bytes", None)
        while pos < len(data):
            if len(data) - pos < 4:
                raise ParseError("RTCP trailing bytes", None)
            b0, pt, words = struct.unpack_from("!BBH", data, pos)
            if b0 >> 6 != 2:
                raise ParseError("RTCP version is not 2", None)
            end = pos + 4 * (words + 1)
            if end > len(data) or words < 1:
                raise ParseError("RTCP length field exceeds the packet", None)
            (ssrc,) = struct.unpack_from("!I", data, pos + 4)
            out.append(RtcpPacket(pt, b0 & 0x1F, ssrc, data[pos + 8 : end], bool(b0 & 0x20)))
            pos = end
        return out

    def serialize(self) -> bytes:
        if len(self.body) % 4:
            raise ValueError("RTCP body must be a multiple of 4 bytes")
        words = 1 + len(self.body) // 4
        b0 = 0x80 | (0x20 if self.padding else 0) | self.count
        return struct.pack("!BBHI", b0, self.packet_type, words, self.ssrc) + self.body


RELAY_SSRC = 0x53495045  # "SIPE": the relay's own SSRC when it reports before the phone sent RTP


NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)


def report_block(source_ssrc: int, expected: int, received: int, extended_max_seq: int, jitter: int) -> bytes:
    """One reception report block (RFC 3550 §6.4.1) about ``source_ssrc``: cumulative
    counts; no LSR/DLSR."""
    lost = max(0, expected - received)
    fraction = min(255, (lost * 256) // expected) if expected > 0 else 0
    return struct.pack(
        "!IIIIII",
        source_ssrc,
        (fraction << 24) | min(lost, 0x7FFFFF),
        extended_max_seq & 0xFFFFFFFF,
        max(0, jitter) & 0xFFFFFFFF,
        0,
        0,
    )


def receiver_report(reporter_ssrc: int, source_ssrc: int, expected: int, received: int,
                    extended_max_seq: int, jitter: int) -> bytes:
    """An RR (RFC 3550 §6.4.2) with one report block (:func:`report_block`) about
    ``source_ssrc``."""
    block = report_block(source_ssrc, expected, received, extended_max_seq, jitter)
    return RtcpPacket(RR, 1, reporter_ssrc, block).serialize()


def ntp_timestamp(unix_time: float) -> int:
    """The 64-bit NTP timestamp (RFC 3550 §4) of a Unix time."""
    return int((unix_time + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def sender_report(sender_ssrc: int, unix_time: float, rtp_timestamp: int, packets: int, octets: int,
                  blocks: tuple[bytes, ...] = ()) -> bytes:
    """An SR (RFC 3550 §6.4.1): the wallclock ``unix_time`` as an NTP timestamp, the RTP
    timestamp of the same instant, the packets and payload octets sent from
    ``sender_ssrc``, and report blocks (:func:`report_block`) about what was received."""
    info = struct.pack("!QIII", ntp_timestamp(unix_time), rtp_timestamp & 0xFFFFFFFF,
                       packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)
    return RtcpPacket(SR, len(blocks), sender_ssrc, info + b"".join(blocks)).serialize()
