"""The media relay core (rtpengine's job), sans-I/O.

Call model, after rtpengine's call → monologue → media → packet stream:

* a :class:`Call` (keyed by Call-ID) holds one :class:`Leg` per pair of SIP tags
  (from-tag, to-tag). A forked INVITE answered by several branches gets one leg per
  to-tag; the branches share the ports the offer advertised, and are told apart by
  source address.
* a leg holds, per side (0 = the offerer of the first offer, 1 = the answerer), one
  :class:`Stream` per ``m=`` line. A stream *faces* its party: its local ports are the
  ones written into the SDP sent to that party, so that party sends to them and we send
  to it from them. ``stream.peer`` is the stream facing the other party.
* each stream records its **transport profile** (the ``m=`` proto, e.g. ``RTP/AVP`` or
  ``UDP/TLS/RTP/SAVPF``), so DTLS-SRTP ↔ RTP bridging can later hang a per-stream
  transform off the forwarding step without changing the model.

Signalling entry points: :meth:`MediaRelay.offer`, :meth:`answer`, :meth:`delete`,
:meth:`query`. They take and return SDP bytes; malformed SDP raises ``ParseError`` (hint
488) and relay problems raise :class:`RelayError` (hint 503 or 488).

Packets: :meth:`MediaRelay.receive` ``(data, local_port, remote, now)`` returns
``(local_port, destination, data)`` to send, or None (dropped and counted). It is the hot
path: dictionary lookup, latching check, one stats update, no objects built per packet.
Timers: :meth:`get_timer` / :meth:`handle_timer` time out silent calls. Events
(:class:`StreamLatched`, :class:`CallDeleted`) are drained with :meth:`events`.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .._common.addr import Address
from .._common.ids import TokenSource, token
from ..errors import Error
from ..sdp import Candidate, Connection, MediaSection, SessionDescription, candidate_priority
from . import stunlite
from .ports import PortAllocator
from .stats import StreamStats

RTP, RTCP = 1, 2
ICE_ATTRS = ("ice-ufrag", "ice-pwd", "ice-options", "candidate", "end-of-candidates",
             "remote-candidates", "ice-mismatch", "ice-pacing", "ice2")
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


Event = StreamLatched | CallDeleted
Transform = Callable[[bytes, bool], bytes | None]


def _family(host: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(host).version == 6 else "IP4"
    except ValueError:
        return "IP4"


def _ip_or_none(host: str) -> str | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if ip.is_unspecified else str(ip)


_STATIC_RATES = {10: 44100, 11: 44100, 14: 90000, 25: 90000, 26: 90000, 28: 90000,
                 31: 90000, 32: 90000, 33: 90000, 34: 90000}  # RFC 3551; others 8000


def _clock_rate(m: MediaSection) -> int:
    """RTP clock rate of a media section's first format, for the jitter statistics."""
    fmts = m.formats
    if not fmts or not fmts[0].isdigit():
        return 8000
    pt = int(fmts[0])
    rtpmap = m.rtpmaps.get(pt)
    if rtpmap is not None:
        return rtpmap.clock_rate
    return _STATIC_RATES.get(pt, 8000)


