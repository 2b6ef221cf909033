"""The default routing module: a registrar and proxy for the domains we serve.

It follows the shape of Kamailio's default script — sanity checks, Max-Forwards and loop
checks, in-dialog routing by Route set, authentication, registrar, location lookup and
relay — and is the best worked example of the routing API (docs/routing.md).

NAT and WebSocket clients get the well-known recipe (docs/nat.md): detection with
``nat_uac_test``, ``force_rport``, registrations kept with their source flow, Contact
aliases on other requests and on replies, in-dialog requests routed by alias,
Record-Route, and keepalives (``nat_keepalive``) for REGISTER, SUBSCRIBE and INVITE.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import ParseError
from ..media.codecs import formats_of
from ..media.model import Flags
from ..sdp import SessionDescription
from . import nat
from .context import BranchTarget, ReplyContext, RequestContext

NAT_TESTS = nat.RECIPE_FLAGS
"""Private Contact (1), Via host (2) or port (16) not the source, WebSocket (64), Contact
port not the source port (128)."""


def request_route(ctx: RequestContext) -> None:
    # REQINIT: refuse what no hop could handle.
    if not ctx.sanity_check() or not ctx.max_forwards_ok() or not ctx.loop_ok():
        return
    # Scanners get no answer (and their source a ban); past a rate limit, 503.
    if ctx.is_scanner():
        ctx.drop()
        return
    if not ctx.within_rate_limits():
        return

    # NATDETECT: answers go back to where the request came from. A request from another
    # node of ours is not NATed here: that node handled its sender's NAT (docs/cluster.md).
    nated = not ctx.from_node() and ctx.nat_uac_test(NAT_TESTS)
    if nated:
        ctx.force_rport()

    # Caller identities asserted by anyone but a trusted peer are claims, not facts.
    trusted = ctx.is_trusted_peer()
    if not trusted:
        ctx.remove_identity_headers()

    # WITHINDLG: requests inside a dialog follow the Route set we recorded, and only that:
    # a Route to us that we did not record for this dialog is a stranger asking us to relay.
    if ctx.has_to_tag:
        if ctx.loose_route():
            if not (ctx.route_recorded_here() or trusted):
                if ctx.method == "ACK":
                    ctx.drop()
                else:
                    ctx.reply(403, "Route Not Recorded Here")
                return
            if not ctx.topology_restore():  # a hidden dialog's Contact: back to the party's own
                return
            ctx.handle_ruri_alias()  # a NATed/WebSocket peer: back on its own flow
            if nated and ctx.method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
                ctx.add_contact_alias()
            if nated and ctx.method == "SUBSCRIBE":
                ctx.nat_keepalive()  # a refresh extends the subscription's keepalive
            if ctx.media_active():
                ctx.rtpengine_manage()  # re-offers, and BYE ends the relayed media
            ctx.relay()
        elif ctx.method == "ACK":
            ctx.drop()  # an ACK for a locally answered request, or stray: absorb it
        else:
            ctx.reply(404, "Not Here")
        return

    # CLUSTER: another node sharing our location found the user registered here and
    # routes the request by the Path entry this node signed (docs/cluster.md). That node
    # applied the policy (authentication, limits); this one holds the flow: it sends the
    # request on it, and stays in the dialog (the phone's NAT binding, the browser's
    # connection are here). A forged entry is refused by follow_node_path itself.
    if ctx.follow_node_path():
        ctx.record_route()
        ctx.relay()
        return
    if ctx.done:
        return

    # Requests addressed to the server itself (keepalive OPTIONS).
    if ctx.method == "OPTIONS" and ctx.is_ruri_me():
        ctx.reply(200, None, [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, NOTIFY, SUBSCRIBE, REFER, PRACK")])
        return

    # An initial request routes by its Request-URI: the Route a phone preloads for its
    # outbound proxy (us) is consumed; a Route to another hop is a foreign destination.
    routed_elsewhere = ctx.remove_preloaded_route()

    # AUTH + REGISTRAR.
    if ctx.method == "REGISTER":
        if not ctx.is_ruri_local():
            ctx.reply(403, "Not Our Domain")
            return
        if ctx.core.config.auth.register and not ctx.auth_check():
            return
        if nated:
            ctx.nat_keepalive()
        ctx.save()  # (a NATed phone's source is kept by save()'s own test: no fix_nated_register)
        return

    needs_auth = ctx.core.config.auth.invite and ctx.is_from_local() and not trusted
    if needs_auth and ctx.method not in ("ACK", "CANCEL", "PRACK"):
        if not ctx.auth_check():
            return
        ctx.consume_credentials()  # ours: the callee has no use for them

    # NATMANAGE: requests from NATed or WebSocket clients carry their flow in the Contact,
    # and the client is kept reachable while its dialog or subscription lasts.
    if nated:
        ctx.add_contact_alias()
        if ctx.method in ("INVITE", "SUBSCRIBE"):
            ctx.nat_keepalive()

    if routed_elsewhere or not ctx.is_ruri_local():
        # Relaying to foreign destinations only for our own authenticated users and
        # trusted peers (so with auth.invite off, for trusted peers only).
        if ctx.authenticated_user is None and not trusted:
            ctx.reply(403, "Relaying Denied")
            return
        if not trusted and not ctx.foreign_call_allowed():
            return  # the toll-fraud guard: too many calls abroad from this user
        if not ctx.destination_within_limit():
            return
        ctx.record_route()
        relay_initial(ctx)
        return

    # LOCATION.
    if ctx.core.config.routing.record_route:
        ctx.record_route()
    if ctx.lookup() == 0:
        if ctx.user_exists():
            ctx.reply(480)
        else:
            ctx.reply(404)
        return
    # RTPPROXY: a browser calling a SIP phone, or a phone calling a browser, is bridged
    # (DTLS-SRTP and ICE towards the browser, plain RTP towards the phone; docs/webrtc.md),
    # per branch when the callee has both (each branch gets an offer of its own).
    # Plain RTP is relayed when either side is behind a NAT. Two browsers keep their own
    # end-to-end DTLS, and their ICE finds its way through NATs (and TURN).
    if ctx.method == "INVITE":
        bridge = webrtc_bridge(ctx)
        if bridge is not None:
            if len(set(bridge)) == 1:
                ctx.rtpengine_manage(bridge[0])  # every branch alike: one offer
            else:
                for target, flags in zip(ctx.targets, bridge, strict=True):
                    target.media = flags  # a mixed fork: an offer per branch
                ctx.rtpengine_manage()
            ctx.record_route()  # even with routing.record_route off: BYE and re-offers must pass here
        elif not is_webrtc_offer(ctx.request.body) and (
            ctx.nat_uac_test(NAT_TESTS | nat.SDP_PRIVATE) or any(t.nated for t in ctx.targets)
        ):
            ctx.rtpengine_manage()
            ctx.record_route()
    relay_initial(ctx)


def relay_initial(ctx: RequestContext) -> None:
    """Relay an initial request; with ``sip.topology_hiding``, a record-routed one hides
    each side's topology from the other (docs/operations.md, "Topology hiding")."""
    if ctx.record_routed and ctx.core.config.sip.topology_hiding:
        ctx.topology_hide()
    ctx.relay()


