"""Transport profiles per leg, converted at the relay (rtpengine's WebRTC role): a party
that speaks DTLS-SRTP (``UDP/TLS/RTP/SAVP(F)``, a browser) bridged to one that speaks
plain RTP (``RTP/AVP(F)``, a SIP phone) or SDES-SRTP (``RTP/SAVP(F)``, whose side
:mod:`.sdes` terminates).

When both sides of a media section use the same kind of profile, the relay passes the
packets through untouched (two browsers keep their own end-to-end DTLS). When they
differ, the stream facing the DTLS party terminates DTLS there: it gets a
:class:`DtlsStream` holding the association (made by the adapter's
:class:`~.secure.DtlsFactory`) and, once the handshake has checked the party's
certificate against its SDP fingerprint, the SRTP transform its ``ingress`` (SRTP →
RTP) and ``egress`` (RTP → SRTP) hooks use on the packet path.

Roles (RFC 5763 §5, RFC 8842): the party's ``a=setup`` decides. It offered ``actpass``:
we answer ``passive`` (we are the DTLS server) unless asked for ``active``; it answered
``active``: we are the server; ``passive``: we are the client. Our offers say
``actpass``. A re-offer with a new fingerprint starts a new association; one with new
ICE credentials only (an ICE restart) keeps it (browsers keep their DTLS across one).
"""

from __future__ import annotations

from collections.abc import Callable

from .._common.addr import Address
from ..sdp import Fingerprint, MediaSection, SessionDescription
from .model import DtlsEstablished, DtlsFailed, Event, Stream
from .rtcp import RELAY_SSRC, RR, RtcpPacket, report_block, sender_report
from .secure import DtlsEndpoint, DtlsFactory
from .srtp import KeyedLater, SrtpTransform

Outbox = list[tuple[int, Address, bytes]]  # (local port, destination, datagram)
RTCP_INTERVAL = 5.0  # seconds between the relay's own RTCP reports (RFC 3550 §6.2 minimum)


def is_dtls(profile: str) -> bool:
    """``UDP/TLS/RTP/SAVP``, ``UDP/TLS/RTP/SAVPF`` (and the old ``RTP/SAVPF`` of some
    WebRTC stacks counts as SRTP, not DTLS: it carries no fingerprint)."""
    return "TLS" in profile.upper()


def is_plain(profile: str) -> bool:
    """``RTP/AVP`` and ``RTP/AVPF``: no SRTP."""
    return "/AVP" in profile.upper() and "SAVP" not in profile.upper()


def protection(profile: str) -> str:
    """How a profile protects its media: "dtls" (DTLS-SRTP), "sdes" (``RTP/SAVP(F)``
    without TLS: SRTP keyed by ``a=crypto``, RFC 4568) or "none"."""
    if is_dtls(profile):
        return "dtls"
    return "sdes" if "SAVP" in profile.upper() else "none"


def has_feedback(profile: str) -> bool:
    """AVPF profiles (RFC 4585) take ``a=rtcp-fb``; AVP ones do not."""
    return profile.upper().endswith("F")


def party_fingerprints(desc: SessionDescription, index: int) -> tuple[Fingerprint, ...]:
    """A media section's fingerprints, else the session's (RFC 8122 §5)."""
    m = desc.media[index]
    found = m.fingerprints or desc.fingerprints
    return tuple(found)


def party_setup(desc: SessionDescription, index: int) -> str | None:
    m = desc.media[index]
    value = m.setup or desc.setup
    return value.strip().lower() if value else None


def our_setup(offer: bool, party_setup: str | None, asked: str | None) -> str:
    """What we write into ``a=setup`` towards the DTLS party (``asked``: the ``DTLS``
    flag, "passive" or "active")."""
    if offer:
        return asked if asked in ("passive", "active") else "actpass"
    if party_setup == "active":
        return "passive"
    if party_setup == "passive":
        return "active"
    return "active" if asked == "active" else "passive"


class DtlsStream(KeyedLater):
    """DTLS-SRTP terminated on one stream facing a DTLS party."""

    __slots__ = ("endpoint", "fingerprints", "ice_ufrag", "remote", "reported", "role",
                 "srtp_profile", "started", "stream")

    def __init__(self, stream: Stream, endpoint: DtlsEndpoint, role: str,
                 fingerprints: tuple[Fingerprint, ...], ice_ufrag: str | None) -> None:
        super().__init__()
        self.stream = stream
        self.endpoint = endpoint
        self.role = role
        self.fingerprints = fingerprints
        self.ice_ufrag = ice_ufrag  # the party's: a new one is an ICE restart
        self.remote: Address | None = None  # where the association's datagrams go
        self.srtp_profile = ""
        self.started = False  # (a client's first flight went out)
        self.reported = False  # (its failure was counted)

    # -- the association ----------------------------------------------------------------
    def destination(self) -> Address | None:
        s = self.stream
        return self.remote or s.latched_rtp or s.expected_rtp

    def feed(self, data: bytes, source: Address, now: float, outbox: Outbox) -> None:
        """A DTLS record from the party: answered to the source of the ClientHello."""
        self.remote = source
        self._send(self.endpoint.receive(data, now), outbox)
        self._check_keys()

    def start(self, now: float, outbox: Outbox) -> None:
        self.started = True
        self._send(self.endpoint.start(now), outbox)

    def timer(self, now: float, outbox: Outbox) -> None:
        self._send(self.endpoint.handle_timer(now), outbox)
        self._check_keys()

    @property
    def established(self) -> bool:
        return self.srtp is not None

    @property
    def failure(self) -> str | None:
        return self.endpoint.failure

    def _check_keys(self) -> None:
        if self.srtp is None:
            keys = self.endpoint.keys
            if keys is not None:
                self.srtp = SrtpTransform(keys)
                self.srtp_profile = keys.profile

    def _send(self, datagrams: list[bytes], outbox: Outbox) -> None:
        port = self.stream.rtp_port
        dest = self.destination()
        if port is None or dest is None:
            return
        for d in datagrams:
            outbox.append((port, dest, d))


