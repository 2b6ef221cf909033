"""The media relay's call model (after rtpengine's call → monologue → media → packet
stream), its settings, per-request flags and events; no behaviour beyond what the
objects say about themselves.

* a :class:`Call` (keyed by Call-ID) holds one :class:`Leg` per pair of SIP tags
  (from-tag, to-tag). A forked INVITE answered by several branches gets one leg per
  to-tag; the branches share the ports the offer advertised, and are told apart by
  source address. A fork offered per branch (rtpengine's ``via-branch``: each branch got
  an SDP of its own) has a leg per branch from the offer on (``Leg.branch``), pending
  until that branch's answer names its to-tag.
* a leg holds, per side (0 = the offerer of the first offer, 1 = the answerer), one
  :class:`Stream` per ``m=`` line. A stream *faces* its party: its local ports are the
  ones written into the SDP sent to that party, so that party sends to them and we send
  to it from them. ``stream.peer`` is the stream facing the other party.
* each stream records its **transport profile** (the ``m=`` proto, e.g. ``RTP/AVP`` or
  ``UDP/TLS/RTP/SAVPF``), so DTLS-SRTP / SDES-SRTP ↔ RTP bridging can hang a per-stream transform
  off the forwarding step (``ingress``/``egress``) without changing the model.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .._common.addr import Address
from ..errors import Error
from ..sdp import Fingerprint
from .stats import StreamStats

if TYPE_CHECKING:
    from .bridge import DtlsStream
    from .bundle import Bundle
    from .codecs import CodecPlan
    from .sdes import SdesStream
    from .transcode import Transcoder

RTP, RTCP = 1, 2
ICE_MODES = ("auto", "remove", "force", "relay", "force-relay")


class RelayError(Error):
    """A signalling request the relay cannot serve; ``hint`` is the SIP reply to send."""

    def __init__(self, message: str, hint: tuple[int, str] = (503, "Media relay unavailable")):
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Core settings (built from ``config.media.MediaConfig`` by the adapter)."""

    advertised_address: str = "127.0.0.1"
    # named interfaces (name, advertised address) for the ng "direction" flag; the first is
    # the default. Empty: one interface, "default", at ``advertised_address``.
    interfaces: tuple[tuple[str, str], ...] = ()
    timeout: float = 60.0
    hold_timeout: float = 3600.0
    offer_timeout: float = 3600.0  # calls offered, not answered, without media (ringing)
    strict_source: bool = False
    relatch_idle: float = 1.0
    ice: str = "auto"
    sweep_interval: float = 1.0
    max_calls: int = 10000
    max_media: int = 16  # m= lines per SDP: one offer must not drain the port range


