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


def _by_first_byte(b: int) -> Kind:
    """RFC 7983 §7 ranges of the first byte."""
    if b <= 3:
        return Kind.STUN
    if 16 <= b <= 19:
        return Kind.ZRTP
    if 20 <= b <= 63:
        return Kind.DTLS
    if 64 <= b <= 79:
        return Kind.TURN_CHANNEL
    if 128 <= b <= 191:
        return Kind.RTP
    return Kind.UNKNOWN


# per packet on every media port: a table lookup, not a chain of comparisons (and module
# globals, because attribute lookups on an enum class are slow)
_KINDS = tuple(_by_first_byte(b) for b in range(256))
_RTP, _RTCP, _UNKNOWN = Kind.RTP, Kind.RTCP, Kind.UNKNOWN


def classify(data: bytes) -> Kind:
    """What a datagram on a media port is: RFC 7983 by the first byte, and RTCP told from
    RTP by the packet type in the second (RFC 5761 §4: 192..223)."""
    if not data:
        return _UNKNOWN
    kind = _KINDS[data[0]]
    if kind is _RTP and len(data) > 1 and 192 <= data[1] <= 223:
        return _RTCP
    return kind
