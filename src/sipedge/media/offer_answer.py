"""SDP offer/answer through the relay (RFC 3264, rtpengine's offer and answer): each
``m=`` line sent by one party updates that party's :class:`Stream` (where it sends from,
what it holds, its ICE and rtcp-mux) and is rewritten for the other party to name the
relay's ports facing it: the m= port, c= lines, ``a=rtcp``, rtcp-mux, and ICE as the
mode asks (removed, the relay as the only ICE-lite candidate, or added as a relay
candidate). BUNDLE answers share one transport (RFC 8843 §7.3.1); across the WebRTC bridge
the sections facing the DTLS party share one (:meth:`SdpRewriter._bundle_across_bridge`,
demultiplexed by :mod:`.bundle`) while the plain party gets a port per ``m=`` line.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from .._common.ids import TokenSource, token
from ..sdp import Candidate, Connection, MediaSection, SessionDescription, candidate_priority
from .bridge import (
    DtlsBridge,
    dtls_attrs_towards,
    has_feedback,
    is_dtls,
    is_plain,
    our_setup,
    party_fingerprints,
    party_setup,
    protection,
)
from .bundle import MID_URI, Bundle
from .codecs import Codec, formats_of, has_codec_flags, plan_answer, plan_offer, same_codec_flags
from .model import Call, Flags, Leg, RelayConfig, RelayError, Stream
from .port_table import PortTable
from .sdes import SdesStream, allowed_suites, check_items, choose_offered, refuse
from .transcode import TranscodeSetup

ICE_ATTRS = ("ice-ufrag", "ice-pwd", "ice-options", "candidate", "end-of-candidates",
             "remote-candidates", "ice-mismatch", "ice-pacing", "ice2")


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


def _extmaps(m: MediaSection) -> list[tuple[int, str]]:
    """A media section's ``a=extmap:<id>[/<direction>] <uri>`` (RFC 8285 §8) as (id, uri)."""
    out: list[tuple[int, str]] = []
    for v in m.attrs("extmap"):
        parts = v.split()
        ident = parts[0].split("/")[0] if parts else ""
        if len(parts) >= 2 and ident.isdigit():
            out.append((int(ident), parts[1]))
    return out


def mid_extension(m: MediaSection) -> int | None:
    """The ``a=extmap`` id a media section gives the MID header extension (RFC 8843 §15.2)."""
    return next((ident for ident, uri in _extmaps(m) if uri == MID_URI), None)


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


