"""SDES-SRTP (RFC 4568) bridging through MediaRelay: an ``RTP/SAVP`` leg with ``a=crypto``
converted to plain RTP and to DTLS-SRTP. The test plays the SDES phone with its own
SrtpTransform (libsrtp) keyed from the SDP the relay wrote."""

from __future__ import annotations

import base64
import random
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig, RelayError
from sipedge.media.sdes import our_line
from sipedge.media.srtp import SdesKeyParams, SrtpTransform
from sipedge.sdp import Crypto, SessionDescription
from sipedge.server.dtls import DtlsContext

ADV = "203.0.113.1"
SDES = ("198.51.100.1", 2000)  # the SDES phone
PLAIN = ("198.51.100.2", 4000)  # the plain RTP phone
KEY80 = base64.b64encode(bytes(range(30))).decode()
KEY32 = base64.b64encode(bytes(range(100, 130))).decode()
FINGERPRINT = "sha-256 " + ":".join(["AB"] * 32)


def relay(dtls: DtlsContext | None = None) -> MediaRelay:
    return MediaRelay(RelayConfig(advertised_address=ADV), RangePortAllocator(30000, 30099, random.Random(3)),
                      dtls=dtls)


def sdp(addr: tuple[str, int], proto: str = "RTP/AVP", extra: str = "") -> bytes:
    text = (f"v=0\no=- 1 1 IN IP4 {addr[0]}\ns=-\nc=IN IP4 {addr[0]}\nt=0 0\n"
            f"m=audio {addr[1]} {proto} 0\na=rtpmap:0 PCMU/8000\n{extra}a=sendrecv\n")
    return text.replace("\n", "\r\n").encode()


def sdes_offer(lines: str = f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}\n"
                            f"a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:{KEY32}\n") -> bytes:
    return sdp(SDES, "RTP/SAVP", lines)


def browser_sdp(setup: str = "actpass") -> bytes:
    return sdp(("198.51.100.3", 50000), "UDP/TLS/RTP/SAVPF",
               f"a=mid:0\na=ice-ufrag:abcd\na=ice-pwd:abcdefghijklmnopqrstuv\na=fingerprint:{FINGERPRINT}\n"
               f"a=setup:{setup}\na=rtcp-mux\n")


def port_of(out: bytes) -> int:
    m = re.search(rb"m=audio (\d+)", out)
    assert m is not None
    return int(m.group(1))


def cryptos(out: bytes) -> list[Crypto]:
    return SessionDescription.parse(out).media[0].crypto