@dataclass(frozen=True, slots=True)
class Flags:
    """Per-request options (the ng flags, or what the proxy's routing asks for).

    ``ice``: None = config default; "remove" strips ICE towards the recipient; "force"
    replaces it with the relay's own ICE-lite candidates; "relay" keeps the endpoints'
    candidates and adds the relay as a low-priority relay candidate; "auto" = force if the
    recipient speaks ICE (or, for an offer, if the offerer does), else remove;
    "force-relay" is "relay" leaving the c=/m= lines (the default candidate) as they were,
    as rtpengine's ICE=force-relay does (without ICE in the SDP it acts as "relay").

    ``direction``: the named interfaces facing the offerer and the recipient (rtpengine's
    ``direction``), to bridge two networks; honoured where a stream's ports are not yet
    allocated (an initial offer), remembered after.

    ``replace_session_connection``: rewrite the session-level c= line; when off it stays as
    it was and every relayed media section gets a c= line of its own naming the relay.
    """

    ice: str | None = None
    replace_origin: bool = False
    replace_session_connection: bool = True
    trust_address: bool = True
    received_from: str | None = None
    media_address: str | None = None
    symmetric: bool = True
    strict_source: bool | None = None
    rtcp_mux: tuple[str, ...] = ()
    label: str | None = None
    direction: tuple[str, str] | None = None  # (offerer's interface, recipient's), first offer
    # the recipient's transport profile (rtpengine's ``transport-protocol``): "RTP/AVP",
    # "UDP/TLS/RTP/SAVPF"...; None keeps the offerer's. A DTLS profile facing one side and
    # a plain one facing the other make the relay terminate DTLS-SRTP (media/bridge.py).
    transport_protocol: str | None = None
    # rtpengine's ``DTLS``: "passive" or "active" asks for that role towards a DTLS
    # recipient (default: actpass in offers, passive in answers); "off" no DTLS at all
    dtls: str | None = None
    # rtpengine's ``SDES`` towards an SDES (``RTP/SAVP(F)``) recipient across a bridge:
    # "off" (none offered: an error for such a recipient), "no-<suite>" (not that suite),
    # "only-<suite>" (only those named); suite names upper case, as in a=crypto
    sdes: tuple[str, ...] = ()
    # rtpengine's ``generate-RTCP`` towards a DTLS party across a bridge (media/bridge.py):
    # "on" the relay sends its own SR/RR every RTCP_INTERVAL, "off" never; None: only while
    # the plain party sends no RTCP of its own. Kept for the answer and later re-offers.
    generate_rtcp: str | None = None
    # rtpengine's ``codec`` dictionary (media/codecs.py), codec specs as "PCMU", "opus/48000"
    # or "all": ``codec_strip`` removed from the offer and refused from the offerer;
    # ``codec_mask`` removed from the offer, still accepted from the offerer (transcoded);
    # ``codec_transcode`` (and ``offer``) appended to the offer if missing, transcoded when
    # the answerer picks one; ``codec_except`` exempt from strip/mask "all"; ``codec_accept``
    # parsed and kept (every codec the relay decodes is accepted from the offerer anyway)
    codec_strip: tuple[str, ...] = ()
    codec_mask: tuple[str, ...] = ()
    codec_transcode: tuple[str, ...] = ()
    codec_except: tuple[str, ...] = ()
    codec_accept: tuple[str, ...] = ()

    def for_answer(self) -> Flags:
        """The flags for the answer to an offer made with these. Across a bridge
        (``transport_protocol`` set) the keys that describe the offer's recipient
        (``transport_protocol``, ``ice``, ``rtcp_mux``, ``dtls``) are left out: the answer
        goes back to the offerer, which keeps its own profile, ICE and rtcp-mux. rtpengine
        applies those keys to the SDP it passes on in an answer too, so the offer's
        ``RTP/AVP ICE=remove`` would hand a browser a plain RTP answer without ICE."""
        if self.transport_protocol is None:
            return self
        return replace(self, transport_protocol=None, ice=None, rtcp_mux=(), dtls=None)


@dataclass(frozen=True, slots=True)
class StreamLatched:
    """A stream learned (or re-learned) its party's real address from packets."""

    call_id: str
    tag: str
    index: int
    component: int
    address: Address
    relatch: bool


@dataclass(frozen=True, slots=True)
class CallDeleted:
    """A call was removed: ``reason`` is "delete" (signalling) or "timeout" (no media)."""

    call_id: str
    reason: str
    totals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DtlsEstablished:
    """A bridged stream's DTLS handshake completed and the party's fingerprint matched:
    SRTP flows with ``profile``."""

    call_id: str
    tag: str
    index: int
    profile: str


@dataclass(frozen=True, slots=True)
class DtlsFailed:
    """A bridged stream's DTLS association failed (``reason``: e.g. a fingerprint
    mismatch): nothing of that party is decrypted."""

    call_id: str
    tag: str
    index: int
    reason: str
    closed: bool = False  # the party ended it with close_notify (a hang-up)


Event = StreamLatched | CallDeleted | DtlsEstablished | DtlsFailed
Transform = Callable[[bytes, bool], bytes | None]