class SdpRewriter:
    """Applies one party's SDP to a leg and rewrites it for the other party."""

    transcoding: TranscodeSetup | None = None
    """The codec library's transcoders (media/transcode.py); None: codec flags strip and
    mask, and add nothing."""

    def __init__(self, config: RelayConfig, table: PortTable, bridge: DtlsBridge,
                 token_source: TokenSource | None = None) -> None:
        self.config = config
        self._table = table
        self._bridge = bridge
        self._token = token_source
        self.interfaces: dict[str, str] = dict(config.interfaces) or {"default": config.advertised_address}
        self.default_address = next(iter(self.interfaces.values()))  # the default interface's

    def _direction(self, flags: Flags) -> tuple[str, str] | None:
        """The interfaces the ng ``direction`` names; RelayError 488 for an unknown one.
        rtpengine's legacy "internal"/"external" mean nothing unless configured."""
        if flags.direction is None:
            return None
        names = [n if n in self.interfaces else "" for n in flags.direction]
        for asked, got in zip(flags.direction, names, strict=True):
            if not got and asked not in ("internal", "external"):
                raise RelayError(f"unknown interface {asked!r} in direction", (488, "Unknown media interface"))
        return names[0], names[1]

    def address_of(self, s: Stream) -> str:
        """The address written into SDP for ports of ``s`` (its interface's advertised one)."""
        return self.interfaces.get(s.interface, self.default_address) if s.interface else self.default_address

    def _new_token(self, n: int) -> str:
        return token(n, self._token) if self._token is not None else token(n)

    def apply(
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
                self._note_security(s, desc, i, offer)
                if offer and flags.transport_protocol:
                    p.profile = flags.transport_protocol  # the recipient's, as the ng client says
                elif offer and not p.last_signal:
                    p.profile = m.proto  # until the recipient answers with its own
                s.rtp_stats.clock_rate = _clock_rate(desc.media[i])
                if flags.generate_rtcp is not None:
                    s.generate_rtcp = p.generate_rtcp = flags.generate_rtcp
                if m.port == 0:  # rejected or disabled stream: leave it at port 0
                    s.expected_rtp = s.expected_rtcp = None
                    om = out.media[i]
                    if om.proto != p.profile and self._bridged(p, s):  # (JSEP: the offer's profile)
                        om.proto = p.profile
                    if not offer and p.mid is not None and om.mid is None:
                        om.add_attr("mid", p.mid)
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
                    if "require" in mux_flags or (is_dtls(p.profile) and self._bridged(p, s)):
                        p.mux = True  # (a WebRTC party across the bridge always muxes, RFC 8834)
                else:
                    s.mux = m.rtcp_mux or "require" in mux_flags or s.mux
                    if "reject" in mux_flags:
                        p.mux = False
                # otherwise the relay muxes towards an offerer that offered rtcp-mux, whatever
                # the answerer does: it demultiplexes on the answerer's side
                # (WebRTC offerers require rtcp-mux; SIP phones often do not do it)
                if p.rtp_port is None:
                    self._table.allocate(p, single="require" in flags.rtcp_mux)
                    allocated.append(p)
                self._codecs(out, i, m, s, p, flags, offer)
                self._rewrite_media(out, i, p, flags, offer, ice_mode, s, hold)
            if not any(self._bridged(pt, st) for st, pt in zip(mine, theirs, strict=False)):
                if not offer:
                    self._share_bundle(out, desc, theirs, mine, flags, ice_mode)
            else:
                self._bundle_across_bridge(out, theirs, mine, flags, ice_mode, offer)
            self._rewrite_session(out, flags, desc, self.address_of(theirs[0]) if theirs else self.default_address)
        except BaseException:
            for st in allocated:
                self._table.release(st)
            for st in created:
                side_list = leg.streams[st.side]
                if st in side_list:
                    side_list.remove(st)
            raise
        return out

    def _bundle_across_bridge(self, out: SessionDescription, theirs: list[Stream], mine: list[Stream],
                              flags: Flags, ice_mode: str, offer: bool) -> None:
        """No BUNDLE towards a plain party (a port per m= line). Towards a DTLS party the
        accepted bridged sections share one transport (RFC 8843): in our offer all of them,
        even a lone one (the plain offerer offered no BUNDLE; Chromium with
        ``bundlePolicy: "max-bundle"`` refuses an offer without a group), in an answer those it bundled (browsers
        refuse an answer that drops an offered BUNDLE group); :func:`_share_transport`."""
        out.remove_attrs("group", lambda v: v is not None and v.startswith("BUNDLE"))
        towards = [(i, p) for i, (p, s) in enumerate(zip(theirs, mine, strict=False))
                   if i < len(out.media) and self._bridged(p, s) and is_dtls(p.profile)]
        live = [(i, p) for i, p in towards if out.media[i].port != 0 and (offer or (p.bundled and p.mid))]
        for _i, p in towards:
            p.bundle = None
        if len(live) >= 2:
            self._share_transport(out, live, mine, flags, ice_mode, offer)
        mids = [out.media[i].mid or "" for i, _p in live]
        if mids:  # (even of one section: a browser set to max-bundle refuses an offer without)
            out.add_attr("group", "BUNDLE " + " ".join(mids))
        # a refused section towards the DTLS party still names the transport it would have
        # had (some WebRTC stacks, aiortc among them, refuse an answer without it)
        first = next((p for i, p in towards if out.media[i].port != 0 and p.ice_ufrag), None)
        if first is None or first.ice_ufrag is None or first.ice_pwd is None:
            return
        for i, _p in towards:
            om = out.media[i]
            if om.port == 0 and om.ice_ufrag is None:
                om.add_attr("ice-ufrag", first.ice_ufrag)
                om.add_attr("ice-pwd", first.ice_pwd)
                if not om.fingerprints and self._bridge.fingerprint is not None:
                    om.add_attr("fingerprint", str(self._bridge.fingerprint))
                    om.add_attr("setup", first.local_setup or "passive")
                if not om.rtcp_mux:
                    om.add_attr("rtcp-mux")

    @staticmethod
    def _note_security(s: Stream, desc: SessionDescription, i: int, offer: bool) -> None:
        """What the party's SDP says of DTLS and ICE for media section ``i``."""
        m = desc.media[i]
        s.mid = m.mid
        s.bundled = m.mid is not None and m.mid in desc.bundle
        s.mid_ext = mid_extension(m)
        s.fingerprints = party_fingerprints(desc, i)
        s.setup = party_setup(desc, i)
        s.crypto = tuple(m.attrs("crypto"))  # (parsed only if the relay terminates SDES)
        ufrag = m.ice_ufrag or desc.ice_ufrag
        if offer and s.party_ufrag is not None and ufrag != s.party_ufrag:
            s.ice_ufrag = s.ice_pwd = None  # ICE restart (RFC 8445 §9): new credentials of ours too
        s.party_ufrag = ufrag
        if not offer and s.local_setup == "actpass":  # it answered our offer: roles are fixed
            s.local_setup = "active" if s.setup == "passive" else "passive"

    def _bridged(self, p: Stream, src: Stream) -> bool:
        """Are the two parties of a media section bridged: their protection differs (none,
        SDES, DTLS) and, if one side is DTLS, the relay has a DTLS certificate to
        terminate it with? (Without one the relay passes SDP and packets on as they are,
        as before bridging existed.)"""
        a, b = protection(p.profile), protection(src.profile)
        return a != b and ("dtls" not in (a, b) or self._bridge.fingerprint is not None)

    def _convert_profile(self, out: SessionDescription, om: MediaSection, p: Stream, src: Stream,
                         flags: Flags, offer: bool) -> None:
        """The recipient's transport profile on its m= line; across a bridge (DTLS on one
        side only) its DTLS or SDES attributes are the relay's, or gone towards a plain
        party."""
        bridged = self._bridged(p, src)
        for st in (p, src):
            if st.sdes is not None and not (bridged and protection(st.profile) == "sdes"):
                st.sdes = None  # (a stream has SDES or DTLS transforms, never both)
                st.ingress = st.egress = None
        if not bridged:
            if offer and flags.transport_protocol and is_dtls(p.profile) != is_dtls(src.profile):
                raise RelayError("DTLS-SRTP bridging needs the relay's DTLS certificate",
                                 (488, "DTLS-SRTP not available"))
            if om.proto != p.profile and is_plain(p.profile) and is_plain(src.profile):
                om.proto = p.profile  # RTP/AVPF <-> RTP/AVP
                if not has_feedback(p.profile):
                    om.remove_attrs("rtcp-fb")
            return
        if is_dtls(src.profile) and not src.fingerprints and om.port != 0:
            # (RFC 8842 §5: nothing to check the party's certificate against, so its keys
            # would be anybody's)
            raise RelayError(f"{src.profile} section {src.index} has no a=fingerprint",
                             (488, "DTLS fingerprint missing"))
        if om.proto != p.profile:
            om.proto = p.profile
        if protection(src.profile) == "sdes":
            self._sdes_from(src, flags, offer)
        if is_dtls(p.profile) and flags.dtls != "off":
            setup = our_setup(offer, p.setup, flags.dtls)
            p.local_setup = setup
            dtls_attrs_towards(out, om, self._bridge.fingerprint, setup)
            if om.mid is None:  # JSEP: a DTLS (WebRTC) party wants every m= line named
                om.add_attr("mid", p.mid if not offer and p.mid is not None else str(p.index))
            return
        p.local_setup = None
        dtls_attrs_towards(out, om, None, None)
        if protection(p.profile) == "sdes":
            for line in self._sdes_towards(p, flags, offer):
                om.add_attr("crypto", line)
        if not has_feedback(p.profile):
            om.remove_attrs("rtcp-fb")  # RTCP feedback is AVPF's (RFC 4585)

    @staticmethod
    def _sdes_of(st: Stream) -> SdesStream:
        sdes = st.sdes
        if sdes is None:
            sdes = st.sdes = SdesStream()
        st.ingress, st.egress = sdes.unprotect, sdes.protect
        return sdes

    def _sdes_towards(self, p: Stream, flags: Flags, offer: bool) -> list[str]:
        """Our ``a=crypto`` lines towards the SDES party ``p`` (media/sdes.py)."""
        if "off" in flags.sdes:
            raise refuse(f"{p.profile} towards the recipient needs SDES, and the flags say SDES-off")
        check_items(flags.sdes)
        suites = allowed_suites(flags.sdes)
        if not suites:
            raise refuse(f"the SDES flags {' '.join(flags.sdes)} leave no suite")
        sdes = self._sdes_of(p)
        if offer:
            return [str(c) for c in sdes.offer_lines(suites, flags.sdes)]
        return [str(sdes.answer_line(p.crypto, suites, flags.sdes))]

    def _sdes_from(self, src: Stream, flags: Flags, offer: bool) -> None:
        """The SDES party ``src`` sent its SDP: an offer must carry a line we can answer
        (checked now, to refuse it before the recipient rings); an answer keys the
        transform facing it."""
        if offer:
            choose_offered(src.crypto, allowed_suites(flags.sdes))
            self._sdes_of(src)  # (its SRTP is dropped until our answer keys the stream)
            return
        if src.sdes is None or not src.sdes.offered:
            raise refuse(f"{src.profile} answer to an offer that carried no a=crypto of ours")
        src.sdes.accept_answer(src.crypto)

    def _share_transport(self, out: SessionDescription, live: list[tuple[int, Stream]], mine: list[Stream],
                         flags: Flags, ice_mode: str, offer: bool) -> None:
        """The sections ``live`` (index, stream facing the DTLS party) become one BUNDLE
        group on the first one's port, ICE credentials and DTLS association; their
        :class:`Bundle` demultiplexes what the party sends (media/bundle.py). Each section
        names the MID header extension: the id the party offered, or in our offer one
        that no section uses yet."""
        lp = live[0][1]
        used = {ident for i, _p in live for ident, _uri in _extmaps(out.media[i])}
        free = next((n for n in range(1, 15) if n not in used), None)
        mids: list[str] = []
        pts: list[set[int]] = []
        ids: set[int] = set()
        for i, p in live:
            if p is not lp:
                if p.rtp_port != lp.rtp_port:
                    self._bridge.drop(p)
                    self._table.release(p)
                    p.rtp_port, p.rtcp_port = lp.rtp_port, lp.rtcp_port
                    p.owns_ports, p.port_count = False, 0
                p.ice_ufrag, p.ice_pwd = lp.ice_ufrag, lp.ice_pwd
                p.mux = lp.mux = True
                self._rewrite_media(out, i, p, flags, offer, ice_mode, mine[i], False)
            om = out.media[i]
            ext = mid_extension(om)
            if ext is None:
                ext = free if offer else p.mid_ext
                if ext is not None:
                    om.add_attr("extmap", f"{ext} {MID_URI}")
            if ext is not None:
                ids.add(ext)
            mids.append(om.mid or "")
            pts.append({int(f) for f in om.formats if f.isdigit()})
        bundle = Bundle([p for _i, p in live], mids, pts, ids)
        for _i, p in live:
            p.bundle = bundle

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
                self._table.release(fp)
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
        self._convert_profile(out, om, p, src, flags, offer)
        had = om.ice_ufrag is not None or out.ice_ufrag is not None
        keep_default = ice_mode == "force-relay" and had  # c=/m= stay the endpoint's
        if not keep_default:
            self._point_at_relay(out, om, p, flags, zero_hold)
        to_webrtc = is_dtls(p.profile) and self._bridged(p, src)
        if offer:
            if ("demux" in flags.rtcp_mux or "reject" in flags.rtcp_mux) and not to_webrtc:
                om.remove_attrs("rtcp-mux")
            elif ("offer" in flags.rtcp_mux or "require" in flags.rtcp_mux or to_webrtc) and not om.rtcp_mux:
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
        if self._bridged(p, src):
            # across a bridge the relay is the ICE endpoint: ICE-lite towards the DTLS party
            # (whatever the flags of the other direction said), and towards the plain one
            # only if that party speaks ICE itself
            mode = "force" if is_dtls(p.profile) or (p.had_ice and mode != "remove") else "remove"
        if mode == "relay" and had:
            p.ice_ufrag = p.ice_pwd = None
            om.remove_attrs("candidate", lambda v: v is not None and " typ relay" in v)
            om.remove_attrs("end-of-candidates")
            for comp, port in ((1, p.rtp_port), (2, p.rtcp_port)):
                if comp == 2 and (p.rtcp_port == p.rtp_port or om.rtcp_mux):
                    continue
                adv = self.address_of(p)
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
            c = Candidate("sipedge", comp, "UDP", candidate_priority(126, 65535, comp), self.address_of(p), port, "host")
            om.add_attr("candidate", str(c))
        om.add_attr("end-of-candidates")

    def _point_at_relay(self, out: SessionDescription, om: MediaSection, p: Stream, flags: Flags,
                        zero_hold: bool) -> None:
        """The m= port and the c= line that applies to ``om`` name the relay."""
        assert p.rtp_port is not None
        om.m = replace(om.m, port=p.rtp_port, port_count=None)  # one relay port (pair) per m=
        adv = self.address_of(p)
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

    def _codecs(self, out: SessionDescription, i: int, m: MediaSection, s: Stream, p: Stream, flags: Flags,
                offer: bool) -> None:
        """The codec flags of an offer from ``s``; an answer from ``s`` decides whether the
        section is transcoded, and gives both streams their transcoders (media/codecs.py).
        A codec added to one section takes a payload type no other section uses: sections
        bundled towards a browser are told apart by payload type (RFC 8843 §9.1)."""
        om = out.media[i]
        setup = self.transcoding
        supports = setup.supports if setup is not None else _no_codec
        if offer:
            p.codecs = None  # (the other party's last offer is answered: its plan is done)
            if not has_codec_flags(flags):  # a re-offer through rtpengine_manage() without flags:
                if s.codecs is not None:  # the first offer's codec flags again
                    flags = same_codec_flags(flags, s.codecs.flags)
                elif s.transcoder is not None:  # the answerer re-offers: what the offerer takes
                    flags = replace(flags, codec_transcode=(s.transcoder.target.name,))
            taken = {f.pt for j, other in enumerate(out.media) if j != i for f in formats_of(other)}
            s.codecs = plan_offer(om, flags, supports, taken)
            return
        choice = plan_answer(om, m, p.codecs, supports) if p.codecs is not None else None
        if choice is None or setup is None:
            s.transcoder = p.transcoder = None
        elif p.transcoder is None or p.transcoder.choice != choice:  # (the same: they go on)
            p.transcoder, s.transcoder = setup.pair(choice)


def _no_codec(codec: Codec) -> bool:
    return False
