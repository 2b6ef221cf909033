"""A routing module for tests: the default one, with every initial INVITE's media put
through the relay (SIPp-to-SIPp calls on loopback would otherwise go end to end), so the
call shows in ``media list`` and the dashboard's calls panel."""

from __future__ import annotations

from sipedge.proxy.context import RequestContext
from sipedge.proxy.default_routing import reply_route
from sipedge.proxy.default_routing import request_route as default_request_route

__all__ = ["reply_route", "request_route"]


def request_route(ctx: RequestContext) -> None:
    if ctx.method == "INVITE" and not ctx.has_to_tag:
        ctx.rtpengine_manage()
        ctx.record_route()
    default_request_route(ctx)
