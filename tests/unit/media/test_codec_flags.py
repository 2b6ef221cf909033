"""rtpengine's codec flags (media/codecs.py): each flag's effect on the SDP an offer
passes on and on the answer sent back, as vectors (m= formats and rtpmap lines in,
the same out); the ng ``codec`` dictionary and Kamailio's flag spellings; garbage specs."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.silent_codecs import SilentCodecs
from sipedge.media.ng import flags_from_request, flags_to_request
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig, RelayError


def relay(codecs: bool = True) -> MediaRelay:
    return MediaRelay(RelayConfig(advertised_address="203.0.113.1"), RangePortAllocator(30000, 30999, random.Random(1)),
                      codecs=SilentCodecs() if codecs else None)


def sdp(media: str, host: str = "198.51.100.1") -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n{media}").encode()


BROWSER = ("m=audio 2000 RTP/AVP 111 9 0 8 110 126\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n"
           "a=rtcp-fb:111 transport-cc\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
           "a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\na=sendrecv\r\n")
OPUS_ONLY = ("m=audio 2000 RTP/AVP 111 110\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:110 telephone-event/48000\r\n"
             "a=fmtp:110 0-15\r\na=sendrecv\r\n")
PHONE = "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:30\r\n"


def media(out: bytes) -> tuple[str, list[str]]:
    """The m= formats and the rtpmap/fmtp/rtcp-fb lines of the first section."""
    text = out.decode()
    m = re.search(r"^m=audio \d+ \S+ (.*?)\r$", text, re.M)
    assert m is not None
    return m.group(1), re.findall(r"^a=((?:rtpmap|fmtp|rtcp-fb):.*?)\r$", text, re.M)


VECTORS = [
    # (offer, flags, formats towards the answerer, rtpmap/fmtp/rtcp-fb lines)
    (BROWSER, Flags(codec_strip=("PCMA",)), "111 9 0 110 126",
     ["rtpmap:111 opus/48000/2", "fmtp:111 minptime=10", "rtcp-fb:111 transport-cc", "rtpmap:9 G722/8000",
      "rtpmap:0 PCMU/8000", "rtpmap:110 telephone-event/48000", "rtpmap:126 telephone-event/8000"]),
    (BROWSER, Flags(codec_strip=("opus", "G722")), "0 8 110 126",
     ["rtpmap:0 PCMU/8000", "rtpmap:8 PCMA/8000", "rtpmap:110 telephone-event/48000",
      "rtpmap:126 telephone-event/8000"]),
    (BROWSER, Flags(codec_strip=("all",), codec_except=("PCMA",)), "8 110 126",
     ["rtpmap:8 PCMA/8000", "rtpmap:110 telephone-event/48000", "rtpmap:126 telephone-event/8000"]),
    (BROWSER, Flags(codec_strip=("all",), codec_transcode=("PCMU",)), "0 110 126",  # its own PCMU stays
     ["rtpmap:0 PCMU/8000", "rtpmap:110 telephone-event/48000", "rtpmap:126 telephone-event/8000"]),
    (BROWSER, Flags(codec_mask=("opus", "9")), "0 8 110 126",
     ["rtpmap:0 PCMU/8000", "rtpmap:8 PCMA/8000", "rtpmap:110 telephone-event/48000",
      "rtpmap:126 telephone-event/8000"]),
    (BROWSER, Flags(codec_transcode=("PCMU", "opus/48000/2")), "111 9 0 8 110 126",  # all there: as it was
     ["rtpmap:111 opus/48000/2", "fmtp:111 minptime=10", "rtcp-fb:111 transport-cc", "rtpmap:9 G722/8000",
      "rtpmap:0 PCMU/8000", "rtpmap:8 PCMA/8000", "rtpmap:110 telephone-event/48000",
      "rtpmap:126 telephone-event/8000"]),
    (OPUS_ONLY, Flags(codec_transcode=("PCMU", "PCMA")), "111 110 0 8 96",  # + telephone-event/8000
     ["rtpmap:111 opus/48000/2", "rtpmap:110 telephone-event/48000", "fmtp:110 0-15", "rtpmap:0 PCMU/8000",
      "rtpmap:8 PCMA/8000", "rtpmap:96 telephone-event/8000", "fmtp:96 0-15"]),
    (OPUS_ONLY, Flags(codec_mask=("all",), codec_transcode=("PCMA", "G729")), "110 8 96",  # G.729: not ours
     ["rtpmap:110 telephone-event/48000", "fmtp:110 0-15", "rtpmap:8 PCMA/8000", "rtpmap:96 telephone-event/8000",
      "fmtp:96 0-15"]),
    (PHONE, Flags(codec_transcode=("opus",)), "0 8 101 96 97",
     ["rtpmap:101 telephone-event/8000", "fmtp:101 0-16", "rtpmap:96 opus/48000/2",
      "rtpmap:97 telephone-event/48000", "fmtp:97 0-16"]),
    (PHONE, Flags(codec_strip=("telephone-event",)), "0 8", []),
]


@pytest.mark.parametrize(("offer", "flags", "formats", "lines"), VECTORS)
def test_codec_flags_on_the_offer(offer: str, flags: Flags, formats: str, lines: list[str]) -> None:
    out = relay().offer("c", "a", sdp(offer), 0.0, flags)
    assert media(out) == (formats, lines)


def test_without_a_codec_library_nothing_is_added_but_strip_and_mask_work() -> None:
    out = relay(codecs=False).offer("c", "a", sdp(OPUS_ONLY), 0.0, Flags(codec_transcode=("PCMU",)))
    assert media(out)[0] == "111 110"
    out = relay(codecs=False).offer("c", "a", sdp(BROWSER), 0.0, Flags(codec_strip=("opus",), codec_mask=("G722",)))
    assert media(out)[0] == "0 8 110 126"


@pytest.mark.parametrize(("offer", "flags"), [
    (PHONE, Flags(codec_strip=("all",))),
    # a stripped codec is not taken from the offerer: nothing to transcode PCMU from
    (OPUS_ONLY, Flags(codec_strip=("all",), codec_transcode=("PCMU",))),
])
def test_nothing_left_to_offer_is_refused(offer: str, flags: Flags) -> None:
    with pytest.raises(RelayError) as err:
        relay().offer("c", "a", sdp(offer), 0.0, flags)
    assert err.value.hint[0] == 488


def answer(offer: str, flags: Flags, reply: str) -> tuple[MediaRelay, bytes]:
    r = relay()
    r.offer("c", "a", sdp(offer), 0.0, flags)
    return r, r.answer("c", "a", "b", sdp(reply, "198.51.100.2"), 0.0)


def streams(r: MediaRelay) -> tuple[object, object]:
    call = r.query("c")
    assert call is not None
    a, b = call.legs[0].streams[0][0], call.legs[0].streams[1][0]
    return a.transcoder, b.transcoder


def test_an_answer_choosing_an_added_codec_is_transcoded() -> None:
    r, out = answer(OPUS_ONLY, Flags(codec_transcode=("PCMU", "PCMA")),
                    "m=audio 4000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\n"
                    "a=ptime:20\r\n")
    # the offerer is answered with its own codec and its own telephone-event number
    assert media(out) == ("111 110", ["rtpmap:111 opus/48000/2", "rtpmap:110 telephone-event/48000", "fmtp:110 0-15"])
    fwd, back = streams(r)
    assert fwd is not None and back is not None


def test_an_answer_choosing_a_masked_codecs_replacement_is_transcoded() -> None:
    r, out = answer(BROWSER, Flags(codec_mask=("all",), codec_transcode=("PCMA",)),
                    "m=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")
    # PCMA was offered by the browser itself, masked and added back: pass-through
    assert media(out)[0] == "8"
    assert streams(r) == (None, None)
    r, out = answer(OPUS_ONLY, Flags(codec_mask=("all",), codec_transcode=("G722",)),
                    "m=audio 4000 RTP/AVP 9\r\n")
    assert media(out) == ("111", ["rtpmap:111 opus/48000/2"])  # the answerer has no telephone-event
    assert None not in streams(r)


def test_an_answer_choosing_an_offered_codec_passes_through_without_the_added_ones() -> None:
    r, out = answer(BROWSER, Flags(codec_transcode=("PCMU",)),
                    "m=audio 4000 RTP/AVP 0 126\r\na=rtpmap:126 telephone-event/8000\r\n")
    assert media(out)[0] == "0 126"
    assert streams(r) == (None, None)
    r, out = answer(OPUS_ONLY, Flags(codec_transcode=("PCMU",)),
                    "m=audio 4000 RTP/AVP 111 0 96\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:96 telephone-event/8000\r\n")
    assert media(out) == ("111", ["rtpmap:111 opus/48000/2"])  # PCMU and its telephone-event: ours, gone
    assert streams(r) == (None, None)


def test_a_reoffer_without_codec_flags_keeps_the_transcoding() -> None:
    r, _ = answer(OPUS_ONLY, Flags(codec_transcode=("PCMU",), transport_protocol="RTP/AVP"),
                  "m=audio 4000 RTP/AVP 0\r\n")
    before = streams(r)
    again = r.offer("c", "a", sdp(OPUS_ONLY.replace("sendrecv", "sendonly")), 1.0, Flags())
    assert media(again)[0] == "111 110 0 96"
    r.answer("c", "a", "b", sdp("m=audio 4000 RTP/AVP 0\r\na=recvonly\r\n", "198.51.100.2"), 1.0)
    assert streams(r) == before and None not in before  # the same transcoders go on (their sequence numbers)


def test_the_answerer_reoffering_keeps_the_offerers_codec() -> None:
    r, _ = answer(OPUS_ONLY, Flags(codec_transcode=("PCMU",)), "m=audio 4000 RTP/AVP 0\r\n")
    # the phone's re-INVITE (hold), through rtpengine_manage() without flags: Opus is
    # added for the browser, which answers it, and the call stays transcoded
    again = r.offer("c", "b", sdp("m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n", "198.51.100.2"), 1.0, Flags())
    assert media(again) == ("0 96", ["rtpmap:96 opus/48000/2"])
    back = r.answer("c", "b", "a", sdp("m=audio 2000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\na=recvonly\r\n"), 1.0)
    assert media(back)[0] == "0"
    assert None not in streams(r)
    # a browser that answers the phone's own PCMU ends the transcoding
    r.offer("c", "b", sdp("m=audio 4000 RTP/AVP 0\r\n", "198.51.100.2"), 2.0, Flags())
    back = r.answer("c", "b", "a", sdp("m=audio 2000 RTP/AVP 0\r\n"), 2.0)
    assert media(back)[0] == "0"
    assert streams(r) == (None, None)


def test_a_forked_answer_is_transcoded_too() -> None:
    r, _ = answer(OPUS_ONLY, Flags(codec_transcode=("PCMU",)), "m=audio 4000 RTP/AVP 0\r\n")
    out = r.answer("c", "a", "fork", sdp("m=audio 4100 RTP/AVP 0\r\n", "198.51.100.3"), 0.5)
    assert media(out) == ("111", ["rtpmap:111 opus/48000/2"])  # (this fork has no telephone-event)
    call = r.query("c")
    assert call is not None and len(call.legs) == 2
    assert call.legs[1].streams[0][0].transcoder is not None and call.legs[1].streams[1][0].transcoder is not None


# -- the ng side ----------------------------------------------------------------------
def ng(**req: object) -> Flags:
    return flags_from_request({k.replace("_", "-"): v for k, v in req.items()})


def test_the_codec_dictionary() -> None:
    f = ng(codec={b"strip": [b"PCMA", b"G729"], b"offer": [b"PCMU"], b"transcode": [b"opus/48000/2"],
                  b"mask": [b"all"], b"except": [b"G722"], b"accept": [b"PCMU"], b"set": [b"opus/48000/2/32000"]})
    assert f.codec_strip == ("PCMA", "G729")
    assert f.codec_transcode == ("PCMU", "opus/48000/2")
    assert (f.codec_mask, f.codec_except, f.codec_accept) == (("all",), ("G722",), ("PCMU",))


def test_kamailio_flag_spellings() -> None:
    f = ng(flags=[b"codec-strip-PCMA", b"codec-mask-opus", b"codec-transcode-PCMU", b"codec-offer-G722",
                  b"codec-strip-all", b"codec-except-PCMU", b"codec-strip=G729", b"transcode-PCMA"])
    assert f.codec_strip == ("pcma", "all", "g729")
    assert f.codec_mask == ("opus",)
    assert f.codec_transcode == ("pcmu", "g722", "pcma")
    assert f.codec_except == ("pcmu",)


def test_flags_to_request_round_trip() -> None:
    f = Flags(codec_strip=("PCMA",), codec_mask=("opus",), codec_transcode=("PCMU",), codec_except=("G722",))
    req = flags_to_request(f)
    assert req["codec"] == {"strip": ["PCMA"], "mask": ["opus"], "transcode": ["PCMU"], "except": ["G722"]}
    back = ng(codec={k.encode(): [x.encode() for x in v] for k, v in req["codec"].items()})
    assert (back.codec_strip, back.codec_mask, back.codec_transcode, back.codec_except) == (
        f.codec_strip, f.codec_mask, f.codec_transcode, f.codec_except)


@pytest.mark.parametrize("bad", [
    {"codec": {b"strip": [b"PCMA\r\na=evil"]}},
    {"codec": {b"transcode": [b""]}},
    {"flags": [b"codec-strip-" + b"x" * 100]},
    {"codec": {b"strip": [b"c%d" % i for i in range(40)]}},
])
def test_bad_codec_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(RelayError) as err:
        flags_from_request(bad)
    assert err.value.hint[0] == 488


@given(st.dictionaries(st.sampled_from([b"strip", b"offer", b"transcode", b"mask", b"except", b"accept", b"x"]),
                       st.one_of(st.binary(max_size=30), st.lists(st.binary(max_size=20), max_size=5), st.integers())),
       st.lists(st.text(max_size=30).map(lambda t: "codec-" + t), max_size=5))
def test_any_codec_request_parses_or_is_refused(codec: dict[bytes, object], flags: list[str]) -> None:
    try:
        f = flags_from_request({"codec": codec, "flags": flags})
    except RelayError as exc:
        assert exc.hint[0] == 488
        return
    for spec in f.codec_strip + f.codec_mask + f.codec_transcode + f.codec_except + f.codec_accept:
        assert spec and "\r" not in spec and "\n" not in spec and " " not in spec
    try:
        relay().offer("c", "a", sdp(BROWSER), 0.0, f)
    except RelayError as exc:
        assert exc.hint[0] == 488  # nothing left to offer


def test_an_answer_of_our_formats_only_still_names_one_of_the_offerers() -> None:
    # (found by tests/property/test_codec_plan_props.py) the answerer kept only the
    # telephone-event the relay added: no codec in common, and never our numbering back
    r, out = answer(OPUS_ONLY, Flags(codec_transcode=("PCMU",)),
                    "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 telephone-event/8000\r\n")
    assert media(out) == ("111", ["rtpmap:111 opus/48000/2"])
    assert streams(r) == (None, None)


def test_an_added_codec_takes_a_payload_type_no_other_section_uses() -> None:
    """Bundled towards a browser, sections are told apart by payload type: Opus added to
    a phone's audio must not take the 96 its video uses."""
    r = relay()
    video = "m=video 4002 RTP/AVP 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 H264/90000\r\n"
    out = r.offer("c1", "ft", sdp(PHONE + video), 0.0, Flags(codec_transcode=("opus",)))
    formats, lines = media(out)
    opus = next(ln for ln in lines if "opus/48000" in ln)
    pt = int(opus.split(":")[1].split()[0])
    assert pt not in (0, 8, 101, 96, 97) and str(pt) in formats.split()
