"""An ICE connectivity check as a browser sends it to the relay's ICE-lite port (for core
tests that need the relay to latch a DTLS party)."""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

MAGIC_COOKIE = 0x2112A442


def binding_request(ufrag: str, pwd: str) -> bytes:
    """An ICE check from the browser with USE-CANDIDATE, signed with the relay's password."""
    txid = bytes(range(12))
    user = f"{ufrag}:brow".encode()
    attrs = struct.pack("!HH", 0x0006, len(user)) + user + b"\x00" * (-len(user) % 4)
    attrs += struct.pack("!HH", 0x0025, 0)
    head = struct.pack("!HHI", 1, len(attrs) + 24, MAGIC_COOKIE) + txid
    attrs += struct.pack("!HH", 0x0008, 20) + hmac.new(pwd.encode(), head + attrs, hashlib.sha1).digest()
    head = struct.pack("!HHI", 1, len(attrs) + 8, MAGIC_COOKIE) + txid
    crc = (zlib.crc32(head + attrs) ^ 0x5354554E) & 0xFFFFFFFF
    return head + attrs + struct.pack("!HHI", 0x8028, 4, crc)