TO_PHONE = Flags(transport_protocol="RTP/AVP", ice="remove", rtcp_mux=("demux",))
"""A browser's offer towards a SIP phone: plain RTP, no ICE, RTCP on its own port
(rtpengine's ``RTP/AVP ICE=remove DTLS=off rtcp-mux-demux``)."""

TO_BROWSER = Flags(transport_protocol="UDP/TLS/RTP/SAVPF", ice="force", rtcp_mux=("require",))
"""A phone's offer towards a browser: DTLS-SRTP with the relay as ICE-lite candidate and
RTCP muxed (rtpengine's ``UDP/TLS/RTP/SAVPF ICE=force rtcp-mux-require``)."""


def webrtc_bridge(ctx: RequestContext) -> list[Flags] | None:
    """The media flags, one per target of ``ctx.targets``, that bridge this INVITE's caller
    and callees when one side is a browser and the other is not; None when all are alike.
    A mixed fork (a browser and a phone of the same user) gets per-branch flags: the
    branches unlike the caller are bridged (``TO_BROWSER`` / ``TO_PHONE``), those like it
    are relayed as they are (``Flags()``). A late offer: :func:`late_offer_bridge`."""
    browsers = [_is_browser(t) for t in ctx.targets]
    if not ctx.request.body:
        return late_offer_bridge(ctx.flow.transport in ("ws", "wss"), browsers)
    caller = is_webrtc_offer(ctx.request.body)
    if all(b == caller for b in browsers):  # (also: no targets)
        return None
    if caller:
        bridged = with_transcoding(TO_PHONE, ctx.request.body, ("PCMU", "PCMA"), unless=("pcmu", "pcma"))
    else:
        bridged = with_transcoding(TO_BROWSER, ctx.request.body, ("opus",), unless=("opus",))
    return [Flags() if b == caller else bridged for b in browsers]


