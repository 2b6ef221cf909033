"""Codecs in the SDP through the relay (rtpengine's ``codec`` flags), sans-I/O.

An offer's audio or video section keeps the offerer's formats in its order, less those
``codec_strip`` names (refused from the offerer too) and ``codec_mask`` names (still
accepted from the offerer, to transcode); ``codec_transcode`` (rtpengine's ``transcode``
and ``offer``) codecs missing from it are appended, when the relay can decode one of the
offerer's codecs and encode the added one. ``all`` strips or masks every codec but
``telephone-event``, those named by ``codec_except`` and those ``codec_transcode`` names
(``strip all`` with ``offer PCMU`` leaves the offerer's PCMU alone). Where an added codec runs on a
clock no offered ``telephone-event`` has, one is added at that clock (RFC 4733 events
are counted in clock ticks), numbered from the free dynamic payload types.

The answer decides: when the answerer's first codec is one the offerer offered, media
passes through as it is and the added formats are taken out of the answer; when it is an
added one, the offerer is answered with its own first codec that the relay transcodes (its
``telephone-event`` at that codec's clock, if both sides have one), and the two streams
get transcoders (:mod:`.transcode`) converting codec, clock, payload types and packet time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

from ..errors import ParseError
from ..sdp import Line, MediaSection, RtpMap
from .model import Flags, RelayError

TELEPHONE_EVENT = "telephone-event"
DEFAULT_PTIME = 20
_NOT_AUDIO = (TELEPHONE_EVENT, "cn")  # formats that carry no codec of their own


@dataclass(frozen=True, slots=True)
class Codec:
    """An audio codec the relay can transcode: its SDP name, RTP clock, the PCM rate it
    runs at (G.722 samples at 16 kHz on an 8 kHz RTP clock, RFC 3551 §4.5.2) and the
    payload type it has when static."""

    name: str
    clock_rate: int
    sample_rate: int
    channels: int = 1
    static_pt: int | None = None


TRANSCODABLE = {c.name.lower(): c for c in (
    Codec("PCMU", 8000, 8000, 1, 0),
    Codec("PCMA", 8000, 8000, 1, 8),
    Codec("G722", 8000, 16000, 1, 9),
    Codec("opus", 48000, 48000, 2, None),
)}

_STATIC = {0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 5: ("DVI4", 8000), 6: ("DVI4", 16000),
           7: ("LPC", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000), 10: ("L16", 44100), 11: ("L16", 44100),
           12: ("QCELP", 8000), 13: ("CN", 8000), 14: ("MPA", 90000), 15: ("G728", 8000),
           18: ("G729", 8000), 26: ("JPEG", 90000), 31: ("H261", 90000), 32: ("MPV", 90000),
           34: ("H263", 90000)}  # RFC 3551 tables 4 and 5


@dataclass(frozen=True, slots=True)
class Format:
    """One payload type of an ``m=`` line, with its rtpmap and fmtp values."""

    pt: int
    name: str
    rate: int
    params: str | None = None
    fmtp: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.name.lower(), self.rate

    @property
    def codec(self) -> Codec | None:
        """The transcodable codec this format is, or None."""
        c = TRANSCODABLE.get(self.name.lower())
        return c if c is not None and c.clock_rate == self.rate else None

    @property
    def rtpmap(self) -> str:
        return str(RtpMap(self.pt, self.name, self.rate, self.params))


@dataclass(frozen=True, slots=True)
class CodecPlan:
    """What an offer's codec flags did to one media section, kept on the offerer's stream
    until the answer: the offerer's formats it may still use (not stripped, masked or not),
    those added for the answerer, and the packet time the offerer asked for."""

    offered: tuple[Format, ...]
    added: tuple[Format, ...]
    ptime: int = DEFAULT_PTIME
    maxptime: int | None = None
    flags: Flags = Flags()  # (a re-offer without codec flags makes the same plan again)


@dataclass(frozen=True, slots=True)
class TranscodeChoice:
    """An answer that needs transcoding: each side's codec and ``telephone-event`` payload
    types, and the packet time each side asked to receive."""

    offerer: Format
    answerer: Format
    offerer_event: int | None
    answerer_event: int | None
    offerer_ptime: int
    answerer_ptime: int
    offerer_maxptime: int | None
    answerer_maxptime: int | None


def formats_of(m: MediaSection) -> list[Format]:
    """The section's payload types in order, named by rtpmap or the static table (a
    format without either is named by its number and kept as it is)."""
    maps = m.rtpmaps
    fmtps = m.fmtps
    out: list[Format] = []
    for text in m.formats:
        if not text.isdigit() or int(text) > 127:
            continue  # (not RTP: nothing the codec flags apply to)
        pt = int(text)
        r = maps.get(pt)
        if r is not None:
            out.append(Format(pt, r.encoding, r.clock_rate, r.parameters, fmtps.get(text)))
        else:
            name, rate = _STATIC.get(pt, (text, 8000))
            out.append(Format(pt, name, rate, None, fmtps.get(text)))
    return out


def spec_matches(spec: str, f: Format) -> bool:
    """Does a codec spec ("PCMU", "opus/48000", "opus/48000/2", a payload type number)
    name ``f``? Names compare case-insensitively, as rtpengine does."""
    if spec.isdigit():
        return int(spec) == f.pt
    parts = spec.split("/")
    if parts[0].lower() != f.name.lower():
        return False
    if len(parts) > 1 and parts[1] and parts[1] != str(f.rate):
        return False
    return not (len(parts) > 2 and parts[2] and parts[2] != (f.params or "1"))


def _listed(f: Format, specs: Sequence[str], exempt: Sequence[str]) -> bool:
    if any(s.lower() != "all" and spec_matches(s, f) for s in specs):
        return True
    return ("all" in (s.lower() for s in specs) and f.name.lower() != TELEPHONE_EVENT
            and not any(spec_matches(e, f) for e in exempt))


def has_codec_flags(flags: Flags) -> bool:
    return bool(flags.codec_strip or flags.codec_mask or flags.codec_transcode)


def same_codec_flags(flags: Flags, like: Flags) -> Flags:
    """``flags`` with the codec flags of ``like``."""
    return replace(flags, codec_strip=like.codec_strip, codec_mask=like.codec_mask,
                   codec_transcode=like.codec_transcode, codec_except=like.codec_except,
                   codec_accept=like.codec_accept)


def _int_attr(m: MediaSection, name: str) -> int | None:
    value = m.attr(name)
    if not value:
        return None
    try:
        n = int(float(value))
    except ValueError:
        return None
    return n if 0 < n <= 1000 else None


def _free_pt(used: set[int]) -> int | None:
    for pt in range(96, 128):
        if pt not in used:
            return pt
    return None


def plan_offer(om: MediaSection, flags: Flags, supports: Callable[[Codec], bool],
               taken: Collection[int] = ()) -> CodecPlan | None:
    """Apply the offer's codec flags to the section ``om`` (in place) sent to the answerer;
    the plan the answer needs, or None without codec flags. Added codecs avoid the payload
    types of ``om`` and ``taken`` (those of the other sections). RelayError 488 when
    nothing would be left to offer."""
    if not has_codec_flags(flags) or om.port == 0:
        return None
    fmts = formats_of(om)
    # (a codec to transcode to that the offerer has stays where it is, stripped or masked)
    wanted = [f for f in fmts if f.codec is not None and _listed(f, flags.codec_transcode, ())]
    offered = [f for f in fmts if f in wanted or not _listed(f, flags.codec_strip, flags.codec_except)]
    keep = [f for f in offered if f in wanted or not _listed(f, flags.codec_mask, flags.codec_except)]
    added: list[Format] = []
    decodable = any(f.codec is not None and supports(f.codec) for f in offered)
    if om.media == "audio" and flags.codec_transcode and decodable:
        used = {f.pt for f in fmts} | set(taken)
        present = {f.key for f in keep}
        for spec in flags.codec_transcode:
            c = TRANSCODABLE.get(spec.split("/")[0].lower())
            if c is None or not supports(c) or (c.name.lower(), c.clock_rate) in present:
                continue
            pt = c.static_pt if c.static_pt is not None and c.static_pt not in used else _free_pt(used)
            if pt is None:
                break
            added.append(Format(pt, c.name, c.clock_rate, str(c.channels) if c.channels > 1 else None))
            used.add(pt)
            present.add((c.name.lower(), c.clock_rate))
        events = [f for f in keep if f.name.lower() == TELEPHONE_EVENT]
        rates = {f.rate for f in events}
        for a in list(added):
            pt = _free_pt(used)
            if events and a.rate not in rates and pt is not None:
                added.append(Format(pt, events[0].name, a.rate, None, events[0].fmtp))
                used.add(pt)
                rates.add(a.rate)
    new = keep + added
    if not any(f.name.lower() not in _NOT_AUDIO for f in new):
        raise RelayError("the codec flags leave no codec to offer", (488, "Not Acceptable Here"))
    write_formats(om, new, added)
    return CodecPlan(tuple(offered), tuple(added), _int_attr(om, "ptime") or DEFAULT_PTIME,
                     _int_attr(om, "maxptime"), flags)


def write_formats(om: MediaSection, fmts: Sequence[Format], add: Sequence[Format]) -> None:
    """Make ``fmts`` the section's payload types: rtpmap, fmtp and rtcp-fb lines of the
    others go; those of ``add`` are written."""
    pts = {str(f.pt) for f in fmts}
    om.formats = tuple(str(f.pt) for f in fmts)

    def gone(v: str | None) -> bool:
        first = (v or "").split(" ", 1)[0]
        return first != "*" and first not in pts

    for name in ("rtpmap", "fmtp", "rtcp-fb"):
        om.remove_attrs(name, gone)
    have = set(om.rtpmaps)
    new = []
    for f in add:
        if f.pt not in have:
            new.append(("rtpmap", f.rtpmap))
            if f.fmtp:
                new.append(("fmtp", f"{f.pt} {f.fmtp}"))
    lines = om.lines
    at = next((i + 1 for i in range(len(lines) - 1, -1, -1)
               if lines[i].kind == "a" and lines[i].attr_name in ("rtpmap", "fmtp")), None)
    for name, value in new:
        if at is None:
            om.add_attr(name, value)
        else:  # beside the other rtpmaps
            lines.insert(at, Line("a", f"{name}:{value}", lines[at - 1].eol))
            at += 1


def plan_answer(om: MediaSection, answer: MediaSection, plan: CodecPlan,
                supports: Callable[[Codec], bool]) -> TranscodeChoice | None:
    """The answer ``answer`` to an offer planned as ``plan``: rewrite its copy ``om`` for
    the offerer, and say what to transcode (None: media passes through)."""
    if answer.port == 0:
        return None
    try:
        ans = formats_of(answer)
    except ParseError:
        return None
    added = {f.pt for f in plan.added}
    first = next((f for f in ans if f.name.lower() not in _NOT_AUDIO), None)
    if first is None or first.pt not in added or first.codec is None or not supports(first.codec):
        keep = [f for f in ans if f.pt not in added]
        if not keep:  # (only formats of ours, and no codec: still answer with one of the offerer's)
            keep = [plan.offered[0]]
        if len(keep) != len(ans) or keep[0].pt != ans[0].pt:
            write_formats(om, keep, keep)
        return None
    mine = next((f for f in plan.offered if f.codec is not None and supports(f.codec)), None)
    if mine is None:
        return None
    their_event = next((f.pt for f in ans if f.name.lower() == TELEPHONE_EVENT and f.rate == first.rate), None)
    our_event = next((f for f in plan.offered if f.name.lower() == TELEPHONE_EVENT and f.rate == mine.rate), None)
    back = [mine] + ([our_event] if our_event is not None and their_event is not None else [])
    write_formats(om, back, back)
    return TranscodeChoice(
        offerer=mine, answerer=first,
        offerer_event=our_event.pt if our_event is not None and their_event is not None else None,
        answerer_event=their_event if our_event is not None else None,
        offerer_ptime=plan.ptime, answerer_ptime=_int_attr(answer, "ptime") or DEFAULT_PTIME,
        offerer_maxptime=plan.maxptime, answerer_maxptime=_int_attr(answer, "maxptime"),
    )
