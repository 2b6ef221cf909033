"""STUN message rules (RFC 8489 §5, §6, §14): type bits, attributes, errors, nonce cookie."""

from __future__ import annotations

import struct

import pytest

from sipedge.errors import ParseError
from sipedge.stun import attributes as at
from sipedge.stun import message as sm
from sipedge.stun.message import Class, Message, Method

TID = bytes(range(12))


def test_type_bits() -> None:
    assert sm.message_type(Method.BINDING, Class.REQUEST) == 0x0001
    assert sm.message_type(Method.BINDING, Class.SUCCESS) == 0x0101
    assert sm.message_type(Method.BINDING, Class.ERROR) == 0x0111
    assert sm.message_type(Method.SEND, Class.INDICATION) == 0x0016
    assert sm.message_type(Method.DATA, Class.INDICATION) == 0x0017
    assert sm.message_type(Method.ALLOCATE, Class.ERROR) == 0x0113
    for method in range(0x1000):
        for cls in Class:
            assert sm.split_type(sm.message_type(method, cls)) == (method, cls)


def test_every_attribute_round_trips() -> None:
    values: list[at.Attribute] = [
        at.MappedAddress("10.0.0.1", 1),
        at.XorMappedAddress("::1", 65535),
        at.XorPeerAddress("192.0.2.7", 4000),
        at.XorRelayedAddress("2001:db8::9", 50000),
        at.AlternateServer("198.51.100.1", 3478),
        at.ResponseOrigin("127.0.0.1", 3478),
        at.OtherAddress("127.0.0.2", 3479),
        at.Username("alice"),
        at.Realm("example.org"),
        at.Nonce.with_features(at.SecurityFeatures(True, False), "abc"),
        at.Software("sipedge"),
        at.AlternateDomain("turn.example.org"),
        at.ErrorCode(438, "Stale Nonce"),
        at.AddressErrorCode(at.Family.IPV6, 440, "no v6"),
        at.UnknownAttributes((0x7777, 0x0033)),
        at.Userhash(bytes(32)),
        at.PasswordAlgorithm(2),
        at.PasswordAlgorithms(((2, b""), (1, b"x"))),
        at.Lifetime(600),
        at.Priority(1),
        at.IceControlled(2**64 - 1),
        at.IceControlling(5),
        at.UseCandidate(),
        at.DontFragment(),
        at.ChannelNumber(0x4001),
        at.Data(b"hello"),
        at.Padding(b"\0" * 7),
        at.RequestedAddressFamily(at.Family.IPV6),
        at.AdditionalAddressFamily(at.Family.IPV6),
        at.EvenPort(True),
        at.RequestedTransport(17),
        at.ReservationToken(b"12345678"),
        at.Icmp(3, 1, 0),
        at.ChangeRequest(True, False),
        at.ResponsePort(9999),
        at.ConnectionId(7),
        at.CacheTimeout(3),
        at.UnknownAttribute(0xC001, b"abc"),
    ]
    m = Message(Method.ALLOCATE, Class.REQUEST, TID, tuple(values))
    assert Message.parse(m.serialize()) == m


def test_integrity_and_fingerprint() -> None:
    m = sm.request(Method.BINDING, TID, [at.Username("u")])
    data = m.serialize(b"key", fingerprint=True)
    p = Message.parse(data)
    assert p.has_integrity and p.check_integrity(b"key") and not p.check_integrity(b"kex")
    assert p.has(at.Fingerprint)
    data256 = m.serialize(b"key", sha256=True)
    assert Message.parse(data256).check_integrity(b"key")
    assert not Message.parse(m.serialize()).check_integrity(b"key")


def test_attributes_after_integrity_are_ignored() -> None:
    m = sm.request(Method.BINDING, TID, [at.Username("u")])
    data = m.serialize(b"key")
    extra = struct.pack("!HH", 0x8022, 4) + b"evil"
    data = data[:2] + struct.pack("!H", len(data) - 20 + len(extra)) + data[4:] + extra
    p = Message.parse(data)
    assert p.get(at.Software) is None
    assert p.check_integrity(b"key")


def test_unknown_required() -> None:
    m = Message(
        Method.BINDING,
        Class.REQUEST,
        TID,
        (at.UnknownAttribute(0x7F00, b""), at.UnknownAttribute(0xC000, b""), at.Priority(1)),
    )
    p = Message.parse(m.serialize())
    assert p.unknown_required() == (0x7F00,)
    assert p.unknown_required(understood={0x0006}) == (0x7F00, 0x0024)


def test_nonce_features() -> None:
    n = at.Nonce.with_features(at.SecurityFeatures(True, True), "xyz")
    assert n.value.startswith("obMatJos2") and n.features == at.SecurityFeatures(True, True)
    assert at.Nonce.with_features(at.SecurityFeatures(True, False), "").features == at.SecurityFeatures(True, False)
    assert at.Nonce("plain-nonce").features is None
    assert at.Nonce("obMatJos2!!!!x").features is None


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        (b"", None),
        (b"\x00\x01\x00\x00" + b"\0" * 16, None),  # no cookie
        (b"\xc0\x01\x00\x00\x21\x12\xa4\x42" + TID, None),  # first bits set
        (b"\x00\x01\x00\x02\x21\x12\xa4\x42" + TID + b"\0\0", 400),  # length % 4
        (b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TID + b"\0\0\0\0", 400),  # short body
        (b"\x00\x01\x00\x04\x21\x12\xa4\x42" + TID + b"\x00\x06\x00\x08", 400),  # overrun
        (b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TID + b"\x00\x20\x00\x04\x00\x01\x00\x01", 400),
        (b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TID + b"\x00\x09\x00\x04\x00\x00\x09\x00", 400),
        (b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TID + b"\x00\x06\x00\x02\xff\xfe\x00\x00", 400),
    ],
)
def test_malformed(data: bytes, hint: int | None) -> None:
    with pytest.raises(ParseError) as ei:
        Message.parse(data)
    assert ei.value.hint == hint


def test_peek_header() -> None:
    data = sm.request(Method.ALLOCATE, TID).serialize()
    assert sm.peek_header(data) == (Method.ALLOCATE, Class.REQUEST, TID)
    assert sm.peek_header(b"\x40\x00\x00\x00") is None
    assert sm.is_stun(data) and not sm.is_stun(data[:19])


def test_error_builder() -> None:
    req = sm.request(Method.ALLOCATE, TID)
    e = sm.error(req, 437)
    assert e.cls is Class.ERROR and e.error_code == 437
    assert e.get(at.ErrorCode) == at.ErrorCode(437, "Allocation Mismatch")
