"""SrtpTransform (media/srtp.py): protect/unprotect both ways for each profile, replay,
tampering, rollover, SDES keys; nothing raises on bad packets."""

from __future__ import annotations

import base64
import struct

import pytest

from sipedge.errors import ParseError, UsageError
from sipedge.media.secure import SRTP_PROFILES, SrtpKeys
from sipedge.media.srtp import (
    _LIBSRTP_PROFILES,
    PROFILE_KEY_LENGTHS,
    SDES_SUITES,
    SdesKeyParams,
    SrtpTransform,
    generate_sdes_key,
)


def rtp(seq: int, ssrc: int = 0x1234ABCD, payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, ssrc) + payload


RTCP_SR = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x1234ABCD, 1, 2, 3, 4, 5)


def transforms(profile: str) -> tuple[SrtpTransform, SrtpTransform]:
    key_len, salt_len = PROFILE_KEY_LENGTHS[profile]
    a_key, b_key = bytes(range(key_len + salt_len)), bytes(range(100, 100 + key_len + salt_len))
    return (
        SrtpTransform(SrtpKeys(profile, a_key, b_key)),
        SrtpTransform(SrtpKeys(profile, b_key, a_key)),
    )


def test_tables_agree() -> None:
    assert set(_LIBSRTP_PROFILES) == set(SRTP_PROFILES) == set(PROFILE_KEY_LENGTHS)
    assert set(SDES_SUITES.values()) == set(SRTP_PROFILES)


@pytest.mark.parametrize("profile", SRTP_PROFILES)
def test_round_trip_both_ways(profile: str) -> None:
    a, b = transforms(profile)
    for src, dst in ((a, b), (b, a)):
        for seq in range(5):
            packet = rtp(seq)
            srtp = src.protect(packet, rtcp=False)
            assert srtp is not None and srtp[12:] != packet[12:] and len(srtp) > len(packet)
            assert dst.unprotect(srtp, rtcp=False) == packet
        srtcp = src.protect(RTCP_SR, rtcp=True)
        assert srtcp is not None
        assert dst.unprotect(srtcp, rtcp=True) == RTCP_SR


def test_tag_lengths() -> None:
    for profile, tag in (("SRTP_AES128_CM_SHA1_80", 10), ("SRTP_AES128_CM_SHA1_32", 4), ("SRTP_AEAD_AES_128_GCM", 16)):
        a, _ = transforms(profile)
        srtp = a.protect(rtp(1), rtcp=False)
        assert srtp is not None and len(srtp) == len(rtp(1)) + tag


@pytest.mark.parametrize("profile", SRTP_PROFILES)
def test_replay_is_refused(profile: str) -> None:
    a, b = transforms(profile)
    srtp = a.protect(rtp(7), rtcp=False)
    assert srtp is not None
    assert b.unprotect(srtp, rtcp=False) is not None
    assert b.unprotect(srtp, rtcp=False) is None
    srtcp = a.protect(RTCP_SR, rtcp=True)
    assert srtcp is not None
    assert b.unprotect(srtcp, rtcp=True) is not None
    assert b.unprotect(srtcp, rtcp=True) is None


@pytest.mark.parametrize("profile", SRTP_PROFILES)
def test_tampering_is_refused(profile: str) -> None:
    a, b = transforms(profile)
    srtp = a.protect(rtp(1), rtcp=False)
    assert srtp is not None
    for pos in (len(srtp) - 1, 20, 2):  # auth tag, payload, header
        bad = bytearray(srtp)
        bad[pos] ^= 0x01
        assert b.unprotect(bytes(bad), rtcp=False) is None
    assert b.unprotect(srtp, rtcp=False) == rtp(1)  # the genuine one still passes


def test_wrong_key_is_refused() -> None:
    a, _ = transforms("SRTP_AES128_CM_SHA1_80")
    c, _ = transforms("SRTP_AES128_CM_SHA1_80")  # same keys as a, so c cannot read a
    srtp = a.protect(rtp(1), rtcp=False)
    assert srtp is not None and c.unprotect(srtp, rtcp=False) is None


def test_retransmission_can_be_protected_again() -> None:
    a, b = transforms("SRTP_AES128_CM_SHA1_80")
    first = a.protect(rtp(3), rtcp=False)
    assert first is not None and a.protect(rtp(3), rtcp=False) == first


@pytest.mark.parametrize(
    "packet", [b"", b"\x80", bytes(11), bytes(12), rtp(1)[:13], b"\xff" * 100, bytes(20000)]
)
@pytest.mark.parametrize("rtcp", [False, True])
def test_malformed_never_raises(packet: bytes, rtcp: bool) -> None:
    a, b = transforms("SRTP_AEAD_AES_128_GCM")
    assert b.unprotect(packet, rtcp=rtcp) is None
    a.protect(packet, rtcp=rtcp)  # returns bytes or None; must not raise


def test_rollover_past_65535() -> None:
    a, b = transforms("SRTP_AES128_CM_SHA1_32")
    start = 65535 - 100
    for i in range(70000):
        packet = rtp(start + i, payload=b"x")
        srtp = a.protect(packet, rtcp=False)
        assert srtp is not None
        assert b.unprotect(srtp, rtcp=False) == packet, f"packet {i} (seq {(start + i) & 0xFFFF})"