class Stream:
    """One party's view of one m= line: the relay ports facing that party and what we know
    about the party's address. Mutable, with slots: the forwarding path touches it per packet."""

    __slots__ = (
        "bundle", "bundled", "call", "codecs", "consent", "crypto", "direction", "dtls", "egress", "expected_rtcp",
        "expected_rtp", "fingerprints", "generate_rtcp",
        "had_ice", "hold", "ice_pwd", "ice_ufrag", "index", "ingress", "interface", "last_signal",
        "latched_rtcp", "latched_rtp", "leg", "local_setup", "media", "mid", "mid_ext", "mux", "no_dest", "owns_ports",
        "party_ufrag", "peer", "port_count", "profile", "rtcp_port", "rtcp_stats", "rtp_port", "rtp_stats",
        "sdes", "sent_octets", "sent_packets", "setup", "side", "signalled_rtp", "strangers", "strict", "symmetric",
        "transcoder",
    )

    def __init__(self, call: Call, leg: Leg, side: int, index: int) -> None:
        self.call = call
        self.leg = leg
        self.side = side
        self.index = index
        self.media = "audio"
        self.profile = "RTP/AVP"
        self.rtp_port: int | None = None
        self.rtcp_port: int | None = None
        self.port_count = 0
        self.owns_ports = True
        self.interface = ""  # the named interface its ports are on ("" = the default)
        self.expected_rtp: Address | None = None
        self.signalled_rtp: Address | None = None  # the last real address its SDP gave
        self.expected_rtcp: Address | None = None
        self.latched_rtp: Address | None = None
        self.latched_rtcp: Address | None = None
        self.mux = False
        self.hold = False
        self.direction = "sendrecv"
        self.had_ice = False
        self.ice_ufrag: str | None = None
        self.ice_pwd: str | None = None
        self.symmetric = True
        self.strict = False
        self.peer: Stream | None = None
        self.rtp_stats = StreamStats()
        self.rtcp_stats = StreamStats()
        self.strangers = 0
        self.no_dest = 0
        self.last_signal = 0.0
        # Per-profile transforms (the hook for DTLS-SRTP/SDES <-> RTP bridging): ``ingress``
        # turns what this party sends into plain RTP/RTCP, ``egress`` turns plain packets into
        # what this party expects. ``(data, is_rtcp) -> bytes`` or None to drop. None = as is.
        self.ingress: Transform | None = None
        self.egress: Transform | None = None
        # DTLS-SRTP facing this party (media/bridge.py): what its SDP said, what we said
        self.mid: str | None = None
        self.bundled = False  # its SDP put this section in a BUNDLE group
        self.fingerprints: tuple[Fingerprint, ...] = ()
        self.setup: str | None = None  # the party's a=setup
        self.local_setup: str | None = None  # ours towards the party ("passive", "active", "actpass")
        self.party_ufrag: str | None = None  # the party's ICE ufrag (a new one: ICE restart)
        self.dtls: DtlsStream | None = None
        self.consent = 0.0  # when the party last proved it wants our media (RFC 7675)
        # SDES-SRTP facing this party (media/sdes.py): its a=crypto lines, our keys
        self.crypto: tuple[str, ...] = ()
        self.sdes: SdesStream | None = None
        # BUNDLE facing a DTLS party (media/bundle.py): the group this stream is in, whose
        # leader owns the shared port, ICE, DTLS and latched address
        self.bundle: Bundle | None = None
        self.mid_ext: int | None = None  # the extmap id its SDP gave the MID header extension
        # the relay's own RTCP towards this party (Flags.generate_rtcp), and what it sent
        # this party (RTP towards a DTLS party only: the counts of its sender reports)
        self.generate_rtcp: str | None = None
        self.sent_packets = 0
        self.sent_octets = 0
        # codecs (media/codecs.py): what this party offered and the flags added (kept from
        # its offer to the answer), and the transcoder of what it sends (media/transcode.py)
        self.codecs: CodecPlan | None = None
        self.transcoder: Transcoder | None = None

    @property
    def tag(self) -> str:
        return self.leg.tags[self.side]

    @property
    def last_packet(self) -> float:
        return max(self.rtp_stats.last_packet, self.rtcp_stats.last_packet)


class Leg:
    """A dialog between two tags; ``streams[side][m_index]``. ``branch``: the via-branch
    its offer was made for (None: an offer shared by every branch)."""

    __slots__ = ("branch", "created", "streams", "tags")

    def __init__(self, tags: list[str], now: float, branch: str | None = None) -> None:
        self.tags = tags
        self.created = now
        self.branch = branch
        self.streams: list[list[Stream]] = [[], []]


class Call:
    __slots__ = ("answered", "call_id", "created", "last_signal", "legs")

    def __init__(self, call_id: str, now: float) -> None:
        self.call_id = call_id
        self.created = now
        self.last_signal = now
        self.answered = False  # offer_timeout until then, as rtpengine's one-sided calls
        self.legs: list[Leg] = []

    def streams(self) -> list[Stream]:
        return [s for leg in self.legs for side in leg.streams for s in side]

    def last_packet(self) -> float:
        """When the last media packet of this call arrived (0.0: never)."""
        last = 0.0
        for s in self.streams():
            p = s.last_packet
            if p > last:
                last = p
        return last

    def on_hold(self) -> bool:
        """Is all of the call's media held? A media section is held when either party holds
        it (sendonly/inactive/c=0.0.0.0); one held video section beside live audio is not
        a held call, so the audio's silence still ends it after ``timeout``."""
        held: list[bool] = []
        for leg in self.legs:
            for pair in itertools.zip_longest(*leg.streams):  # one media section, both parties
                live = [s for s in pair if s is not None and (s.rtp_port is not None or s.expected_rtp)]
                if live:
                    held.append(any(s.hold for s in live))
        return bool(held) and all(held)