class Stream:
    """One party's view of one m= line: the relay ports facing that party and what we know
    about the party's address. Mutable, with slots: the forwarding path touches it per packet."""

    __slots__ = (
        "call", "direction", "egress", "expected_rtcp", "expected_rtp", "had_ice", "hold",
        "ice_pwd", "ice_ufrag", "index", "ingress", "interface", "last_signal", "latched_rtcp", "latched_rtp",
        "leg", "media", "mux", "no_dest", "owns_ports", "peer", "port_count", "profile",
        "rtcp_port", "rtcp_stats", "rtp_port", "rtp_stats", "side", "signalled_rtp", "strangers", "strict",
        "symmetric",
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

    @property
    def tag(self) -> str:
        return self.leg.tags[self.side]

    @property
    def last_packet(self) -> float:
        return max(self.rtp_stats.last_packet, self.rtcp_stats.last_packet)


STUN_ROUTE_TTL = 40.0  # seconds a passed-on check waits for its answer (RFC 8489 Rc/RTO)
MAX_STUN_ROUTES = 20000


@dataclass(slots=True)
class _StunRoute:
    """Where the answer to a passed-on ICE check goes: back out of ``port`` to ``source``."""

    port: int
    source: Address
    stream: Stream
    nominate: bool
    expires: float


class _Socket:
    """A local port: the stream(s) receiving on it (several only for forked branches)."""

    __slots__ = ("rtcp", "streams")

    def __init__(self, stream: Stream, rtcp: bool) -> None:
        self.streams = [stream]
        self.rtcp = rtcp


class Leg:
    """A dialog between two tags; ``streams[side][m_index]``."""

    __slots__ = ("created", "streams", "tags")

    def __init__(self, tags: list[str], now: float) -> None:
        self.tags = tags
        self.created = now
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


class MediaRelay:
    """The relay core: sessions, ports, SDP rewriting, latching, forwarding, timeouts."""

    def __init__(
        self,
        config: RelayConfig,
        allocator: PortAllocator,
        token_source: TokenSource | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        if config.ice not in ICE_MODES:
            raise ValueError(f"ice mode {config.ice!r} not one of {ICE_MODES}")
        self.config = config
        self._alloc = allocator
        self._token = token_source
        self._wall = wall_clock
        self._calls: dict[str, Call] = {}
        self._sockets: dict[int, _Socket] = {}
        self._stun_routes: OrderedDict[bytes, _StunRoute] = OrderedDict()
        self._events: list[Event] = []
        self._next_sweep: float | None = None
        self._ifaces: dict[str, str] = dict(config.interfaces) or {"default": config.advertised_address}
        self._adv = next(iter(self._ifaces.values()))  # the default interface's address
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "media_calls_created", "media_calls_deleted", "media_calls_timed_out",
                "media_packets_relayed", "media_bytes_relayed", "media_packets_dropped_stranger",
                "media_packets_dropped_no_destination", "media_packets_dropped_unknown_port",
                "media_packets_dropped_malformed", "media_stun_answered", "media_port_exhaustion",
                "media_offers", "media_answers", "media_deletes", "media_stun_relayed",
            ),
            0,
        )

    # ------------------------------------------------------------------ signalling
    def offer(
        self,
        call_id: str,
        from_tag: str,
        sdp: bytes,
        now: float,
        flags: Flags | None = None,
        to_tag: str | None = None,
    ) -> bytes:
        """Rewrite an offer sent by the party ``from_tag``; returns the SDP to forward."""
        flags = flags or Flags()
        desc = SessionDescription.parse(sdp)
        call = self._calls.get(call_id)
        new_call = call is None
        if call is None:
            if len(self._calls) >= self.config.max_calls:
                raise RelayError("too many calls", (503, "Media relay full"))
            call = Call(call_id, now)
        found = self._find_leg(call, from_tag, to_tag)
        new_leg = found is None
        if found is None:
            leg = Leg([from_tag, to_tag or ""], now)
            side = 0
        else:
            leg, side = found
        out = self._apply(call, leg, side, desc, flags, now, offer=True)
        if new_leg:
            call.legs.append(leg)
        if new_call:
            self._calls[call_id] = call
            self.counters["media_calls_created"] += 1
            self._arm(now)
        call.last_signal = now
        self.counters["media_offers"] += 1
        return out.serialize()

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: bytes,
        now: float,
        flags: Flags | None = None,
    ) -> bytes:
        """Rewrite an answer sent by the party ``to_tag``; returns the SDP to forward."""
        flags = flags or Flags()
        desc = SessionDescription.parse(sdp)
        call = self._calls.get(call_id)
        if call is None:
            raise RelayError(f"unknown call-id {call_id!r}", (488, "Unknown media session"))
        leg: Leg | None = None
        side = 1
        fork_of: Leg | None = None
        for cand in call.legs:
            if cand.tags == [from_tag, to_tag]:
                leg, side = cand, 1
                break
            if cand.tags == [to_tag, from_tag]:
                leg, side = cand, 0
                break
        if leg is None:
            for cand in call.legs:
                if cand.tags[0] == from_tag and cand.tags[1] == "":
                    cand.tags[1] = to_tag
                    leg = cand
                    break
        if leg is None:
            fork_of = next((c for c in call.legs if c.tags[0] == from_tag), None)
            if fork_of is None:
                raise RelayError(f"unknown from-tag {from_tag!r}", (488, "Unknown media session"))
            leg = self._fork(call, fork_of, to_tag, now)
        try:
            out = self._apply(call, leg, side, desc, flags, now, offer=False)
        except BaseException:
            if fork_of is not None:
                self._drop_leg(call, leg)
            raise
        call.last_signal = now
        call.answered = True
        self.counters["media_answers"] += 1
        return out.serialize()

    def delete(
        self,
        call_id: str,
        now: float,
        from_tag: str | None = None,
        to_tag: str | None = None,
        branch_only: bool = False,
    ) -> dict[str, int] | None:
        """Delete a call (BYE, CANCEL, final failure), or with ``branch_only`` just the forked
        branch answered with ``to_tag`` (a failed fork while others go on). Returns the
        call's totals, or None if the call is unknown."""
        call = self._calls.get(call_id)
        if call is None:
            return None
        self.counters["media_deletes"] += 1
        if branch_only and to_tag is not None and len(call.legs) > 1:
            legs = [leg for leg in call.legs if to_tag in leg.tags and (from_tag is None or from_tag in leg.tags)]
            if not legs:
                return None  # a fork that never answered with SDP: nothing of it to delete
            if len(legs) < len(call.legs):
                totals = self._totals(call)
                for leg in legs:
                    self._drop_leg(call, leg)
                return totals
        return self._delete_call(call, "delete")

    def query(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def calls(self) -> list[str]:
        return list(self._calls)

    # ------------------------------------------------------------------ packets
    def receive(self, data: bytes, local_port: int, remote: Address, now: float) -> tuple[int, Address, bytes] | None:
        """One datagram arrived on ``local_port`` from ``remote``: what to send, if anything."""
        sock = self._sockets.get(local_port)
        if sock is None:
            self.counters["media_packets_dropped_unknown_port"] += 1
            return None
        streams = sock.streams
        s = streams[0] if len(streams) == 1 else self._pick_branch(streams, remote)
        if not data:
            self.counters["media_packets_dropped_malformed"] += 1
            return None
        b0 = data[0]
        rtcp = sock.rtcp or (128 <= b0 < 192 and len(data) > 1 and 192 <= data[1] <= 223)
        latched = s.latched_rtcp if rtcp else s.latched_rtp
        another_candidate = False
        if b0 < 4:
            if s.ice_pwd is not None:
                return self._stun(s, data, local_port, remote, now, sock.rtcp)
            stun = stunlite.peek(data)
            if stun is not None:  # the endpoints' own ICE, through us (the relay candidate)
                if stun.cls >= 2:
                    routed = self._route_stun_response(s, stun, data, now)
                    if routed is not None:
                        return routed
                elif stun.cls == 0:
                    self._remember_stun(stun, local_port, remote, s, now)
                    # a check from another of the party's candidates passes on without
                    # latching; its answer goes back to it by transaction id
                    another_candidate = latched is not None and latched != remote and not s.strict
        # latching (symmetric RTP): accept the latched source, learn or re-learn it safely
        if latched != remote and not another_candidate and not self._accept(s, rtcp, remote, data, now, latched):
            s.strangers += 1
            self.counters["media_packets_dropped_stranger"] += 1
            return None
        if s.ingress is not None:
            plain = s.ingress(data, rtcp)
            if plain is None:
                self.counters["media_packets_dropped_malformed"] += 1
                return None
            data = plain
        if rtcp:
            s.rtcp_stats.count(len(data), now)
        elif 128 <= b0 < 192 and len(data) >= 12:
            s.rtp_stats.rtp(data, now)
        else:
            s.rtp_stats.count(len(data), now)
        p = s.peer
        if p is None or p.rtp_port is None:
            s.no_dest += 1
            self.counters["media_packets_dropped_no_destination"] += 1
            return None
        if rtcp and not p.mux:
            dest = p.latched_rtcp or p.expected_rtcp
            port = p.rtcp_port
        else:
            dest = p.latched_rtp or p.expected_rtp
            port = p.rtp_port
        if dest is None or port is None:
            s.no_dest += 1
            self.counters["media_packets_dropped_no_destination"] += 1
            return None
        if p.egress is not None:
            wire = p.egress(data, rtcp)
            if wire is None:
                return None
            data = wire
        return port, dest, data

    def _remember_stun(self, stun: stunlite.PassingStun, port: int, remote: Address, s: Stream, now: float) -> None:
        routes = self._stun_routes
        routes[stun.transaction_id] = _StunRoute(port, remote, s, stun.use_candidate, now + STUN_ROUTE_TTL)
        while len(routes) > MAX_STUN_ROUTES:
            routes.popitem(last=False)

    def _route_stun_response(self, s: Stream, stun: stunlite.PassingStun, data: bytes,
                             now: float) -> tuple[int, Address, bytes] | None:
        """The peer's answer to a check we passed on goes back to the candidate that sent
        it, out of the port it came in on. A success for a nominating check (USE-CANDIDATE)
        latches that party's stream on the nominated candidate: its media comes from there."""
        route = self._stun_routes.pop(stun.transaction_id, None)
        if route is None or route.expires < now or route.stream.peer is not s:
            return None
        x = route.stream
        if stun.cls == 2 and route.nominate:
            rtcp = self._sockets.get(route.port) is not None and self._sockets[route.port].rtcp
            current = x.latched_rtcp if rtcp else x.latched_rtp
            if current != route.source:
                if rtcp:
                    x.latched_rtcp = route.source
                else:
                    x.latched_rtp = route.source
                    if x.mux:
                        x.latched_rtcp = route.source
                self._events.append(StreamLatched(x.call.call_id, x.tag, x.index, RTCP if rtcp else RTP,
                                                  route.source, current is not None))
        self.counters["media_stun_relayed"] += 1
        return route.port, route.source, data

    def _accept(self, s: Stream, rtcp: bool, remote: Address, data: bytes, now: float, latched: Address | None) -> bool:
        if not s.symmetric:
            return True
        expected = s.expected_rtcp if rtcp else s.expected_rtp
        if s.strict and expected is not None and remote != expected:
            return False
        if latched is not None:
            stats = s.rtcp_stats if rtcp else s.rtp_stats
            if now - stats.last_packet < self.config.relatch_idle:
                return False
            # NAT rebinding: RTP must continue the SSRC we were receiving
            if (
                not rtcp
                and stats.ssrc is not None
                and len(data) >= 12
                and data[0] & 0xC0 == 0x80
                and int.from_bytes(data[8:12], "big") != stats.ssrc
            ):
                return False
        if rtcp:
            s.latched_rtcp = remote
        else:
            s.latched_rtp = remote
            if s.mux and s.latched_rtcp is None:
                s.latched_rtcp = remote
        self._events.append(
            StreamLatched(s.call.call_id, s.tag, s.index, RTCP if rtcp else RTP, remote, latched is not None)
        )
        return True

    def _stun(self, s: Stream, data: bytes, port: int, remote: Address, now: float, rtcp: bool) -> tuple[int, Address, bytes] | None:
        assert s.ice_ufrag is not None and s.ice_pwd is not None  # guarded by the caller
        req = stunlite.parse_binding(data, s.ice_ufrag, s.ice_pwd)
        if req is None:
            self.counters["media_packets_dropped_malformed"] += 1
            return None
        # an authenticated check proves the source: latch on it (RFC 8445 §7.3.1.5 for lite)
        if rtcp:
            if s.latched_rtcp != remote and (req.use_candidate or s.latched_rtcp is None):
                s.latched_rtcp = remote
        elif s.latched_rtp != remote and (req.use_candidate or s.latched_rtp is None):
            relatch = s.latched_rtp is not None
            s.latched_rtp = remote
            if s.mux:
                s.latched_rtcp = remote
            self._events.append(StreamLatched(s.call.call_id, s.tag, s.index, RTP, remote, relatch))
        self.counters["media_stun_answered"] += 1
        return port, remote, stunlite.binding_success(req.transaction_id, remote, s.ice_pwd)

    @staticmethod
    def _pick_branch(streams: list[Stream], remote: Address) -> Stream:
        for s in streams:
            if s.latched_rtp == remote or s.latched_rtcp == remote:
                return s
        for s in streams:
            if s.latched_rtp is None and (s.expected_rtp == remote or s.expected_rtcp == remote):
                return s
        for s in streams:
            if s.latched_rtp is None and s.expected_rtp is not None and s.expected_rtp[0] == remote[0]:
                return s
        return streams[0]

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> float | None:
        return self._next_sweep if self._calls else None

    def handle_timer(self, now: float) -> None:
        """Delete calls without media for ``timeout`` s (``hold_timeout`` when on hold;
        ``offer_timeout`` for a call with an offer and no answer yet, e.g. still ringing,
        unless early media flows)."""
        if self._next_sweep is None or now < self._next_sweep:
            return
        self._next_sweep = now + self.config.sweep_interval
        cfg = self.config
        for call in list(self._calls.values()):
            last = call.last_packet()
            if not call.answered and last == 0.0:
                limit = cfg.offer_timeout
            else:
                limit = cfg.hold_timeout if call.on_hold() else cfg.timeout
            if now - max(last, call.last_signal) >= limit:
                self.counters["media_calls_timed_out"] += 1
                self._delete_call(call, "timeout")

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counters)
        out["media_calls"] = len(self._calls)
        out["media_ports_in_use"] = len(self._sockets)
        pk = by = 0
        for call in self._calls.values():
            for s in call.streams():
                pk += s.rtp_stats.packets + s.rtcp_stats.packets
                by += s.rtp_stats.bytes + s.rtcp_stats.bytes
        out["media_packets_received_live"] = pk
        out["media_bytes_received_live"] = by
        return out

    @property
    def ports(self) -> list[int]:
        """Local ports currently bound for relaying (the adapter's sockets)."""
        return list(self._sockets)

    # ------------------------------------------------------------------ internals
    def _arm(self, now: float) -> None:
        if self._next_sweep is None:
            self._next_sweep = now + self.config.sweep_interval

    @staticmethod
    def _find_leg(call: Call, from_tag: str, to_tag: str | None) -> tuple[Leg, int] | None:
        for leg in call.legs:
            a, b = leg.tags
            if a == from_tag and (to_tag is None or b in (to_tag, "")):
                return leg, 0
            if b == from_tag and (to_tag is None or a == to_tag):
                return leg, 1
        return None

    def _fork(self, call: Call, primary: Leg, to_tag: str, now: float) -> Leg:
        """A second to-tag answers a forked offer: new ports towards the offerer, shared ports
        towards the new branch (it was sent the same offer)."""
        leg = Leg([primary.tags[0], to_tag], now)
        for i, (pa, pb) in enumerate(zip(primary.streams[0], primary.streams[1], strict=False)):
            a = Stream(call, leg, 0, i)
            for name in ("media", "profile", "expected_rtp", "expected_rtcp", "mux", "hold",
                         "direction", "had_ice", "symmetric", "strict", "interface"):
                setattr(a, name, getattr(pa, name))
            b = Stream(call, leg, 1, i)
            b.media, b.profile = pb.media, pb.profile
            b.rtp_port, b.rtcp_port, b.owns_ports = pb.rtp_port, pb.rtcp_port, False
            b.interface = pb.interface
            b.port_count = pb.port_count
            b.ice_ufrag, b.ice_pwd = pb.ice_ufrag, pb.ice_pwd
            for port in {pb.rtp_port, pb.rtcp_port} - {None}:
                sock = self._sockets.get(port)  # type: ignore[arg-type]
                if sock is not None:
                    sock.streams.append(b)
            a.peer, b.peer = b, a
            leg.streams[0].append(a)
            leg.streams[1].append(b)
        call.legs.append(leg)
        return leg

    def _drop_leg(self, call: Call, leg: Leg) -> None:
        for side in leg.streams:
            for s in side:
                self._release(s)
        if leg in call.legs:
            call.legs.remove(leg)

    def _delete_call(self, call: Call, reason: str) -> dict[str, int]:
        totals = self._totals(call)
        for leg in list(call.legs):
            self._drop_leg(call, leg)
        self._calls.pop(call.call_id, None)
        self.counters["media_calls_deleted"] += 1
        self.counters["media_packets_relayed"] += totals["packets"]
        self.counters["media_bytes_relayed"] += totals["bytes"]
        self._events.append(CallDeleted(call.call_id, reason, totals))
        return totals

    @staticmethod
    def _totals(call: Call) -> dict[str, int]:
        t = dict.fromkeys(("packets", "bytes", "rtp_packets", "rtp_bytes", "rtcp_packets",
                           "rtcp_bytes", "lost", "strangers"), 0)
        for s in call.streams():
            t["rtp_packets"] += s.rtp_stats.packets
            t["rtp_bytes"] += s.rtp_stats.bytes
            t["rtcp_packets"] += s.rtcp_stats.packets
            t["rtcp_bytes"] += s.rtcp_stats.bytes
            t["lost"] += s.rtp_stats.lost
            t["strangers"] += s.strangers
        t["packets"] = t["rtp_packets"] + t["rtcp_packets"]
        t["bytes"] = t["rtp_bytes"] + t["rtcp_bytes"]
        return t

    def _release(self, s: Stream) -> None:
        ports = {s.rtp_port, s.rtcp_port} - {None}
        for port in ports:
            sock = self._sockets.get(port)  # type: ignore[arg-type]
            if sock is None:
                continue
            if s in sock.streams:
                sock.streams.remove(s)
            if not sock.streams:
                del self._sockets[port]  # type: ignore[arg-type]
        # forked branches share ports: the last stream using them gives them back
        if s.rtp_port is not None and s.port_count and not any(p in self._sockets for p in ports):
            self._alloc.release(s.rtp_port, s.port_count)
        s.rtp_port = s.rtcp_port = None
        s.port_count = 0

    def _allocate(self, s: Stream, single: bool) -> None:
        count = 1 if single else 2
        base = self._alloc.allocate(count, s.interface)
        if base is None:
            self.counters["media_port_exhaustion"] += 1
            raise RelayError("relay port range exhausted", (503, "Media relay out of ports"))
        s.rtp_port = base
        s.rtcp_port = base if single else base + 1
        s.port_count = count
        s.owns_ports = True
        self._sockets[base] = _Socket(s, rtcp=False)
        if not single:
            self._sockets[base + 1] = _Socket(s, rtcp=True)

    def _direction(self, flags: Flags) -> tuple[str, str] | None:
        """The interfaces the ng ``direction`` names; RelayError 488 for an unknown one.
        rtpengine's legacy "internal"/"external" mean nothing unless configured."""
        if flags.direction is None:
            return None
        names = [n if n in self._ifaces else "" for n in flags.direction]
        for asked, got in zip(flags.direction, names, strict=True):
            if not got and asked not in ("internal", "external"):
                raise RelayError(f"unknown interface {asked!r} in direction", (488, "Unknown media interface"))
        return names[0], names[1]

    def _adv_of(self, s: Stream) -> str:
        """The address written into SDP for ports of ``s`` (its interface's advertised one)."""
        return self._ifaces.get(s.interface, self._adv) if s.interface else self._adv

    def _new_token(self, n: int) -> str:
        return token(n, self._token) if self._token is not None else token(n)

    def _apply(
        self, call: Call, leg: Leg, side: int, desc: SessionDescription, flags: Flags, now: float, offer: bool
    ) -> SessionDescription:
        """Update ``leg`` from the SDP ``desc`` sent by party ``side``; rewrite it for the other."""
        if len(desc.media) > self.config.max_media:
            raise RelayError(
                f"{len(desc.media)} media sections (at most {self.config.max_media})",
                (488, "Too many media streams"),
            )
        out = desc.copy()
        mine, theirs = leg.streams[side], leg.streams[1 - side]
        created: list[Stream] = []
        allocated: list[Stream] = []
        strict = self.config.strict_source if flags.strict_source is None else flags.strict_source
        ice_mode = flags.ice or self.config.ice
        towards = self._direction(flags) if offer else None
        try:
            for i, m in enumerate(desc.media):
                if i >= len(mine):
                    mine.append(Stream(call, leg, side, i))
                    created.append(mine[-1])
                if i >= len(theirs):
                    theirs.append(Stream(call, leg, 1 - side, i))
                    created.append(theirs[-1])
                s, p = mine[i], theirs[i]
                s.peer, p.peer = p, s
                if towards is not None:  # ports still to allocate go on the named interfaces
                    if s.rtp_port is None:
                        s.interface = towards[0]
                    if p.rtp_port is None:
                        p.interface = towards[1]
                s.last_signal = now
                s.media, s.profile = m.media, m.proto
                s.symmetric, s.strict = flags.symmetric, strict
                s.direction = desc.media_direction(i)
                s.had_ice = desc.media[i].ice_ufrag is not None or desc.ice_ufrag is not None
                if offer and not p.last_signal:
                    p.profile = m.proto  # until the recipient answers with its own
                s.rtp_stats.clock_rate = _clock_rate(desc.media[i])
                if m.port == 0:  # rejected or disabled stream: leave it at port 0
                    s.expected_rtp = s.expected_rtcp = None
                    continue
                conn = desc.media_connection(i)
                host = conn.address if conn else ""
                if flags.media_address:
                    host = flags.media_address
                elif not flags.trust_address and flags.received_from:
                    host = flags.received_from
                # c=0.0.0.0 is RFC 2543 hold, except with ICE (RFC 8839: no default candidate yet)
                hold = conn is not None and conn.is_hold and not s.had_ice
                s.hold = hold or s.direction in ("sendonly", "inactive")
                ip = None if hold else _ip_or_none(host)
                new_rtp = (ip, m.port) if ip else None
                if new_rtp is not None and new_rtp != s.signalled_rtp and s.latched_rtp is not None:
                    # the party moved its media (re-INVITE): learn again; coming back from
                    # a c=0.0.0.0 hold to the same address is no move
                    s.latched_rtp = s.latched_rtcp = None
                s.expected_rtp = new_rtp
                if new_rtp is not None:
                    s.signalled_rtp = new_rtp
                r = m.rtcp
                # RTCP on the next port (RFC 3550 §11), which RTP on 65535 does not have
                next_port = (ip, m.port + 1) if ip and m.port < 65535 else None
                if r is not None and r.port:
                    rip = _ip_or_none(r.connection.address) if r.connection else ip
                    s.expected_rtcp = (rip, r.port) if rip else next_port
                else:
                    s.expected_rtcp = next_port
                # rtcp-mux flags as rtpengine reads them: "require" forces it on the party that
                # receives the rewritten offer (the answerer), not on the offerer; "reject" in
                # the offer or in the answer keeps it off towards the offerer
                mux_flags = flags.rtcp_mux
                if offer:
                    s.mux = m.rtcp_mux and "reject" not in mux_flags
                    if "require" in mux_flags:
                        p.mux = True
                else:
                    s.mux = m.rtcp_mux or "require" in mux_flags or s.mux
                    if "reject" in mux_flags:
                        p.mux = False
                # otherwise the relay muxes towards an offerer that offered rtcp-mux, whatever
                # the answerer does: it demultiplexes on the answerer's side
                # (WebRTC offerers require rtcp-mux; SIP phones often do not do it)
                if p.rtp_port is None:
                    self._allocate(p, single="require" in flags.rtcp_mux)
                    allocated.append(p)
                self._rewrite_media(out, i, p, flags, offer, ice_mode, s, hold)
            if not offer:
                self._share_bundle(out, desc, theirs, mine, flags, ice_mode)
            self._rewrite_session(out, flags, desc, self._adv_of(theirs[0]) if theirs else self._adv)
        except BaseException:
            for st in allocated:
                self._release(st)
            for st in created:
                side_list = leg.streams[st.side]
                if st in side_list:
                    side_list.remove(st)
            raise
        return out

    def _share_bundle(
        self,
        out: SessionDescription,
        desc: SessionDescription,
        theirs: list[Stream],
        mine: list[Stream],
        flags: Flags,
        ice_mode: str,
    ) -> None:
        """In an answer, the m= lines of a BUNDLE group share one transport (RFC 8843
        §7.3.1): give every bundled section the relay port and ICE credentials of the
        BUNDLE-tag section, and return the ports the others had."""
        mids = desc.bundle
        if len(mids) < 2:
            return
        index = {m.mid: i for i, m in enumerate(desc.media) if m.mid is not None and m.port != 0}
        leader = index.get(mids[0])
        if leader is None or leader >= len(theirs):
            return
        lp = theirs[leader]
        if lp.rtp_port is None:
            return
        for mid in mids[1:]:
            i = index.get(mid)
            if i is None or i == leader or i >= len(theirs):
                continue
            fp = theirs[i]
            if fp.rtp_port != lp.rtp_port:
                self._release(fp)
                fp.rtp_port, fp.rtcp_port = lp.rtp_port, lp.rtcp_port
                fp.owns_ports, fp.port_count = False, 0
            fp.ice_ufrag, fp.ice_pwd = lp.ice_ufrag, lp.ice_pwd
            fp.mux = lp.mux
            self._rewrite_media(out, i, fp, flags, False, ice_mode, mine[i], False)

    def _rewrite_media(
        self,
        out: SessionDescription,
        i: int,
        p: Stream,
        flags: Flags,
        offer: bool,
        ice_mode: str,
        src: Stream,
        zero_hold: bool,
    ) -> None:
        om = out.media[i]
        assert p.rtp_port is not None and p.rtcp_port is not None
        had = om.ice_ufrag is not None or out.ice_ufrag is not None
        keep_default = ice_mode == "force-relay" and had  # c=/m= stay the endpoint's
        if not keep_default:
            self._point_at_relay(out, om, p, flags, zero_hold)
        if offer:
            if "demux" in flags.rtcp_mux or "reject" in flags.rtcp_mux:
                om.remove_attrs("rtcp-mux")
            elif ("offer" in flags.rtcp_mux or "require" in flags.rtcp_mux) and not om.rtcp_mux:
                om.add_attr("rtcp-mux")
        elif not p.mux:
            om.remove_attrs("rtcp-mux")  # never answer rtcp-mux to an offerer that did not offer it
        elif not om.rtcp_mux:
            om.add_attr("rtcp-mux")  # accepted back towards the offerer (we demux)
        if not keep_default:
            om.set_attr("rtcp", str(p.rtcp_port))
        # ICE towards the recipient p
        mode = "relay" if ice_mode == "force-relay" else ice_mode
        if mode == "auto":
            recipient_ice = p.had_ice if not offer else src.had_ice
            mode = "force" if recipient_ice else "remove"
        if mode == "relay" and had:
            p.ice_ufrag = p.ice_pwd = None
            om.remove_attrs("candidate", lambda v: v is not None and " typ relay" in v)
            om.remove_attrs("end-of-candidates")
            for comp, port in ((1, p.rtp_port), (2, p.rtcp_port)):
                if comp == 2 and (p.rtcp_port == p.rtp_port or om.rtcp_mux):
                    continue
                adv = self._adv_of(p)
                c = Candidate(
                    "sipedge", comp, "UDP", candidate_priority(0, 65535, comp), adv, port, "relay", adv, port,
                )
                om.add_attr("candidate", str(c))
            return
        for name in ICE_ATTRS:
            om.remove_attrs(name)
        if mode in ("remove", "relay"):
            p.ice_ufrag = p.ice_pwd = None
            for name in ICE_ATTRS:
                out.remove_attrs(name)
            out.remove_attrs("ice-lite")
            return
        # force: the relay is the only (ICE-lite) candidate towards p
        if p.ice_ufrag is None:
            p.ice_ufrag = self._new_token(6)
            p.ice_pwd = self._new_token(16)
        for name in ICE_ATTRS:
            out.remove_attrs(name)
        if not out.has_attr("ice-lite"):
            out.add_attr("ice-lite")
        om.add_attr("ice-ufrag", p.ice_ufrag)
        om.add_attr("ice-pwd", p.ice_pwd)
        for comp, port in ((1, p.rtp_port), (2, p.rtcp_port)):
            if comp == 2 and (p.rtcp_port == p.rtp_port or om.rtcp_mux):
                continue
            c = Candidate("sipedge", comp, "UDP", candidate_priority(126, 65535, comp), self._adv_of(p), port, "host")
            om.add_attr("candidate", str(c))
        om.add_attr("end-of-candidates")

    def _point_at_relay(self, out: SessionDescription, om: MediaSection, p: Stream, flags: Flags,
                        zero_hold: bool) -> None:
        """The m= port and the c= line that applies to ``om`` name the relay."""
        assert p.rtp_port is not None
        om.m = replace(om.m, port=p.rtp_port, port_count=None)  # one relay port (pair) per m=
        adv = self._adv_of(p)
        relay = Connection("IN", _family(adv), adv)
        conn = om.connection
        if conn is not None:
            if not (conn.is_hold and zero_hold):
                om.connection = relay
        elif out.connection is None:
            out.connection = relay
        elif not flags.replace_session_connection and not (out.connection.is_hold and zero_hold):
            om.connection = relay  # the session line stays: this section says where to send

    def _rewrite_session(self, out: SessionDescription, flags: Flags, desc: SessionDescription, adv: str) -> None:
        conn = out.connection
        uses_ice = desc.ice_ufrag is not None or any(m.ice_ufrag is not None for m in desc.media)
        keep_default = uses_ice and (flags.ice or self.config.ice) == "force-relay"
        if conn is not None and flags.replace_session_connection and not keep_default \
                and not (conn.is_hold and not uses_ice):
            out.connection = Connection("IN", _family(adv), adv)
        if flags.replace_origin:
            o = out.origin
            out.origin = replace(o, addrtype=_family(adv), address=adv)
