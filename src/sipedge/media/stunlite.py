"""The little STUN an ICE-lite relay needs (RFC 8489, RFC 8445 §2.5): check an incoming
Binding request's short-term credentials and build the success response.

Private to the media relay; a full STUN codec lives in ``sipedge.stun``.
"""

from __future__ import annotations

import hmac
import ipaddress
import struct
import zlib
from dataclasses import dataclass

MAGIC = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
XOR_MAPPED_ADDRESS = 0x0020
USE_CANDIDATE = 0x0025
FINGERPRINT = 0x8028
_FP_XOR = 0x5354554E


@dataclass(frozen=True, slots=True)
class PassingStun:
    """What a relay that forwards endpoints' own ICE checks needs of a STUN message,
    without credentials: its class (0 request, 1 indication, 2 success, 3 error), the
    transaction id and whether a request nominates (USE-CANDIDATE)."""

    cls: int
    transaction_id: bytes
    use_candidate: bool


def peek(data: bytes) -> PassingStun | None:
    """The header facts of a well-framed STUN message, or None when it is not one."""
    if len(data) < 20:
        return None
    mtype, length, cookie = struct.unpack_from("!HHI", data)
    if cookie != MAGIC or mtype & 0xC000 or length + 20 != len(data) or length % 4:
        return None
    cls = ((mtype >> 7) & 0x2) | ((mtype >> 4) & 0x1)
    nominate = False
    pos = 20
    while cls == 0 and pos + 4 <= len(data):
        atype, alen = struct.unpack_from("!HH", data, pos)
        if atype == USE_CANDIDATE:
            nominate = True
            break
        pos += 4 + alen + (-alen % 4)
    return PassingStun(cls, data[8:20], nominate)


@dataclass(frozen=True, slots=True)
class BindingRequest:
    transaction_id: bytes
    username: str
    use_candidate: bool


def parse_binding(data: bytes, local_ufrag: str, local_pwd: str) -> BindingRequest | None:
    """An authenticated Binding request for ``local_ufrag``, or None (drop) for anything else."""
    if len(data) < 20:
        return None
    mtype, length, cookie = struct.unpack_from("!HHI", data)
    if mtype != BINDING_REQUEST or cookie != MAGIC or length + 20 != len(data) or length % 4:
        return None
    txid = data[8:20]
    pos = 20
    username: str | None = None
    use_candidate = False
    integrity_ok = False
    while pos + 4 <= len(data):
        atype, alen = struct.unpack_from("!HH", data, pos)
        value = data[pos + 4 : pos + 4 + alen]
        if len(value) != alen:
            return None
        if atype == USERNAME:
            username = value.decode("utf-8", "replace")
        elif atype == USE_CANDIDATE:
            use_candidate = True
        elif atype == MESSAGE_INTEGRITY:
            if alen != 20:
                return None
            head = struct.pack("!HHI", mtype, pos + 24 - 20, MAGIC) + data[8:pos]
            want = hmac.new(local_pwd.encode(), head, "sha1").digest()
            integrity_ok = hmac.compare_digest(want, value)
            break  # only FINGERPRINT may follow
        pos += 4 + alen + (-alen % 4)
    if not integrity_ok or username is None or username.partition(":")[0] != local_ufrag:
        return None
    return BindingRequest(txid, username, use_candidate)


def binding_success(transaction_id: bytes, source: tuple[str, int], local_pwd: str) -> bytes:
    """A Binding success response with XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT."""
    ip = ipaddress.ip_address(source[0])
    port = source[1] ^ (MAGIC >> 16)
    if ip.version == 4:
        xaddr = struct.pack("!BBHI", 0, 1, port, int(ip) ^ MAGIC)
    else:
        mask = int.from_bytes(struct.pack("!I", MAGIC) + transaction_id, "big")
        xaddr = struct.pack("!BBH", 0, 2, port) + (int(ip) ^ mask).to_bytes(16, "big")
    attrs = struct.pack("!HH", XOR_MAPPED_ADDRESS, len(xaddr)) + xaddr
    head = struct.pack("!HHI", BINDING_SUCCESS, len(attrs) + 24, MAGIC) + transaction_id
    mi = hmac.new(local_pwd.encode(), head + attrs, "sha1").digest()
    attrs += struct.pack("!HH", MESSAGE_INTEGRITY, 20) + mi
    head = struct.pack("!HHI", BINDING_SUCCESS, len(attrs) + 8, MAGIC) + transaction_id
    crc = (zlib.crc32(head + attrs) ^ _FP_XOR) & 0xFFFFFFFF
    return head + attrs + struct.pack("!HHI", FINGERPRINT, 4, crc)
