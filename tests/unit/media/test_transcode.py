"""The transcoder (media/transcode.py) with the real codec library (server/codecs.py over
PyAV): a 440 Hz tone keeps its energy and pitch through Opus <-> PCMU, PCMA and G.722;
RTP timestamps step 160 per 20 ms at 8 kHz and 960 at 48 kHz; sequence numbers count up
by one, the SSRC stays the sender's; telephone-events are renumbered with timestamp and
duration converted; garbage is dropped and counted; and the relay's packet path
transcodes after an answer that chose an added codec."""

from __future__ import annotations

import array
import itertools
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipedge.media.codecs import TRANSCODABLE, Format
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig
from sipedge.media.transcode import COUNTERS, Transcoder, TranscodeSetup
from sipedge.server.codecs import PyAvCodecs

CODECS = PyAvCodecs()
OPUS = Format(111, "opus", 48000, "2")
PCMU = Format(0, "PCMU", 8000)
PCMA = Format(8, "PCMA", 8000)
G722 = Format(9, "G722", 8000)


def counters() -> dict[str, int]:
    return dict.fromkeys(COUNTERS, 0)


def tone(rate: int, start: int, n: int, freq: float = 440.0) -> bytes:
    return array.array("h", (int(8000 * math.sin(2 * math.pi * freq * k / rate)) for k in range(start, start + n))).tobytes()


def rtp(pt: int, seq: int, ts: int, payload: bytes, ssrc: int = 0x1234, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, ts, ssrc) + payload


def sender(fmt: Format, packets: int, ms: int = 20, ts0: int = 1000, seq0: int = 7) -> list[bytes]:
    """A tone encoded by the codec library as ``fmt``, ``ms`` per packet."""
    c = fmt.codec
    assert c is not None
    frame = c.sample_rate * ms // 1000
    enc = CODECS.encoder(c, frame)
    ticks = c.clock_rate * ms // 1000
    return [rtp(fmt.pt, seq0 + i, ts0 + i * ticks, enc.encode(tone(c.sample_rate, i * frame, frame)))
            for i in range(packets)]


def listen(fmt: Format, packets: list[bytes]) -> array.array[int]:
    """Decode what a transcoder sent, as the receiving party would."""
    c = fmt.codec
    assert c is not None
    dec = CODECS.decoder(c, c.sample_rate)
    out = array.array("h")
    for p in packets:
        out.frombytes(dec.decode(p[12:]))
    return out


def energy(pcm: array.array[int]) -> float:
    return sum(abs(x) for x in pcm) / max(1, len(pcm))


def pitch(pcm: array.array[int], rate: int) -> float:
    crossings = sum(1 for a, b in itertools.pairwise(pcm) if (a < 0) != (b < 0))
    return crossings / 2 / (len(pcm) / rate)


def header(p: bytes) -> tuple[int, int, int, int, bool]:
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", p)
    return b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80)


def one_way(src: Format, dst: Format, ptime: int = 20, events: tuple[int, int] | None = None,
            c: dict[str, int] | None = None) -> Transcoder:
    return TranscodeSetup(CODECS, c if c is not None else counters()).one_way(src, dst, events, ptime, None)


def run(t: Transcoder, packets: list[bytes]) -> list[bytes]:
    return [o for o in (t(p) for p in packets) if o is not None]


@pytest.mark.parametrize(("src", "dst"), [(OPUS, PCMU), (OPUS, PCMA), (OPUS, G722), (PCMU, OPUS), (PCMA, OPUS),
                                          (G722, OPUS), (PCMU, G722)])