LATE_TO_PHONE = replace(TO_PHONE, codec_transcode=("PCMU", "PCMA"))
"""A late offer (an INVITE without SDP) from a phone: the callee's offer in the 200 is
converted for the phone (``TO_PHONE``), PCMU and PCMA added for transcoding (a no-op when
the offer has them, as every browser's has)."""

LATE_TO_BROWSER = replace(TO_BROWSER, codec_transcode=("opus",))
"""A late offer from a browser: the callee's offer in the 200 is converted for the
browser (``TO_BROWSER``), Opus appended after the offer's codecs (a no-op when it has Opus)."""


def late_offer_bridge(caller_is_browser: bool, browsers: list[bool]) -> list[Flags] | None:
    """The flags for an INVITE without SDP (RFC 3261 §13.2.1 late offer): the offer comes
    from the callee in its 200 and goes to the caller, so the flags describe the caller,
    whose kind the request's transport tells (WS/WSS: a browser). Every branch gets the
    same ones (a phone's RTP/AVP offer converted ``TO_PHONE`` is plain relaying, a
    browser's DTLS offer ``TO_BROWSER`` stays DTLS end to end); None when every callee is
    of the caller's kind."""
    if all(b == caller_is_browser for b in browsers):
        return None
    return [LATE_TO_BROWSER if caller_is_browser else LATE_TO_PHONE] * len(browsers)


def with_transcoding(flags: Flags, body: bytes, add: tuple[str, ...], unless: tuple[str, ...]) -> Flags:
    """``flags`` with ``add`` appended to the offer for transcoding (rtpengine's
    ``codec-transcode``) when no audio section of the offer ``body`` has a codec of
    ``unless``: a browser offering neither PCMU nor PCMA gets both added towards a phone
    (phones rarely speak Opus); a phone's offer without Opus gets Opus added towards a
    browser, after the phone's codecs, so a browser answers G.711 (mandatory in WebRTC,
    RFC 7874) and media passes through, and an Opus-only WebRTC client is transcoded."""
    try:
        desc = SessionDescription.parse(body)
        names = {f.name.lower() for sec in desc.media if sec.media == "audio" for f in formats_of(sec)}
    except ParseError:
        return flags  # (the relay refuses it with its own error)
    if names & set(unless):
        return flags
    return replace(flags, codec_transcode=add)


def _is_browser(target: BranchTarget) -> bool:
    dest = target.dest
    if dest is not None:
        return dest.transport in ("ws", "wss")
    ruri = target.ruri
    return ruri is not None and (ruri.params.get("transport") or "").lower() in ("ws", "wss")


def is_webrtc_offer(body: bytes) -> bool:
    """An SDP with ICE credentials or a DTLS-SRTP profile (a browser's)."""
    return b"a=ice-ufrag" in body or b"/SAVPF" in body


def reply_route(ctx: ReplyContext) -> None:
    # A NATed or WebSocket callee's Contact gets its flow, so in-dialog requests reach it
    # (unless another node of ours answered: that node did it for its side).
    if not ctx.from_node and ctx.nat_uac_test(NAT_TESTS):
        ctx.add_contact_alias()
