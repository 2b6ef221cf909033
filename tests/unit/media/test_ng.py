"""The ng control protocol: bencode codec, commands, reply shapes, errors, retransmits."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sipedge.errors import ParseError
from sipedge.media import bencode
from sipedge.media.ng import NgClient, NgServer, flags_from_request, flags_to_request
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig

SDP_A = b"v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 2000 RTP/AVP 0\r\n"
SDP_B = b"v=0\r\no=- 2 1 IN IP4 198.51.100.2\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def server(high: int = 30099) -> NgServer:
    relay = MediaRelay(RelayConfig(advertised_address="203.0.113.1"), RangePortAllocator(30000, high, random.Random(1)))
    return NgServer(relay, wall_clock=lambda: 1_700_000_000.0)


def call(srv: NgServer, cookie: bytes, body: dict[str, Any], now: float = 10.0) -> dict[str, Any]:
    reply = srv.handle(cookie + b" " + bencode.encode(body), now)
    assert reply is not None
    got_cookie, parsed = NgClient.parse_reply(reply)
    assert got_cookie == cookie
    return parsed


def test_bencode_examples() -> None:
    assert bencode.encode({"command": "ping"}) == b"d7:command4:pinge"
    assert bencode.decode(b"d6:result4:ponge") == {b"result": b"pong"}
    assert bencode.decode(b"li-3ei0e0:l1:aee") == [-3, 0, b"", [b"a"]]
    assert bencode.encode({"b": 1, "a": [b"x", "y"]}) == b"d1:al1:x1:ye1:bi1ee"


@pytest.mark.parametrize(
    "data",
    [b"", b"i12", b"i1x2e", b"i-0e", b"i03e", b"5:abc", b"l", b"d1:a", b"di1ei2ee", b"x", b"i1ei2e",
     b"99999999999:x", b"l" * 40 + b"e" * 40],
)
def test_bencode_garbage(data: bytes) -> None:
    with pytest.raises(ParseError):
        bencode.decode(data)


def test_integer_length_is_bounded() -> None:
    """A 5,000-digit integer is a ParseError (int() alone raises ValueError past 4300
    digits) and the ng server answers it with an error reply; 64-bit values still pass."""
    assert bencode.decode(b"i%de" % (2**63)) == 2**63
    assert bencode.decode(b"i-" + b"9" * 20 + b"e") == -int("9" * 20)
    for digits in (21, 5000):
        for sign in (b"", b"-"):
            with pytest.raises(ParseError, match="longer than 20 digits"):
                bencode.decode(b"i" + sign + b"1" * digits + b"e")
    srv = server()
    reply = srv.handle(b"big1 d7:command4:ping3:fooi" + b"7" * 5000 + b"ee", 0.0)
    assert reply is not None
    cookie, parsed = NgClient.parse_reply(reply)
    assert cookie == b"big1" and parsed["result"] == "error"
    assert "longer than 20 digits" in parsed["error-reason"]
    assert srv.handle(b"p2 d7:command4:pinge", 0.0) == b"p2 d6:result4:ponge"


def test_an_sdp_that_is_not_utf8_gets_an_error_reply_not_silence() -> None:
    """Its bytes come back in the error text as they were; the server keeps answering."""
    srv = server()
    bad = b"v=\xff\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n"
    r = call(srv, b"u1", {"command": "offer", "call-id": "x", "from-tag": "f", "sdp": bad})
    assert r["result"] == "error" and "version" in r["error-reason"]
    latin1 = SDP_A.replace(b"s=-", b"s=Caf\xe9")  # a session name in Latin-1: kept as its bytes
    r = call(srv, b"u2", {"command": "offer", "call-id": "y", "from-tag": "f", "sdp": latin1})
    assert r["result"] == "ok" and b"s=Caf\xe9\r\n" in r["sdp"]
    assert bencode.encode(b"\xff".decode("utf-8", "surrogateescape")) == b"1:\xff"


def test_ping() -> None:
    srv = server()
    assert srv.handle(b"5323_1 d7:command4:pinge", 0.0) == b"5323_1 d6:result4:ponge"


def test_offer_answer_query_list_delete() -> None:
    srv = server()
    r = call(srv, b"c1", {"command": "offer", "call-id": "cid", "from-tag": "ft", "sdp": SDP_A,
                          "flags": ["trust-address"], "replace": ["origin", "session-connection"], "ICE": "remove"})
    assert r["result"] == "ok"
    assert b"o=- 1 1 IN IP4 203.0.113.1\r\n" in r["sdp"]
    r = call(srv, b"c2", {"command": "answer", "call-id": "cid", "from-tag": "ft", "to-tag": "tt", "sdp": SDP_B})
    assert r["result"] == "ok" and b"c=IN IP4 203.0.113.1" in r["sdp"]
    q = call(srv, b"c3", {"command": "query", "call-id": "cid"})
    assert q["result"] == "ok"
    assert set(q["tags"]) == {"ft", "tt"}
    assert q["tags"]["ft"]["in dialogue with"] == "tt"
    media = q["tags"]["ft"]["medias"][0]
    assert media["index"] == 1 and media["type"] == "audio" and media["protocol"] == "RTP/AVP"
    rtp_stream = media["streams"][0]
    assert rtp_stream["flags"][0] == "RTP"
    assert rtp_stream["endpoint"] == {"family": "IPv4", "address": "198.51.100.1", "port": 2000}
    assert isinstance(rtp_stream["local port"], int)
    assert q["totals"] == {"RTP": {"packets": 0, "bytes": 0, "errors": 0}, "RTCP": {"packets": 0, "bytes": 0, "errors": 0}}
    assert q["created"] == 1_700_000_000
    assert call(srv, b"c4", {"command": "list"}) == {"result": "ok", "calls": ["cid"]}
    d = call(srv, b"c5", {"command": "delete", "call-id": "cid", "from-tag": "ft"})
    assert d["result"] == "ok" and "totals" in d
    assert srv.relay.ports == []
    w = call(srv, b"c6", {"command": "delete", "call-id": "cid", "from-tag": "ft"})
    assert w == {"result": "ok", "warning": "Call-ID not found or tags didn't match"}
    e = call(srv, b"c7", {"command": "delete", "call-id": "cid", "from-tag": "ft", "flags": ["fatal"]})
    assert e == {"result": "error", "error-reason": "Unknown call-id"}


def test_errors_have_rtpengine_shape() -> None:
    srv = server()
    cases = [
        ({"command": "frobnicate"}, "Unrecognized command"),
        ({"foo": "bar"}, "No command given"),
        ({"command": "offer", "call-id": "x", "from-tag": "f"}, "No SDP body"),
        ({"command": "offer", "call-id": "x", "sdp": SDP_A}, "No from-tag"),
        ({"command": "offer", "call-id": "x", "from-tag": "f", "sdp": b"v=0\r\nxx\r\n"}, "Failed to parse SDP"),
        ({"command": "answer", "call-id": "nope", "from-tag": "f", "to-tag": "t", "sdp": SDP_B}, "unknown call-id"),
        ({"command": "query", "call-id": "nope"}, "Unknown call-id"),
        ({"command": "list", "limit": 0}, "Invalid limit"),
        ({"command": "offer", "call-id": "x", "from-tag": "f", "sdp": SDP_A, "ICE": "sideways"}, "unknown ICE option"),
    ]
    for i, (body, reason) in enumerate(cases):
        r = call(srv, b"e%d" % i, body)
        assert set(r) == {"result", "error-reason"}, r
        assert r["result"] == "error" and reason in r["error-reason"], r
    garbage = srv.handle(b"g1 d7:command", 0.0)
    assert garbage is not None and garbage.startswith(b"g1 d12:error-reason")
    assert srv.handle(b"nocookie", 0.0) is None
    assert srv.handle(b"l1 li1ee", 0.0) == b"l1 " + bencode.encode({"result": "error", "error-reason": "Request is not a dictionary"})
    assert srv.stats()["ng_errors"] == len(cases) + 2


def test_retransmission_returns_cached_reply() -> None:
    srv = server()
    body = {"command": "offer", "call-id": "cid", "from-tag": "ft", "sdp": SDP_A}
    first = srv.handle(b"k " + bencode.encode(body), 1.0)
    again = srv.handle(b"k " + bencode.encode(body), 2.0)
    assert first == again
    assert srv.stats()["ng_retransmits"] == 1


def test_port_exhaustion_is_an_error_reply() -> None:
    srv = server(high=30001)
    assert call(srv, b"a", {"command": "offer", "call-id": "1", "from-tag": "f", "sdp": SDP_A})["result"] == "ok"
    r = call(srv, b"b", {"command": "offer", "call-id": "2", "from-tag": "f", "sdp": SDP_A})
    assert r == {"result": "error", "error-reason": "relay port range exhausted"}


def test_flag_spellings() -> None:
    f = flags_from_request({"flags": [b"SIP source address", b"asymmetric", b"strict_source", b"ICE=force-relay",
                                      b"rtcp-mux-demux", b"replace-origin"],
                            "received-from": [b"IP4", b"192.0.2.9"]})
    assert (f.trust_address, f.symmetric, f.strict_source, f.ice) == (False, False, True, "force-relay")
    assert f.rtcp_mux == ("demux",) and f.replace_origin and f.received_from == "192.0.2.9"
    assert not f.replace_session_connection  # only when asked, as rtpengine
    assert flags_from_request({"flags": [b"replace-session-connection"]}).replace_session_connection
    assert flags_from_request({"ice": b"optional"}).ice == "relay"


def test_sdes_key_and_flag_spellings() -> None:
    f = flags_from_request({"sdes": [b"no-AES_CM_128_HMAC_SHA1_32", b"pad", b"only-aes-cm-128-hmac-sha1-80"]})
    assert f.sdes == ("no-AES_CM_128_HMAC_SHA1_32", "pad", "only-AES_CM_128_HMAC_SHA1_80")
    spelled = flags_from_request({"flags": [b"SDES-unencrypted_srtp", b"SDES-lifetime", b"SDES-static"],
                                  "sdes": [b"unencrypted-srtcp", b"encrypted_srtp"]})
    assert spelled.sdes == ("unencrypted_srtcp", "encrypted_srtp", "unencrypted_srtp", "lifetime")  # static: ignored
    assert flags_from_request({"flags": [b"SDES-off", b"RTP/SAVP"]}).sdes == ("off",)
    assert flags_from_request({"flags": [b"SDES-no-AEAD_AES_128_GCM", b"SDES=only-AES_CM_128_HMAC_SHA1_80"]}).sdes \
        == ("no-AEAD_AES_128_GCM", "only-AES_CM_128_HMAC_SHA1_80")
    assert flags_from_request({"sdes": b"off"}).sdes == ("off",)  # a string instead of a list
    assert flags_from_request({}).sdes == ()
    flags = Flags(sdes=("off", "no-AES_CM_128_HMAC_SHA1_32"))
    req = flags_to_request(flags)
    assert req["SDES"] == ["off", "no-AES_CM_128_HMAC_SHA1_32"]
    assert flags_from_request({k.lower(): v for k, v in req.items()}).sdes == flags.sdes


def test_session_connection_is_replaced_only_when_asked() -> None:
    """Without ``replace: session-connection`` the session-level c= line is left alone and
    the media section gets its own c= naming the relay, so media still reaches the relay."""
    srv = server()
    kept = call(srv, b"1", {"command": "offer", "call-id": "k", "from-tag": "f", "sdp": SDP_A})["sdp"]
    assert kept.count(b"c=IN IP4 198.51.100.1") == 1  # the session line, as it was
    assert kept.index(b"c=IN IP4 203.0.113.1") > kept.index(b"m=audio")  # the media line's own
    replaced = call(srv, b"2", {"command": "offer", "call-id": "r", "from-tag": "f", "sdp": SDP_A,
                                "replace": [b"session-connection"]})["sdp"]
    assert b"198.51.100.1\r\nt=" not in replaced and replaced.count(b"c=IN IP4 203.0.113.1") == 1


def test_client_codec_round_trip_through_server() -> None:
    srv = server()
    client = NgClient(token_source=lambda n: b"\x01" * n)
    cookie, data = client.offer("cid", "ft", SDP_A)
    reply = srv.handle(data, 1.0)
    assert reply is not None
    got, parsed = NgClient.parse_reply(reply)
    assert got == cookie and parsed["result"] == "ok" and parsed["sdp"].startswith(b"v=0")
    cookie, data = client.delete("cid", "ft")
    reply = srv.handle(data, 1.0)
    assert reply is not None
    assert NgClient.parse_reply(reply)[1]["result"] == "ok"


def forked_call() -> NgServer:
    """Call "f" offered by "ft" and answered by two forks, "t1" and "t2"."""
    srv = server()
    call(srv, b"o", {"command": "offer", "call-id": "f", "from-tag": "ft", "sdp": SDP_A})
    call(srv, b"a1", {"command": "answer", "call-id": "f", "from-tag": "ft", "to-tag": "t1", "sdp": SDP_B})
    call(srv, b"a2", {"command": "answer", "call-id": "f", "from-tag": "ft", "to-tag": "t2", "sdp": SDP_B})
    return srv


def test_delete_branch_with_via_branch_else_whole_call() -> None:
    srv = forked_call()
    ports = len(srv.relay.ports)
    r = call(srv, b"d1", {"command": "delete", "call-id": "f", "from-tag": "ft", "to-tag": "t1", "via-branch": "z9hG4bK1"})
    assert r["result"] == "ok" and srv.relay.calls() == ["f"] and len(srv.relay.ports) == ports - 2
    r = call(srv, b"d2", {"command": "delete", "call-id": "f", "from-tag": "ft", "to-tag": "t2"})
    assert r["result"] == "ok" and srv.relay.calls() == [] and srv.relay.ports == []


def test_deleting_a_fork_that_never_answered_leaves_the_others() -> None:
    """rtpengine answers such a branch delete with its warning; the call goes on."""
    srv = forked_call()
    ports = len(srv.relay.ports)
    r = call(srv, b"d1", {"command": "delete", "call-id": "f", "from-tag": "ft", "to-tag": "t3", "via-branch": "z9hG4bK3"})
    assert r == {"result": "ok", "warning": "Call-ID not found or tags didn't match"}
    assert srv.relay.calls() == ["f"] and len(srv.relay.ports) == ports
