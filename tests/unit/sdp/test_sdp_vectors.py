"""SDP vectors: parse, typed access, byte-exact round trip, edits, malformed input (RFC 8866)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipedge import sdp
from sipedge.errors import ParseError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "sdp"
GOOD = sorted(p.name for p in VECTORS.glob("*.sdp") if not p.name.startswith("bad_"))
BAD = sorted(p.name for p in VECTORS.glob("bad_*.sdp"))


def read(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


@pytest.mark.parametrize("name", GOOD)
def test_unchanged_sdp_is_byte_exact(name: str) -> None:
    data = read(name)
    s = sdp.parse(data)
    assert s.serialize() == data
    assert s.copy().serialize() == data
    # with trailing garbage-free truncation: every vector without its final EOL parses too
    assert sdp.parse(data.rstrip(b"\r\n")).serialize() == data.rstrip(b"\r\n")


@pytest.mark.parametrize("name", BAD)
def test_bad_vectors_raise_488(name: str) -> None:
    with pytest.raises(ParseError) as exc:
        sdp.parse(read(name))
    assert isinstance(exc.value.hint, tuple)
    assert exc.value.hint[0] == 488
    assert exc.value.hint[1].startswith("Bad SDP: ")


def test_chrome_offer_typed() -> None:
    s = sdp.parse(read("chrome_audio_video_offer.sdp"))
    assert s.origin.sess_id == "4611731400430051336"
    assert s.bundle == ("0", "1")
    assert [m.media for m in s.media] == ["audio", "video"]
    a = s.media[0]
    assert (a.port, a.proto) == (53892, "UDP/TLS/RTP/SAVPF")
    assert a.formats[:3] == ("111", "63", "9")
    assert a.rtpmaps[111] == sdp.RtpMap(111, "opus", 48000, "2")
    assert a.rtpmaps[0].encoding == "PCMU"
    assert a.fmtps["111"] == "minptime=10;useinbandfec=1"
    assert a.rtcp == sdp.Rtcp(9, sdp.Connection("IN", "IP4", "0.0.0.0"))
    assert a.rtcp_mux
    assert a.direction == "sendrecv"
    assert a.ice_ufrag == "F7gI"
    assert a.ice_pwd == "x9cml/YzichV2+XlhiMu8g1k"
    assert a.ice_options == ["trickle"]
    cands = a.candidates
    assert [c.type for c in cands] == ["host", "srflx", "host"]
    assert cands[1].related_address == "192.168.1.34"
    assert cands[1].related_port == 53892
    assert cands[0].extensions[0] == ("generation", "0")
    assert cands[2].transport == "tcp"
    assert a.fingerprints[0].hash_func == "sha-256"
    assert a.setup == "actpass"
    assert a.mid == "0"
    assert a.ssrcs[0].ssrc == 1001212373
    assert a.ssrcs[0].attribute == "cname"
    assert s.media_connection(0) == sdp.Connection("IN", "IP4", "192.168.1.34")
    assert str(cands[1]) == a.attrs("candidate")[1]


def test_firefox_offer_session_level_attrs() -> None:
    s = sdp.parse(read("firefox_audio_offer.sdp"))
    assert s.fingerprints[0].value.startswith("6B:8B")
    assert s.ice_options == ["trickle"]
    a = s.media[0]
    assert a.end_of_candidates
    assert a.candidates[2].component == 2
    assert a.rtcp == sdp.Rtcp(54401, sdp.Connection("IN", "IP4", "192.168.1.50"))
    assert a.rtpmaps[9].parameters == "1"
    assert s.media_direction(0) == "sendrecv"


def test_phone_offer_and_hold() -> None:
    s = sdp.parse(read("sip_phone_g711_offer.sdp"))
    assert s.connection == sdp.Connection("IN", "IP4", "192.168.0.23")
    assert s.media[0].connection is None
    assert s.media_connection(0) == s.connection
    assert s.media[0].ptime == 20.0
    assert s.media[0].rtcp is None
    assert not s.media[0].rtcp_mux
    hold = sdp.parse(read("sip_phone_hold_reinvite.sdp"))
    conn = hold.media_connection(0)
    assert conn is not None and conn.is_hold
    assert hold.media_direction(0) == "sendonly"


def test_sdes_crypto() -> None:
    s = sdp.parse(read("sdes_srtp_offer.sdp"))
    c = s.media[0].crypto
    assert [x.tag for x in c] == [1, 2]
    assert c[0].suite == "AES_CM_128_HMAC_SHA1_80"
    assert c[1].session_params == ("UNENCRYPTED_SRTCP",)
    assert str(c[1]) == s.media[0].attrs("crypto")[1]


def test_ice_lite_ipv6() -> None:
    s = sdp.parse(read("ice_lite_answer.sdp"))
    assert s.ice_lite
    assert s.connection == sdp.Connection("IN", "IP6", "2001:db8::10")
    assert [c.component for c in s.media[0].candidates] == [1, 2]


def test_every_line_type_and_unknowns_kept() -> None:
    data = read("lf_only_unknown_lines.sdp")
    s = sdp.parse(data)
    assert [ln.kind for ln in s.lines] == list("vosiuepcbtrzkaa")
    assert s.attr("x-unknown") == "keep me"
    m0 = s.media[0].m
    assert (m0.port, m0.port_count) == (49170, 2)
    assert s.media[0].attr("x-weird") == ""
    assert s.media[2].rejected
    assert s.media[2].formats == ("webrtc-datachannel",)
    # an edit keeps the file's LF line endings
    s.media[1].add_attr("rtcp-mux")
    assert b"a=rtcp-mux\n" in s.serialize()
    assert b"\r\n" not in s.serialize()


def test_edits_rewrite_only_their_lines() -> None:
    data = read("sip_phone_g711_offer.sdp")
    s = sdp.parse(data)
    s.connection = sdp.Connection("IN", "IP4", "203.0.113.1")
    s.media[0].port = 30000
    s.media[0].set_attr("rtcp", "30001")
    s.media[0].direction = "sendonly"
    out = s.serialize()
    assert b"c=IN IP4 203.0.113.1\r\n" in out
    assert b"m=audio 30000 RTP/AVP 0 8 18 9 101\r\n" in out
    assert out.endswith(b"a=sendonly\r\na=rtcp:30001\r\n")
    assert out.count(b"\r\n") == data.count(b"\r\n") + 1
    again = sdp.parse(out)
    assert again.media[0].rtcp == sdp.Rtcp(30001)
    # remove ICE-like attrs by predicate; insert a media-level c= in RFC order
    s.media[0].connection = sdp.Connection("IN", "IP6", "2001:db8::1")
    kinds = [ln.kind for ln in s.media[0].lines]
    assert kinds[:2] == ["m", "c"]
    assert s.media[0].remove_attrs("rtpmap", lambda v: v is not None and v.startswith("18 ")) == 1
    assert 18 not in s.media[0].rtpmaps


def test_origin_rewrite() -> None:
    s = sdp.parse(read("sip_phone_g711_offer.sdp"))
    o = s.origin
    assert (o.username, o.sess_version, o.address) == ("-", 0, "192.168.0.23")
    import dataclasses

    s.origin = dataclasses.replace(o, address="203.0.113.1", sess_version=1)
    assert b"o=- 20518 1 IN IP4 203.0.113.1\r\n" in s.serialize()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"", "first line is not v=0"),
        (b"v=1\r\n", "unsupported version"),
        (b"v=0\r\ns=-\r\n", "missing o= line"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\n", "missing s= line"),
        (b"v=0\r\no=- 1 IN IP4 h\r\ns=-\r\n", "o= line needs 6 fields"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=ATM NSAP x\r\n", "nettype"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio x RTP/AVP 0\r\n", "m= port is not a number"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1\r\n", "m= line needs"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\nt=0 0\r\n", "inside a media"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\na=rtpmap:0 PCMU\r\n", "rtpmap"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\na=rtcp:abc\r\n", "a=rtcp port"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\na=\r\n", "attribute name"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nb=AS\r\n", "b= needs"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0\r\n", "t= needs"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\na=ptime:x\r\n", "a=ptime"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nX=1\r\n", "not <type>=<value>"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=a\rb\r\n", "CR or NUL"),
    ],
)
def test_malformed_reasons(text: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        sdp.parse(text)
    assert reason in str(exc.value)
    assert exc.value.hint is not None and exc.value.hint[0] == 488  # type: ignore[index]


def test_candidate_priority_rfc8445() -> None:
    assert sdp.candidate_priority(126, 65535, 1) == 2130706431
    assert sdp.candidate_priority(126, 65535, 2) == 2130706430
    assert sdp.candidate_priority(0, 65535, 1) == 16777215
    assert sdp.candidate_priority(100, 0, 1) == (100 << 24) + 255
    with pytest.raises(ValueError):
        sdp.candidate_priority(127, 0, 1)
    c = sdp.Candidate.parse("1 1 UDP 2130706431 2001:db8::10 30000 typ host")
    assert c.priority == sdp.candidate_priority(sdp.TYPE_PREFERENCE["host"], 65535, 1)