def test_a_tone_keeps_its_energy_and_pitch(src: Format, dst: Format) -> None:
    c = counters()
    out = run(one_way(src, dst, c=c), sender(src, 50))
    assert len(out) >= 48
    assert c["media_transcoded_packets"] == len(out) and c["media_transcode_errors"] == 0
    dc = dst.codec
    assert dc is not None
    pcm = listen(dst, out)[dc.sample_rate // 10:]  # (past the codecs' start-up)
    assert energy(pcm) > 3000  # the tone's mean |sample| is 8000 * 2/pi = 5093
    assert abs(pitch(pcm, dc.sample_rate) - 440) < 15


@pytest.mark.parametrize(("src", "dst", "step", "size"), [(OPUS, PCMU, 160, 160), (PCMU, OPUS, 960, None),
                                                          (OPUS, G722, 160, 160), (PCMU, PCMA, 160, 160)])
def test_timestamps_sequence_numbers_and_ssrc(src: Format, dst: Format, step: int, size: int | None) -> None:
    out = run(one_way(src, dst), sender(src, 20))
    heads = [header(p) for p in out]
    assert {h[0] for h in heads} == {dst.pt}
    assert [b[2] - a[2] for a, b in itertools.pairwise(heads)] == [step] * (len(heads) - 1)
    assert [b[1] - a[1] for a, b in itertools.pairwise(heads)] == [1] * (len(heads) - 1)
    assert {h[3] for h in heads} == {0x1234}
    assert heads[0][4] and not any(h[4] for h in heads[1:])  # the marker on the first only
    if size is not None:
        assert {len(p) - 12 for p in out} == {size}


def test_the_receivers_ptime_is_honoured() -> None:
    out = run(one_way(OPUS, PCMU, ptime=40), sender(OPUS, 20))
    heads = [header(p) for p in out]
    assert len(out) in (9, 10) and {len(p) - 12 for p in out} == {320}  # (the resampler holds a few samples)
    assert {b[2] - a[2] for a, b in itertools.pairwise(heads)} == {320}
    # 30 ms G.711 packets towards Opus: 40 ms Opus frames (the shortest that keeps up)
    c = counters()
    t = TranscodeSetup(CODECS, c).one_way(PCMU, OPUS, None, 20, None, sent_ptime=30)
    out = run(t, sender(PCMU, 40, ms=30))
    assert len(out) >= 28 and c["media_transcode_dropped"] == 0
    assert {b[2] - a[2] for a, b in zip(map(header, out), map(header, out[1:]), strict=False)} == {1920}


def test_a_gap_in_the_input_is_a_gap_in_the_output() -> None:
    packets = sender(PCMU, 20)
    out = run(one_way(PCMU, OPUS), packets[:10] + packets[15:])
    ts = [header(p)[2] for p in out]
    steps = [b - a for a, b in itertools.pairwise(ts)]
    jump = next(i for i, d in enumerate(steps) if d != 960)
    assert 6 * 960 <= steps[jump] <= 7 * 960  # (what the resampler held back is let go)
    assert header(out[jump + 1])[4] and not header(out[jump])[4]  # a new talkspurt: marker


def test_telephone_events_are_renumbered_with_their_clock() -> None:
    c = counters()
    t = one_way(PCMU, OPUS, events=(101, 110), c=c)
    run(t, sender(PCMU, 3, ts0=8000))
    event = bytes([5, 0x0A]) + (800).to_bytes(2, "big")  # digit 5, 100 ms at 8 kHz
    out = t(rtp(101, 10, 8000 + 3 * 160, event, marker=True))
    assert out is not None
    pt, _seq, ts, ssrc, marker = header(out)
    assert (pt, ssrc, marker) == (110, 0x1234, True)
    assert int.from_bytes(out[14:16], "big") == 4800  # 100 ms at 48 kHz
    first = header(run(one_way(PCMU, OPUS), sender(PCMU, 2, ts0=8000))[0])[2]  # (the first packet's)
    assert ts == first + 3 * 960
    assert c["media_transcoded_events"] == 1


def test_a_new_ssrc_continues_the_stream() -> None:
    t = one_way(PCMU, OPUS)
    out = run(t, sender(PCMU, 5))
    out += run(t, [rtp(0, 900 + i, 77777 + 160 * i, p[12:], ssrc=0x9999) for i, p in enumerate(sender(PCMU, 5))])
    heads = [header(p) for p in out]
    assert {h[3] for h in heads} == {0x1234}
    assert all(b[1] == (a[1] + 1) & 0xFFFF for a, b in itertools.pairwise(heads))
    assert all(0 < (b[2] - a[2]) & 0xFFFFFFFF <= 2 * 960 for a, b in itertools.pairwise(heads))


def test_garbage_is_counted_not_raised() -> None:
    c = counters()
    t = one_way(OPUS, PCMU, c=c)
    assert t(b"\x80\x6f") is None  # truncated header
    assert t(rtp(111, 1, 0, b"\xff\xff\xff\xff" * 20)) is None  # not an Opus packet
    assert t(rtp(13, 2, 0, b"\x40")) is None  # comfort noise: not agreed
    assert t(bytes([0xA0, 111]) + bytes(10) + b"\x00\x00\xff") is None  # padding longer than the packet
    assert c["media_transcode_errors"] == 3 and c["media_transcode_dropped"] == 1


@given(st.binary(max_size=400))
def test_any_opus_payload_is_survived(payload: bytes) -> None:
    c = counters()
    t = one_way(OPUS, PCMU, c=c)
    t(rtp(111, 1, 0, payload))
    t(payload)


@given(st.binary(max_size=300), st.sampled_from([PCMU, PCMA, G722]))
def test_any_g711_or_g722_payload_is_survived(payload: bytes, src: Format) -> None:
    t = one_way(src, OPUS)
    t(rtp(src.pt, 1, 0, payload))


BROWSER = (b"v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n"
           b"m=audio 2000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n")
PHONE = (b"v=0\r\no=- 2 1 IN IP4 198.51.100.2\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n")


def test_the_relay_transcodes_after_an_answer_with_an_added_codec() -> None:
    relay = MediaRelay(RelayConfig(advertised_address="203.0.113.1"), RangePortAllocator(30000, 30099), codecs=CODECS)
    to_phone = relay.offer("c", "a", BROWSER, 0.0, Flags(codec_transcode=("PCMU",)))
    assert b"m=audio" in to_phone and b" RTP/AVP 111 0\r\n" in to_phone
    to_browser = relay.answer("c", "a", "b", PHONE, 0.0)
    assert b" RTP/AVP 111\r\n" in to_browser and b"PCMU" not in to_browser
    call = relay.query("c")
    assert call is not None
    browser_side, phone_side = call.legs[0].streams[0][0], call.legs[0].streams[1][0]
    assert browser_side.rtp_port is not None and phone_side.rtp_port is not None
    sent = []
    for i, p in enumerate(sender(OPUS, 10)):
        out = relay.receive(p, browser_side.rtp_port, ("198.51.100.1", 2000), 1.0 + i * 0.02)
        if out is not None:
            sent.append(out)
    assert len(sent) >= 9
    assert {(port, dest) for port, dest, _ in sent} == {(phone_side.rtp_port, ("198.51.100.2", 4000))}
    assert {header(d)[0] for _, _, d in sent} == {0} and {len(d) for _, _, d in sent} == {172}
    back = [relay.receive(p, phone_side.rtp_port, ("198.51.100.2", 4000), 2.0 + i * 0.02)
            for i, p in enumerate(sender(PCMU, 3))]
    assert {(b[0], b[1], header(b[2])[0]) for b in back if b is not None} == {
        (browser_side.rtp_port, ("198.51.100.1", 2000), 111)}
    assert relay.stats()["media_transcoded_packets"] == len(sent) + 3  # (8 kHz into Opus: no resampler delay)
    assert relay.stats()["media_transcoders"] == 2
    assert TRANSCODABLE["opus"].clock_rate == 48000
