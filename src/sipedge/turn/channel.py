"""ChannelData messages and stream framing (RFC 8656 §12, §12.5).

Channel numbers 0x4000-0x7FFF are accepted: RFC 8656 clients use 0x4000-0x4FFF, RFC 5766
clients (coturn's own tools among them) the whole range. Over UDP a ChannelData message
may arrive with or without padding; over TCP/TLS it is
padded to a multiple of 4 bytes, and :class:`Framer` splits a byte stream into STUN
messages and ChannelData messages.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import ParseError

CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x7FFF  # RFC 5766 §11; RFC 8656 §12 narrowed clients to 0x4FFF
_HDR = struct.Struct("!HH")


def is_channel_data(data: bytes) -> bool:
    return len(data) >= 4 and 0x40 <= data[0] <= 0x7F


def valid_channel(number: int) -> bool:
    return CHANNEL_MIN <= number <= CHANNEL_MAX


@dataclass(frozen=True, slots=True)
class ChannelData:
    channel: int
    data: bytes

    def __post_init__(self) -> None:
        if not valid_channel(self.channel):
            raise ValueError(f"channel number {self.channel:#06x} outside 0x4000..0x7FFF")
        if len(self.data) > 0xFFFF:
            raise ValueError("ChannelData payload longer than 65535 bytes")

    def serialize(self, pad: bool = False) -> bytes:
        """Encode; ``pad=True`` for TCP/TLS (RFC 8656 §12.5)."""
        out = _HDR.pack(self.channel, len(self.data)) + self.data
        if pad and len(self.data) % 4:
            out += b"\0" * (-len(self.data) % 4)
        return out

    @classmethod
    def parse(cls, data: bytes) -> ChannelData:
        """Decode one message; up to 3 bytes of trailing padding are accepted."""
        if len(data) < 4:
            raise ParseError("ChannelData: shorter than the 4-byte header", None)
        channel, length = _HDR.unpack_from(data)
        if not valid_channel(channel):
            raise ParseError(f"ChannelData: channel {channel:#06x} out of range", None)
        extra = len(data) - 4 - length
        if extra < 0:
            raise ParseError("ChannelData: truncated payload", None)
        if extra > 3:
            raise ParseError("ChannelData: trailing bytes after the payload", None)
        return cls(channel, bytes(data[4 : 4 + length]))


def encode(channel: int, payload: bytes, pad: bool) -> bytes:
    """Fast path for the relay: no object built."""
    out = _HDR.pack(channel, len(payload)) + payload
    if pad and len(payload) % 4:
        out += b"\0" * (-len(payload) % 4)
    return out


class Framer:
    """Split a TCP/TLS byte stream into STUN messages and ChannelData messages.

    ``feed`` returns complete frames: a STUN message whole, a ChannelData message as
    header + payload with its padding stripped. Bytes that are neither raise
    :class:`ParseError` (hint None: close the connection). ``max_buffer`` bounds memory.
    """

    def __init__(self, max_buffer: int = 65536 + 24) -> None:
        self._buf = bytearray()
        self._max = max_buffer

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        i = 0
        n = len(buf)
        while n - i >= 4:
            first = buf[i]
            length = (buf[i + 2] << 8) | buf[i + 3]
            if first < 0x40:
                total = 20 + length
                if length % 4:
                    raise ParseError("stream: STUN length not a multiple of 4", None)
                keep = total
            elif first < 0x80:
                keep = 4 + length
                total = keep + (-length % 4)
            else:
                raise ParseError(f"stream: byte {first:#04x} starts neither STUN nor ChannelData", None)
            if n - i < total:
                break
            out.append(bytes(buf[i : i + keep]))
            i += total
        if i:
            del buf[:i]
        if len(buf) > self._max:
            raise ParseError("stream: frame larger than the buffer limit", None)
        return out