def dtls_attrs_towards(out: SessionDescription, om: MediaSection, fingerprint: Fingerprint | None,
                       setup: str | None) -> None:
    """Replace the sender's DTLS and SDES attributes by ours (or none): the recipient
    talks to the relay, not to the other party."""
    for section in (out, om):
        section.remove_attrs("fingerprint")
        section.remove_attrs("setup")
        section.remove_attrs("crypto")
        section.remove_attrs("tls-id")
    if fingerprint is not None and setup is not None:
        om.add_attr("fingerprint", str(fingerprint))
        om.add_attr("setup", setup)


class DtlsBridge:
    """The relay's DTLS associations: made when an offer/answer settles a bridged media
    section, fed the party's DTLS records, retransmitted on their timers, and turned
    into SRTP transforms once the handshake has checked the party's fingerprint."""

    def __init__(self, factory: DtlsFactory | None, counters: dict[str, int],
                 events: list[Event], outbox: Outbox, wall_clock: Callable[[], float] | None = None) -> None:
        self.factory = factory
        self._wall = wall_clock  # (the NTP time of our sender reports; ``now`` without one)
        self._counters = counters
        counters.setdefault("media_ice_restarts", 0)  # (re-offers with new ICE credentials of the party)
        self._events = events
        self.outbox = outbox
        self._handshaking: dict[int, DtlsStream] = {}  # id(stream) -> association in progress
        self._established: dict[int, DtlsStream] = {}  # id(stream) -> keyed association
        self._next_rtcp: float | None = None

    @property
    def fingerprint(self) -> Fingerprint | None:
        return self.factory.fingerprint if self.factory is not None else None

    def settle(self, s: Stream, now: float) -> None:
        """After an offer or an answer: does ``s`` face a DTLS party across a bridge (its
        peer's profile is not DTLS)? Then it gets an association in the role its
        ``local_setup`` says, kept across re-offers unless the party's fingerprint or our
        role changed; otherwise it has none and packets pass as they are. New ICE
        credentials alone (an ICE restart) keep the association and its SRTP keys: browsers
        keep their DTLS across an ICE restart and send no new ClientHello (a new
        association is signalled by a new fingerprint, RFC 8842)."""
        p = s.peer
        bridged = p is not None and is_dtls(s.profile) and not is_dtls(p.profile) and s.rtp_port is not None
        if s.bundle is not None and s.bundle.leader is not s:
            bridged = False  # a bundled section uses its group leader's association
        if bridged and s.local_setup == "actpass":
            return  # our offer awaits its answer, which fixes the roles: what runs stays
        if not bridged or self.factory is None or s.local_setup not in ("active", "passive"):
            self.drop(s)
            return
        role = "client" if s.local_setup == "active" else "server"
        old = s.dtls
        if old is not None and old.role == role and old.fingerprints == s.fingerprints:
            if old.ice_ufrag != s.party_ufrag:  # an ICE restart: the association stays
                old.ice_ufrag, old.remote = s.party_ufrag, None  # (its datagrams: to the new ICE path)
                self._counters["media_ice_restarts"] += 1
            return
        self.drop(s)
        dtls = DtlsStream(s, self.factory(role, s.fingerprints), role, s.fingerprints, s.party_ufrag)
        s.dtls = dtls
        s.ingress = dtls.unprotect
        s.egress = dtls.protect
        self._handshaking[id(s)] = dtls
        self._counters["media_dtls_associations"] += 1
        if role == "client" and dtls.destination() is not None and s.latched_rtp is not None:
            dtls.start(now, self.outbox)

    def drop(self, s: Stream) -> None:
        if s.dtls is not None:
            self._handshaking.pop(id(s), None)
            self._established.pop(id(s), None)
            s.dtls = None
            s.ingress = s.egress = None

    def latched(self, s: Stream, now: float) -> None:
        """The party's address is known (ICE): a client association sends its ClientHello."""
        dtls = s.dtls
        if dtls is not None and dtls.role == "client" and not dtls.started and not dtls.established:
            dtls.start(now, self.outbox)

    def receive(self, s: Stream, data: bytes, source: Address, now: float) -> None:
        """A DTLS record from the party of ``s``."""
        dtls = s.dtls
        assert dtls is not None
        self._counters["media_dtls_records"] += 1
        was = dtls.established
        dtls.feed(data, source, now, self.outbox)
        self._after(s, dtls, was, now)

    def get_timer(self) -> float | None:
        best = self._next_rtcp if self._established else None
        for dtls in self._handshaking.values():
            t = dtls.endpoint.get_timer()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        if self._established and self._next_rtcp is not None and now >= self._next_rtcp:
            self._next_rtcp = now + RTCP_INTERVAL
            for dtls in list(self._established.values()):
                self._report(dtls, now)
        for dtls in list(self._handshaking.values()):
            t = dtls.endpoint.get_timer()
            if t is not None and t <= now:
                was = dtls.established
                dtls.timer(now, self.outbox)
                self._after(dtls.stream, dtls, was, now)

    def _report(self, dtls: DtlsStream, now: float) -> None:
        """The relay's own RTCP towards the DTLS party (RFC 3550 §6), for each section on
        the association (every member of a BUNDLE group), encrypted like the rest; and,
        with ``generate-RTCP=on``, towards the other party of each section too."""
        s = dtls.stream
        dest = dtls.destination()
        if dest is None or s.rtp_port is None:
            return
        for q in s.bundle.members if s.bundle is not None else (s,):
            report = self._report_for(q, now)
            wire = dtls.protect(report, True) if report is not None else None
            if wire is not None:
                self.outbox.append((s.rtp_port, dest, wire))
                self._counters["media_rtcp_generated"] += 1
            if q.peer is not None and q.peer.generate_rtcp == "on":
                self._report_to_other(q.peer, now)

    def _report_to_other(self, p: Stream, now: float) -> None:
        """The relay's SR/RR towards the party that does not speak DTLS (a plain phone, or
        an SDES one: then protected with its keys), to its RTCP address (its RTP address
        with rtcp-mux) out of its RTCP port: an SR from the DTLS party's SSRC for what
        the relay forwarded to it, with a report block on what it sends."""
        report = self._report_for(p, now)
        leader = p.bundle.leader if p.bundle is not None else p
        if leader.mux:
            dest, port = leader.latched_rtp or leader.expected_rtp, leader.rtp_port
        else:
            dest, port = leader.latched_rtcp or leader.expected_rtcp, leader.rtcp_port
        if report is None or dest is None or port is None:
            return
        wire = leader.egress(report, True) if leader.egress is not None else report
        if wire is not None:
            self.outbox.append((port, dest, wire))
            self._counters["media_rtcp_generated"] += 1

    def _report_for(self, q: Stream, now: float) -> bytes | None:
        """What the relay reports to the party of ``q`` (``Flags.generate_rtcp``: "off"
        never; "on" always; by default only while the plain party sends no RTCP, since
        browsers' statistics and bandwidth estimation expect reports): an SR (§6.4.1) for
        the plain party's RTP we sent it, from that party's SSRC, with a report block on
        what the DTLS party sends us; an RR from the relay's SSRC before any was sent."""
        p = q.peer
        mode = q.generate_rtcp
        if p is None or mode == "off" or (mode != "on" and now - p.rtcp_stats.last_packet < RTCP_INTERVAL):
            return None
        got, sent = q.rtp_stats, p.rtp_stats
        blocks = () if got.ssrc is None else (
            report_block(got.ssrc, got.expected, got.rtp_packets, got.cycles + got.max_seq, int(got.jitter)),)
        if sent.ssrc is not None and q.sent_packets:
            wall = self._wall() if self._wall is not None else now
            return sender_report(sent.ssrc, wall, sent.timestamp_at(now), q.sent_packets, q.sent_octets, blocks)
        return RtcpPacket(RR, 1, RELAY_SSRC, blocks[0]).serialize() if blocks else None

    def _after(self, s: Stream, dtls: DtlsStream, was: bool, now: float) -> None:
        if dtls.established and not was:
            self._handshaking.pop(id(s), None)
            self._established[id(s)] = dtls
            if self._next_rtcp is None:
                self._next_rtcp = now + RTCP_INTERVAL
            self._counters["media_dtls_established"] += 1
            self._events.append(DtlsEstablished(s.call.call_id, s.tag, s.index, dtls.srtp_profile))
        failure = dtls.failure
        if failure is not None and not dtls.reported:
            dtls.reported = True
            dtls.srtp = None  # (a close_notify after the handshake: its keys are done too)
            self._handshaking.pop(id(s), None)
            self._established.pop(id(s), None)
            closed = dtls.endpoint.closed
            if closed:
                self._counters["media_dtls_closed"] += 1  # the browser hung up
            else:
                self._counters["media_dtls_failures"] += 1
                if "fingerprint" in failure:
                    self._counters["media_dtls_fingerprint_mismatch"] += 1
            self._events.append(DtlsFailed(s.call.call_id, s.tag, s.index, failure, closed))
