"""STUN messages (RFC 8489 §5, §6, §14; RFC 5389 compatible).

``Message.parse(data)`` raises only :class:`ParseError`: ``hint`` is ``None`` when the
bytes are not STUN at all (drop them) and ``400`` when they are STUN but malformed.
``msg.serialize(key=..., fingerprint=...)`` appends MESSAGE-INTEGRITY(-SHA256) and
FINGERPRINT computed over the message, as §14.5-14.7 prescribe.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeVar

from ..errors import ParseError
from . import integrity
from .attributes import (
    ATTRIBUTES,
    MAGIC_COOKIE,
    Attribute,
    ErrorCode,
    Fingerprint,
    MessageIntegrity,
    MessageIntegritySha256,
    UnknownAttribute,
    type_of,
)

HEADER_SIZE = 20
_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")

A = TypeVar("A", bound=Attribute)


class Method(IntEnum):
    """STUN/TURN methods (RFC 8489 §18.2, RFC 8656 §17, RFC 6062)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class Class(IntEnum):
    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


def message_type(method: int, cls: int) -> int:
    """RFC 8489 §5: interleave the 12 method bits and the 2 class bits."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 1) << 4)
        | ((cls & 2) << 7)
    )


def split_type(mtype: int) -> tuple[int, Class]:
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    cls = Class(((mtype >> 4) & 1) | ((mtype >> 7) & 2))
    return method, cls


def is_stun(data: bytes) -> bool:
    """Cheap demux test (RFC 7983): first two bits 0 and the magic cookie in place."""
    return len(data) >= HEADER_SIZE and data[0] < 0x40 and data[4:8] == b"\x21\x12\xa4\x42"


def peek_header(data: bytes) -> tuple[int, Class, bytes] | None:
    """(method, class, transaction id) of something that looks like STUN, else None.

    Lets a server answer 400 to a request whose body failed to parse.
    """
    if not is_stun(data):
        return None
    mtype, _, _, tid = _HEADER.unpack_from(data)
    method, cls = split_type(mtype)
    return method, cls, tid


def _pad(n: int) -> int:
    return -n % 4


@dataclass(frozen=True, slots=True)
class Message:
    """One STUN message: method, class, 96-bit transaction id and ordered attributes."""

    method: int
    cls: Class
    transaction_id: bytes
    attributes: tuple[Attribute, ...] = ()
    _raw: bytes = field(default=b"", compare=False, repr=False)
    _mi_offset: int = field(default=-1, compare=False, repr=False)
    _mi256_offset: int = field(default=-1, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.transaction_id) != 12:
            raise ValueError("transaction id must be 12 bytes")
        if not 0 <= self.method <= 0xFFF:
            raise ValueError(f"method {self.method:#x} out of range")

    # -- access --------------------------------------------------------------------------

    def get(self, kind: type[A]) -> A | None:
        """The first attribute of this kind (RFC 8489 §14: later duplicates are ignored)."""
        for a in self.attributes:
            if type(a) is kind:
                return a
        return None

    def get_all(self, kind: type[A]) -> list[A]:
        return [a for a in self.attributes if type(a) is kind]

    def has(self, kind: type[Attribute]) -> bool:
        return any(type(a) is kind for a in self.attributes)

    def unknown_required(self, understood: Container[int] | None = None) -> tuple[int, ...]:
        """Comprehension-required attribute types (< 0x8000) this receiver cannot handle.

        ``understood`` narrows the codec's table to what one usage processes.
        """
        out: list[int] = []
        for a in self.attributes:
            t = type_of(a)
            if t >= 0x8000:
                continue
            unknown = isinstance(a, UnknownAttribute) or (
                understood is not None and t not in understood
            )
            if unknown and t not in out:
                out.append(t)
        return tuple(out)

    @property
    def error_code(self) -> int | None:
        e = self.get(ErrorCode)
        return e.code if e else None

    # -- integrity ----------------------------------------------------------------------

    @property
    def has_integrity(self) -> bool:
        return self._mi_offset >= 0 or self._mi256_offset >= 0

    def check_integrity(self, key: bytes) -> bool:
        """Verify MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY (§14.5-14.6).

        Only meaningful on a parsed message; False when it carries neither attribute.
        """
        if self._mi256_offset >= 0:
            got = self.get(MessageIntegritySha256)
            if got is None:
                return False
            mac = integrity.hmac_sha256(key, _prefix(self._raw, self._mi256_offset, 32))
            return hmac.compare_digest(mac[: len(got.hmac)], got.hmac)
        if self._mi_offset >= 0:
            got1 = self.get(MessageIntegrity)
            if got1 is None:
                return False
            mac = integrity.hmac_sha1(key, _prefix(self._raw, self._mi_offset, 20))
            return hmac.compare_digest(mac, got1.hmac)
        return False

    # -- codec ---------------------------------------------------------------------------

    def serialize(self, key: bytes | None = None, *, sha256: bool = False, fingerprint: bool = False) -> bytes:
        """Encode; with ``key`` append MESSAGE-INTEGRITY (or -SHA256), then FINGERPRINT.

        When computing them, attributes of those kinds already in ``attributes`` are left out.
        """
        tid = self.transaction_id
        drop: tuple[type[Attribute], ...] = ()
        if key is not None:
            drop = (MessageIntegrity, MessageIntegritySha256, Fingerprint)
        elif fingerprint:
            drop = (Fingerprint,)
        body = bytearray()
        for a in self.attributes:
            if drop and isinstance(a, drop):
                continue
            value = a.encode(tid)
            body += _ATTR.pack(type_of(a), len(value)) + value + b"\0" * _pad(len(value))
        mtype = message_type(self.method, self.cls)
        if key is not None:
            size = 32 if sha256 else 20
            head = _HEADER.pack(mtype, len(body) + 4 + size, MAGIC_COOKIE, tid)
            if sha256:
                mac = integrity.hmac_sha256(key, head + bytes(body))
                body += _ATTR.pack(MessageIntegritySha256.TYPE, 32) + mac
            else:
                mac = integrity.hmac_sha1(key, head + bytes(body))
                body += _ATTR.pack(MessageIntegrity.TYPE, 20) + mac
        if fingerprint:
            head = _HEADER.pack(mtype, len(body) + 8, MAGIC_COOKIE, tid)
            body += _ATTR.pack(Fingerprint.TYPE, 4) + struct.pack(
                "!I", integrity.crc(head + bytes(body))
            )
        return _HEADER.pack(mtype, len(body), MAGIC_COOKIE, tid) + bytes(body)

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Decode one whole message (a UDP datagram or one framed stream message)."""
        if len(data) < HEADER_SIZE:
            raise ParseError("STUN: shorter than the 20-byte header", None)
        mtype, length, cookie, tid = _HEADER.unpack_from(data)
        if mtype & 0xC000:
            raise ParseError("STUN: first two bits are not zero", None)
        if cookie != MAGIC_COOKIE:
            raise ParseError("STUN: no magic cookie (RFC 3489 messages are not supported)", None)
        if length % 4:
            raise ParseError("STUN: length is not a multiple of 4", 400)
        if len(data) != HEADER_SIZE + length:
            raise ParseError(
                f"STUN: header says {length} bytes of attributes, {len(data) - HEADER_SIZE} present",
                400,
            )
        method, klass = split_type(mtype)
        attrs: list[Attribute] = []
        mi_off = mi256_off = -1
        seen_fp = False
        i = HEADER_SIZE
        end = len(data)
        while i < end:
            if end - i < 4:
                raise ParseError("STUN: truncated attribute header", 400)
            atype, alen = _ATTR.unpack_from(data, i)
            vstart = i + 4
            vend = vstart + alen
            if vend > end:
                raise ParseError(f"STUN: attribute {atype:#06x} overruns the message", 400)
            if seen_fp:
                raise ParseError("STUN: attribute after FINGERPRINT", 400)
            value = bytes(data[vstart:vend])
            offset = i
            i = vend + _pad(alen)
            if i > end:
                raise ParseError(f"STUN: attribute {atype:#06x} padding overruns the message", 400)
            # RFC 8489 §14.5: after MESSAGE-INTEGRITY only -SHA256 and FINGERPRINT count.
            if atype == Fingerprint.TYPE:
                seen_fp = True
                fp = Fingerprint.decode(value, tid)
                head = _HEADER.pack(mtype, offset - HEADER_SIZE + 8, MAGIC_COOKIE, tid)
                if integrity.crc(head + bytes(data[HEADER_SIZE:offset])) != fp.crc:
                    raise ParseError("STUN: FINGERPRINT mismatch", None)
                attrs.append(fp)
                continue
            if mi256_off >= 0:
                continue
            if atype == MessageIntegritySha256.TYPE:
                attrs.append(MessageIntegritySha256.decode(value, tid))
                mi256_off = offset
                continue
            if mi_off >= 0:
                continue
            if atype == MessageIntegrity.TYPE:
                attrs.append(MessageIntegrity.decode(value, tid))
                mi_off = offset
                continue
            kind = ATTRIBUTES.get(atype)
            if kind is None:
                attrs.append(UnknownAttribute(atype, value))
            else:
                attrs.append(kind.decode(value, tid))
        msg = cls(method, klass, tid, tuple(attrs))
        object.__setattr__(msg, "_raw", bytes(data))
        object.__setattr__(msg, "_mi_offset", mi_off)
        object.__setattr__(msg, "_mi256_offset", mi256_off)
        return msg


def _prefix(raw: bytes, offset: int, mac_len: int) -> bytes:
    """Message bytes before an integrity attribute, with the length patched (§14.5)."""
    return struct.pack("!H", offset - HEADER_SIZE + 4 + mac_len).join(
        (raw[:2], raw[4:offset])
    )


# -- builders ----------------------------------------------------------------------------


def request(method: int, tid: bytes, attrs: Iterable[Attribute] = ()) -> Message:
    return Message(method, Class.REQUEST, tid, tuple(attrs))


def indication(method: int, tid: bytes, attrs: Iterable[Attribute] = ()) -> Message:
    return Message(method, Class.INDICATION, tid, tuple(attrs))


def success(req: Message, attrs: Iterable[Attribute] = ()) -> Message:
    return Message(req.method, Class.SUCCESS, req.transaction_id, tuple(attrs))


def error(req: Message, code: int, attrs: Iterable[Attribute] = (), reason: str | None = None) -> Message:
    ec = ErrorCode.of(code) if reason is None else ErrorCode(code, reason)
    return Message(req.method, Class.ERROR, req.transaction_id, (ec, *attrs))
