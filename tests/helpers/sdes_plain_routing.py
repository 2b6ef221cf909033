"""A routing module for the SDES ↔ plain RTP bridge (docs/routing.md, "SDES"): the
default routing, plus, for calls between the users of ``SDES_USERS`` (phones that speak
only SRTP keyed by ``a=crypto``, as baresip with ``mediaenc=srtp-mand``) and everybody
else, the relay converting between their profiles: an SDES user's offer reaches the
others as ``RTP/AVP``, the others' offers reach an SDES user as ``RTP/SAVP`` with our keys."""

from __future__ import annotations

from sipedge.media.relay import Flags
from sipedge.proxy.context import RequestContext
from sipedge.proxy.default_routing import reply_route
from sipedge.proxy.default_routing import request_route as default_request_route
from sipedge.sip.uri import SipUri

__all__ = ["reply_route", "request_route"]

SDES_USERS = {"bob"}


def request_route(ctx: RequestContext) -> None:
    if not ctx.sanity_check():
        return
    body = ctx.request.body
    if ctx.method == "INVITE" and not ctx.has_to_tag and body and b"UDP/TLS/" not in body:
        caller_sdes = b"RTP/SAVP" in body and b"a=crypto:" in body
        ruri = ctx.request.ruri
        callee_sdes = isinstance(ruri, SipUri) and ruri.user in SDES_USERS
        if caller_sdes != callee_sdes:
            ctx.rtpengine_manage(Flags(transport_protocol="RTP/SAVP" if callee_sdes else "RTP/AVP"))
            ctx.record_route()
    default_request_route(ctx)
