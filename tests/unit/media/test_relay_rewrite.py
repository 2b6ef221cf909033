"""Golden SDP rewrites in rtpengine's style: SDP in, exact SDP out, PORT for relay ports."""

from __future__ import annotations

import random
import re

import pytest

from sipedge.errors import ParseError
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig, RelayError

ADV = "203.0.113.1"


def relay(ice: str = "auto", low: int = 30000, high: int = 30099) -> MediaRelay:
    counter = iter(range(1, 10**6))
    return MediaRelay(
        RelayConfig(advertised_address=ADV, ice=ice),
        RangePortAllocator(low, high, random.Random(7)),
        token_source=lambda n: next(counter).to_bytes(n, "big"),
    )


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def golden(expected: str, actual: bytes) -> list[int]:
    """Assert ``actual`` equals ``expected`` with each PORT a number; return those numbers."""
    pattern = re.escape(expected.replace("\n", "\r\n")).replace("PORT", r"(\d+)")
    m = re.fullmatch(pattern, actual.decode())
    assert m, f"\nexpected:\n{expected}\nactual:\n{actual.decode()}"
    return [int(x) for x in m.groups()]


PHONE_A = """v=0
o=- 1545997027 1 IN IP4 198.51.100.1
s=tester
c=IN IP4 198.51.100.1
t=0 0
m=audio 2000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
"""

PHONE_B = """v=0
o=- 7 1 IN IP4 198.51.100.2
s=tester
c=IN IP4 198.51.100.2
t=0 0
m=audio 4000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
"""


def test_plain_offer_answer() -> None:
    r = relay()
    out = r.offer("c1", "ft", crlf(PHONE_A), now=0.0)
    (pb, pb_rtcp) = golden(
        """v=0
o=- 1545997027 1 IN IP4 198.51.100.1
s=tester
c=IN IP4 203.0.113.1
t=0 0
m=audio PORT RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
a=rtcp:PORT
""",
        out,
    )
    assert pb % 2 == 0 and pb_rtcp == pb + 1 and 30000 <= pb <= 30099
    ans = r.answer("c1", "ft", "tt", crlf(PHONE_B), now=0.1)
    (pa, pa_rtcp) = golden(PHONE_B.replace("198.51.100.2\nt", "203.0.113.1\nt").replace(
        "m=audio 4000", "m=audio PORT") + "a=rtcp:PORT\n", ans)
    assert pa != pb and pa_rtcp == pa + 1
    # retransmitted offer: same ports, same output
    assert r.offer("c1", "ft", crlf(PHONE_A), now=0.2) == out
    assert sorted(r.ports) == sorted([pa, pa + 1, pb, pb + 1])


def test_replace_origin_and_media_level_connection() -> None:
    r = relay()
    sdp = PHONE_A.replace("t=0 0\nm=audio 2000 RTP/AVP 0\n", "t=0 0\nm=audio 2000 RTP/AVP 0\nc=IN IP4 198.51.100.9\n")
    out = r.offer("c", "f", crlf(sdp), 0.0, Flags(replace_origin=True))
    golden(
        """v=0
o=- 1545997027 1 IN IP4 203.0.113.1
s=tester
c=IN IP4 203.0.113.1
t=0 0
m=audio PORT RTP/AVP 0
c=IN IP4 203.0.113.1
a=rtpmap:0 PCMU/8000
a=sendrecv
a=rtcp:PORT
""",
        out,
    )


def test_hold_keeps_zero_address_and_direction() -> None:
    r = relay()
    r.offer("c", "f", crlf(PHONE_A), 0.0)
    r.answer("c", "f", "t", crlf(PHONE_B), 0.0)
    held = PHONE_A.replace("c=IN IP4 198.51.100.1", "c=IN IP4 0.0.0.0").replace("sendrecv", "sendonly")
    out = r.offer("c", "f", crlf(held), 1.0)
    golden(
        """v=0
o=- 1545997027 1 IN IP4 198.51.100.1
s=tester
c=IN IP4 0.0.0.0
t=0 0
m=audio PORT RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendonly
a=rtcp:PORT
""",
        out,
    )
    call = r.query("c")
    assert call is not None and call.on_hold()


