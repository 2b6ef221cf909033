"""A routing module for an edge in front of a PBX set: calls to numbers that no phone here
registered go to the PBXs of dispatcher set 1; everything else is the default routing.
The example of docs/routing.md ("Dispatcher"), run by tests/integration/test_dispatcher_e2e.py
and tests/unit/proxy/test_dispatcher.py."""

from __future__ import annotations

from sipedge.proxy import default_routing
from sipedge.proxy.context import RequestContext

PBXS = 1  # the [[dispatcher.sets]] id


def request_route(ctx: RequestContext) -> None:
    if ctx.has_to_tag or ctx.method != "INVITE" or not is_number(ctx) or ctx.lookup() > 0:
        default_routing.request_route(ctx)  # in-dialog requests, REGISTER, our users...
        return
    if not ctx.sanity_check() or not ctx.max_forwards_ok() or not ctx.loop_ok():
        return
    if ctx.ds_is_from(PBXS):
        # a number from the PBX that is not one of our phones: never sent back to the PBXs
        # (a loop; or a spoofed source calling out through us)
        ctx.reply(404, "No Such Local Number")
        return
    if ctx.core.config.auth.invite:
        if not ctx.auth_check():  # only our users call out: toll fraud is paid by us
            return
        ctx.consume_credentials()
    ctx.record_route()
    if not ctx.ds_select(PBXS):
        ctx.reply(503, "No PBX Available")
        return
    ctx.relay()


def is_number(ctx: RequestContext) -> bool:
    """The Request-URI is a telephone number (digits, maybe a leading +) at our domain."""
    u = ctx.ruri
    return u is not None and bool(u.user) and u.user.lstrip("+").isdigit() and ctx.is_ruri_local()
