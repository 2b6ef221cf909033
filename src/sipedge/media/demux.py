"""Demultiplexing one UDP port by the first bytes (RFC 7983; RTP vs RTCP per RFC 5761 §4)."""

from __future__ import annotations

import enum


class Kind(enum.IntEnum):
    UNKNOWN = 0
    STUN = 1
    ZRTP = 2
    DTLS = 3
    TURN_CHANNEL = 4
    RTP = 5
    RTCP = 6


def classify(data: bytes) -> Kind:
    """What a datagram on a media port is (RFC 7983 §7 ranges of the first byte)."""
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
        if len(data) > 1 and 192 <= data[1] <= 223:
            return Kind.RTCP
        return Kind.RTP
    return Kind.UNKNOWN