CHROME = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic: WMS
m=audio 53892 UDP/TLS/RTP/SAVPF 111 0
c=IN IP4 192.168.1.34
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:2999745851 1 udp 2122260223 192.168.1.34 53892 typ host generation 0
a=candidate:1606961068 1 udp 1686052607 198.51.100.7 53892 typ srflx raddr 192.168.1.34 rport 53892 generation 0
a=ice-ufrag:F7gI
a=ice-pwd:x9cml/YzichV2+XlhiMu8g1k
a=ice-options:trickle
a=fingerprint:sha-256 D1:2C:BE
a=setup:actpass
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtpmap:0 PCMU/8000
"""


def test_ice_remove() -> None:
    r = relay()
    out = r.offer("c", "f", crlf(CHROME), 0.0, Flags(ice="remove"))
    golden(
        """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic: WMS
m=audio PORT UDP/TLS/RTP/SAVPF 111 0
c=IN IP4 203.0.113.1
a=rtcp:PORT
a=fingerprint:sha-256 D1:2C:BE
a=setup:actpass
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtpmap:0 PCMU/8000
""",
        out,
    )


def test_ice_relay_candidate_keeps_endpoint_candidates() -> None:
    r = relay()
    out = r.offer("c", "f", crlf(CHROME), 0.0, Flags(ice="relay"))
    ports = golden(
        """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic: WMS
m=audio PORT UDP/TLS/RTP/SAVPF 111 0
c=IN IP4 203.0.113.1
a=rtcp:PORT
a=candidate:2999745851 1 udp 2122260223 192.168.1.34 53892 typ host generation 0
a=candidate:1606961068 1 udp 1686052607 198.51.100.7 53892 typ srflx raddr 192.168.1.34 rport 53892 generation 0
a=ice-ufrag:F7gI
a=ice-pwd:x9cml/YzichV2+XlhiMu8g1k
a=ice-options:trickle
a=fingerprint:sha-256 D1:2C:BE
a=setup:actpass
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtpmap:0 PCMU/8000
a=candidate:sipedge 1 UDP 16777215 203.0.113.1 PORT typ relay raddr 203.0.113.1 rport PORT
""",
        out,
    )
    assert ports[0] == ports[2] == ports[3]


def test_ice_force_lite() -> None:
    r = relay()
    out = r.offer("c", "f", crlf(CHROME), 0.0)  # auto: offerer speaks ICE -> force
    ports = golden(
        """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic: WMS
