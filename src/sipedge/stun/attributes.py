"""STUN attributes (RFC 8489 §14, RFC 8656 §18, RFC 5780 §7, RFC 8445 §16) as typed values.

Each attribute is a frozen dataclass with a ``TYPE`` code, ``encode(tid) -> bytes`` (the
value, unpadded) and ``decode(value, tid)`` raising only :class:`ParseError`. The table
:data:`ATTRIBUTES` maps a type code to its class; a code not in the table decodes to
:class:`UnknownAttribute`, which keeps the raw value so it round-trips.
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeVar

from ..errors import ParseError

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)

NONCE_COOKIE = "obMatJos2"
"""RFC 8489 §9.2: a NONCE that starts with this carries the 24-bit security feature set."""


class Family(IntEnum):
    """Address family codes of the address attributes (RFC 8489 §14.1)."""

    IPV4 = 0x01
    IPV6 = 0x02


class PasswordAlgorithmCode(IntEnum):
    """RFC 8489 §18.5."""

    MD5 = 0x0001
    SHA256 = 0x0002


class Attribute:
    """Base of all attribute values."""

    __slots__ = ()
    TYPE: ClassVar[int]
    NAME: ClassVar[str]

    def encode(self, tid: bytes) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls: type[A], value: bytes, tid: bytes) -> A:
        raise NotImplementedError


A = TypeVar("A", bound=Attribute)

ATTRIBUTES: dict[int, type[Attribute]] = {}


def _register(code: int, name: str) -> Callable[[type[A]], type[A]]:
    def deco(cls: type[A]) -> type[A]:
        cls.TYPE = code
        cls.NAME = name
        ATTRIBUTES[code] = cls
        return cls

    return deco


def _bad(name: str, what: str) -> ParseError:
    return ParseError(f"{name}: {what}", 400)


def _check_len(name: str, value: bytes, n: int) -> None:
    if len(value) != n:
        raise _bad(name, f"length {len(value)}, expected {n}")


# -- addresses ---------------------------------------------------------------------------


def family_of(host: str) -> Family:
    return Family.IPV6 if ":" in host else Family.IPV4


def _pack_address(name: str, host: str, port: int, xor_tid: bytes | None) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"{name}: {host!r} is not an IP address") from exc
    raw = ip.packed
    if xor_tid is not None:
        port ^= MAGIC_COOKIE >> 16
        mask = _COOKIE_BYTES + xor_tid
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=False))
    fam = Family.IPV4 if ip.version == 4 else Family.IPV6
    return struct.pack("!BBH", 0, fam, port) + raw


def _unpack_address(name: str, value: bytes, xor_tid: bytes | None) -> tuple[str, int]:
    if len(value) < 4:
        raise _bad(name, "truncated address")
    _, fam, port = struct.unpack_from("!BBH", value)
    raw = value[4:]
    if fam == Family.IPV4:
        if len(raw) != 4:
            raise _bad(name, "IPv4 address must be 4 bytes")
    elif fam == Family.IPV6:
        if len(raw) != 16:
            raise _bad(name, "IPv6 address must be 16 bytes")
    else:
        raise _bad(name, f"unknown address family {fam}")
    if xor_tid is not None:
        port ^= MAGIC_COOKIE >> 16
        mask = _COOKIE_BYTES + xor_tid
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=False))
    return str(ipaddress.ip_address(raw)), port


@dataclass(frozen=True, slots=True)
class _Address(Attribute):
    host: str
    port: int
    XOR: ClassVar[bool] = False

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def family(self) -> Family:
        return family_of(self.host)

    def encode(self, tid: bytes) -> bytes:
        return _pack_address(self.NAME, self.host, self.port, tid if self.XOR else None)

    @classmethod
    def decode(cls: type[A], value: bytes, tid: bytes) -> A:
        host, port = _unpack_address(cls.NAME, value, tid if cls.XOR else None)  # type: ignore[attr-defined]
        return cls(host, port)  # type: ignore[call-arg]


@_register(0x0001, "MAPPED-ADDRESS")
@dataclass(frozen=True, slots=True)
class MappedAddress(_Address):
    pass


@_register(0x0020, "XOR-MAPPED-ADDRESS")
@dataclass(frozen=True, slots=True)
class XorMappedAddress(_Address):
    XOR: ClassVar[bool] = True


@_register(0x0012, "XOR-PEER-ADDRESS")
@dataclass(frozen=True, slots=True)
class XorPeerAddress(_Address):
    XOR: ClassVar[bool] = True


@_register(0x0016, "XOR-RELAYED-ADDRESS")
@dataclass(frozen=True, slots=True)
class XorRelayedAddress(_Address):
    XOR: ClassVar[bool] = True


@_register(0x8023, "ALTERNATE-SERVER")
@dataclass(frozen=True, slots=True)
class AlternateServer(_Address):
    pass


@_register(0x802B, "RESPONSE-ORIGIN")
@dataclass(frozen=True, slots=True)
class ResponseOrigin(_Address):
    pass


@_register(0x802C, "OTHER-ADDRESS")
@dataclass(frozen=True, slots=True)
class OtherAddress(_Address):
    pass


# -- text --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text(Attribute):
    value: str
    MAX_BYTES: ClassVar[int] = 763

    def encode(self, tid: bytes) -> bytes:
        raw = self.value.encode("utf-8")
        if len(raw) > self.MAX_BYTES:
            raise ValueError(f"{self.NAME}: longer than {self.MAX_BYTES} bytes")
        return raw

    @classmethod
    def decode(cls: type[A], value: bytes, tid: bytes) -> A:
        if len(value) > cls.MAX_BYTES:  # type: ignore[attr-defined]
            raise _bad(cls.NAME, f"longer than {cls.MAX_BYTES} bytes")  # type: ignore[attr-defined]
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(cls.NAME, "not UTF-8") from exc
        return cls(text)  # type: ignore[call-arg]


@_register(0x0006, "USERNAME")
@dataclass(frozen=True, slots=True)
class Username(_Text):
    MAX_BYTES: ClassVar[int] = 513


@_register(0x0014, "REALM")
@dataclass(frozen=True, slots=True)
class Realm(_Text):
    pass


@dataclass(frozen=True, slots=True)
class SecurityFeatures:
    """The RFC 8489 §9.2 security feature set carried in a NONCE."""

    password_algorithms: bool = False
    username_anonymity: bool = False

    def encode(self) -> str:
        bits = (self.password_algorithms << 23) | (self.username_anonymity << 22)
        return base64.b64encode(bits.to_bytes(3, "big")).decode("ascii")


@_register(0x0015, "NONCE")
@dataclass(frozen=True, slots=True)
class Nonce(_Text):
    @staticmethod
    def with_features(features: SecurityFeatures, opaque: str) -> Nonce:
        """A nonce that advertises ``features`` (RFC 8489 §9.2) followed by ``opaque``."""
        return Nonce(NONCE_COOKIE + features.encode() + opaque)

    @property
    def features(self) -> SecurityFeatures | None:
        """The advertised security features, or None for an RFC 5389 style nonce."""
        if not self.value.startswith(NONCE_COOKIE) or len(self.value) < len(NONCE_COOKIE) + 4:
            return None
        enc = self.value[len(NONCE_COOKIE) : len(NONCE_COOKIE) + 4]
        try:
            raw = base64.b64decode(enc.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            return None
        bits = int.from_bytes(raw, "big")
        return SecurityFeatures(bool(bits & (1 << 23)), bool(bits & (1 << 22)))


@_register(0x8022, "SOFTWARE")
@dataclass(frozen=True, slots=True)
class Software(_Text):
    pass


@_register(0x8003, "ALTERNATE-DOMAIN")
@dataclass(frozen=True, slots=True)
class AlternateDomain(_Text):
    pass


# -- error codes -------------------------------------------------------------------------

REASONS: dict[int, str] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    487: "Role Conflict",
    500: "Server Error",
    508: "Insufficient Capacity",
}


def _pack_code(code: int, reason: str) -> bytes:
    if not 300 <= code <= 699:
        raise ValueError(f"error code {code} outside 300..699")
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")


def _unpack_code(name: str, value: bytes) -> tuple[int, str]:
    if len(value) < 4:
        raise _bad(name, "truncated")
    cls, number = value[2] & 0x07, value[3]
    if not 3 <= cls <= 6 or number > 99:
        raise _bad(name, f"invalid code {cls}{number:02d}")
    if len(value) > 4 + 763:
        raise _bad(name, "reason phrase too long")
    try:
        reason = value[4:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(name, "reason not UTF-8") from exc
    return cls * 100 + number, reason


@_register(0x0009, "ERROR-CODE")
@dataclass(frozen=True, slots=True)
class ErrorCode(Attribute):
    code: int
    reason: str = ""

    @staticmethod
    def of(code: int) -> ErrorCode:
        return ErrorCode(code, REASONS.get(code, ""))

    def encode(self, tid: bytes) -> bytes:
        return _pack_code(self.code, self.reason)

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> ErrorCode:
        return cls(*_unpack_code(cls.NAME, value))


@_register(0x8001, "ADDRESS-ERROR-CODE")
@dataclass(frozen=True, slots=True)
class AddressErrorCode(Attribute):
    """RFC 8656 §18.14: why the allocation of one family of a dual allocation failed."""

    family: Family
    code: int
    reason: str = ""

    def encode(self, tid: bytes) -> bytes:
        return bytes([self.family]) + _pack_code(self.code, self.reason)[1:]

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> AddressErrorCode:
        if len(value) < 4:
            raise _bad(cls.NAME, "truncated")
        try:
            fam = Family(value[0])
        except ValueError as exc:
            raise _bad(cls.NAME, f"unknown family {value[0]}") from exc
        code, reason = _unpack_code(cls.NAME, b"\0" + value[1:])
        return cls(fam, code, reason)


@_register(0x000A, "UNKNOWN-ATTRIBUTES")
@dataclass(frozen=True, slots=True)
class UnknownAttributes(Attribute):
    types: tuple[int, ...]

    def encode(self, tid: bytes) -> bytes:
        return b"".join(struct.pack("!H", t) for t in self.types)

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> UnknownAttributes:
        if len(value) % 2:
            raise _bad(cls.NAME, "odd length")
        return cls(tuple(struct.unpack(f"!{len(value) // 2}H", value)))


# -- integrity ---------------------------------------------------------------------------


@_register(0x0008, "MESSAGE-INTEGRITY")
@dataclass(frozen=True, slots=True)
class MessageIntegrity(Attribute):
    hmac: bytes

    def encode(self, tid: bytes) -> bytes:
        return self.hmac

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> MessageIntegrity:
        _check_len(cls.NAME, value, 20)
        return cls(value)


@_register(0x001C, "MESSAGE-INTEGRITY-SHA256")
@dataclass(frozen=True, slots=True)
class MessageIntegritySha256(Attribute):
    hmac: bytes

    def encode(self, tid: bytes) -> bytes:
        return self.hmac

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> MessageIntegritySha256:
        if not 16 <= len(value) <= 32 or len(value) % 4:
            raise _bad(cls.NAME, f"length {len(value)}, expected 16..32 and a multiple of 4")
        return cls(value)


@_register(0x8028, "FINGERPRINT")
@dataclass(frozen=True, slots=True)
class Fingerprint(Attribute):
    crc: int

    def encode(self, tid: bytes) -> bytes:
        return struct.pack("!I", self.crc)

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> Fingerprint:
        _check_len(cls.NAME, value, 4)
        return cls(struct.unpack("!I", value)[0])


@_register(0x001E, "USERHASH")
@dataclass(frozen=True, slots=True)
class Userhash(Attribute):
    value: bytes

    def encode(self, tid: bytes) -> bytes:
        return self.value

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> Userhash:
        _check_len(cls.NAME, value, 32)
        return cls(value)


def _pack_alg(alg: int, params: bytes) -> bytes:
    pad = b"\0" * (-len(params) % 4)
    return struct.pack("!HH", alg, len(params)) + params + pad


@_register(0x001D, "PASSWORD-ALGORITHM")
@dataclass(frozen=True, slots=True)
class PasswordAlgorithm(Attribute):
    algorithm: int
    params: bytes = b""

    def encode(self, tid: bytes) -> bytes:
        return _pack_alg(self.algorithm, self.params)[: 4 + len(self.params)]

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> PasswordAlgorithm:
        if len(value) < 4:
            raise _bad(cls.NAME, "truncated")
        alg, n = struct.unpack_from("!HH", value)
        if len(value) < 4 + n:
            raise _bad(cls.NAME, "parameters truncated")
        return cls(alg, value[4 : 4 + n])


@_register(0x8002, "PASSWORD-ALGORITHMS")
@dataclass(frozen=True, slots=True)
class PasswordAlgorithms(Attribute):
    algorithms: tuple[tuple[int, bytes], ...]

    def encode(self, tid: bytes) -> bytes:
        return b"".join(_pack_alg(a, p) for a, p in self.algorithms)

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> PasswordAlgorithms:
        out: list[tuple[int, bytes]] = []
        i = 0
        while i < len(value):
            if len(value) - i < 4:
                raise _bad(cls.NAME, "truncated")
            alg, n = struct.unpack_from("!HH", value, i)
            i += 4
            if len(value) - i < n:
                raise _bad(cls.NAME, "parameters truncated")
            params = value[i : i + n]
            i += n + (-n % 4)
            if i > len(value):
                raise _bad(cls.NAME, "padding truncated")
            out.append((alg, params))
        return cls(tuple(out))


# -- plain integers and flags -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _U32(Attribute):
    value: int

    def encode(self, tid: bytes) -> bytes:
        return struct.pack("!I", self.value)

    @classmethod
    def decode(cls: type[A], value: bytes, tid: bytes) -> A:
        _check_len(cls.NAME, value, 4)
        return cls(struct.unpack("!I", value)[0])  # type: ignore[call-arg]


@dataclass(frozen=True, slots=True)
class _U64(Attribute):
    value: int

    def encode(self, tid: bytes) -> bytes:
        return struct.pack("!Q", self.value)

    @classmethod
    def decode(cls: type[A], value: bytes, tid: bytes) -> A:
        _check_len(cls.NAME, value, 8)
        return cls(struct.unpack("!Q", value)[0])  # type: ignore[call-arg]


@dataclass(frozen=True, slots=True)
class _Flag(Attribute):
    def encode(self, tid: bytes) -> bytes:
        return b""

    @classmethod
    def decode(cls: type[A], value: bytes, tid: bytes) -> A:
        _check_len(cls.NAME, value, 0)
        return cls()


@_register(0x000D, "LIFETIME")
@dataclass(frozen=True, slots=True)
class Lifetime(_U32):
    pass


@_register(0x0024, "PRIORITY")
@dataclass(frozen=True, slots=True)
class Priority(_U32):
    pass


@_register(0x8027, "CACHE-TIMEOUT")
@dataclass(frozen=True, slots=True)
class CacheTimeout(_U32):
    pass


@_register(0x002A, "CONNECTION-ID")
@dataclass(frozen=True, slots=True)
class ConnectionId(_U32):
    pass


@_register(0x8029, "ICE-CONTROLLED")
@dataclass(frozen=True, slots=True)
class IceControlled(_U64):
    pass


@_register(0x802A, "ICE-CONTROLLING")
@dataclass(frozen=True, slots=True)
class IceControlling(_U64):
    pass


@_register(0x0025, "USE-CANDIDATE")
@dataclass(frozen=True, slots=True)
class UseCandidate(_Flag):
    pass


@_register(0x001A, "DONT-FRAGMENT")
@dataclass(frozen=True, slots=True)
class DontFragment(_Flag):
    pass


@_register(0x000C, "CHANNEL-NUMBER")
@dataclass(frozen=True, slots=True)
class ChannelNumber(Attribute):
    number: int

    def encode(self, tid: bytes) -> bytes:
        return struct.pack("!HH", self.number, 0)

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> ChannelNumber:
        _check_len(cls.NAME, value, 4)
        return cls(struct.unpack_from("!H", value)[0])


@_register(0x0013, "DATA")
@dataclass(frozen=True, slots=True)
class Data(Attribute):
    value: bytes

    def encode(self, tid: bytes) -> bytes:
        return self.value

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> Data:
        return cls(value)


@_register(0x0026, "PADDING")
@dataclass(frozen=True, slots=True)
class Padding(Attribute):
    value: bytes

    def encode(self, tid: bytes) -> bytes:
        return self.value

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> Padding:
        return cls(value)


@dataclass(frozen=True, slots=True)
class _FamilyAttr(Attribute):
    family: Family

    def encode(self, tid: bytes) -> bytes:
        return struct.pack("!B3x", self.family)

    @classmethod
    def decode(cls: type[A], value: bytes, tid: bytes) -> A:
        _check_len(cls.NAME, value, 4)
        try:
            fam = Family(value[0])
        except ValueError as exc:
            raise _bad(cls.NAME, f"unknown family {value[0]}") from exc
        return cls(fam)  # type: ignore[call-arg]


@_register(0x0017, "REQUESTED-ADDRESS-FAMILY")
@dataclass(frozen=True, slots=True)
class RequestedAddressFamily(_FamilyAttr):
    pass


@_register(0x8000, "ADDITIONAL-ADDRESS-FAMILY")
@dataclass(frozen=True, slots=True)
class AdditionalAddressFamily(_FamilyAttr):
    pass


@_register(0x8032, "ADDITIONAL-ADDRESS-FAMILY-DRAFT")
@dataclass(frozen=True, slots=True)
class AdditionalAddressFamilyDraft(_FamilyAttr):
    """The code point of draft-ietf-tram-dual-allocation, still sent by coturn's clients."""


