"""Pure request-forwarding steps of RFC 3261 §16: Max-Forwards, loops, Route processing,
Record-Route, branch ids and next-hop selection. No state, no I/O: each takes a message
and returns or edits it, so routing modules and tests can call them alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from .._common.addr import strip_brackets
from ..errors import ParseError
from ..sip.flow import Target
from ..sip.headers import NameAddr, Via
from ..sip.message import Request
from ..sip.uri import SipUri
from . import route_stamp
from .identity import DEFAULT_PORTS, Identity, Listener

MAGIC = "z9hG4bK"
NODE_HOP = "nd"  # on our Via to another node: its MAC of the branch (docs/cluster.md)


def loop_hash(req: Request, previous_branch: str) -> str:
    """The part of our branch id that lets us spot a loop (RFC 3261 §16.6 step 8)."""
    try:
        from_tag = req.from_.tag or ""
        to_tag = req.to.tag or ""
        cseq = str(req.cseq.number)
    except ParseError:
        from_tag = to_tag = cseq = ""
    material = "\x00".join(
        (req.uri, from_tag, to_tag, req.get("call-id") or "", cseq, previous_branch)
    )
    return MAGIC + "sE" + hashlib.blake2b(material.encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()


def branch_id(req: Request, index: int) -> str:
    """Branch for the ``index``-th forked copy of ``req`` (same input, same branch: so a
    CANCEL gets the INVITE's branch and retransmissions match)."""
    prev = ""
    first = req.get("via")
    if first:
        try:
            prev = req.top_via.branch or first  # parsed once per message (Message.top_via)
        except ParseError:
            prev = first
    return f"{loop_hash(req, prev)}.{index}"


def is_loop(req: Request, identity: Identity) -> bool:
    """True when one of our own Vias carries the branch this request would get again
    (a loop, RFC 3261 §16.3 step 4), as opposed to a legitimate spiral."""
    vias = req.vias
    for i, via in enumerate(vias[:-1]):
        branch = via.branch or ""
        if not branch.startswith(MAGIC + "sE"):
            continue
        if not identity.is_me(via.host, via.port, via.transport.lower()):
            continue
        prev = vias[i + 1].branch or ""
        if branch.split(".", 1)[0] == loop_hash(req, prev):
            return True
    return False


def decrement_max_forwards(req: Request) -> int:
    """Lower Max-Forwards by one (adding 70 when absent); returns the new value."""
    mf = req.max_forwards
    value = 69 if mf is None else max(mf - 1, 0)
    req.set("max-forwards", str(value))
    return value


def record_route(req: Request, inbound: Listener, outbound: Listener, stamp: str | None = None) -> None:
    """Insert our Record-Route; two of them (``r2=on``) when the request changes transport
    or interface, so each side of the dialog reaches us the way it can. For a ``sips:``
    request each entry on a secure listener is a ``sips:`` URI (RFC 3261 §16.6 step 4).
    ``stamp`` goes into each entry as its ``sg`` parameter (:mod:`.route_stamp`)."""
    secure = _is_sips(req)

    def entry(li: Listener, **params: str | None) -> str:
        if stamp is not None:
            params[route_stamp.PARAM] = stamp
        uri = li.uri(**params)
        if secure and li.transport in ("tls", "wss"):
            uri = dataclasses.replace(uri, scheme="sips")
        return f"<{uri}>"

    if (inbound.transport, inbound.public_host, inbound.public_port) == (
        outbound.transport,
        outbound.public_host,
        outbound.public_port,
    ):
        req.add("record-route", entry(inbound, lr=None), first=True)
        return
    req.add("record-route", entry(inbound, r2="on", lr=None), first=True)
    req.add("record-route", entry(outbound, r2="on", lr=None), first=True)


def _is_sips(req: Request) -> bool:
    """A ``sips:`` Request-URI, or a top Route that is one."""
    try:
        uri = req.ruri
        routes = req.name_addrs("route")
    except ParseError:
        return False
    if isinstance(uri, SipUri) and uri.scheme == "sips":
        return True
    return bool(routes) and isinstance(routes[0].uri, SipUri) and routes[0].uri.scheme == "sips"


def loose_route(req: Request, identity: Identity) -> bool:
    """Route-set processing of RFC 3261 §16.4 with strict-router compatibility.

    Pops the Route entries that name us (both of a double Record-Route). When the
    Request-URI names us and Routes exist, the previous hop was a strict router: the last
    Route becomes the Request-URI. Returns True when the request carried Route headers
    (it is being routed by its route set), like Kamailio's ``loose_route()``.
    """
    return route_set(req, identity).routed


@dataclass(frozen=True, slots=True)
class RouteSet:
    """What :func:`route_set` found: whether the request had Routes, our entries it
    consumed (to check their stamps), and the listener the last of them names (the side
    of a double Record-Route facing the next hop, where the request must leave from;
    Kamailio sends from that socket too)."""

    routed: bool
    ours: tuple[SipUri, ...] = ()
    socket: Listener | None = None


def route_set(req: Request, identity: Identity) -> RouteSet:
    """:func:`loose_route`, with what it consumed."""
    routes = req.name_addrs("route")
    if not routes:
        return RouteSet(False)
    ours: list[SipUri] = []
    ruri = req.ruri
    if isinstance(ruri, SipUri) and identity.uri_is_me(ruri) and ruri.user is None:
        ours.append(ruri)  # a strict router put our Record-Route entry here
        last = routes[-1]
        req.set_uri(last.uri)
        set_routes(req, routes[:-1])
        routes = routes[:-1]
    popped = 0
    while routes and popped < 2:
        top = routes[0].uri
        if isinstance(top, SipUri) and identity.uri_is_me(top):
            routes = routes[1:]
            popped += 1
            ours.append(top)
            if top.params.get("r2") != "on":
                break
        else:
            break
    if popped:
        set_routes(req, routes)
    socket = identity.listener_named(ours[-1]) if ours else None
    return RouteSet(True, tuple(ours), socket)


def remove_own_routes(req: Request, identity: Identity) -> bool:
    """For an initial request (no To tag): remove the leading Route entries that name us,
    the Route a phone preloads for its outbound proxy (RFC 3261 §8.1.2). True when
    entries naming other hops remain: the request asks to leave for them."""
    routes = req.name_addrs("route")
    kept = list(routes)
    while kept and isinstance(kept[0].uri, SipUri) and identity.uri_is_me(kept[0].uri):
        kept.pop(0)
    if len(kept) != len(routes):
        set_routes(req, kept)
    return bool(kept)


def set_routes(req: Request, routes: list[NameAddr]) -> None:
    req.remove("route")
    for r in routes:
        req.add("route", str(r))


def uri_target(uri: SipUri) -> Target:
    """Where a SIP URI leads (RFC 3263 without DNS: transport param, sips -> TLS, default
    ports); host names are resolved by the adapter."""
    transport = uri.transport
    if uri.scheme == "sips" and transport in ("udp", "tcp"):
        transport = "tls"
    port = uri.port or DEFAULT_PORTS.get(transport, 5060)
    return Target(transport, strip_brackets(uri.host), port)


def next_hop(req: Request) -> SipUri:
    """The URI the request is sent towards: the top Route, else the Request-URI.

    A top Route without ``;lr`` names a strict router (RFC 2543), which routes by the
    Request-URI: the request is rewritten for it first (RFC 3261 §16.6 step 6): the
    Request-URI moves to the end of the Route set, the top Route becomes the
    Request-URI, and the request goes there."""
    routes = req.get_all("route")
    if routes:
        top = NameAddr.parse(routes[0], "Route").sip_uri
        if "lr" in top.params:
            return top
        ruri = req.ruri
        rest = req.name_addrs("route")[1:]
        req.set_uri(top)
        req.remove("route")
        for r in rest:
            req.add("route", str(r))
        req.add("route", f"<{ruri}>")
        return top
    ruri = req.ruri
    if not isinstance(ruri, SipUri):
        raise ParseError(f"cannot route to {ruri}", (416, "Unsupported URI Scheme"))
    return ruri


def add_via(req: Request, listener: Listener, branch: str, node: str | None = None) -> None:
    """Our Via; ``node`` is its ``nd`` parameter, when the next hop is another node of ours
    (docs/cluster.md)."""
    params = f";branch={branch}"
    if listener.transport == "udp":
        params += ";rport"
    if node is not None:
        params += f";{NODE_HOP}={node}"
    req.add("via", f"SIP/2.0/{listener.transport.upper()} {listener.via_sent_by()}{params}", first=True)


def stamp_received(req: Request, src_host: str, src_port: int) -> None:
    """RFC 3261 §18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via."""
    via = req.top_via
    params = dict(via.params)
    changed = False
    if strip_brackets(via.host).lower() != strip_brackets(src_host).lower():
        params["received"] = src_host
        changed = True
    if "rport" in via.params:
        params["rport"] = str(src_port)
        params["received"] = src_host
        changed = True
    if changed:
        req.set_top_via(Via(via.transport, via.host, via.port, params, via.protocol))


def response_target(via: Via) -> Target:
    """Where a response goes statelessly (RFC 3261 §18.2.2 with RFC 3581 rport)."""
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    if rport and rport.isdigit():
        port = int(rport)
    else:
        port = via.port or DEFAULT_PORTS.get(via.transport.lower(), 5060)
    return Target(via.transport.lower(), strip_brackets(host), port)
