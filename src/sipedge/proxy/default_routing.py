"""The default routing module: a registrar and proxy for the domains we serve.

It follows the shape of Kamailio's default script — sanity checks, Max-Forwards and loop
checks, in-dialog routing by Route set, authentication, registrar, location lookup and
relay — and is the best worked example of the routing API (docs/routing.md).
"""

from __future__ import annotations

from .context import ReplyContext, RequestContext


def request_route(ctx: RequestContext) -> None:
    # REQINIT: refuse what no hop could handle.
    if not ctx.sanity_check() or not ctx.max_forwards_ok() or not ctx.loop_ok():
        return

    # WITHINDLG: requests inside a dialog follow the Route set we recorded.
    if ctx.has_to_tag:
        if ctx.loose_route():
            ctx.handle_ruri_alias()  # a NATed/WebSocket peer: back on its own flow
            if ctx.is_nated() and ctx.method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
                ctx.add_contact_alias()
            ctx.relay()
        elif ctx.method == "ACK":
            ctx.drop()  # an ACK for a locally answered request, or stray: absorb it
        else:
            ctx.reply(404, "Not Here")
        return

    # Requests addressed to the server itself (keepalive OPTIONS).
    if ctx.method == "OPTIONS" and ctx.is_ruri_me():
        ctx.reply(200, None, [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, NOTIFY, SUBSCRIBE, REFER, PRACK")])
        return

    # A preloaded Route (e.g. an outbound proxy set) is honoured.
    preloaded = ctx.loose_route()

    # AUTH + REGISTRAR.
    if ctx.method == "REGISTER":
        if not ctx.is_ruri_local():
            ctx.reply(403, "Not Our Domain")
            return
        if ctx.core.config.auth.register and not ctx.auth_check():
            return
        ctx.save()
        return

    needs_auth = ctx.core.config.auth.invite and ctx.is_from_local()
    if needs_auth and ctx.method not in ("ACK", "CANCEL", "PRACK") and not ctx.auth_check():
        return

    # NAT: requests from NATed or WebSocket clients carry their flow in the Contact.
    if ctx.is_nated():
        ctx.add_contact_alias()

    if preloaded:
        ctx.record_route()
        ctx.relay()
        return

    if not ctx.is_ruri_local():
        # Relaying to foreign domains only for our own (authenticated) users.
        if ctx.authenticated_user is None and ctx.core.config.auth.invite:
            ctx.reply(403, "Relaying Denied")
            return
        ctx.record_route()
        ctx.relay()
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
    ctx.relay()


def reply_route(ctx: ReplyContext) -> None:
    # A NATed or WebSocket callee's Contact gets its flow, so in-dialog requests reach it.
    if ctx.is_nated():
        ctx.add_contact_alias()