@_register(0x0018, "EVEN-PORT")
@dataclass(frozen=True, slots=True)
class EvenPort(Attribute):
    reserve: bool = False

    def encode(self, tid: bytes) -> bytes:
        return b"\x80" if self.reserve else b"\x00"

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> EvenPort:
        _check_len(cls.NAME, value, 1)
        return cls(bool(value[0] & 0x80))


@_register(0x0019, "REQUESTED-TRANSPORT")
@dataclass(frozen=True, slots=True)
class RequestedTransport(Attribute):
    protocol: int

    def encode(self, tid: bytes) -> bytes:
        return struct.pack("!B3x", self.protocol)

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> RequestedTransport:
        _check_len(cls.NAME, value, 4)
        return cls(value[0])


@_register(0x0022, "RESERVATION-TOKEN")
@dataclass(frozen=True, slots=True)
class ReservationToken(Attribute):
    token: bytes

    def encode(self, tid: bytes) -> bytes:
        return self.token

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> ReservationToken:
        _check_len(cls.NAME, value, 8)
        return cls(value)


@_register(0x8004, "ICMP")
@dataclass(frozen=True, slots=True)
class Icmp(Attribute):
    """RFC 8656 §18.13: an ICMP error seen on the relay, reported in a Data indication."""

    icmp_type: int
    icmp_code: int
    data: int = 0

    def encode(self, tid: bytes) -> bytes:
        return struct.pack("!HBBI", 0, self.icmp_type, self.icmp_code, self.data)

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> Icmp:
        _check_len(cls.NAME, value, 8)
        _, t, c, d = struct.unpack("!HBBI", value)
        return cls(t, c, d)