def rtp(seq: int, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes([seq & 0xFF]) * 160


def sdes_phone_calls_plain_phone() -> tuple[MediaRelay, bytes, bytes, int, int]:
    r = relay()
    to_plain = r.offer("c", "sdes", sdes_offer(), 0.0, Flags(transport_protocol="RTP/AVP"))
    to_sdes = r.answer("c", "sdes", "plain", sdp(PLAIN), 0.1)
    return r, to_plain, to_sdes, port_of(to_sdes), port_of(to_plain)


def test_sdes_phone_calls_plain_phone_sdp() -> None:
    _, to_plain, to_sdes, _, _ = sdes_phone_calls_plain_phone()
    assert b"m=audio" in to_plain and b" RTP/AVP 0\r\n" in to_plain
    assert b"a=crypto" not in to_plain
    assert b" RTP/SAVP 0\r\n" in to_sdes
    (ours,) = cryptos(to_sdes)  # exactly one: the tag and suite it listed first, our key
    assert (ours.tag, ours.suite) == (3, "AES_CM_128_HMAC_SHA1_80")
    key = SdesKeyParams.parse(ours.key_params, ours.suite)
    assert len(key.key) == 30 and key.key != bytes(range(30))


def test_sdes_phone_calls_plain_phone_packets_both_ways() -> None:
    r, _, to_sdes, p_sdes, p_plain = sdes_phone_calls_plain_phone()
    (ours,) = cryptos(to_sdes)
    phone = SrtpTransform.from_sdes(ours.suite, local=f"inline:{KEY80}", remote=ours.key_params)
    for seq in (1, 2, 3):
        wire = phone.protect(rtp(seq), False)
        assert wire is not None and wire != rtp(seq)
        assert r.receive(wire, p_sdes, SDES, 1.0) == (p_plain, PLAIN, rtp(seq))  # byte-identical
    out = r.receive(rtp(7, 0x9999), p_plain, PLAIN, 1.1)
    assert out is not None and out[:2] == (p_sdes, SDES)
    assert phone.unprotect(out[2], False) == rtp(7, 0x9999)
    # SRTCP (on the RTCP port, the phone does not mux)
    rtcp = struct.pack("!BBHI", 0x80, 200, 6, 0x1234) + bytes(20)
    wire = phone.protect(rtcp, True)
    assert wire is not None
    sent = r.receive(wire, p_sdes + 1, (SDES[0], SDES[1] + 1), 1.2)
    assert sent is not None and sent[2] == rtcp
    assert r.stats()["media_srtp_dropped"] == 0


def test_a_bad_auth_tag_from_the_sdes_side_is_dropped_and_counted() -> None:
    r, _, to_sdes, p_sdes, p_plain = sdes_phone_calls_plain_phone()
    (ours,) = cryptos(to_sdes)
    phone = SrtpTransform.from_sdes(ours.suite, local=f"inline:{KEY80}", remote=ours.key_params)
    wire = phone.protect(rtp(1), False)
    assert wire is not None
    assert r.receive(wire[:-1] + bytes([wire[-1] ^ 1]), p_sdes, SDES, 1.0) is None
    assert r.receive(rtp(2), p_sdes, SDES, 1.0) is None  # plain RTP is no SRTP either
    assert r.stats()["media_srtp_dropped"] == 2
    assert r.receive(wire, p_sdes, SDES, 1.0) == (p_plain, PLAIN, rtp(1))  # the stream lives on


def test_plain_phone_calls_sdes_recipient() -> None:
    r = relay()
    to_sdes = r.offer("c", "plain", sdp(PLAIN), 0.0, Flags(transport_protocol="RTP/SAVP"))
    assert b" RTP/SAVP 0\r\n" in to_sdes
    offered = cryptos(to_sdes)
    assert [(c.tag, c.suite) for c in offered] == [
        (1, "AES_CM_128_HMAC_SHA1_80"), (2, "AES_CM_128_HMAC_SHA1_32"), (3, "AEAD_AES_128_GCM")]
    assert len({c.key_params for c in offered}) == 3  # a fresh key each
    to_plain = r.answer("c", "plain", "sdes", sdes_offer(f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY32}\n"), 0.1)
    assert b" RTP/AVP 0\r\n" in to_plain and b"a=crypto" not in to_plain
    p_sdes, p_plain = port_of(to_sdes), port_of(to_plain)
    phone = SrtpTransform.from_sdes("AES_CM_128_HMAC_SHA1_32", local=f"inline:{KEY32}", remote=offered[1].key_params)
    wire = phone.protect(rtp(5), False)
    assert wire is not None
    assert r.receive(wire, p_sdes, SDES, 1.0) == (p_plain, PLAIN, rtp(5))
    out = r.receive(rtp(9), p_plain, PLAIN, 1.0)
    assert out is not None and phone.unprotect(out[2], False) == rtp(9)
    # a re-offer repeats our keys; the phone keeps its: packets still flow
    again = r.offer("c", "plain", sdp(PLAIN), 2.0, Flags(transport_protocol="RTP/SAVP"))
    assert [c.key_params for c in cryptos(again)] == [c.key_params for c in offered]
    r.answer("c", "plain", "sdes", sdes_offer(f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY32}\n"), 2.1)
    wire = phone.protect(rtp(6), False)
    assert wire is not None and r.receive(wire, p_sdes, SDES, 3.0) == (p_plain, PLAIN, rtp(6))


def test_sdes_flags_choose_the_suites_offered() -> None:
    r = relay()
    only = r.offer("c", "plain", sdp(PLAIN), 0.0, Flags(transport_protocol="RTP/SAVP",
                                                         sdes=("only-AES_CM_128_HMAC_SHA1_32",)))
    assert [(c.tag, c.suite) for c in cryptos(only)] == [(1, "AES_CM_128_HMAC_SHA1_32")]
    r = relay()
    no = r.offer("c", "plain", sdp(PLAIN), 0.0, Flags(transport_protocol="RTP/SAVP",
                                                       sdes=("no-AES_CM_128_HMAC_SHA1_80", "no-AEAD_AES_128_GCM")))
    assert [(c.tag, c.suite) for c in cryptos(no)] == [(1, "AES_CM_128_HMAC_SHA1_32")]
    with pytest.raises(RelayError) as e:
        relay().offer("c", "plain", sdp(PLAIN), 0.0, Flags(transport_protocol="RTP/SAVP", sdes=("off",)))
    assert e.value.hint == (488, "No supported SDES suite") and "SDES-off" in str(e.value)
    # no-<suite> towards an SDES offerer: we answer its second line
    r = relay()
    r.offer("c", "sdes", sdes_offer(), 0.0, Flags(transport_protocol="RTP/AVP", sdes=("no-AES_CM_128_HMAC_SHA1_80",)))
    to_sdes = r.answer("c", "sdes", "plain", sdp(PLAIN), 0.1, Flags(sdes=("no-AES_CM_128_HMAC_SHA1_80",)))
    assert [(c.tag, c.suite) for c in cryptos(to_sdes)] == [(4, "AES_CM_128_HMAC_SHA1_32")]


@pytest.mark.parametrize(("lines", "reason"), [
    ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(20)).decode() + "\n", "30 bytes"),
    (f"a=crypto:1 F8_128_HMAC_SHA1_80 inline:{KEY80}\n", "not supported"),
    (f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80} UNENCRYPTED_SRTP\n", "session parameters"),
    ("", "without a=crypto"),
])
def test_unusable_sdes_offer_is_refused_with_488(lines: str, reason: str) -> None:
    r = relay()
    with pytest.raises(RelayError) as e:
        r.offer("c", "sdes", sdes_offer(lines), 0.0, Flags(transport_protocol="RTP/AVP"))
    assert e.value.hint == (488, "No supported SDES suite")
    assert reason in str(e.value)
    assert r.calls() == [] and r.ports == []
    assert r.stats()["media_sdp_refused"] == 1


def test_a_dtls_offer_without_fingerprint_is_refused_with_488(tmp_path: Path) -> None:
    """Nothing to check the party's certificate against (RFC 8842 §5): refused before the
    recipient rings, counted; with a fingerprint at session level it is fine."""
    r = relay(DtlsContext(tmp_path))
    bare = re.sub(rb"a=fingerprint:[^\r]*\r\n", b"", browser_sdp())
    with pytest.raises(RelayError) as e:
        r.offer("c", "browser", bare, 0.0, Flags(transport_protocol="RTP/AVP", ice="remove"))
    assert e.value.hint == (488, "DTLS fingerprint missing") and "no a=fingerprint" in str(e.value)
    assert r.stats()["media_sdp_refused"] == 1 and r.calls() == [] and r.ports == []
    session_level = bare.replace(b"t=0 0\r\n", f"t=0 0\r\na=fingerprint:{FINGERPRINT}\r\n".encode())
    assert b" RTP/AVP " in r.offer("c", "browser", session_level, 0.1, Flags(transport_protocol="RTP/AVP", ice="remove"))
    r.offer("c2", "plain", sdp(PLAIN), 0.2, Flags(transport_protocol="UDP/TLS/RTP/SAVPF", ice="force"))
    with pytest.raises(RelayError):  # a browser's answer without one
        r.answer("c2", "plain", "browser", bare.replace(b"a=setup:actpass", b"a=setup:active"), 0.3)
    assert r.stats()["media_sdp_refused"] == 2


def test_sdes_answer_with_a_tag_we_never_offered_is_refused() -> None:
    r = relay()
    r.offer("c", "plain", sdp(PLAIN), 0.0, Flags(transport_protocol="RTP/SAVP"))
    with pytest.raises(RelayError) as e:
        r.answer("c", "plain", "sdes", sdes_offer(f"a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}\n"), 0.1)
    assert e.value.hint == (488, "No supported SDES suite") and "tag 9" in str(e.value)
    with pytest.raises(RelayError):  # the suite of another tag
        r.answer("c", "plain", "sdes", sdes_offer(f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY32}\n"), 0.1)


def test_two_sdes_parties_pass_through(tmp_path: Path) -> None:
    r = relay()
    to_b = r.offer("c", "a", sdes_offer(), 0.0)
    assert f"inline:{KEY80}".encode() in to_b  # not ours: end-to-end SDES, untouched
    to_a = r.answer("c", "a", "b", sdp(PLAIN, "RTP/SAVP", f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY32}\n"), 0.1)
    assert f"inline:{KEY32}".encode() in to_a
    call = r.query("c")
    assert call is not None and all(s.ingress is None and s.egress is None for s in call.streams())


def test_browser_calls_sdes_phone(tmp_path: Path) -> None:
    r = relay(DtlsContext(tmp_path))
    to_phone = r.offer("c", "browser", browser_sdp(), 0.0, Flags(transport_protocol="RTP/SAVP", ice="remove"))
    assert b" RTP/SAVP 0\r\n" in to_phone
    assert b"a=fingerprint" not in to_phone and b"a=setup" not in to_phone and b"a=ice-" not in to_phone
    assert len(cryptos(to_phone)) == 3
    to_browser = r.answer("c", "browser", "phone",
                          sdp(SDES, "RTP/SAVP", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}\n"), 0.1)
    assert b" UDP/TLS/RTP/SAVPF 0\r\n" in to_browser
    assert b"a=crypto" not in to_browser and b"a=setup:passive" in to_browser and b"a=fingerprint:sha-256" in to_browser
    call = r.query("c")
    assert call is not None
    browser_side, phone_side = call.legs[0].streams[0][0], call.legs[0].streams[1][0]
    assert browser_side.dtls is not None and browser_side.sdes is None
    assert phone_side.sdes is not None and phone_side.sdes.srtp is not None and phone_side.dtls is None
    assert phone_side.egress == phone_side.sdes.protect


def test_sdes_phone_calls_browser(tmp_path: Path) -> None:
    r = relay(DtlsContext(tmp_path))
    to_browser = r.offer("c", "phone", sdes_offer(), 0.0, Flags(transport_protocol="UDP/TLS/RTP/SAVPF", ice="force"))
    assert b" UDP/TLS/RTP/SAVPF 0\r\n" in to_browser
    assert b"a=crypto" not in to_browser and b"a=setup:actpass" in to_browser
    to_phone = r.answer("c", "phone", "browser", browser_sdp("active"), 0.1)
    assert b" RTP/SAVP 0\r\n" in to_phone and b"a=fingerprint" not in to_phone and b"a=setup" not in to_phone
    assert [(c.tag, c.suite) for c in cryptos(to_phone)] == [(3, "AES_CM_128_HMAC_SHA1_80")]
    call = r.query("c")
    assert call is not None
    phone_side, browser_side = call.legs[0].streams[0][0], call.legs[0].streams[1][0]
    assert phone_side.sdes is not None and phone_side.sdes.srtp is not None
    assert browser_side.dtls is not None and browser_side.dtls.role == "server"


def test_a_forked_second_answer_answers_the_sdes_offerer_with_keys_of_its_own() -> None:
    r = relay()
    r.offer("c", "sdes", sdes_offer(), 0.0, Flags(transport_protocol="RTP/AVP"))
    first = r.answer("c", "sdes", "b1", sdp(PLAIN), 0.1)
    second = r.answer("c", "sdes", "b2", sdp(("198.51.100.4", 6000)), 0.2)
    (c1,), (c2,) = cryptos(first), cryptos(second)
    assert (c2.tag, c2.suite) == (3, "AES_CM_128_HMAC_SHA1_80") and c2.key_params != c1.key_params
    phone = SrtpTransform.from_sdes(c2.suite, local=f"inline:{KEY80}", remote=c2.key_params)
    call = r.query("c")
    assert call is not None and len(call.legs) == 2
    b2_port = call.legs[1].streams[1][0].rtp_port  # the port the offer named, shared by the branches
    assert b2_port is not None
    plain = r.receive(rtp(3), b2_port, ("198.51.100.4", 6000), 1.0)
    assert plain is not None and plain[0] == port_of(second)
    assert phone.unprotect(plain[2], False) == rtp(3)


def test_sdes_pad_and_lifetime_items_shape_our_keys() -> None:
    """rtpengine's ``SDES-pad`` keeps the base64 padding of our keys (left out by
    default), ``SDES-lifetime`` adds ``|2^31``; the lines still key SRTP with a phone."""
    plain = Flags(transport_protocol="RTP/SAVP")
    gcm = {c.suite: c.key_params for c in cryptos(relay().offer("c", "plain", sdp(PLAIN), 0.0, plain))}
    assert not gcm["AEAD_AES_128_GCM"].endswith("=")  # 28 bytes of key and salt: unpadded
    padded = Flags(transport_protocol="RTP/SAVP", sdes=("pad", "lifetime"))
    r = relay()
    to_sdes = r.offer("c", "plain", sdp(PLAIN), 0.0, padded)
    offered = cryptos(to_sdes)
    keys = {c.suite: c.key_params for c in offered}
    assert keys["AEAD_AES_128_GCM"].endswith("=|2^31") and keys["AES_CM_128_HMAC_SHA1_80"].endswith("|2^31")
    for c in offered:
        assert SdesKeyParams.parse(c.key_params, c.suite).lifetime == 2**31
    to_plain = r.answer("c", "plain", "sdes", sdes_offer(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}\n"),
                        0.1, padded)
    phone = SrtpTransform.from_sdes("AES_CM_128_HMAC_SHA1_80", local=f"inline:{KEY80}",
                                    remote=keys["AES_CM_128_HMAC_SHA1_80"])
    out = r.receive(rtp(9), port_of(to_plain), PLAIN, 1.0)  # the plain phone's RTP, keyed with our line
    assert out is not None and phone.unprotect(out[2], False) == rtp(9)
    # answering an SDES offerer: one line, with the items too
    r2 = relay()
    r2.offer("c", "sdes", sdes_offer(), 0.0, Flags(transport_protocol="RTP/AVP"))
    (line,) = cryptos(r2.answer("c", "sdes", "plain", sdp(PLAIN), 0.1, Flags(sdes=("lifetime",))))
    assert line.tag == 3 and line.key_params.endswith("|2^31")


@pytest.mark.parametrize("item", ["unencrypted_srtp", "unencrypted_srtcp", "unauthenticated_srtp"])
def test_unprotected_srtp_items_are_refused_with_488(item: str) -> None:
    r = relay()
    with pytest.raises(RelayError) as e:
        r.offer("c", "plain", sdp(PLAIN), 0.0, Flags(transport_protocol="RTP/SAVP", sdes=(item,)))
    assert e.value.hint == (488, "No supported SDES suite") and f"SDES-{item} is not supported" in str(e.value)
    assert r.stats()["media_sdp_refused"] == 1 and r.calls() == []
    ok = relay().offer("c", "plain", sdp(PLAIN), 0.0, Flags(transport_protocol="RTP/SAVP", sdes=("encrypted_srtp",)))
    assert len(cryptos(ok)) == 3  # the default, asked for: no effect


@given(st.binary(min_size=30, max_size=30), st.sampled_from(["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]),
       st.sets(st.sampled_from(["pad", "lifetime", "static"])))
def test_our_lines_parse_back_to_their_key(key: bytes, suite: str, items: set[str]) -> None:
    line = our_line(7, suite, SdesKeyParams(key), tuple(items))
    parsed = SdesKeyParams.parse(Crypto.parse(str(line)).key_params, suite)
    assert parsed.key == key and parsed.mki is None
    assert parsed.lifetime == (2**31 if "lifetime" in items else None)


@given(st.binary(min_size=28, max_size=28), st.booleans())
def test_gcm_keys_parse_back_padded_or_not(key: bytes, pad: bool) -> None:
    line = our_line(1, "AEAD_AES_128_GCM", SdesKeyParams(key), ("pad",) if pad else ())
    assert line.key_params.endswith("=") == pad
    assert SdesKeyParams.parse(line.key_params, "AEAD_AES_128_GCM").key == key
