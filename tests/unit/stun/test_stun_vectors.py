"""RFC 5769 / RFC 8489 Appendix B vectors: parse, check fields, verify integrity, re-encode."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipedge.errors import ParseError
from sipedge.stun import attributes as at
from sipedge.stun import integrity
from sipedge.stun.message import Class, Message, Method

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "stun"
SHORT_PW = "VOkJxbRl1RmTxUk/WvJxBt"
USER = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"


def vector(name: str) -> bytes:
    return bytes.fromhex("".join((VECTORS / name).read_text().split()))


def test_sample_request() -> None:
    data = vector("rfc5769-2.1-request.hex")
    m = Message.parse(data)
    assert (m.method, m.cls) == (Method.BINDING, Class.REQUEST)
    assert m.transaction_id.hex() == "b7e7a701bc34d686fa87dfae"
    assert m.get(at.Software) == at.Software("STUN test client")
    assert m.get(at.Priority) == at.Priority(0x6E0001FF)
    assert m.get(at.IceControlled) == at.IceControlled(0x932FF9B151263B36)
    assert m.get(at.Username) == at.Username("evtj:h6vY")
    assert m.check_integrity(integrity.short_term_key(SHORT_PW))
    assert not m.check_integrity(b"wrong")
    # Re-encoded with zero padding and recomputed integrity, it parses to the same message.
    out = m.serialize(integrity.short_term_key(SHORT_PW), fingerprint=True)
    assert len(out) == len(data)
    again = Message.parse(out)
    assert again.check_integrity(integrity.short_term_key(SHORT_PW))
    assert again.attributes[:4] == m.attributes[:4]


@pytest.mark.parametrize(
    ("name", "host"),
    [
        ("rfc5769-2.2-ipv4-response.hex", "192.0.2.1"),
        ("rfc5769-2.3-ipv6-response.hex", "2001:db8:1234:5678:11:2233:4455:6677"),
    ],
)
def test_sample_responses(name: str, host: str) -> None:
    data = vector(name)
    m = Message.parse(data)
    assert m.cls is Class.SUCCESS
    assert m.get(at.Software) == at.Software("test vector")
    xma = m.get(at.XorMappedAddress)
    assert xma is not None and xma.address == (host, 32853)
    assert m.check_integrity(integrity.short_term_key(SHORT_PW))
    # XOR address encoding reproduces the vector's bytes exactly.
    assert xma.encode(m.transaction_id) in data


def test_long_term_request() -> None:
    m = Message.parse(vector("rfc5769-2.4-long-term-request.hex"))
    assert m.get(at.Username) == at.Username(USER)
    assert m.get(at.Realm) == at.Realm("example.org")
    assert m.get(at.Nonce) == at.Nonce("f//499k954d6OL34oL9FSTvy64sA")
    assert m.check_integrity(integrity.long_term_key(USER, "example.org", "TheMatrIX"))
    assert not m.check_integrity(integrity.long_term_key(USER, "example.org", "TheMatrix"))
    # The encoder reproduces the vector byte for byte (its padding is zero).
    plain = Message(m.method, m.cls, m.transaction_id, m.attributes[:3])
    key = integrity.long_term_key(USER, "example.org", "TheMatrIX")
    assert plain.serialize(key) == vector("rfc5769-2.4-long-term-request.hex")


def test_sha256_userhash_request() -> None:
    data = vector("rfc8489-b1-sha256-userhash-request.hex")
    m = Message.parse(data)
    uh = m.get(at.Userhash)
    assert uh is not None and uh.value == integrity.userhash(USER, "example.org")
    assert m.get(at.PasswordAlgorithm) == at.PasswordAlgorithm(at.PasswordAlgorithmCode.SHA256)
    key = integrity.long_term_key(USER, "example.org", "TheMatrIX", at.PasswordAlgorithmCode.SHA256)
    assert m.check_integrity(key)
    assert m.serialize(key, sha256=True) == data


@pytest.mark.parametrize("name", sorted(p.name for p in VECTORS.glob("*.hex")))
def test_vectors_whole_truncated_and_trailing(name: str) -> None:
    data = vector(name)
    Message.parse(data)
    for cut in range(len(data)):
        with pytest.raises(ParseError):
            Message.parse(data[:cut])
    with pytest.raises(ParseError):
        Message.parse(data + b"\0\0\0\0")


def test_fingerprint_mismatch_is_not_stun() -> None:
    data = bytearray(vector("rfc5769-2.2-ipv4-response.hex"))
    data[-1] ^= 1
    with pytest.raises(ParseError) as ei:
        Message.parse(bytes(data))
    assert ei.value.hint is None
    data = bytearray(vector("rfc5769-2.2-ipv4-response.hex"))
    data[30] ^= 1  # inside SOFTWARE: fingerprint now wrong
    with pytest.raises(ParseError):
        Message.parse(bytes(data))
