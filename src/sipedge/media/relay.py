"""The media relay core (rtpengine's job), sans-I/O: the façade the ng server and the
proxy use. Its parts, each in its own module:

* :mod:`.model`: calls, legs and streams (rtpengine's call → monologue → media), the
  settings, per-request :class:`Flags` and the events;
* :mod:`.offer_answer`: SDP offer/answer through the relay (RFC 3264 rewriting);
* :mod:`.port_table`: which stream receives on which local port;
* :mod:`.packets`: the forwarding path (demultiplexing, latching, ICE-lite, transforms);
* :mod:`.icelite`: the relay's ICE-lite answers, over ``sipedge.stun``.

Signalling entry points: :meth:`MediaRelay.offer`, :meth:`answer`, :meth:`delete`,
:meth:`query`. They take and return SDP bytes; malformed SDP raises ``ParseError`` (hint
488) and relay problems raise :class:`RelayError` (hint 503 or 488).

Packets: :meth:`MediaRelay.receive` ``(data, local_port, remote, now)`` returns
``(local_port, destination, data)`` to send, or None (dropped and counted): the packet
path's own method, bound, so the hot path has no extra call. Timers: :meth:`get_timer` /
:meth:`handle_timer` time out silent calls. Events (:class:`StreamLatched`,
:class:`CallDeleted`) are drained with :meth:`events`.
"""

from __future__ import annotations

from collections.abc import Callable

from .._common.addr import Address
from .._common.ids import TokenSource
from ..sdp import SessionDescription
from .bridge import DtlsBridge
from .model import (
    ICE_MODES,
    RTCP,
    RTP,
    Call,
    CallDeleted,
    DtlsEstablished,
    DtlsFailed,
    Event,
    Flags,
    Leg,
    RelayConfig,
    RelayError,
    Stream,
    StreamLatched,
)
from .offer_answer import ICE_ATTRS, SdpRewriter
from .packets import PacketPath
from .port_table import PortTable
from .ports import PortAllocator
from .secure import DtlsFactory
from .transcode import COUNTERS as TRANSCODE_COUNTERS
from .transcode import CodecFactory, TranscodeSetup

MAX_LEGS = 32
"""Legs per call at most (forks and per-branch offers): one call must not drain the ports."""

__all__ = [
    "ICE_ATTRS", "ICE_MODES", "RTCP", "RTP", "Call", "CallDeleted", "DtlsEstablished", "DtlsFailed", "Event",
    "Flags", "Leg", "MediaRelay", "RelayConfig", "RelayError", "Stream", "StreamLatched",
]


