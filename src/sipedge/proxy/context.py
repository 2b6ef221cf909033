"""What a routing module sees: one context per request or reply, with the helpers
operators know from Kamailio (``sanity_check``, ``loose_route``, ``record_route``,
``auth_check``, ``save``, ``lookup``, ``relay``...), under Pythonic names.

Every helper either returns a plain answer (bool, int) or finishes the request
(``reply``, ``relay``, ``save``, ``drop``); ``ctx.done`` tells whether it is finished.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ParseError
from ..media.relay import Flags
from ..sip.flow import Flow, Target
from ..sip.message import Request, Response, check_request
from ..sip.txevents import TransactionKey
from ..sip.uri import SipUri
from . import forwarding, nat

if TYPE_CHECKING:
    from .core import ProxyCore
    from .identity import Listener


IDENTITY_HEADERS = ("p-asserted-identity", "p-preferred-identity", "remote-party-id")


log = logging.getLogger(__name__)

@dataclass(slots=True)
class BranchTarget:
    """One destination of a relayed request: a new Request-URI and how to reach it."""

    ruri: SipUri | None = None  # None: keep the request's Request-URI
    dest: Flow | Target | None = None  # None: from the top Route or the Request-URI
    path: tuple[str, ...] = ()  # Route values to prepend (RFC 3327 Path)
    q: float = 1.0
    fallback: Target | None = None  # tried when ``dest`` (a flow) is gone
    nated: bool = False  # registered from behind a NAT or over WebSocket
    # this branch's media flags, instead of rtpengine_manage()'s (which must engage the
    # relay): branches whose flags differ each get an offer of their own (rtpengine's
    # via-branch), e.g. DTLS-SRTP towards a browser and plain RTP towards a phone
    media: Flags | None = None
    # where to try next, in turn, when this one times out (Timer B/F), cannot be reached,
    # or answers one of ``failover_codes`` (same transaction): the rest of a dispatcher
    # set (ds_select), the other addresses its name resolved to (RFC 3263 §4.3)
    failover: tuple[Target, ...] = ()
    failover_codes: tuple[str, ...] = ("503",)


@dataclass(slots=True)
class RequestContext:
    """A request being routed. ``stateless`` is True for ACKs of 2xx and the like."""

    core: ProxyCore
    request: Request
    flow: Flow
    now: float
    server_key: TransactionKey | None = None
    stateless: bool = False
    targets: list[BranchTarget] = field(default_factory=list)
    record_routed: bool = False
    media: Flags | None = None  # set by rtpengine_manage(): relay this call's media
    authenticated_user: str | None = None
    done: bool = False
    socket: Listener | None = None  # where to send from (set by loose_route)
    own_routes: tuple[SipUri, ...] = ()  # our Route entries loose_route consumed
    nat_keepalive_requested: bool = False  # set by nat_keepalive() (docs/nat.md)
    register_received: str = ""  # set by fix_nated_register(): save() keeps it
    topology_hidden: bool = False  # set by topology_hide() or topology_restore()
    mask_call_id: bool = False  # ... and the request leaves with its Call-ID masked
    masked_call_id: str = ""  # the Call-ID as it arrived, masked (unmasked in request): replies get it

    # -- facts about the request ------------------------------------------
    @property
    def method(self) -> str:
        return self.request.method

    @property
    def has_to_tag(self) -> bool:
        """In-dialog request (RFC 3261 §12.2)."""
        try:
            return self.request.to.tag is not None
        except ParseError:
            return False

    @property
    def ruri(self) -> SipUri | None:
        u = self.request.ruri
        return u if isinstance(u, SipUri) else None

    def is_ruri_me(self) -> bool:
        """The Request-URI names this server itself (not a user at one of our domains)."""
        u = self.ruri
        return u is not None and self.core.identity.uri_is_me(u)

    def is_ruri_local(self) -> bool:
        """The Request-URI's domain is one we serve (location lookup applies)."""
        u = self.ruri
        return u is not None and self.core.identity.is_local_domain(u.host)

    def is_from_local(self) -> bool:
        """The From URI's domain is one we serve (our user, subject to authentication)."""
        try:
            uri = self.request.from_.uri
        except ParseError:
            return False
        return isinstance(uri, SipUri) and self.core.identity.is_local_domain(uri.host)

    # -- checks ----------------------------------------------------------------
    def sanity_check(self) -> bool:
        """Parse what every hop needs; on failure answer 400 naming the header."""
        try:
            check_request(self.request)
        except ParseError as exc:
            status, reason = exc.sip_reply()
            self.reply(status, reason)
            return False
        return True

    def max_forwards_ok(self) -> bool:
        """False (after answering 483) when Max-Forwards is 0 (RFC 3261 §16.3 step 3)."""
        mf = self.request.max_forwards
        if mf is not None and mf <= 0:
            if self.method == "OPTIONS" and self.is_ruri_me():
                self.reply(200)  # a Max-Forwards: 0 OPTIONS is a question to us
            else:
                self.reply(483)
            return False
        return True

    def loop_ok(self) -> bool:
        """False (after answering 482) when the request loops back to us."""
        if forwarding.is_loop(self.request, self.core.identity):
            self.reply(482)
            return False
        return True

    def is_scanner(self) -> bool:
        """True when the User-Agent names a known SIP scanner (``sip.flood.scanners``):
        its source is banned (unless trusted); the caller drops the request unanswered,
        since an answer only tells a scanner that a server is here."""
        return self.core.flood.is_scanner(self.flow.remote[0], self.request.get("user-agent") or "", self.now)

    def within_rate_limits(self) -> bool:
        """The ``[sip.ratelimit]`` pipes by method (``limits``, ``per_source``): False after
        answering 503 with Retry-After and a Reason naming the limit. ACK and CANCEL always
        pass (they end what was let in)."""
        limiter = self.core.ratelimit
        if not limiter.active or self.method in ("ACK", "CANCEL"):
            return True
        over = limiter.allow(self.method, self.flow.remote[0], self.now)
        return over is None or self._rate_limited(over)

    def destination_within_limit(self) -> bool:
        """Before relaying to a foreign destination: its pipe (``sip.ratelimit.
        per_destination`` requests per interval towards one Request-URI host). False
        after answering 503."""
        ruri = self.ruri
        if ruri is None or self.method in ("ACK", "CANCEL") or self.core.ratelimit.destination(ruri.host, self.now):
            return True
        return self._rate_limited("destination rate limit")

    def _rate_limited(self, which: str) -> bool:
        interval = self.core.ratelimit.config.interval
        self.reply(503, "Rate Limited", [("Retry-After", str(max(1, round(interval)))),
                                         ("Reason", f'SIP;cause=503;text="{which}"')])
        return False

    def pipe_check(self, key: str, rate: int) -> bool:
        """One request through a pipe of the routing module's own (Kamailio's
        ``pl_check``): ``rate`` requests per ``sip.ratelimit.interval`` under ``key``
        (e.g. the Request-URI's user), dropping by ``sip.ratelimit.algorithm``."""
        return self.core.ratelimit.check(f"r|{key}", rate, self.now)

    def foreign_call_allowed(self) -> bool:
        """The toll-fraud guard for a call of the authenticated user to a foreign
        destination (``[sip.fraud]``): False after answering 403 Foreign Call Limit."""
        user = self.authenticated_user
        if user is None or self.method != "INVITE" or self.core.fraud.foreign_call(user, self.now):
            return True
        self.core.counters["sip_fraud_refused"] += 1
        log.warning("x %s: foreign call refused, over sip.fraud.max_foreign_calls", user)
        self.reply(403, "Foreign Call Limit")
        return False

    # -- routing steps ---------------------------------------------------------
    def loose_route(self) -> bool:
        """Process the Route set (RFC 3261 §16.4); True when the request has one. The
        request will leave from the listener our last Route entry names."""
        found = forwarding.route_set(self.request, self.core.identity)
        self.socket, self.own_routes = found.socket, found.ours
        return found.routed

    def route_recorded_here(self) -> bool:
        """After ``loose_route`` on an in-dialog request: the Route entry of ours it
        followed is one we recorded for this very dialog (its ``sg`` stamp matches the
        Call-ID and one of the request's tags, :mod:`.route_stamp`). False when the Route
        set names only other hops, or an entry of ours without (or with a forged) stamp:
        a stranger asking us to relay for them."""
        return self.core.stamped_by_us(self.request, self.own_routes)

    def topology_restore(self) -> bool:
        """After ``loose_route`` on an in-dialog request: when its Request-URI is a Contact
        that ``topology_hide`` handed out, the party's own Contact becomes the Request-URI
        again, the route set sealed into our Record-Route goes first, and the request (and
        its responses) are hidden as the dialog's first were. False (after answering 403,
        or dropping an ACK) when a sealed parameter is forged or tampered with."""
        return self.core.topology_restore(self)

    def follow_node_path(self) -> bool:
        """For an initial request: True when its top Route is a node Path entry naming
        us (docs/cluster.md): another node of ours looked the user up, and this node holds
        the flow it registered on. The entry is popped and ``targets`` is that flow (UDP
        from the socket it registered on, a WebSocket on its connection); relay it. An
        entry whose flow token or ``ns`` call signature does not verify is refused (403,
        an ACK dropped; counted as ``sip_node_route_refused``; ``done`` is then True):
        nothing is ever sent to a flow a token we did not sign names."""
        return self.core.follow_node_path(self)

    def remove_preloaded_route(self) -> bool:
        """For an initial request: drop the Route entries that name us (a phone's
        outbound proxy setting), so the request is routed like any other: authenticated,
        looked up, relayed. True when a Route to another hop remains: the request asks
        to leave for it, which is relaying to a foreign destination."""
        return forwarding.remove_own_routes(self.request, self.core.identity)

    def is_trusted_peer(self) -> bool:
        """The request comes from ``sip.trusted_peers`` (Kamailio's ``allow_trusted``)."""
        return self.core.is_trusted(self.flow.remote[0])

    def remove_identity_headers(self) -> int:
        """Remove the caller identities a phone would display (P-Asserted-Identity,
        P-Preferred-Identity, Remote-Party-ID): from outside the trust domain they are
        whatever the sender chose to claim (RFC 3325 §5). Returns how many were removed."""
        return sum(self.request.remove(name) for name in IDENTITY_HEADERS if self.request.has(name))

    def from_node(self) -> bool:
        """The request comes from another node of ours (its Via carries our nodes'
        ``nd`` MAC, docs/cluster.md): its Contact is a party's behind that node, which
        handled that party's NAT, so NAT helpers are to leave it alone here."""
        return self.core.from_node(self.request)

    def is_nated(self) -> bool:
        """The sender is behind a NAT or on a WebSocket: its Contact or top Via does not
        name the address the request came from (nat_uac_test 1|2|16|64 in spirit)."""
        return nat.is_behind_nat(self.request, self.flow)

    def add_contact_alias(self) -> bool:
        """Mark the Contact with ``;alias=`` of the source flow (nathelper)."""
        return nat.add_contact_alias(self.request, self.flow)

    def handle_ruri_alias(self) -> bool:
        """Route by an ``;alias=`` in the Request-URI (removing it); True when found.
        Not while a Route is left: the next hop is another proxy, and the alias is its
        own (Kamailio's default script calls it only when no destination is set)."""
        if self.request.has("route"):
            return False
        target = nat.handle_ruri_alias(self.request)
        if target is None:
            return False
        self.targets = [BranchTarget(dest=target)]
        return True

    # -- NAT traversal (docs/nat.md) -------------------------------------------------------
    def nat_uac_test(self, flags: int) -> bool:
        """nathelper ``nat_uac_test``: True when a test selected by ``flags`` (1 private
        Contact, 2 Via host is not the source, 4 private Via, 8 private SDP, 16 source port
        is not the Via port, 32 private source, 64 WebSocket, 128 Contact port is not the
        source port, 256 SDP address is not the source) finds a NAT."""
        return nat.nat_uac_test(self.request, self.flow, flags)

    def client_nat_test(self, flags: int) -> bool:
        """nat_traversal ``client_nat_test``: 1 private Contact, 2 source differs from the
        top Via (address or port), 4 private top Via, 8 source IP differs from Contact."""
        return nat.client_nat_test(self.request, self.flow, flags)

    def force_rport(self) -> bool:
        """RFC 3581 ``rport``/``received`` on the top Via as if the client asked for it."""
        return nat.force_rport(self.request, self.flow)

    def fix_nated_contact(self) -> bool:
        """Rewrite the Contact host:port with the source address (prefer aliases)."""
        return nat.fix_nated_contact(self.request, self.flow)

    def fix_nated_register(self) -> str:
        """Before ``save()``: the bindings keep this REGISTER's source as their received
        URI (``Binding.received``), so requests for them go back through the NAT, as
        Kamailio's ``fix_nated_register`` with the registrar's ``received_avp``. Without it
        the registrar keeps it only when its own NAT test (private Contact, Via not the
        source, WebSocket) says so. Returns the received URI."""
        self.register_received = nat.received_uri(self.flow)
        return self.register_received

    def add_rcv_param(self, to_uri: bool = False) -> bool:
        """Add ``received="sip:ip:port"`` to the Contact (header parameter, or URI
        parameter with ``to_uri``), for a registrar further on."""
        return nat.add_rcv_param(self.request, self.flow, to_uri)

    def fix_nated_sdp(self, flags: int, ip: str | None = None) -> bool:
        """Rewrite the SDP body: 1 add ``a=direction:active``, 2 ``c=`` (and ``a=rtcp``)
        addresses, 4 add ``a=nortpproxy:yes``, 8 the ``o=`` address; with ``ip``, or the
        source IP."""
        return nat.fix_message_sdp(self.request, ip or self.flow.remote[0], flags)

    def nat_keepalive(self) -> None:
        """nat_traversal ``nat_keepalive``: keep the sender's NAT binding open while this
        REGISTER's bindings, this SUBSCRIBE's subscription or this INVITE's dialog lasts
        (takes effect when keepalives run; see docs/nat.md)."""
        self.nat_keepalive_requested = True

    def rtpengine_manage(self, flags: Flags | None = None) -> bool:
        """Put the media relay in this call's media path, as Kamailio's
        ``rtpengine_manage()``: offers (INVITE/UPDATE with SDP) and answers (their 18x/2xx)
        are rewritten, BYE/CANCEL and failures delete the session. False when no relay
        is configured. ``flags`` apply to every branch whose target has no
        ``BranchTarget.media`` of its own; when the branches' flags differ, the relay
        makes one offer per branch (docs/routing.md)."""
        if not self.core.media_available:
            return False
        self.media = flags or Flags()
        return True

    def media_active(self) -> bool:
        """The media relay already handles this call (so in-dialog requests keep it)."""
        return self.core.media_active(self.request.get("call-id") or "")

    def record_route(self) -> None:
        """Stay in the path of the dialog (double Record-Route across transports)."""
        self.record_routed = True

    def topology_hide(self) -> None:
        """Kamailio's topoh/topos for this dialog (and ``record_route``, which it needs):
        the Vias, the Record-Route entries and the Contact of each side never reach the
        other; what was taken away is sealed into parameters of our own URIs, so the
        responses and in-dialog requests (``topology_restore``) still route, across a
        restart (docs/operations.md, "Topology hiding")."""
        self.record_routed = True
        self.topology_hidden = True
        self.mask_call_id = self.core.config.sip.topology_mask_callid and not self.masked_call_id

    def lookup(self) -> int:
        """Fill ``targets`` from the location service for the Request-URI's AoR.

        Returns how many contacts were found (0: not registered). Distinguish
        "no such user" from "not online" with ``core.user_exists``.
        """
        u = self.ruri
        if u is None:
            return 0
        bindings = self.core.location.lookup(u.aor, self.core.clock.wall())
        self.targets = [self.core.binding_target(b) for b in bindings]
        return len(self.targets)

    def ds_select(self, set_id: int, alg: str | None = None, limit: int | None = None) -> bool:
        """Kamailio's ``ds_select_dst``: send the request to a destination of dispatcher set
        ``set_id`` picked by ``alg`` (the set's ``algorithm`` when None: "round_robin",
        "weighted", "hash_call_id", "hash_from_user", "priority"), the set's other live
        destinations (``limit`` in all, at most) its failover list. The Request-URI is
        kept (the destination is the next hop, as Kamailio's ``$du``). False when no
        destination of the set is up (the routing answers, say, 503)."""
        ds = self.core.dispatcher
        if ds is None:
            raise ValueError("ds_select: no [[dispatcher.sets]] are configured")
        order = ds.select(set_id, self.request, alg, limit)
        if not order:
            return False
        codes = tuple(self.core.config.dispatcher.failover_codes)
        self.targets = [BranchTarget(dest=order[0].target, failover=tuple(d.target for d in order[1:]),
                                     failover_codes=codes)]
        return True

    def ds_is_from(self, set_id: int | None = None, match_port: bool = False) -> bool:
        """The request comes from the address of a destination of set ``set_id`` (of any
        set when None): Kamailio's ``ds_is_from_list``. The source address of the
        message is compared, never a header; ``match_port`` also compares its port."""
        ds = self.core.dispatcher
        host, port = self.flow.remote
        return ds is not None and ds.is_from(host, port if match_port else None, set_id)

    def user_exists(self) -> bool:
        u = self.ruri
        return u is not None and u.user is not None and self.core.subscribers.exists(u.user, u.host)

    def auth_check(self) -> bool:
        """Digest authentication (RFC 7616/8760): REGISTER by 401, others by 407.

        Returns True when the request carries valid credentials of a subscriber whose
        username matches the From user; otherwise answers the challenge (or 403) and
        returns False.
        """
        return self.core.authenticate(self)

    def consume_credentials(self) -> None:
        """After ``auth_check``: drop this proxy's own Proxy-Authorization so the next hop
        never sees the caller's digest response (credentials for other realms stay)."""
        self.core.consume_credentials(self)

    # -- finishing -------------------------------------------------------------
    def reply(self, status: int, reason: str | None = None, headers: list[tuple[str, str]] | None = None) -> None:
        """Answer the request (statefully when it has a transaction)."""
        self.core.reply(self, status, reason, headers or [])
        self.done = True

    def save(self) -> None:
        """Registrar: update the location service from this REGISTER and answer it."""
        self.core.save(self)
        self.done = True

    def relay(self, targets: list[BranchTarget] | None = None) -> None:
        """Forward the request statefully to ``targets`` (or those ``lookup`` found, or
        its Route/Request-URI), forking in parallel or by q-value."""
        if targets is not None:
            self.targets = targets
        self.core.relay(self)
        self.done = True

    def drop(self) -> None:
        """Discard the request silently (and its server transaction)."""
        self.core.drop(self)