def test_reordering_within_the_window() -> None:
    a, b = transforms("SRTP_AES128_CM_SHA1_80")
    packets = [a.protect(rtp(seq), rtcp=False) or b"" for seq in range(600)]
    assert b.unprotect(packets[599], rtcp=False) is not None
    assert b.unprotect(packets[0], rtcp=False) is not None  # 599 behind: inside the 1024 window


def test_key_checks() -> None:
    with pytest.raises(UsageError, match="28 bytes"):
        SrtpTransform(SrtpKeys("SRTP_AEAD_AES_128_GCM", bytes(30), bytes(28)))
    with pytest.raises(UsageError, match="unknown SRTP profile"):
        SrtpTransform(SrtpKeys("SRTP_NULL", bytes(30), bytes(30)))
    with pytest.raises(UsageError, match="window_size"):
        SrtpTransform(SrtpKeys("SRTP_AES128_CM_SHA1_80", bytes(30), bytes(30)), window_size=10)


# -- SDES (RFC 4568) --------------------------------------------------------------------------


@pytest.mark.parametrize("suite", list(SDES_SUITES))
def test_sdes_round_trip(suite: str) -> None:
    ours, theirs = generate_sdes_key(suite), generate_sdes_key(suite)
    a = SrtpTransform.from_sdes(suite, ours, theirs.serialize())
    b = SrtpTransform.from_sdes(suite, theirs.serialize(), ours)
    assert a.profile == SDES_SUITES[suite]
    srtp = a.protect(rtp(9), rtcp=False)
    assert srtp is not None and b.unprotect(srtp, rtcp=False) == rtp(9)


def test_sdes_parse_rfc4568_example() -> None:
    # RFC 4568 §6.1's example key parameter
    text = "inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32"
    params = SdesKeyParams.parse(text, "AES_CM_128_HMAC_SHA1_80")
    assert len(params.key) == 30 and params.lifetime == 2**20 and params.mki == (1, 32)
    assert params.serialize() == text
    with pytest.raises(ParseError, match="MKI are not supported"):
        SrtpTransform.from_sdes("AES_CM_128_HMAC_SHA1_80", text, text)


def test_sdes_lifetime_decimal_and_unpadded_key() -> None:
    key = bytes(range(28))
    unpadded = base64.b64encode(key).decode().rstrip("=")
    params = SdesKeyParams.parse(f"inline:{unpadded}|1000", "AEAD_AES_128_GCM")
    assert params.key == key and params.lifetime == 1000 and params.mki is None


@pytest.mark.parametrize(
    ("text", "suite", "error"),
    [
        ("inline:" + base64.b64encode(bytes(28)).decode(), "AES_CM_128_HMAC_SHA1_80", "must be 16\\+14 = 30 bytes of key and salt, got 28"),
        ("inline:" + base64.b64encode(bytes(30)).decode(), "AEAD_AES_128_GCM", "must be 16\\+12 = 28 bytes of key and salt, got 30"),
        ("uri:http://example.com/key", "AES_CM_128_HMAC_SHA1_80", "does not start with 'inline:'"),
        ("inline:", "AES_CM_128_HMAC_SHA1_80", "empty key"),
        ("inline:not*base64!", "AES_CM_128_HMAC_SHA1_80", "is not base64"),
        ("inline:" + base64.b64encode(bytes(30)).decode() + "|2^49", "AES_CM_128_HMAC_SHA1_80", "exceeds 2\\^48"),
        ("inline:" + base64.b64encode(bytes(30)).decode() + "|1:300", "AES_CM_128_HMAC_SHA1_80", "MKI"),
        ("inline:" + base64.b64encode(bytes(30)).decode() + "|256:1", "AES_CM_128_HMAC_SHA1_80", "MKI"),
        ("inline:" + base64.b64encode(bytes(30)).decode() + "|abc", "AES_CM_128_HMAC_SHA1_80", "neither a lifetime"),
        ("inline:" + base64.b64encode(bytes(30)).decode() + "|1:4|2^20", "AES_CM_128_HMAC_SHA1_80", "before the MKI"),
        ("inline:AAAA;inline:BBBB", "AES_CM_128_HMAC_SHA1_80", "several SDES keys"),
        ("inline:" + base64.b64encode(bytes(30)).decode(), "F8_128_HMAC_SHA1_80", "unsupported SDES crypto suite"),
    ],
)
def test_sdes_parse_errors(text: str, suite: str, error: str) -> None:
    with pytest.raises(ParseError, match=error) as info:
        SdesKeyParams.parse(text, suite)
    assert info.value.hint == (488, "Not Acceptable Here")


def test_generate_uses_the_injected_rng() -> None:
    params = generate_sdes_key("AES_CM_128_HMAC_SHA1_32", lambda n: b"\x01" * n)
    assert params.key == b"\x01" * 30
    with pytest.raises(UsageError):
        generate_sdes_key("NULL")
