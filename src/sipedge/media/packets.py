"""The relay's packet path, after rtpengine's ``stream_packet()``: one datagram in, at
most one out, in named stages.

1. **find the stream**: the local port's stream (forked branches sharing a port are told
   apart by source address);
2. **demultiplex** by the first bytes (RFC 7983, :mod:`.demux`): STUN goes to ICE-lite
   (our own candidates) or is passed on (the endpoints' own checks through a relay
   candidate); RTCP is told from RTP on a muxed port (RFC 5761 §4);
3. **latch** (symmetric RTP): accept the party's known source, learn a new one safely;
4. **ingress transform** of the stream's profile (the hook for SRTP and DTLS), the
   **BUNDLE demux** of a DTLS party's group (:mod:`.bundle`), then **count** (RTP
   statistics, RFC 3550 A.1/A.8);
5. **transcode** where the answer chose a codec the sender does not send (:mod:`.transcode`);
6. **route** to the peer stream's latched or signalled address, out of its port, through
   the peer's **egress transform** (a bundled peer's: its group leader's).

It is the hot path: dictionary lookups, a few comparisons, one statistics update, no
objects built per packet.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .._common.addr import Address
from . import icelite
from .bridge import DtlsBridge
from .demux import Kind, classify
from .model import RTCP, RTP, Event, RelayConfig, Stream, StreamLatched
from .port_table import PortTable

CONSENT_TIMEOUT = 30.0  # RFC 7675 §5.1: no consent for this long, no more media to the party
STUN_ROUTE_TTL = 40.0  # seconds a passed-on check waits for its answer (RFC 8489 Rc/RTO)
MAX_STUN_ROUTES = 20000

Send = tuple[int, Address, bytes]  # (local port, destination, bytes)
_STUN, _RTP, _RTCP, _DTLS = Kind.STUN, Kind.RTP, Kind.RTCP, Kind.DTLS  # (globals: enum lookups are slow)


@dataclass(slots=True)
class _StunRoute:
    """Where the answer to a passed-on ICE check goes: back out of ``port`` to ``source``."""

    port: int
    source: Address
    stream: Stream
    nominate: bool
    expires: float


class PacketPath:
    """Forwarding over the streams of a :class:`PortTable`."""

    def __init__(self, config: RelayConfig, table: PortTable, counters: dict[str, int], events: list[Event],
                 bridge: DtlsBridge) -> None:
        self.config = config
        self._bridge = bridge
        self._ports = table.by_port
        self._counters = counters
        self._events = events
        self._stun_routes: OrderedDict[bytes, _StunRoute] = OrderedDict()

    def receive(self, data: bytes, local_port: int, remote: Address, now: float) -> Send | None:
        """One datagram arrived on ``local_port`` from ``remote``: what to send, if anything."""
        sock = self._ports.get(local_port)
        if sock is None:
            self._counters["media_packets_dropped_unknown_port"] += 1
            return None
        streams = sock.streams
        s = streams[0] if len(streams) == 1 else _pick_branch(streams, remote)
        if not data:
            self._counters["media_packets_dropped_malformed"] += 1
            return None
        kind = classify(data)
        rtcp = sock.rtcp or kind is _RTCP
        latched = s.latched_rtcp if rtcp else s.latched_rtp
        another_candidate = False
        if kind is _STUN:
            if s.ice_pwd is not None:
                return self._answer_check(s, data, local_port, remote, sock.rtcp, now)
            stun = icelite.peek(data)
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
        if latched != remote and s.dtls is not None and latched is not None and kind is not _STUN:
            # a DTLS-terminated party moves only by ICE (an authenticated check re-latches):
            # nobody else gets to feed its association or its SRTP
            s.strangers += 1
            self._counters["media_packets_dropped_stranger"] += 1
            return None
        if latched != remote and not another_candidate and not self._latch(s, rtcp, remote, data, now, latched):
            s.strangers += 1
            self._counters["media_packets_dropped_stranger"] += 1
            return None
        if s.ingress is not None:
            if kind is _DTLS and s.dtls is not None:
                self._bridge.receive(s, data, remote, now)  # its answers go to the outbox
                return None
            plain = s.ingress(data, rtcp)
            if plain is None:
                self._counters["media_srtp_dropped"] += 1  # no keys yet, bad auth tag, replay
                return None
            data = plain
            if s.bundle is not None:  # one 5-tuple, several sections (media/bundle.py)
                member = s.bundle.route_rtcp(data) if rtcp else s.bundle.route_rtp(data)
                if member is None:
                    self._counters["media_bundle_unmatched"] += 1
                    return None
                self._counters["media_bundle_demuxed"] += 1
                s = member
        if rtcp:
            s.rtcp_stats.count(len(data), now)
        elif kind is _RTP and len(data) >= 12:
            s.rtp_stats.rtp(data, now)
        else:
            s.rtp_stats.count(len(data), now)
        if s.transcoder is not None and not rtcp:
            other = s.transcoder(data)  # another codec for the peer (media/transcode.py)
            if other is None:
                return None
            data = other
        # route: to the peer's latched (or signalled) address, out of its port
        p = s.peer
        if p is None or p.rtp_port is None:
            s.no_dest += 1
            self._counters["media_packets_dropped_no_destination"] += 1
            return None
        to = p  # the recipient's section; a bundled one goes out on its group's transport
        if p.bundle is not None:
            p = p.bundle.leader
        if rtcp and not p.mux:
            dest = p.latched_rtcp or p.expected_rtcp
            port = p.rtcp_port
        else:
            dest = p.latched_rtp or p.expected_rtp
            port = p.rtp_port
        if dest is None or port is None:
            s.no_dest += 1
            self._counters["media_packets_dropped_no_destination"] += 1
            return None
        if p.egress is not None:
            if p.consent and now - p.consent > CONSENT_TIMEOUT:
                self._counters["media_packets_dropped_no_consent"] += 1
                return None
            wire = p.egress(data, rtcp)
            if wire is None:
                self._counters["media_srtp_not_ready"] += 1
                return None
            if not rtcp:  # (what a sender report towards this party counts)
                to.sent_packets += 1
                to.sent_octets += len(data) - 12
            data = wire
        elif not rtcp and to.generate_rtcp == "on":  # (a plain party gets reports only when asked)
            to.sent_packets += 1
            to.sent_octets += len(data) - 12
        return port, dest, data

    # -- latching ------------------------------------------------------------------------
    def _latch(self, s: Stream, rtcp: bool, remote: Address, data: bytes, now: float, latched: Address | None) -> bool:
        """May ``remote`` be the party's source from now on? (And if so, it is.)"""
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

    # -- STUN: ICE-lite answers, and the endpoints' checks passed on ----------------------
    def _answer_check(self, s: Stream, data: bytes, port: int, remote: Address, rtcp: bool,
                      now: float) -> Send | None:
        assert s.ice_ufrag is not None and s.ice_pwd is not None  # guarded by the caller
        check = icelite.check_binding(data, s.ice_ufrag, s.ice_pwd)
        if check is None:
            self._counters["media_packets_dropped_malformed"] += 1
            return None
        s.consent = now  # an authenticated check is consent to receive (RFC 7675 §5.1)
        # an authenticated check proves the source: latch on it (RFC 8445 §7.3.1.5 for lite)
        if rtcp:
            if s.latched_rtcp != remote and (check.use_candidate or s.latched_rtcp is None):
                s.latched_rtcp = remote
        elif s.latched_rtp != remote and (check.use_candidate or s.latched_rtp is None):
            relatch = s.latched_rtp is not None
            s.latched_rtp = remote
            if s.mux:
                s.latched_rtcp = remote
            self._events.append(StreamLatched(s.call.call_id, s.tag, s.index, RTP, remote, relatch))
            if s.dtls is not None:
                self._bridge.latched(s, now)
        self._counters["media_stun_answered"] += 1
        return port, remote, icelite.binding_success(check, remote, s.ice_pwd)

    def _remember_stun(self, stun: icelite.PassingStun, port: int, remote: Address, s: Stream, now: float) -> None:
        routes = self._stun_routes
        routes[stun.transaction_id] = _StunRoute(port, remote, s, stun.use_candidate, now + STUN_ROUTE_TTL)
        while len(routes) > MAX_STUN_ROUTES:
            routes.popitem(last=False)

    def _route_stun_response(self, s: Stream, stun: icelite.PassingStun, data: bytes, now: float) -> Send | None:
        """The peer's answer to a check we passed on goes back to the candidate that sent
        it, out of the port it came in on. A success for a nominating check (USE-CANDIDATE)
        latches that party's stream on the nominated candidate: its media comes from there."""
        route = self._stun_routes.pop(stun.transaction_id, None)
        if route is None or route.expires < now or route.stream.peer is not s:
            return None
        x = route.stream
        if stun.cls == 2 and route.nominate:
            found = self._ports.get(route.port)
            rtcp = found is not None and found.rtcp
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
        self._counters["media_stun_relayed"] += 1
        return route.port, route.source, data


def _pick_branch(streams: list[Stream], remote: Address) -> Stream:
    """Of forked branches sharing a port, the one ``remote`` belongs to."""
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