@_register(0x0003, "CHANGE-REQUEST")
@dataclass(frozen=True, slots=True)
class ChangeRequest(Attribute):
    """RFC 5780 §7.2: answer from the other IP and/or the other port."""

    change_ip: bool = False
    change_port: bool = False

    def encode(self, tid: bytes) -> bytes:
        return struct.pack("!I", (self.change_ip << 2) | (self.change_port << 1))

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> ChangeRequest:
        _check_len(cls.NAME, value, 4)
        bits = struct.unpack("!I", value)[0]
        return cls(bool(bits & 4), bool(bits & 2))


@_register(0x0027, "RESPONSE-PORT")
@dataclass(frozen=True, slots=True)
class ResponsePort(Attribute):
    """RFC 5780 §7.5: send the response to this port of the source address."""

    port: int

    def encode(self, tid: bytes) -> bytes:
        return struct.pack("!HH", self.port, 0)

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> ResponsePort:
        _check_len(cls.NAME, value, 4)
        return cls(struct.unpack_from("!H", value)[0])


@dataclass(frozen=True, slots=True)
class UnknownAttribute(Attribute):
    """An attribute whose type is not in :data:`ATTRIBUTES`; kept raw so it round-trips."""

    type: int
    value: bytes

    @property
    def comprehension_required(self) -> bool:
        return self.type < 0x8000

    def encode(self, tid: bytes) -> bytes:
        return self.value

    @classmethod
    def decode(cls, value: bytes, tid: bytes) -> UnknownAttribute:
        raise NotImplementedError("built by the message parser")


def type_of(attr: Attribute) -> int:
    return attr.type if isinstance(attr, UnknownAttribute) else attr.TYPE
