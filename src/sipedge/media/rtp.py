"""RTP packets (RFC 3550 §5.1): a codec for tests and tools, and a fast header peek.

The relay's forwarding path uses :func:`peek`, which reads only the fixed header with one
``struct.unpack_from`` and allocates nothing but the result tuple.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import ParseError

_FIXED = struct.Struct("!BBHII")
HEADER_SIZE = 12


def peek(data: bytes) -> tuple[int, int, int, int] | None:
    """``(payload_type, sequence, timestamp, ssrc)`` of an RTP packet, or None if too short
    or not version 2. No other validation: this is the hot path."""
    if len(data) < HEADER_SIZE or data[0] & 0xC0 != 0x80:
        return None
    _, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    return b1 & 0x7F, seq, ts, ssrc


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """A whole RTP packet; ``extension`` is ``(profile, data)`` when the X bit is set."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < HEADER_SIZE:
            raise ParseError(f"RTP packet of {len(data)} bytes is shorter than 12", None)
        b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
        if b0 >> 6 != 2:
            raise ParseError(f"RTP version {b0 >> 6} is not 2", None)
        cc = b0 & 0x0F
        pos = HEADER_SIZE + 4 * cc
        if len(data) < pos:
            raise ParseError("RTP packet shorter than its CSRC list", None)
        csrcs = struct.unpack_from(f"!{cc}I", data, HEADER_SIZE) if cc else ()
        ext: tuple[int, bytes] | None = None
        if b0 & 0x10:
            if len(data) < pos + 4:
                raise ParseError("RTP header extension truncated", None)
            profile, words = struct.unpack_from("!HH", data, pos)
            end = pos + 4 + 4 * words
            if len(data) < end:
                raise ParseError("RTP header extension longer than the packet", None)
            ext = (profile, data[pos + 4 : end])
            pos = end
        padding = 0
        end = len(data)
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or pos + padding > len(data):
                raise ParseError("RTP padding length is invalid", None)
            end -= padding
        return cls(b1 & 0x7F, seq, ts, ssrc, data[pos:end], bool(b1 & 0x80), tuple(csrcs), ext, padding)

    def serialize(self) -> bytes:
        b0 = 0x80 | len(self.csrcs) | (0x10 if self.extension else 0) | (0x20 if self.padding else 0)
        b1 = self.payload_type | (0x80 if self.marker else 0)
        out = [_FIXED.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)]
        out.extend(struct.pack("!I", c) for c in self.csrcs)
        if self.extension is not None:
            profile, data = self.extension
            out.append(struct.pack("!HH", profile, len(data) // 4) + data)
        out.append(self.payload)
        if self.padding:
            out.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(out)