a=ice-lite
m=audio PORT UDP/TLS/RTP/SAVPF 111 0
c=IN IP4 203.0.113.1
a=rtcp:PORT
a=fingerprint:sha-256 D1:2C:BE
a=setup:actpass
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtpmap:0 PCMU/8000
a=ice-ufrag:PORT
a=ice-pwd:PORT
a=candidate:sipedge 1 UDP 2130706431 203.0.113.1 PORT typ host
a=end-of-candidates
""".replace("ice-ufrag:PORT", "ice-ufrag:ICEUFRAG").replace("ice-pwd:PORT", "ice-pwd:ICEPWD"),
        re.sub(rb"ice-ufrag:\w+", b"ice-ufrag:ICEUFRAG", re.sub(rb"ice-pwd:\w+", b"ice-pwd:ICEPWD", out)),
    )
    assert ports[0] == ports[2]


def test_auto_answer_to_ice_offerer_gets_lite_ice_and_phone_gets_none() -> None:
    r = relay()
    to_phone = r.offer("c", "f", crlf(CHROME), 0.0, Flags(ice="remove"))
    assert b"candidate" not in to_phone
    to_browser = r.answer("c", "f", "t", crlf(PHONE_B), 0.1)
    assert b"a=ice-lite\r\n" in to_browser
    assert b"typ host" in to_browser


def test_ice_force_relay_leaves_the_default_candidate() -> None:
    """rtpengine's ICE=force-relay: the endpoints' candidates and their c=/m= (the default
    candidate) stay; the relay is added only as a relay candidate, ICE picks it if needed."""
    r = relay()
    out = r.offer("c", "f", crlf(CHROME), 0.0, Flags(ice="force-relay"))
    text = out.decode()
    assert "m=audio 53892 " in text and "c=IN IP4 192.168.1.34" in text and "a=rtcp:9 IN IP4 0.0.0.0" in text
    assert "typ host" in text and "typ srflx" in text
    relay_lines = [ln for ln in text.splitlines() if "typ relay" in ln]
    assert len(relay_lines) == 1 and " 203.0.113.1 " in relay_lines[0]
    assert int(relay_lines[0].split()[5]) in r.ports  # a port the relay holds for this call
    # without ICE in the SDP there is no candidate to add: the relay takes c=/m= as "relay" does
    plain = r.offer("d", "f", crlf(PHONE_A), 0.0, Flags(ice="force-relay")).decode()
    assert "c=IN IP4 203.0.113.1" in plain and "m=audio 2000 " not in plain


def test_rtcp_mux_flags() -> None:
    r = relay()
    out = r.offer("c", "f", crlf(PHONE_A), 0.0, Flags(rtcp_mux=("require",)))
    (p, p2) = golden(PHONE_A.replace("198.51.100.1\nt", "203.0.113.1\nt").replace("m=audio 2000", "m=audio PORT")
                     + "a=rtcp-mux\na=rtcp:PORT\n", out)
    assert p == p2
    r2 = relay()
    out = r2.offer("c", "f", crlf(CHROME), 0.0, Flags(ice="remove", rtcp_mux=("demux",)))
    assert b"rtcp-mux" not in out


def test_rejected_stream_and_malformed_and_unknown() -> None:
    r = relay()
    two = PHONE_A + "m=video 0 RTP/AVP 96\n"
    out = r.offer("c", "f", crlf(two), 0.0)
    assert out.endswith(b"m=video 0 RTP/AVP 96\r\n")
    assert len(r.ports) == 2
    with pytest.raises(ParseError) as exc:
        r.offer("c2", "f", b"v=0\r\nbogus\r\n", 0.0)
    assert exc.value.hint == (488, "Bad SDP: line 2 is not <type>=<value>: 'bogus'")
    assert r.calls() == ["c"]
    with pytest.raises(RelayError) as rexc:
        r.answer("nope", "f", "t", crlf(PHONE_B), 0.0)
    assert rexc.value.hint[0] == 488


def test_port_exhaustion_rolls_back() -> None:
    r = relay(low=30000, high=30003)  # two pairs
    r.offer("c1", "f", crlf(PHONE_A), 0.0)
    r.answer("c1", "f", "t", crlf(PHONE_B), 0.0)
    with pytest.raises(RelayError) as exc:
        r.offer("c2", "f", crlf(PHONE_A), 0.0)
    assert exc.value.hint == (503, "Media relay out of ports")
    assert r.calls() == ["c1"]
    assert r.stats()["media_port_exhaustion"] == 1
    r.delete("c1", 1.0)
    assert r.ports == []
    r.offer("c2", "f", crlf(PHONE_A), 0.0)  # ports came back


def test_zero_address_with_ice_is_not_hold() -> None:
    """Trickle-ICE style offer (c=0.0.0.0, port 9, candidates to follow): not a hold."""
    r = relay()
    trickle = CHROME.replace("m=audio 53892", "m=audio 9").replace("c=IN IP4 192.168.1.34", "c=IN IP4 0.0.0.0")
    out = r.offer("c", "f", crlf(trickle), 0.0, Flags(ice="remove"))
    assert b"c=IN IP4 203.0.113.1\r\n" in out and b"0.0.0.0" not in out
    call = r.query("c")
    assert call is not None and not call.on_hold()


def test_too_many_media_sections_refused() -> None:
    r = relay()
    many = PHONE_A + "".join(f"m=audio {3000 + 2 * i} RTP/AVP 0\n" for i in range(16))
    with pytest.raises(RelayError) as exc:
        r.offer("c", "f", crlf(many), 0.0)
    assert exc.value.hint == (488, "Too many media streams")
    assert r.ports == [] and r.calls() == []


def test_rtcp_mux_offered_by_relay_not_answered_to_plain_offerer() -> None:
    r = relay()
    out = r.offer("c", "f", crlf(PHONE_A), 0.0, Flags(rtcp_mux=("offer",)))
    assert b"a=rtcp-mux" in out
    ans = r.answer("c", "f", "t", crlf(PHONE_B + "a=rtcp-mux\n"), 0.1)
    assert b"a=rtcp-mux" not in ans  # A never offered it
    call = r.query("c")
    assert call is not None
    a_side, b_side = call.legs[0].streams[0][0], call.legs[0].streams[1][0]
    assert (a_side.mux, b_side.mux) == (False, True)


def test_rtcp_mux_accepted_back_to_offerer_when_answerer_does_not_mux() -> None:
    r = relay()
    r.offer("c", "f", crlf(CHROME), 0.0, Flags(ice="remove"))
    ans = r.answer("c", "f", "t", crlf(PHONE_B), 0.1)
    assert b"a=rtcp-mux\r\n" in ans
    call = r.query("c")
    assert call is not None
    a_side, b_side = call.legs[0].streams[0][0], call.legs[0].streams[1][0]
    assert (a_side.mux, b_side.mux) == (True, False)
    assert b_side.rtcp_port is not None and a_side.rtp_port is not None
    # the phone's RTCP (on the relay's RTCP port) reaches the browser on its RTP address
    a_side.latched_rtp = ("192.0.2.10", 50000)
    rr = bytes([0x80, 201, 0, 1]) + bytes(4)
    assert r.receive(rr, b_side.rtcp_port, ("198.51.100.2", 4001), 1.0) == (a_side.rtp_port, ("192.0.2.10", 50000), rr)
    rejected = relay()
    rejected.offer("c", "f", crlf(CHROME), 0.0, Flags(ice="remove"))
    assert b"rtcp-mux" not in rejected.answer("c", "f", "t", crlf(PHONE_B), 0.1, Flags(rtcp_mux=("reject",)))


def test_jitter_clock_rate_from_sdp() -> None:
    r = relay()
    r.offer("c", "f", crlf(CHROME), 0.0, Flags(ice="remove"))
    r.answer("c", "f", "t", crlf(PHONE_B), 0.1)
    call = r.query("c")
    assert call is not None
    assert call.legs[0].streams[0][0].rtp_stats.clock_rate == 48000  # opus first
    assert call.legs[0].streams[1][0].rtp_stats.clock_rate == 8000  # PCMU


BUNDLED_ANSWER = """v=0
o=- 99 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=ice-ufrag:WJAq
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 AA:BB
a=setup:active
a=mid:0
a=rtcp-mux
a=rtpmap:111 opus/48000/2
m=video 9 UDP/TLS/RTP/SAVPF 96
c=IN IP4 0.0.0.0
a=ice-ufrag:WJAq
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 AA:BB
a=setup:active
a=mid:1
a=rtcp-mux
a=rtpmap:96 VP8/90000
"""


def test_bundled_answer_shares_one_transport() -> None:
    from sipedge import sdp

    r = relay()
    offer = BUNDLED_ANSWER.replace("99 2", "98 2").replace("setup:active", "setup:actpass")
    to_b = sdp.parse(r.offer("c", "f", crlf(offer), 0.0))
    assert to_b.media[0].port != to_b.media[1].port  # offers keep unique ports (RFC 8843)
    ports_after_offer = len(r.ports)
    for _ in range(2):  # 183 then 200: the same answer twice
        to_a = sdp.parse(r.answer("c", "f", "t", crlf(BUNDLED_ANSWER), 0.1))
        audio, video = to_a.media
        assert audio.port == video.port
        assert (audio.ice_ufrag, audio.ice_pwd) == (video.ice_ufrag, video.ice_pwd)
        assert [str(c) for c in audio.candidates] == [str(c) for c in video.candidates]
        assert len(r.ports) == ports_after_offer + 2  # one pair towards the offerer, not two
    r.delete("c", 1.0)
    assert r.ports == []


def test_rtcp_mux_require_forces_the_answerer_not_the_offerer() -> None:
    """rtpengine: "require" pretends the receiving client accepted rtcp-mux. The offerer,
    which did not offer it, keeps RTCP on its own port and is not answered rtcp-mux
    (RFC 5761 §5.1.1)."""
    r = relay()
    r.offer("c", "f", crlf(PHONE_A), 0.0, Flags(rtcp_mux=("require",)))
    ans = r.answer("c", "f", "t", crlf(PHONE_B), 0.1, Flags(rtcp_mux=("require",)))
    assert b"a=rtcp-mux" not in ans
    call = r.query("c")
    assert call is not None
    a_side, b_side = call.legs[0].streams[0][0], call.legs[0].streams[1][0]
    assert (a_side.mux, b_side.mux) == (False, True)
    assert a_side.expected_rtcp == ("198.51.100.1", 2001)


def test_rtcp_mux_reject_in_the_offer_also_keeps_it_out_of_the_answer() -> None:
    r = relay()
    out = r.offer("c", "f", crlf(CHROME), 0.0, Flags(ice="remove", rtcp_mux=("reject",)))
    assert b"rtcp-mux" not in out
    ans = r.answer("c", "f", "t", crlf(PHONE_B), 0.1)  # no flags at the answer
    assert b"a=rtcp-mux" not in ans
    call = r.query("c")
    assert call is not None and call.legs[0].streams[0][0].mux is False