class MediaRelay:
    """The relay core: sessions, ports, SDP rewriting, latching, forwarding, timeouts."""

    def __init__(
        self,
        config: RelayConfig,
        allocator: PortAllocator,
        token_source: TokenSource | None = None,
        wall_clock: Callable[[], float] | None = None,
        dtls: DtlsFactory | None = None,
        codecs: CodecFactory | None = None,
    ) -> None:
        if config.ice not in ICE_MODES:
            raise ValueError(f"ice mode {config.ice!r} not one of {ICE_MODES}")
        self.config = config
        self._wall = wall_clock
        self._calls: dict[str, Call] = {}
        self._events: list[Event] = []
        self._next_sweep: float | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "media_calls_created", "media_calls_deleted", "media_calls_timed_out",
                "media_packets_relayed", "media_bytes_relayed", "media_packets_dropped_stranger",
                "media_packets_dropped_no_destination", "media_packets_dropped_unknown_port",
                "media_packets_dropped_malformed", "media_stun_answered", "media_port_exhaustion",
                "media_offers", "media_answers", "media_deletes", "media_stun_relayed",
                "media_srtp_dropped", "media_srtp_not_ready", "media_packets_dropped_no_consent",
                "media_dtls_associations", "media_dtls_established", "media_dtls_failures",
                "media_dtls_fingerprint_mismatch", "media_dtls_records", "media_dtls_closed", "media_rtcp_generated",
                "media_bundle_demuxed", "media_bundle_unmatched", "media_legs_refused", "media_sdp_refused",
            ),
            0,
        )
        self._outbox: list[tuple[int, Address, bytes]] = []
        self._bridge = DtlsBridge(dtls, self.counters, self._events, self._outbox, wall_clock)
        self._table = PortTable(allocator, self.counters)
        self._sdp = SdpRewriter(config, self._table, self._bridge, token_source)
        self._packets = PacketPath(config, self._table, self.counters, self._events, self._bridge)
        self.counters.update(dict.fromkeys(TRANSCODE_COUNTERS, 0))
        if codecs is not None:  # transcoding with the adapter's codec library (media/transcode.py)
            self._sdp.transcoding = TranscodeSetup(codecs, self.counters)
        self.receive = self._packets.receive
        """One datagram arrived on ``local_port`` from ``remote``: what to send, if anything."""

    # ------------------------------------------------------------------ signalling
    def offer(
        self,
        call_id: str,
        from_tag: str,
        sdp: bytes,
        now: float,
        flags: Flags | None = None,
        to_tag: str | None = None,
        via_branch: str | None = None,
    ) -> bytes:
        """Rewrite an offer sent by the party ``from_tag``; returns the SDP to forward.
        ``via_branch`` (an initial offer, no ``to_tag``): the offer for that branch of a
        forked request only, on a leg of its own (rtpengine's ``via-branch``)."""
        flags = flags or Flags()
        desc = SessionDescription.parse(sdp)
        call = self._calls.get(call_id)
        new_call = call is None
        if call is None:
            if len(self._calls) >= self.config.max_calls:
                raise RelayError("too many calls", (503, "Media relay full"))
            call = Call(call_id, now)
        found = self._find_leg(call, from_tag, to_tag, via_branch)
        new_leg = found is None
        if found is None:
            self._room_for_leg(call)
            leg = Leg([from_tag, to_tag or ""], now, via_branch if to_tag is None else None)
            side = 0
        else:
            leg, side = found
        out = self._apply(call, leg, side, desc, flags, now, offer=True)
        self._settle(leg, now)
        if new_leg:
            call.legs.append(leg)
        if new_call:
            self._calls[call_id] = call
            self.counters["media_calls_created"] += 1
            self._arm(now)
        call.last_signal = now
        self.counters["media_offers"] += 1
        return out.serialize()

    def _apply(self, call: Call, leg: Leg, side: int, desc: SessionDescription, flags: Flags, now: float,
               offer: bool) -> SessionDescription:
        """:meth:`SdpRewriter.apply`, counting the SDP it refuses with 488
        (``media_sdp_refused``: no DTLS fingerprint, no usable SDES line, no codec left)."""
        try:
            return self._sdp.apply(call, leg, side, desc, flags, now, offer)
        except RelayError as exc:
            if isinstance(exc.hint, tuple) and exc.hint[0] == 488:
                self.counters["media_sdp_refused"] += 1
            raise

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: bytes,
        now: float,
        flags: Flags | None = None,
        via_branch: str | None = None,
    ) -> bytes:
        """Rewrite an answer sent by the party ``to_tag``; returns the SDP to forward.
        ``via_branch``: the branch it came from, which picks the leg offered for that
        branch (the first answer of a branch gives the leg its to-tag)."""
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
        offered = [c for c in call.legs if c.tags[0] == from_tag and _of_branch(c, via_branch)]
        if leg is None:
            leg = next((c for c in offered if c.tags[1] == ""), None)
            if leg is not None:
                leg.tags[1] = to_tag
        if leg is None:
            # a second to-tag for the same offer: forked further on
            fork_of = next(iter(offered), None)
            if fork_of is None:
                raise RelayError(f"unknown from-tag {from_tag!r} or via-branch {via_branch!r}",
                                 (488, "Unknown media session"))
            self._room_for_leg(call)
            leg = self._fork(call, fork_of, to_tag, now)
        try:
            out = self._apply(call, leg, side, desc, flags, now, offer=False)
        except BaseException:
            if fork_of is not None:
                self._drop_leg(call, leg)
            raise
        self._settle(leg, now)
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
        via_branch: str | None = None,
    ) -> dict[str, int] | None:
        """Delete a call (BYE, CANCEL, final failure), or just one branch of a fork: with
        ``via_branch`` the legs offered for that branch, with ``branch_only`` the legs
        answered with ``to_tag`` (a fork that failed or lost while the call goes on). The
        last leg of a call takes the call with it. Returns the call's totals, or None if
        the call (or the branch) is unknown."""
        call = self._calls.get(call_id)
        if call is None:
            return None
        self.counters["media_deletes"] += 1
        if via_branch is not None or (branch_only and to_tag is not None):
            legs = [leg for leg in call.legs if via_branch is not None and leg.branch == via_branch]
            if not legs and to_tag is not None:
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

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> float | None:
        sweep = self._next_sweep if self._calls else None
        dtls = self._bridge.get_timer()
        if dtls is None:
            return sweep
        return dtls if sweep is None else min(sweep, dtls)

    def handle_timer(self, now: float) -> None:
        """Retransmit DTLS flights; delete calls without media for ``timeout`` s
        (``hold_timeout`` when on hold; ``offer_timeout`` for a call with an offer and no
        answer yet, e.g. still ringing, unless early media flows)."""
        self._bridge.handle_timer(now)
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

    @property
    def has_output(self) -> bool:
        return bool(self._outbox)

    def output(self) -> list[tuple[int, Address, bytes]]:
        """Datagrams the relay sends of its own accord, ``(local port, destination, data)``:
        DTLS flights and their retransmissions. Drain after :meth:`receive`, the timer and
        signalling."""
        out = self._outbox[:]
        self._outbox.clear()  # (the bridge appends to this very list)
        return out

    def events(self) -> list[Event]:
        out = self._events[:]
        self._events.clear()  # (the packet path appends to this very list)
        return out

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counters)
        out["media_calls"] = len(self._calls)
        out["media_ports_in_use"] = len(self._table)
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
        return self._table.ports()

    # ------------------------------------------------------------------ internals
    def _arm(self, now: float) -> None:
        if self._next_sweep is None:
            self._next_sweep = now + self.config.sweep_interval

    @staticmethod
    def _find_leg(call: Call, from_tag: str, to_tag: str | None, via_branch: str | None) -> tuple[Leg, int] | None:
        if to_tag is None and via_branch is not None:  # a branch's own offer (or its retransmission)
            found = next((leg for leg in call.legs if leg.branch == via_branch and leg.tags[0] == from_tag), None)
            return (found, 0) if found is not None else None
        for leg in call.legs:
            a, b = leg.tags
            if a == from_tag and (to_tag is None or b in (to_tag, "")):
                return leg, 0
            if b == from_tag and (to_tag is None or a == to_tag):
                return leg, 1
        return None

    def _room_for_leg(self, call: Call) -> None:
        if len(call.legs) >= MAX_LEGS:
            self.counters["media_legs_refused"] += 1
            raise RelayError(f"call {call.call_id!r} has {MAX_LEGS} legs already", (503, "Too many media branches"))

    def _fork(self, call: Call, primary: Leg, to_tag: str, now: float) -> Leg:
        """A second to-tag answers a forked offer: new ports towards the offerer, shared ports
        towards the new branch (it was sent the same offer)."""
        leg = Leg([primary.tags[0], to_tag], now, primary.branch)
        for i, (pa, pb) in enumerate(zip(primary.streams[0], primary.streams[1], strict=False)):
            a = Stream(call, leg, 0, i)
            for name in ("media", "profile", "expected_rtp", "expected_rtcp", "mux", "hold",
                         "direction", "had_ice", "symmetric", "strict", "interface", "crypto", "codecs"):
                setattr(a, name, getattr(pa, name))
            b = Stream(call, leg, 1, i)
            b.media, b.profile = pb.media, pb.profile
            b.interface = pb.interface
            b.ice_ufrag, b.ice_pwd = pb.ice_ufrag, pb.ice_pwd
            self._table.share(b, pb)
            a.peer, b.peer = b, a
            leg.streams[0].append(a)
            leg.streams[1].append(b)
        call.legs.append(leg)
        return leg

    def _settle(self, leg: Leg, now: float) -> None:
        """DTLS associations for the leg's bridged streams (media/bridge.py); a stream
        facing an SDES party keeps its SDES transforms (media/sdes.py)."""
        for side in leg.streams:
            for s in side:
                if s.dtls is not None or s.local_setup is not None:
                    self._bridge.settle(s, now)
                if s.sdes is not None:
                    s.ingress, s.egress = s.sdes.unprotect, s.sdes.protect

    def _drop_leg(self, call: Call, leg: Leg) -> None:
        for side in leg.streams:
            for s in side:
                self._bridge.drop(s)
                self._table.release(s)
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


def _of_branch(leg: Leg, via_branch: str | None) -> bool:
    """An answer from ``via_branch`` may complete ``leg``: the leg's own branch, or an offer
    shared by every branch."""
    return via_branch is None or leg.branch is None or leg.branch == via_branch
