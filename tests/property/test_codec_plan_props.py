"""Codec flags on arbitrary offers and answers (media/codecs.py): the offer passed on names
each payload type once, only the offerer's or ones the relay added, with an rtpmap for
every dynamic one and none for a payload type that is gone; the answer sent back to the
offerer names only payload types the offerer offered (RFC 3264 §6.1); nothing else but a
488 RelayError comes out."""

from __future__ import annotations

import random
import re

from hypothesis import given
from hypothesis import strategies as st

from helpers.silent_codecs import SilentCodecs
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig, RelayError

NAMES = ["PCMU", "PCMA", "G722", "opus", "telephone-event", "G729", "CN", "iLBC", "VP8"]
SPECS = ["PCMU", "PCMA", "G722", "opus", "all", "telephone-event", "G729", "opus/48000/2", "0", "8", "96"]


RATES = {"opus": 48000, "G722": 8000, "VP8": 90000}
STATIC = {"PCMU": 0, "PCMA": 8, "G722": 9, "G729": 18, "CN": 13}


@st.composite
def offers(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6))
    pts: list[int] = []
    maps: list[str] = []
    dynamic = iter(range(96, 128))
    for name in names:
        pt = STATIC.get(name) if draw(st.booleans()) else None
        if pt is None:
            pt = next(dynamic)
        if pt in pts:
            continue
        pts.append(pt)
        rate = RATES.get(name, 8000) if name != "telephone-event" else draw(st.sampled_from([8000, 48000]))
        maps.append(f"a=rtpmap:{pt} {name}/{rate}\r\n")
    return f"m=audio 2000 RTP/AVP {' '.join(map(str, pts))}\r\n{''.join(maps)}a=sendrecv\r\n"


def sdp(media: str, host: str) -> bytes:
    return f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n{media}".encode()


def section(out: bytes) -> tuple[list[str], dict[str, str]]:
    text = out.decode()
    m = re.search(r"^m=audio \d+ \S+ (.*?)\r$", text, re.M)
    assert m is not None
    maps = dict(re.findall(r"^a=rtpmap:(\d+) (\S+)\r$", text, re.M))
    return m.group(1).split(), maps


specs = st.lists(st.sampled_from(SPECS), max_size=3).map(tuple)


@given(offers(), specs, specs, specs, specs, st.randoms(use_true_random=False))
def test_offers_and_answers_stay_consistent(offer: str, strip: tuple[str, ...], mask: tuple[str, ...],
                                            transcode: tuple[str, ...], except_: tuple[str, ...],
                                            rnd: random.Random) -> None:
    relay = MediaRelay(RelayConfig(), RangePortAllocator(30000, 30099, random.Random(1)), codecs=SilentCodecs())
    flags = Flags(codec_strip=strip, codec_mask=mask, codec_transcode=transcode, codec_except=except_)
    original, original_maps = section(sdp(offer, "198.51.100.1"))
    try:
        out = relay.offer("c", "a", sdp(offer, "198.51.100.1"), 0.0, flags)
    except RelayError as exc:
        assert exc.hint[0] == 488
        return
    sent, maps = section(out)
    assert len(sent) == len(set(sent))
    for pt in sent:
        assert pt in original or pt in maps  # the offerer's, or added with its rtpmap
        if int(pt) >= 96:
            assert pt in maps
    assert set(maps) <= set(sent)
    # the answerer picks some of what it got (or, misbehaving, something else)
    picked = rnd.sample(sent, rnd.randint(1, len(sent))) if rnd.random() < 0.9 else ["3"]
    answer = f"m=audio 4000 RTP/AVP {' '.join(picked)}\r\n" + "".join(
        f"a=rtpmap:{pt} {maps[pt]}\r\n" for pt in picked if pt in maps)
    back, back_maps = section(relay.answer("c", "a", "b", sdp(answer, "198.51.100.2"), 0.0))
    if picked != ["3"]:
        assert set(back) <= set(original), (offer, flags, picked, back)
    for pt, name in back_maps.items():
        if pt in original_maps:
            assert name == original_maps[pt]  # the offerer's own numbering, never ours