@dataclass(slots=True)
class ReplyContext:
    """A response about to be forwarded upstream."""

    core: ProxyCore
    response: Response
    request: Request | None
    now: float
    flow: Flow | None = None  # where the response came from
    dropped: bool = False
    # it answers a request we sent to another node of ours (docs/cluster.md): that node
    # handled the callee's NAT, so its Contact is to be left alone here
    from_node: bool = False

    def is_nated(self) -> bool:
        return self.flow is not None and nat.is_behind_nat(self.response, self.flow)

    def add_contact_alias(self) -> bool:
        return self.flow is not None and nat.add_contact_alias(self.response, self.flow)

    def nat_uac_test(self, flags: int) -> bool:
        """nathelper ``nat_uac_test`` on the response and the flow it came on (the Via
        tests, 2, 4 and 16, apply to requests only)."""
        return self.flow is not None and nat.nat_uac_test(self.response, self.flow, flags)

    def fix_nated_contact(self) -> bool:
        return self.flow is not None and nat.fix_nated_contact(self.response, self.flow)

    def fix_nated_sdp(self, flags: int, ip: str | None = None) -> bool:
        if ip is None and self.flow is None:
            return False
        return nat.fix_message_sdp(self.response, ip or (self.flow.remote[0] if self.flow else ""), flags)

    def drop(self) -> None:
        self.dropped = True
