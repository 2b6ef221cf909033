"""The stateful proxy core (RFC 3261 §16), sans-I/O.

Bytes and flows in (``receive``), bytes and destinations out (``outgoing``), one timer
(``get_timer``/``handle_timer``). It parses, keeps transactions through the
:class:`TransactionLayer`, runs the routing module, forks, picks the best response,
propagates CANCEL and forwards responses. The asyncio adapter in ``server/app.py`` only
moves bytes and fires the timer.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .._common.addr import canonical_host, host_for_uri, is_ip, is_ipv6, strip_brackets
from .._common.clock import Clock
from .._common.histogram import SIP_RESPONSE_BUCKETS, Histogram, Observed
from .._common.ids import TokenSource
from ..config import Config
from ..config.dispatcher import status_matches
from ..errors import ParseError, StorageError
from ..media.relay import Flags
from ..sip import auth as digest
from ..sip import transaction
from ..sip import txevents as tx
from ..sip.flow import Flow, Target
from ..sip.headers import NameAddr
from ..sip.message import Request, Response, check_response, error_response, make_response, parse
from ..sip.uri import SipUri
from . import forwarding, nat, pike, ratelimit, registrar, topology
from .cluster import NODE_SIGNATURE, FlowRoute, is_node_user
from .context import BranchTarget, ReplyContext, RequestContext
from .dialog import EARLY, TRYING, DialogTable
from .dispatcher import Dispatcher
from .identity import Identity, Listener
from .location import Binding, LocationStore, SubscriberStore
from .route_stamp import PARAM as STAMP_PARAM
from .route_stamp import RouteStamp
from .routing import Router
from .services import ProxyServices

log = logging.getLogger(__name__)

# save()'s own NAT test: private Contact, Via host or port not the source, WebSocket
# (Kamailio's usual nat_uac_test("19") plus 64).
REGISTER_NAT_FLAGS = nat.CONTACT_PRIVATE | nat.VIA_RECEIVED | nat.VIA_PORT | nat.WEBSOCKET

_FLOOD_LINES = 5  # ban/unban log lines a second at most



# Bytes to put on the wire: back on ``flow``, or to ``target`` (any connection); ``key``
# names the client transaction, so a failed send can be reported. The transaction
# layer's own type, so its sends pass through without a copy each.
Send = tx.Send


@dataclass(frozen=True, slots=True)
class MediaJob:
    """A media-relay step for the adapter: ``await MediaControl.<op>(...)``, then report
    the rewritten SDP (or the error's SIP hint) with :meth:`ProxyCore.media_done`.
    ``delete`` jobs need no report."""

    token: int
    op: str  # "offer" | "answer" | "delete"
    call_id: str
    from_tag: str
    to_tag: str | None = None
    sdp: bytes = b""
    flags: Flags | None = None
    via_branch: str | None = None  # a branch's own offer, its answer, or its deletion (rtpengine's)


MediaContinuation = Callable[[bytes | None, "tuple[int, str] | None", float], None]


@dataclass(frozen=True, slots=True)
class ResolveJob:
    """A branch's next hop named by host, for the adapter to resolve (RFC 3263: NAPTR/SRV
    of ``uri`` when it is what named the hop, else A/AAAA of ``target``); report the
    addresses, in the order to try them, with :meth:`ProxyCore.resolved`."""

    token: int
    target: Target
    uri: SipUri | None = None


ResolveContinuation = Callable[[list[Target], float], None]


@dataclass(slots=True)
class Branch:
    key: Any
    request: Request
    target: BranchTarget | None
    dest: Flow | Target
    fallback: Target | None = None
    provisional: bool = False
    final: Response | None = None
    cancelled: bool = False
    timed_out: bool = False  # Timer C: its 487 stands for a 408 (RFC 3261 §16.8)
    unreachable: bool = False  # never sent (no address, connect failed): its 503 is our own
    via: str | None = None  # with an offer of its own: our Via branch, the relay's via-branch
    media: Flags | None = None  # the flags of that offer
    offered: bool = False  # that offer is at the relay (a leg to release when the branch loses)


@dataclass(slots=True)
class ProxyTransaction:
    """One relayed request and its branches (RFC 3261 §16.6-16.8)."""

    server_key: Any
    request: Request  # as received, after routing edits (Route processing)
    flow: Flow
    record_route: bool
    groups: list[list[BranchTarget]]  # serial forking: later groups wait their turn
    branches: list[Branch] = field(default_factory=list)
    final_sent: bool = False
    best: Response | None = None
    cancelled: bool = False
    next_index: int = 0
    media: Flags | None = None
    socket: Listener | None = None  # the listener its branches leave from (loose_route)
    per_branch: bool = False  # the branches need different media: each gets its own offer
    dialog: bool = False  # an initial INVITE the DialogTable follows
    hide: bool = False  # topology hiding (docs/operations.md, "Topology hiding")
    mask: bool = False  # ... its branches leave with the Call-ID masked
    masked_call_id: str = ""  # ... it came with this masked Call-ID: its responses go back with it

    @property
    def all_final(self) -> bool:
        return all(b.final is not None for b in self.branches)


# An answered INVITE whose every branch is final can only see its winners' 2xx
# retransmissions again (until Timers L and M, 32 s). Each winner is kept as one tuple of
# atoms, which the garbage collector stops tracking, instead of the ProxyTransaction's
# dozen and a half objects: a loaded server holds tens of thousands of them, and every
# full collection walked them all (docs/performance.md, "Garbage collection").
# (request as routed, serialized; server key; flow token; record_route; hide; mask;
#  masked Call-ID; dialog; media flags; the branch's own via-branch and media flags)
Accepted = tuple[bytes, tuple[Any, ...], str, bool, bool, bool, str, bool, "Flags | None", "str | None", "Flags | None"]


def _accepted(ptx: ProxyTransaction, branch: Branch) -> Accepted:
    return (ptx.request.serialize(), tuple(ptx.server_key), ptx.flow.token, ptx.record_route, ptx.hide, ptx.mask,
            ptx.masked_call_id, ptx.dialog, ptx.media, branch.via, branch.media)


def _rebuilt(key: Any, settled: Accepted) -> tuple[ProxyTransaction, Branch] | None:
    """Short-lived state for relaying one 2xx retransmission of a settled INVITE."""
    raw, server_key, flow_token, record_route, hide, mask, masked, dialog, media, via, own_media = settled
    request = parse(raw)
    caller = Flow.from_token(flow_token)
    if not isinstance(request, Request) or caller is None:
        return None  # (serialized by us: not reached)
    ptx = ProxyTransaction(tx.TransactionKey(*server_key), request, caller, record_route, [], final_sent=True,
                           media=media, hide=hide, mask=mask, masked_call_id=masked, dialog=dialog)
    return ptx, Branch(key, request, None, caller, via=via, media=own_media)


_STATUS_PRIORITY = {6: 0, 2: -1}


def _rank(resp: Response) -> tuple[int, int]:
    """Lower is better for RFC 3261 §16.7 step 6 (6xx first, then 3xx < 4xx < 5xx)."""
    cls = resp.status // 100
    return (_STATUS_PRIORITY.get(cls, cls), resp.status)


class ProxyCore:
    """Registrar + stateful proxy over one transaction layer."""

    def __init__(
        self,
        config: Config,
        identity: Identity,
        location: LocationStore,
        subscribers: SubscriberStore,
        router: Router,
        clock: Clock,
        secret: bytes,
        token_source: TokenSource | None = None,
        flood: pike.FloodDetector | None = None,
        dialogs: DialogTable | None = None,
        services: ProxyServices | None = None,
    ) -> None:
        self.config = config
        # the adapter's services hook, given once (proxy/services.py)
        self.services = services = services if services is not None else ProxyServices()
        self.identity = identity
        self.location = location
        self.subscribers = subscribers
        self.router = router
        self.clock = clock
        # /metrics sip_response_seconds{method=}: REGISTER, INVITE (to its first final), other
        self.response_times = {m: Histogram(SIP_RESPONSE_BUCKETS) for m in ("REGISTER", "INVITE", "other")}
        self._token = token_source
        timers = config.sip.timers
        self.tl = transaction.TransactionLayer(
            timers, send_100=True, max_transactions=config.sip.limits.max_transactions, on_final=self._time_response
        )
        self.auth = digest.DigestAuth(
            secret,
            algorithms=tuple(config.auth.algorithms),
            nonce_lifetime=config.auth.nonce_lifetime,
        )
        self.route_stamp = RouteStamp(secret)
        # registrations name this node and their flow in a signed Path entry (docs/cluster.md)
        self.flow_route = FlowRoute(secret)
        # ("auto": where the nodes provably share the location and the secret, Redis)
        self.node_path = config.sip.node_path == "on" or (
            config.sip.node_path == "auto" and bool(config.redis.url and config.redis.location and config.redis.nonces))
        self.topology = topology.TopologyCodec(secret)
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in config.sip.trusted_peers)
        self.flow_alive: Callable[[Flow], bool] = services.flow_alive
        self.media_available = services.media_available
        self.resolve_names = services.resolve_names
        self._resolve_jobs: list[ResolveJob] = []
        self._resolve_waiting: dict[int, ResolveContinuation] = {}
        self._resolve_token = 0
        self._silent: list[Target] = []  # named addresses a branch timed out on (Timer B/F)
        self.dispatcher = Dispatcher(config.dispatcher, identity, token_source) if config.dispatcher.sets else None
        self._refused_log_at = 0.0  # rate limit of the "unparseable message" log line
        self._refused_held = 0
        # shared with the transport, which asks it first (server/app.py builds both)
        self.flood = flood if flood is not None else pike.flood_detector(config.sip)
        self.ratelimit = ratelimit.RateLimiter(
            config.sip.ratelimit, trusted=(*config.sip.flood.trusted, *config.sip.trusted_peers),
            shared=services.pipe_counter,
        )
        self.fraud = ratelimit.FraudGuard(config.sip.fraud)
        self.registrar = registrar.Registrar(location, config.registrar)
        self._flood_log_at = 0.0  # ban/unban lines: at most _FLOOD_LINES a second
        self._flood_lines = 0
        self._flood_held = 0
        self._media_jobs: list[MediaJob] = []
        # record-routed calls (docs/operations.md, "Dialogs"); the adapter passes one on its store
        self.dialogs = dialogs if dialogs is not None else (
            DialogTable(config.dialog, timer_c=timers.timer_c) if config.dialog.enabled else None)
        self._media_waiting: dict[int, MediaContinuation] = {}
        # calls whose media is relayed (insertion-ordered, bounded): True when the offer came
        # from the callee (late offer), so the caller's SDP in ACK or PRACK is the answer
        self._media_calls: dict[str, bool] = {}
        self._media_token = 0
        self._out: list[Send] = []
        self._proxied: dict[Any, ProxyTransaction] = {}
        self._branch_of: dict[Any, tuple[ProxyTransaction, Branch]] = {}
        self._accepted: dict[tuple[Any, ...], Accepted] = {}  # client key → a settled INVITE's winner
        # branches sent to a WebSocket peer, by (transport, ip, port): what fails when it closes
        self._ws_branches: dict[tuple[str, str, int], set[Any]] = {}
        self.counters: dict[str, int] = {
            "sip_requests_received": 0,
            "sip_responses_received": 0,
            "sip_parse_errors": 0,
            "sip_bad_requests": 0,
            "sip_requests_relayed": 0,
            "sip_responses_relayed": 0,
            "sip_local_replies": 0,
            "sip_acks_absorbed": 0,
            "sip_routing_errors": 0,
            "sip_auth_challenges": 0,
            "sip_auth_failures": 0,
            "sip_fraud_refused": 0,
            "sip_topology_tampered": 0,
            "sip_bindings_dropped_on_disconnect": 0,
            "sip_requests_sent": 0,
            "sip_branch_failovers": 0,
            "sip_node_routed": 0,
            "sip_node_route_refused": 0,
        }

    # -- adapter interface -------------------------------------------------------
    def receive(self, data: bytes, flow: Flow, now: float) -> None:
        """One framed SIP message from ``flow``."""
        if not data.startswith(b"SIP/") and not self._count_source(flow, now):
            return  # a request or garbage from a banned source: never parsed
        try:
            msg = parse(data, stream=flow.stream)
        except ParseError as exc:
            self.counters["sip_parse_errors"] += 1
            if data.startswith(b"SIP/") and not self._count_source(flow, now):
                return
            self._log_refused(flow, exc, now)
            if isinstance(exc.hint, tuple):
                self._stateless_error(data, exc, flow)
            return
        if isinstance(msg, Request):
            self.counters["sip_requests_received"] += 1
            self._receive_request(msg, flow, now)
        else:
            self.counters["sip_responses_received"] += 1
            try:
                check_response(msg)
            except ParseError as exc:
                self.counters["sip_parse_errors"] += 1
                log.debug("x bad response from %s: %s", flow.remote, exc)
                self._count_source(flow, now)
                return
            self.tl.receive(msg, flow, now)
        self._drain(now)
        msg.forget_parsed()  # transactions may keep it for 32 s: fewer objects for the GC

    def outgoing(self) -> list[Send]:
        out, self._out = self._out, []
        out.extend(self.tl.outgoing())
        return out

    def get_timer(self) -> float | None:
        tx, ban = self.tl.get_timer(), self.flood.get_timer()
        when = tx if ban is None else ban if tx is None else min(tx, ban)
        if self.dialogs is not None and (at := self.dialogs.next_timer()) is not None:
            # the table keeps wall-clock deadlines (they survive a restart)
            due = self.clock.monotonic() + max(0.0, at - self.clock.wall())
            when = due if when is None else min(when, due)
        return when

    def handle_timer(self, now: float) -> None:
        self.tl.handle_timer(now)
        self.flood.handle_timer(now)
        if self.dialogs is not None:
            for call_id, why in self.dialogs.expired(self.clock.wall()):
                self._end_dialog(call_id, why, now)
        self._drain(now)

    # -- dialogs ----------------------------------------------------------------------
    def end_dialog(self, call_id: str, why: str, now: float) -> bool:
        """End a call from the server (``dlg.end``, a media timeout): BYE to both parties
        of an answered call, its media deleted, its CDR written. False: no such call."""
        if self.dialogs is None or call_id not in self.dialogs.dialogs:
            return False
        self._end_dialog(call_id, why, now)
        self._drain(now)
        return True

    def _end_dialog(self, call_id: str, why: str, now: float) -> None:
        assert self.dialogs is not None
        dialog = self.dialogs.dialogs.get(call_id)
        if dialog is None:
            return
        from_tag = dialog.from_tag
        if dialog.state in (TRYING, EARLY):  # not answered yet: CANCEL what rings
            for ptx in list(self._proxied.values()):
                if ptx.dialog and not ptx.final_sent and ptx.request.get("call-id") == call_id:
                    ptx.cancelled = True
                    self._cancel_pending(ptx, now)
        for bye in self.dialogs.end(call_id, why, self.clock.wall()):
            self._send_own_request(bye.request, bye.dest, now)
        log.info("- [%s] dialog ended by the server: %s", call_id, why)
        if call_id in self._media_calls:
            self._media_job("delete", call_id, from_tag)

    def _send_own_request(self, req: Request, dest_text: str, now: float) -> None:
        """A request of our own (a BYE ending a dialog): along its Route, else to the
        party's flow or address."""
        try:
            if req.get("route"):
                dest: Flow | Target = forwarding.uri_target(forwarding.next_hop(req))
            else:
                found = _dest_of(dest_text)
                if found is None:
                    dest = forwarding.uri_target(forwarding.next_hop(req))
                else:
                    dest = found
        except ParseError as exc:
            log.info("x cannot send %s for %s: %s", req.method, req.get("call-id"), exc)
            return
        outbound = self.identity.listener_for_flow(dest) if isinstance(dest, Flow) else self.identity.listener_for_target(dest)
        forwarding.add_via(req, outbound, forwarding.branch_id(req, 0))
        self.tl.send_request(req, dest, now)
        self.counters["sip_requests_sent"] += 1

    def _dialog_refused(self, ctx: RequestContext) -> bool:
        """The session-interval and concurrency checks of a record-routed INVITE/UPDATE
        (True: answered with 422, 486 or 503)."""
        req, table = ctx.request, self.dialogs
        if table is None or req.method not in ("INVITE", "UPDATE"):
            return False
        try:
            min_se = table.interval_too_small(req)
        except ParseError as exc:
            status, reason = exc.sip_reply()
            self.reply(ctx, status, reason, [])
            return True
        if min_se is not None:
            self.reply(ctx, 422, "Session Interval Too Small", [("Min-SE", str(min_se))])
            return True
        if req.method != "INVITE" or _to_tag_of(req) is not None:
            return False
        refused = table.refuse(ctx.authenticated_user or "", ctx.flow.remote[0])
        if refused is not None:
            status, reason, why = refused
            log.info("x [%s] call refused: %s", req.get("call-id"), why)
            self.reply(ctx, status, reason, [("Reason", why)])
            return True
        return False

    def transport_failed(self, key: Any, now: float) -> None:
        """The adapter could not send a client transaction's request."""
        self.tl.transport_error(key, now)
        self._drain(now)

    def media_jobs(self) -> list[MediaJob]:
        """Media-relay steps to perform (drain after every call that may create them)."""
        jobs, self._media_jobs = self._media_jobs, []
        return jobs

    def resolve_jobs(self) -> list[ResolveJob]:
        """Names to resolve (drain after every call that may create them)."""
        jobs, self._resolve_jobs = self._resolve_jobs, []
        return jobs

    def silent_targets(self) -> list[Target]:
        """Addresses of a name that let a branch time out (Timer B/F, no answer at all):
        the adapter lists them last in later answers for a while, as for a send error
        (drain after every call that may create them)."""
        targets, self._silent = self._silent, []
        return targets

    def resolved(self, token: int, targets: list[Target], now: float) -> None:
        """The addresses of a :class:`ResolveJob`, first to try first ([]: none)."""
        cont = self._resolve_waiting.pop(token, None)
        if cont is not None:
            try:
                cont(targets, now)
            except Exception:
                self.counters["sip_routing_errors"] += 1
                log.exception("resolution continuation failed")
        self._drain(now)

    def media_done(self, token: int, sdp: bytes | None, error: tuple[int, str] | None, now: float) -> None:
        """The result of an offer/answer :class:`MediaJob`: the rewritten SDP, or the
        SIP status and reason to fail the call with."""
        cont = self._media_waiting.pop(token, None)
        if cont is not None:
            try:
                cont(sdp, error, now)
            except Exception:
                self.counters["sip_routing_errors"] += 1
                log.exception("media continuation failed")
        self._drain(now)

    def flow_closed(self, flow: Flow, now: float) -> None:
        """A stream connection ended. Bindings registered over it go, as
        ``registrar.drop_on_disconnect`` says (by default only WebSocket ones: nothing
        else can reach a browser, and a phone on TCP/TLS may be reached on a new
        connection). On a WebSocket, requests still waiting for an answer from that
        peer fail now with 480 instead of at Timer B/F. (A TCP/TLS peer may answer on a
        new connection, RFC 3261 §18.2.2: its branches keep waiting.)"""
        websocket = flow.transport in ("ws", "wss")
        drop = self.config.registrar.drop_on_disconnect
        if drop == "all" or (drop == "ws" and websocket):
            self._drop_bindings_of(flow)
        if not websocket:
            return
        # a branch sent on that flow, or by alias to that peer
        keys = self._ws_branches.pop((flow.transport, *flow.remote), set())
        lost = [key for key in keys if (found := self._branch_of.get(key)) is not None and found[1].final is None]
        for key in lost:
            self._on_branch_failure(key, 503, now)
        self._drain(now)

    def _drop_bindings_of(self, flow: Flow) -> None:
        try:
            for b in self.location.on_flow(flow.token):
                self.location.remove(b.aor, b.contact)
                self.counters["sip_bindings_dropped_on_disconnect"] += 1
                log.info("- binding %s of %s dropped: its %s connection closed", b.contact, b.aor, flow.transport)
        except StorageError as exc:
            log.warning("x could not drop the bindings of closed %s connection %s: %s", flow.transport, flow.remote, exc)

    def media_active(self, call_id: str) -> bool:
        return call_id in self._media_calls

    def _media_job(self, op: str, call_id: str, from_tag: str, to_tag: str | None = None, sdp: bytes = b"",
                   flags: Flags | None = None, then: MediaContinuation | None = None, late_offer: bool = False,
                   via_branch: str | None = None) -> None:
        self._media_token += 1
        self._media_jobs.append(MediaJob(self._media_token, op, call_id, from_tag, to_tag, sdp, flags, via_branch))
        if then is not None:
            self._media_waiting[self._media_token] = then
        if op == "delete" and via_branch is None:  # (a branch's delete leaves the call)
            self._media_calls.pop(call_id, None)
        elif op == "offer":  # (an answer never revives a call: a 2xx retransmitted after the BYE)
            self._media_calls[call_id] = late_offer
            while len(self._media_calls) > 100_000:
                self._media_calls.pop(next(iter(self._media_calls)))

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counters)
        out["sip_proxy_transactions"] = len(self._proxied)
        if self.dialogs is not None:
            out.update(self.dialogs.stats())
        out.update(self.tl.stats())
        out.update(self.flood.stats())
        out.update(self.ratelimit.stats())
        out.update(self.registrar.stats())
        if self.dispatcher is not None:
            out.update(self.dispatcher.stats())
        return out

    # -- inbound requests -----------------------------------------------------------
    def _receive_request(self, req: Request, flow: Flow, now: float) -> None:
        try:
            via = req.top_via
        except ParseError as exc:
            # no usable Via: a response could not find its way back (RFC 3261 §18.2.1)
            self.counters["sip_bad_requests"] += 1
            log.debug("x request without a usable Via from %s: %s", flow.remote, exc)
            return
        forwarding.stamp_received(req, flow.remote[0], flow.remote[1])
        del via
        self.tl.receive(req, flow, now)

    def _log_refused(self, flow: Flow, exc: ParseError, now: float) -> None:
        """One info line per refused message, at most one a second (a flood of garbage
        must not become a flood of log lines); the lines held back are counted in the next."""
        if now < self._refused_log_at:
            self._refused_held += 1
            return
        held, self._refused_held, self._refused_log_at = self._refused_held, 0, now + 1.0
        log.info("x unparseable message from %s %s: %s%s", flow.transport, flow.remote, exc,
                 f" ({held} more not logged)" if held else "")

    def _count_source(self, flow: Flow, now: float) -> bool:
        """Count a request-like message against its source (pike); False when the source
        is banned and the message is to be dropped."""
        if self.flood.request(flow.remote[0], now):
            return True
        self._log_flood(now)
        return False

    def _log_flood(self, now: float) -> None:
        """A line per source banned or unbanned, at most _FLOOD_LINES a second (a flood
        from many sources must not become a flood of log lines)."""
        for ev in self.flood.events():
            if isinstance(ev, pike.SourceBanned) and ev.reason == "operator":
                continue  # the control API logs what the operator did
            if now >= self._flood_log_at:
                self._flood_log_at, self._flood_lines = now + 1.0, 0
            if self._flood_lines >= _FLOOD_LINES:
                self._flood_held += 1
                continue
            self._flood_lines += 1
            held, self._flood_held = self._flood_held, 0
            more = f" ({held} more ban lines not logged)" if held else ""
            if isinstance(ev, pike.SourceBanned):
                cfg = self.config.sip.flood
                if ev.reason == pike.SHARED:
                    why = "banned by another node (redis.bans)"
                elif ev.reason == "scanner":
                    why = "its User-Agent names a SIP scanner"
                elif ev.reason == "auth-failures":
                    why = f"failed digest responses (sip.flood.max_auth_failures {cfg.max_auth_failures} in {cfg.auth_window:g} s, or for a user past max_user_auth_failures)"
                else:
                    limit = cfg.max_requests if ev.reason == "requests" else cfg.max_challenges
                    why = f"more than {limit} {ev.reason} in {cfg.window:g} s"
                log.warning("x source %s banned for %g s: %s%s", ev.source, cfg.ban_time, why, more)
            else:
                log.warning("- source %s unbanned: %d messages dropped while banned%s", ev.source, ev.dropped, more)

    def _stateless_error(self, data: bytes, exc: ParseError, flow: Flow) -> None:
        """Answer a request the codec refused (e.g. a Content-Length larger than the
        datagram, RFC 3261 §18.3) with its hint and a Warning, when it can be answered."""
        resp = error_response(data, exc, to_tag=self._to_tag_for(data), agent=self.config.sip.server_header or "sipedge")
        if resp is None:
            return
        self.counters["sip_bad_requests"] += 1
        self._out.append(Send(resp.serialize(), flow, None))

    def _to_tag_for(self, data: bytes) -> str:
        return hashlib.blake2b(data[:512], digest_size=6).hexdigest()

    def _drain(self, now: float) -> None:
        for ev in self.tl.events():
            try:
                self._dispatch(ev, now)
            except StorageError as exc:
                log.error("storage failure: %s", exc)
            except Exception:  # a bug: log once with context, keep serving
                self.counters["sip_routing_errors"] += 1
                log.exception("error handling %s", type(ev).__name__)
        self._log_flood(now)

    def _dispatch(self, ev: Any, now: float) -> None:
        if isinstance(ev, tx.RequestReceived):
            self._on_request(ev.key, ev.request, ev.flow, now)
        elif isinstance(ev, tx.AckReceived):
            if self._acks_our_reply(ev.request):
                self.counters["sip_acks_absorbed"] += 1  # the ACK of a stateless challenge
            else:
                self._on_stateless_request(ev.request, ev.flow, now)
        elif isinstance(ev, tx.CancelReceived):
            self._on_cancel(ev, now)
        elif isinstance(ev, tx.ResponseReceived):
            self._on_branch_response(ev.key, ev.response, ev.flow, now)
        elif isinstance(ev, tx.StrayResponse):
            if self._count_source(ev.flow, now):  # no transaction asked for it: like a request
                self._forward_stray_response(ev.response, ev.flow, now)
        elif isinstance(ev, tx.TimedOut):
            if ev.timer != "C":
                self._on_branch_failure(ev.key, 408, now)
            elif (found := self._branch_of.get(ev.key)) is not None:
                found[1].timed_out = True  # the layer sent a CANCEL; the 487 that follows is a 408
        elif isinstance(ev, tx.TransportFailed):
            self._on_branch_failure(ev.key, 503, now)
        elif isinstance(ev, tx.Terminated):
            self._unlink_branch(ev.key)
            self._accepted.pop(ev.key, None)
            ptx = self._proxied.get(ev.key)
            if ptx is not None and ptx.final_sent:
                self._proxied.pop(ev.key, None)

    def _on_request(self, key: Any, req: Request, flow: Flow, now: float) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("< %s %s from %s (call %s)", req.method, req.uri, flow.remote, req.get("call-id"))
        self._run_route(self._unmasked(RequestContext(self, req, flow, now, server_key=key)))

    def _on_stateless_request(self, req: Request, flow: Flow, now: float) -> None:
        self._run_route(self._unmasked(RequestContext(self, req, flow, now, stateless=True)))

    def _unmasked(self, ctx: RequestContext) -> RequestContext:
        """A request with a Call-ID we masked (``sip.topology_mask_callid``) is routed,
        followed and accounted under the call's own; its replies get the masked one back."""
        if self.config.sip.topology_mask_callid:
            value = ctx.request.get("call-id")
            original = topology.unmask_call_id(self.topology, value)
            if original is not None and value is not None:
                ctx.request.set("call-id", original)
                ctx.masked_call_id = value
        return ctx

    def set_router(self, router: Router) -> None:
        """Route with ``router`` from now on (a reload of the routing module)."""
        self.router = router

    def _route_request(self, ctx: RequestContext) -> None:
        try:
            self.router.request_route(ctx)
        finally:
            for observer in self.services.route_observers:
                observer.request_routed(ctx)

    def _route_reply(self, rctx: ReplyContext) -> None:
        try:
            if self.router.reply_route is not None:
                self.router.reply_route(rctx)
        finally:
            if not rctx.dropped:
                for observer in self.services.route_observers:
                    observer.reply_routed(rctx)

    def _run_route(self, ctx: RequestContext) -> None:
        try:
            self._route_request(ctx)
        except ParseError as exc:
            status, reason = exc.sip_reply()
            if not ctx.done:
                ctx.reply(status, reason)
            return
        except StorageError as exc:
            log.error("storage failure routing %s: %s", ctx.request.method, exc)
            if not ctx.done:
                ctx.reply(500, "Storage Failure")
            return
        except Exception:
            self.counters["sip_routing_errors"] += 1
            log.exception("routing module raised for %s %s", ctx.request.method, ctx.request.uri)
            if not ctx.done:
                ctx.reply(500, "Routing Error")
            return
        if not ctx.done:
            log.warning("routing module finished %s without reply/relay/drop", ctx.request.method)
            ctx.reply(500, "No Route Decision")

    # -- local replies -----------------------------------------------------------------
    def reply(
        self,
        ctx: RequestContext,
        status: int,
        reason: str | None,
        headers: list[tuple[str, str]],
        forget: bool = False,
    ) -> None:
        """Answer ``ctx``'s request; with ``forget``, statelessly (RFC 3261 §8.2.7: the
        transaction is dropped once the answer is sent, see
        ``TransactionLayer.respond_and_forget``)."""
        if ctx.stateless or ctx.request.method == "ACK":
            return  # ACKs are never answered
        resp = make_response(ctx.request, status, reason, to_tag=self._to_tag(ctx.request))
        if ctx.masked_call_id:
            resp.set("call-id", ctx.masked_call_id)
        for name, value in headers:
            resp.add(name, value)
        if self.config.sip.server_header:
            resp.set("server", self.config.sip.server_header)
        self.counters["sip_local_replies"] += 1
        if self.dialogs is not None and ctx.request.method == "INVITE" and not ctx.has_to_tag:
            try:
                self.dialogs.refused(ctx.request, ctx.authenticated_user or "", ctx.flow.remote[0], status,
                                     resp.reason, self.clock.wall())
            except ParseError:
                pass  # no From to account it to: the 400 says why
        if forget and ctx.server_key is not None:
            self.tl.respond_and_forget(ctx.server_key, resp)
        else:
            self._respond(ctx, resp)
        resp.forget_parsed()

    def _time_response(self, method: str, arrived: float) -> None:
        """A server transaction sent its first final response: time it on the core's
        clock (the ``now`` of a local reply is its request's, the same input)."""
        times = self.response_times
        times.get(method, times["other"]).observe(self.clock.monotonic() - arrived)

    def histograms(self) -> Observed:
        return [("sip_response_seconds", {"method": m}, h) for m, h in self.response_times.items()]

    def _respond(self, ctx: RequestContext, resp: Response) -> None:
        if ctx.server_key is None:
            return
        self.tl.respond(ctx.server_key, resp, ctx.now)

    def _to_tag(self, req: Request) -> str:
        """A stable To tag for our local replies: retransmitted requests get the same
        one, and the ACK of a non-2xx reply (same Request-URI, From tag, Call-ID and
        CSeq number, RFC 3261 §17.1.1.3) can be recognised by it after the transaction
        is gone (:meth:`_acks_our_reply`)."""
        try:
            from_tag = req.from_.tag or ""
            cseq = str(req.cseq.number)
        except ParseError:
            from_tag = cseq = ""
        material = "\x00".join((req.uri, from_tag, req.get("call-id") or "", cseq, "local"))
        return "sE" + hashlib.blake2b(material.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()

    def _acks_our_reply(self, ack: Request) -> bool:
        """Whether ``ack`` acknowledges one of our own stateless non-2xx replies (Kamailio's
        sl module absorbs these the same way): it carries our local To tag."""
        try:
            tag = ack.to.tag
        except ParseError:
            return False
        return tag is not None and tag.startswith("sE") and tag == self._to_tag(ack)

    # -- who may use us ----------------------------------------------------------------
    def is_trusted(self, host: str) -> bool:
        """``host`` is in ``sip.trusted_peers``."""
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(strip_brackets(host))
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._trusted)

    def _stamp_for(self, req: Request) -> str | None:
        try:
            tag = req.from_.tag
        except ParseError:
            return None
        return self.route_stamp.stamp(req.get("call-id") or "", tag) if tag else None

    def stamped_by_us(self, req: Request, entries: tuple[SipUri, ...]) -> bool:
        """One of our Route entries ``req`` followed carries our stamp for its dialog."""
        call_id = req.get("call-id") or ""
        try:
            tags = (req.from_.tag, req.to.tag)
        except ParseError:
            return False
        return any(self.route_stamp.verify(u.params.get(STAMP_PARAM), call_id, tags) for u in entries)

    def topology_restore(self, ctx: RequestContext) -> bool:
        """``ctx.topology_restore()``: :func:`topology.restore_in_dialog`; a parameter
        that does not open is counted and refused (403; an ACK is dropped)."""
        try:
            side = topology.restore_in_dialog(ctx.request, ctx.own_routes, self.topology)
        except (topology.TopologyError, ParseError) as exc:
            self.counters["sip_topology_tampered"] += 1
            log.info("x %s from %s: %s", ctx.method, ctx.flow.remote[0], exc)
            if ctx.method == "ACK":
                ctx.drop()
            else:
                ctx.reply(403, "Bad Topology Parameter")
            return False
        if side is not None:
            ctx.topology_hidden = True
            ctx.mask_call_id = side == topology.OUTSIDE and self.config.sip.topology_mask_callid \
                and not ctx.masked_call_id
        return True

    # -- authentication and registrar ---------------------------------------------------
    def authenticate(self, ctx: RequestContext) -> bool:
        req = ctx.request
        is_register = req.method == "REGISTER"
        header = "authorization" if is_register else "proxy-authorization"
        challenge_header = "WWW-Authenticate" if is_register else "Proxy-Authenticate"
        realm = self._realm(req)
        wall = self.clock.wall()
        outcome = self.auth.verify(
            digest.select_credentials(req.get_all(header), realm),
            method=req.method,
            realm=realm,
            now=wall,
            ha1_lookup=self.subscribers.ha1,
            request_uri=req.uri,
        )
        if outcome.ok:
            if not self._identity_matches(req, outcome.username):
                self.counters["sip_auth_failures"] += 1
                ctx.reply(403, "Identity Mismatch")
                return False
            ctx.authenticated_user = outcome.username
            return True
        if outcome.result is not digest.AuthResult.MISSING:
            self.counters["sip_auth_failures"] += 1
            log.info("auth %s for %r from %s: %s", outcome.result.value, outcome.username, ctx.flow.remote, outcome.detail)
            guess = outcome.result in (digest.AuthResult.BAD_RESPONSE, digest.AuthResult.UNKNOWN_USER)
            if guess and self.flood.auth_failed(ctx.flow.remote[0], outcome.username or "", ctx.now):
                self.drop(ctx)  # a password guesser: banned, and this one goes unanswered
                return False
        status, reason = outcome.result.reply(proxy=not is_register) or (500, "Auth Error")
        if not outcome.result.challenge:
            ctx.reply(status, reason)
            return False
        if not self.flood.challenge(ctx.flow.remote[0], ctx.now):
            # over max_challenges: dropped unanswered, as Kamailio's antiflood recipe does
            # (an answer to a spoofed source is reflected at its victim); banned from now
            self.drop(ctx)
            return False
        self.counters["sip_auth_challenges"] += 1
        challenges = self.auth.challenges(realm, wall, stale=outcome.result.stale)
        # a challenge is sent statelessly (RFC 3261 §8.2.7): an unauthenticated request
        # holds no transaction, and its 407 is not retransmitted to a maybe spoofed source
        self.reply(ctx, status, reason, [(challenge_header, c) for c in challenges], forget=True)
        ctx.done = True
        return False

    def drop(self, ctx: RequestContext) -> None:
        """Discard ``ctx``'s request unanswered, its server transaction too (a
        retransmission is routed, and dropped, afresh)."""
        if ctx.server_key is not None:
            self.tl.discard(ctx.server_key)
        ctx.done = True

    def consume_credentials(self, ctx: RequestContext) -> None:
        """Remove the Proxy-Authorization values for our realm: they were for us, and the
        next hop has no business seeing them. Credentials for other realms stay (RFC 3261
        §22.3: a proxy leaves alone the credentials that are not its own)."""
        req = ctx.request
        realm = self._realm(req)
        values = req.get_all("proxy-authorization")
        if not values:
            return
        kept = []
        for v in values:
            try:
                _, params, _ = digest.parse_auth_params(v)
            except ParseError:
                kept.append(v)
                continue
            if params.get("realm") != realm:
                kept.append(v)
        if len(kept) != len(values):
            req.remove("proxy-authorization")
            for v in kept:
                req.add("Proxy-Authorization", v)

    def _realm(self, req: Request) -> str:
        if self.config.auth.realm:
            return self.config.auth.realm
        try:
            uri = req.from_.uri if req.method != "REGISTER" else req.to.uri
        except ParseError:
            uri = req.ruri
        # canonical, so "127.0.0.1." or "[::ffff:127.0.0.1]" are challenged in the realm
        # of the subscribers they pretend to be
        return host_for_uri(canonical_host(uri.host)) if isinstance(uri, SipUri) else "sipedge"

    def _identity_matches(self, req: Request, username: str) -> bool:
        """The credentials are those of the user the request claims to be from (To for
        REGISTER): same user, at one of our domains, and at the realm's own domain when
        the realm is the request's domain (subscribers are ``user@realm``)."""
        try:
            uri = req.to.uri if req.method == "REGISTER" else req.from_.uri
        except ParseError:
            return False
        if not isinstance(uri, SipUri) or uri.user != username or not self.identity.is_local_domain(uri.host):
            return False
        return bool(self.config.auth.realm) or canonical_host(uri.host) == canonical_host(self._realm(req))

    def save(self, ctx: RequestContext) -> None:
        req = ctx.request
        listener = self.identity.listener_for_flow(ctx.flow)
        # the source is kept when the routing asked (ctx.fix_nated_register()) or the
        # phone is behind a NAT by our own test
        received = ctx.register_received
        if not received and nat.nat_uac_test(req, ctx.flow, REGISTER_NAT_FLAGS):
            received = nat.received_uri(ctx.flow)
        node = self.flow_route.entry(self._node_listener(listener).uri(), ctx.flow.token) if self.node_path else ""
        resp = self.registrar.handle(
            req, self.clock.wall(), flow=ctx.flow.token, received=received, socket=listener.name, node_path=node
        ).response
        if self.config.sip.server_header:
            resp.set("server", self.config.sip.server_header)
        to = resp.get("to")
        if resp.status >= 200 and to is not None and ";tag=" not in to:
            resp.set("to", f"{to};tag={self._to_tag(req)}")
        self._respond(ctx, resp)
        resp.forget_parsed()

    def _node_listener(self, listener: Listener) -> Listener:
        """The listener other nodes reach this one on for a flow that came in on
        ``listener``: itself, or for a WebSocket one a UDP (else TCP, TLS) listener of the
        same host (another node has no WebSocket client to reach us with)."""
        if listener.transport in ("udp", "tcp", "tls"):
            return listener
        for transport in ("udp", "tcp", "tls"):
            for li in self.identity.listeners:
                if li.transport == transport and li.host == listener.host:
                    return li
        return listener

    def _own_node_entry(self, value: str, flow_token: str) -> bool | None:
        """A binding's first Path value: None when it is no node entry, True when it is
        ours for this binding's flow, False when another node's (or not a valid one)."""
        try:
            uri = NameAddr.parse(value, "Path").sip_uri
        except ParseError:
            return None
        if not is_node_user(uri.user):
            return None
        return self.identity.uri_is_me(uri) and self.flow_route.flow_of(uri.user) == flow_token

    def follow_node_path(self, ctx: RequestContext) -> bool:
        """``ctx.follow_node_path()``: see there."""
        req = ctx.request
        routes = req.name_addrs("route")
        top = routes[0].uri if routes else None
        if not isinstance(top, SipUri) or not is_node_user(top.user) or not self.identity.uri_is_me(top):
            return False
        token = self.flow_route.flow_of(top.user)
        flow = Flow.from_token(token) if token is not None else None
        why = ""
        if flow is None:
            why = "its flow token is not signed by our nodes"
        elif not self.flow_route.call_signed(req.get("call-id") or "", top.user or "", top.params.get(NODE_SIGNATURE)):
            why = "no node of ours routed this call to it (is DATA_DIR/nonce.key the same on every node?)"
        elif not self.identity.holds(flow):
            why = "the flow is not on a listener of this node"
        if flow is None or why:
            self.counters["sip_node_route_refused"] += 1
            log.info("x %s from %s refused: a node Path Route, but %s", req.method, ctx.flow.remote[0], why)
            if req.method == "ACK":
                self.drop(ctx)
            else:
                ctx.reply(403, "Bad Node Route")
            return False
        forwarding.set_routes(req, routes[1:])
        ctx.targets = [BranchTarget(dest=flow, nated=True)]
        self.counters["sip_node_routed"] += 1
        return True

    def binding_target(self, b: Binding) -> BranchTarget:
        """Where a registered contact is reached (its Contact is the Request-URI).

        A binding another node saved (its first Path entry names that node,
        docs/cluster.md) through that node, which holds the flow. WebSocket contacts
        only on the connection they registered from. Stream contacts (TCP/TLS) on that
        connection while it lives, else at the Contact address. UDP contacts at their
        Contact, unless it does not name the REGISTER's source (the phone is behind a
        NAT): then at that source, where the NAT binding is."""
        try:
            ruri: SipUri | None = SipUri.parse(b.contact)
        except ParseError:
            ruri = None
        flow = Flow.from_token(b.flow) if b.flow else None
        ours = self._own_node_entry(b.path[0], b.flow) if b.path else None
        if ours:
            b = b.with_changes(path=b.path[1:])  # we hold the flow
        elif ours is False:  # through the node that does (never on its flow: not ours)
            nated = bool(b.received) or (flow is not None and flow.transport in ("ws", "wss"))
            return BranchTarget(ruri=ruri, path=b.path, q=b.q, nated=nated)
        contact = forwarding.uri_target(ruri) if ruri is not None else None
        dest: Flow | Target | None = contact
        fallback: Target | None = None
        if b.path:
            # RFC 3327: through the edge proxies that recorded Path, first hop first (on
            # the connection the REGISTER came through while it lives)
            dest = flow if flow is not None and flow.reliable and self.flow_alive(flow) else None
            return BranchTarget(ruri=ruri, dest=dest, path=b.path, q=b.q)
        if flow is not None:
            if flow.transport in ("ws", "wss"):
                dest = flow
            elif flow.reliable:
                if self.flow_alive(flow):
                    dest, fallback = flow, contact
            elif b.received:
                dest = flow  # behind a NAT: where its binding is
        if isinstance(dest, Target) and b.socket:
            dest = _leave_from(dest, self.identity.listener_by_name(b.socket))  # as it registered
        nated = bool(b.received) or (flow is not None and flow.transport in ("ws", "wss"))
        return BranchTarget(ruri=ruri, dest=dest, path=b.path, q=b.q, fallback=fallback, nated=nated)

    # -- relaying -------------------------------------------------------------------------
    def relay(self, ctx: RequestContext) -> None:
        req = ctx.request
        if ctx.stateless or ctx.server_key is None:
            self._relay_stateless(ctx)
            return
        targets = ctx.targets or [BranchTarget()]
        tracked = False
        if self.dialogs is not None and ctx.record_routed:
            if self._dialog_refused(ctx):
                return
            if req.method == "INVITE" and _to_tag_of(req) is None:
                tracked = self.dialogs.start(req, _dest_text(ctx.flow), ctx.authenticated_user or "", ctx.flow.remote[0],
                                             self.clock.wall()) is not None
        if self.dialogs is not None and _to_tag_of(req) is not None:
            self.dialogs.request(req, self.clock.wall())
        if self.config.routing.forking == "serial" and len(targets) > 1:
            qs = sorted({t.q for t in targets}, reverse=True)
            groups = [[t for t in targets if t.q == q] for q in qs]
        else:
            groups = [targets]
        media, per_branch = ctx.media, False
        if media is not None:  # the branches' own flags (BranchTarget.media): alike, or one offer each
            flags = [_branch_flags(media, t) for group in groups for t in group]
            if all(f == flags[0] for f in flags):
                media = flags[0]
            else:  # (a late offer or a re-offer has one answerer: the call's flags)
                per_branch = req.method == "INVITE" and _has_sdp(req) and _to_tag_of(req) is None
        ptx = ProxyTransaction(ctx.server_key, req, ctx.flow, ctx.record_routed, groups, media=media,
                               socket=ctx.socket, per_branch=per_branch, dialog=tracked, hide=ctx.topology_hidden,
                               mask=ctx.mask_call_id, masked_call_id=ctx.masked_call_id)
        self._proxied[ctx.server_key] = ptx
        if ctx.media is not None and self._media_step_for_request(ptx, ctx):
            return
        self._start_next_group(ptx, ctx.now)

    def _media_step_for_request(self, ptx: ProxyTransaction, ctx: RequestContext) -> bool:
        """Offer the SDP of an INVITE/UPDATE to the relay before forking (True: the
        branches start when the rewritten SDP comes back); BYE deletes the session."""
        req = ptx.request
        call_id = req.get("call-id") or ""
        try:
            from_tag = req.from_.tag or ""
        except ParseError:
            return False
        if req.method in ("BYE",):
            self._media_job("delete", call_id, from_tag)
            return False
        if req.method == "PRACK" and _has_sdp(req) and self._media_calls.get(call_id):
            # the caller's answer to the offer of a reliable provisional (late offer,
            # RFC 3262 §5), as Kamailio's rtpengine_manage does; the offerer's tag is the To tag
            def forward(sdp: bytes | None, error: tuple[int, str] | None, now: float) -> None:
                if sdp is not None:
                    req.body = sdp
                else:
                    log.warning("media answer in PRACK failed for %s: %s", call_id, error)
                self._start_next_group(ptx, now)

            self._media_job("answer", call_id, _to_tag_of(req) or "", from_tag, req.body, ctx.media, forward)
            return True
        if req.method not in ("INVITE", "UPDATE") or not _has_sdp(req):
            return False

        if ptx.per_branch:
            return False  # each branch's offer is made as it starts (_start_branch)
        to_tag = _to_tag_of(req)  # a re-offer names its dialog (the leg of a forked call)

        def then(sdp: bytes | None, error: tuple[int, str] | None, now: float) -> None:
            if ptx.cancelled:  # CANCELled while the offer was at the relay: no branch left
                ptx.final_sent = True
                self._respond_to(ptx, make_response(req, 487, to_tag=self._to_tag(req)), now)
                self._proxied.pop(ptx.server_key, None)
                if error is None and to_tag is None:  # after the offer, so nothing is left
                    self._media_job("delete", call_id, from_tag)
                return
            if error is not None or sdp is None:
                status, reason = error or (500, "Media Relay Error")
                ptx.final_sent = True
                self._respond_to(ptx, make_response(req, status, reason, to_tag=self._to_tag(req)), now)
                self._proxied.pop(ptx.server_key, None)
                return
            req.body = sdp
            self._start_next_group(ptx, now)

        self._media_job("offer", call_id, from_tag, to_tag, req.body, ptx.media, then)
        return True

    def _start_next_group(self, ptx: ProxyTransaction, now: float) -> bool:
        while ptx.groups:
            group = ptx.groups.pop(0)
            started = False
            for target in group:
                started = self._start_branch(ptx, target, now) or started
            if started:
                return True
        return False

    def _start_branch(self, ptx: ProxyTransaction, target: BranchTarget, now: float) -> bool:
        index = ptx.next_index
        ptx.next_index += 1
        req = ptx.request.copy()
        try:
            if target.ruri is not None:
                req.set_uri(target.ruri)
            forwarding.decrement_max_forwards(req)
            if target.path:
                for value in reversed(target.path):
                    req.add("route", value, first=True)
                self._sign_node_route(req)
            to_node = self.node_path and self._next_is_node(req)
            hop: SipUri | None = None
            if target.dest is None:
                hop = forwarding.next_hop(req)
                dest: Flow | Target = forwarding.uri_target(hop)
            else:
                dest = target.dest
            dest = _leave_from(dest, ptx.socket)
        except ParseError as exc:
            resp = Response(*exc.hint) if isinstance(exc.hint, tuple) else Response(400)
            self._record_branch_final(ptx, Branch(None, req, target, Target("udp", "", 0), final=resp), now)
            return False
        if self.resolve_names and isinstance(dest, Target) and not is_ip(strip_brackets(dest.host)):
            self._resolve_branch(ptx, target, dest, hop, now)
            return True
        inbound = self.identity.listener_for_flow(ptx.flow)
        outbound = (
            self.identity.listener_for_flow(dest) if isinstance(dest, Flow) else self.identity.listener_for_target(dest)
        )
        if ptx.record_route and req.method in ("INVITE", "SUBSCRIBE", "REFER", "NOTIFY", "UPDATE"):
            forwarding.record_route(req, inbound, outbound, self._stamp_for(ptx.request))
        if ptx.hide:
            self._hide_request(req, outbound, ptx.record_route and _to_tag_of(req) is None, bool(ptx.masked_call_id))
            if ptx.mask:
                req.set("call-id", topology.mask_call_id(self.topology, req.get("call-id") or ""))
        via = forwarding.branch_id(ptx.request, index)
        forwarding.add_via(req, outbound, via, self.flow_route.sign_hop(via) if to_node else None)
        if ptx.dialog and self.dialogs is not None:
            self.dialogs.relayed(ptx.request.get("call-id") or "", req)
        branch = Branch(None, req, target, dest, target.fallback)
        if ptx.per_branch:
            self._offer_for_branch(ptx, branch, via, now)
        else:
            self._send_branch(ptx, branch, now)
        return True

    def _sign_node_route(self, req: Request) -> None:
        """A top Route that is another node's Path entry gets ``ns``, our MAC of this call
        and the entry: that node sends on the flow only what one of ours routed."""
        top = req.name_addrs("route")[0]
        uri = top.uri
        if isinstance(uri, SipUri) and is_node_user(uri.user) and not self.identity.uri_is_me(uri):
            signed = uri.with_params(**{NODE_SIGNATURE: self.flow_route.sign_call(req.get("call-id") or "", uri.user or "")})
            req.replace_first("route", str(top.with_uri(signed)))

    def _next_is_node(self, req: Request) -> bool:
        """The request leaves for another node of ours: its top Route is a node Path
        entry, or a Record-Route entry stamped for this dialog with our key (the nodes
        share it) that is not ours."""
        routes = req.name_addrs("route")
        uri = routes[0].uri if routes else None
        if not isinstance(uri, SipUri) or self.identity.uri_is_me(uri):
            return False
        return is_node_user(uri.user) or (STAMP_PARAM in uri.params and self.stamped_by_us(req, (uri,)))

    def from_node(self, msg: Request | Response) -> bool:
        """The top Via carries a node's ``nd``: a request from another node of ours, or
        the response to one we sent to a node. NAT helpers leave it alone: the Contact is
        a party's behind that node, which handled its NAT."""
        try:
            via = msg.top_via
        except ParseError:
            return False
        return self.flow_route.hop_signed(via.branch, via.params.get(forwarding.NODE_HOP))

    def _resolve_branch(self, ptx: ProxyTransaction, target: BranchTarget, dest: Target, hop: SipUri | None,
                        now: float) -> None:
        """A branch to a name waits (a placeholder without a transaction) for its addresses:
        it then leaves for the first, the others ahead of its failover list."""
        waiting = Branch(None, ptx.request, target, dest)
        ptx.branches.append(waiting)
        self._resolve_token += 1
        self._resolve_jobs.append(ResolveJob(self._resolve_token, dest, hop))

        def then(targets: list[Target], later: float) -> None:
            if waiting.cancelled or ptx.cancelled or ptx.final_sent:
                self._record_branch_final(ptx, waiting, later, make_response(ptx.request, 487))
            elif not targets:
                log.info("x [%s] %s: %s resolves to no address", ptx.request.get("call-id"), ptx.request.method,
                         dest.host)
                if not self._failover(ptx, waiting, later):
                    waiting.unreachable = True
                    self._record_branch_final(ptx, waiting, later, make_response(ptx.request, 503))
            else:
                ptx.branches.remove(waiting)
                first, *rest = targets
                self._start_branch(ptx, replace(target, dest=first, failover=(*rest, *target.failover)), later)

        self._resolve_waiting[self._resolve_token] = then

    def _failover(self, ptx: ProxyTransaction, branch: Branch, now: float) -> bool:
        """Try the next of the branch's failover list instead (same transaction; RFC 3263
        §4.3, Kamailio's dispatcher failover and tm DNS failover). False: none left, or
        the call is over."""
        target = branch.target
        if target is None or not target.failover or ptx.cancelled or ptx.final_sent or branch.cancelled:
            return False
        if branch.key is not None:
            self._unlink_branch(branch.key)
        if branch in ptx.branches:
            ptx.branches.remove(branch)
        self._release_branch_media(ptx, branch)
        self.counters["sip_branch_failovers"] += 1
        nxt = replace(target, dest=target.failover[0], failover=target.failover[1:])
        log.info("- [%s] %s to %s failed; trying %s", ptx.request.get("call-id"), ptx.request.method,
                 _dest_address(branch.dest), _dest_address(target.failover[0]))
        self._start_branch(ptx, nxt, now)
        return True

    def _send_branch(self, ptx: ProxyTransaction, branch: Branch, now: float) -> None:
        req, dest = branch.request, branch.dest
        key = self.tl.send_request(req, dest, now)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("> %s %s to %s (call %s)", req.method, req.uri, dest, req.get("call-id"))
        req.forget_parsed()
        branch.key = key
        if branch not in ptx.branches:
            ptx.branches.append(branch)
        self._branch_of[key] = (ptx, branch)
        if dest.transport in ("ws", "wss"):
            self._ws_branches.setdefault((dest.transport, *_dest_address(dest)), set()).add(key)
        self.counters["sip_requests_relayed"] += 1

    def _offer_for_branch(self, ptx: ProxyTransaction, branch: Branch, via: str, now: float) -> None:
        """rtpengine's ``via-branch``: the relay rewrites the caller's offer for this branch
        alone, with its own flags (``BranchTarget.media``), and the branch's INVITE leaves
        with that SDP. The branch waits (no client transaction yet) until then."""
        req = ptx.request
        branch.via, branch.media = via, _branch_flags(ptx.media, branch.target)
        ptx.branches.append(branch)
        call_id = req.get("call-id") or ""
        from_tag = _from_tag_of(req)

        def then(sdp: bytes | None, error: tuple[int, str] | None, later: float) -> None:
            branch.offered = error is None and sdp is not None
            if branch.cancelled or ptx.cancelled or ptx.final_sent:
                # answered elsewhere or CANCELled meanwhile: this branch never rings
                self._release_branch_media(ptx, branch)
                self._record_branch_final(ptx, branch, later, _branch_reply(branch, 487))
            elif sdp is None:
                log.warning("media offer for branch %s of %s failed: %s", via, call_id, error)
                branch.unreachable = True  # never sent: the relay's 503 is passed on as it is
                self._record_branch_final(ptx, branch, later, _branch_reply(branch, *(error or (500, "Media Relay Error"))))
            else:
                branch.request.body = sdp
                self._send_branch(ptx, branch, later)

        self._media_job("offer", call_id, from_tag, None, req.body, branch.media, then, via_branch=via)

    def _release_branch_media(self, ptx: ProxyTransaction, branch: Branch) -> None:
        """The relay's leg (and ports) of a branch offered on its own that lost, failed or
        never rang."""
        if not branch.offered:
            return
        branch.offered = False
        self._media_job("delete", ptx.request.get("call-id") or "", _from_tag_of(ptx.request),
                        via_branch=branch.via)

    def _relay_stateless(self, ctx: RequestContext) -> None:
        """Forward without a transaction (ACK for 2xx, RFC 3261 §16.11)."""
        req = ctx.request.copy()
        try:
            target = ctx.targets[0] if ctx.targets else BranchTarget()
            if target.ruri is not None:
                req.set_uri(target.ruri)
            forwarding.decrement_max_forwards(req)
            dest = target.dest if target.dest is not None else forwarding.uri_target(forwarding.next_hop(req))
            dest = _leave_from(dest, ctx.socket)
        except ParseError as exc:
            log.debug("x cannot forward %s statelessly: %s", req.method, exc)
            return
        outbound = self.identity.listener_for_flow(dest) if isinstance(dest, Flow) else self.identity.listener_for_target(dest)
        if ctx.topology_hidden:
            self._hide_request(req, outbound, False, bool(ctx.masked_call_id))
        forwarding.add_via(req, outbound, forwarding.branch_id(ctx.request, 0))
        if self.dialogs is not None and req.method == "ACK":
            self.dialogs.request(req, self.clock.wall())

        def send(sdp: bytes | None = None, error: tuple[int, str] | None = None, now: float = 0.0) -> None:
            if sdp is not None:
                req.body = sdp
            elif error is not None:
                log.warning("media answer in ACK failed for %s: %s", req.get("call-id"), error)
            self.counters["sip_requests_relayed"] += 1
            if ctx.mask_call_id:
                req.set("call-id", topology.mask_call_id(self.topology, req.get("call-id") or ""))
            data = req.serialize()
            self._out.append(Send(data, dest, None) if isinstance(dest, Flow) else Send(data, None, dest))

        if ctx.media is not None and req.method == "ACK" and _has_sdp(req):
            # the caller's answer to a late offer (the offerer's tag is the To tag)
            try:
                offerer, answerer = req.to.tag or "", req.from_.tag or ""
            except ParseError:
                send()
                return
            self._media_job("answer", req.get("call-id") or "", offerer, answerer, req.body, ctx.media, send)
            return
        send()

    # -- responses ---------------------------------------------------------------------------
    def _on_branch_response(self, key: Any, resp: Response, flow: Flow | None, now: float) -> None:
        found = self._branch_of.get(key)
        settled = self._accepted.get(key) if found is None else None
        if found is None and (settled is None or not 200 <= resp.status < 300 or (found := _rebuilt(key, settled)) is None):
            return
        ptx, branch = found
        resp = resp.copy()
        from_node = self.from_node(resp)  # (our Via said the branch went to another node)
        resp.pop_first("via")  # our own Via (RFC 3261 §16.7 step 3)
        if ptx.mask:  # (whatever the outside answers: it is the call's own Call-ID inside)
            resp.set("call-id", ptx.request.get("call-id") or "")
        if settled is not None:  # a 2xx again from a settled INVITE's winner: relayed as the first was
            self._forward_response(ptx, resp, now, flow, branch, from_node)
            return
        if resp.status < 200:
            branch.provisional = True
            if resp.status == 100:
                return
            if not ptx.final_sent:
                self._forward_response(ptx, resp, now, flow, branch, from_node)
            return
        if branch.final is not None and resp.status >= 300:
            return
        if branch.timed_out and resp.status >= 300:
            # Timer C fired: the caller is told the callee did not answer in time, not that
            # it cancelled (RFC 3261 §16.8; Kamailio's tm does the same)
            resp.status, resp.reason = 408, "Request Timeout"
        if 200 <= resp.status < 300:
            branch.final = resp
            if ptx.dialog and self.dialogs is not None:
                self.dialogs.answered_by(ptx.request.get("call-id") or "", _dest_text(branch.dest))
            self._forward_response(ptx, resp, now, flow, branch, from_node)
            ptx.final_sent = True
            self._cancel_pending(ptx, now, except_branch=branch)
            for other in ptx.branches:  # the losers' media goes now, not at the BYE
                if other is not branch:
                    self._release_branch_media(ptx, other)
            self._settle(ptx)
            return
        if (not branch.timed_out and branch.target is not None
                and status_matches(branch.target.failover_codes, resp.status) and self._failover(ptx, branch, now)):
            return
        self._record_branch_final(ptx, branch, now, resp)

    def _on_branch_failure(self, key: Any, status: int, now: float) -> None:
        found = self._branch_of.get(key)
        if found is None:
            return
        ptx, branch = found
        if branch.final is not None:
            return
        if status == 408 and isinstance(branch.dest, Target) and branch.dest.name:
            self._silent.append(branch.dest)
        if status == 503 and isinstance(branch.dest, Flow) and branch.fallback is not None and branch.target is not None:
            # the registered connection is gone: try the Contact address itself, once
            self._unlink_branch(key)
            ptx.branches.remove(branch)
            retry = BranchTarget(branch.target.ruri, branch.fallback, branch.target.path, branch.target.q,
                                 media=branch.target.media)
            self._release_branch_media(ptx, branch)  # the retry is a new branch, with an offer of its own
            if self._start_branch(ptx, retry, now):
                return
            ptx.branches.append(branch)
        if self._failover(ptx, branch, now):
            return  # a timeout or an unreachable address: the next one
        if status == 503 and (isinstance(branch.dest, Flow) or branch.dest.transport in ("ws", "wss")):
            # a flow-only peer (a registered flow, or a WebSocket client reached by its
            # alias) is unreachable once its connection is gone: nothing else can reach it
            status = 480
        resp = make_response(branch.request, status)
        resp.pop_first("via")
        branch.unreachable = status == 503
        self._record_branch_final(ptx, branch, now, resp)

    def _record_branch_final(self, ptx: ProxyTransaction, branch: Branch, now: float, resp: Response | None = None) -> None:
        if resp is not None:
            branch.final = resp
        if branch not in ptx.branches:
            ptx.branches.append(branch)
        final = branch.final
        assert final is not None
        if final.status >= 300:
            self._release_branch_media(ptx, branch)
        if ptx.best is None or _rank(final) < _rank(ptx.best):
            ptx.best = final
        if final.status >= 600:
            self._cancel_pending(ptx, now, except_branch=branch)
        if ptx.final_sent or not ptx.all_final:
            self._settle(ptx)
            return
        if ptx.best is not None and ptx.best.status < 600 and not ptx.cancelled and self._start_next_group(ptx, now):
            return
        self._send_best(ptx, now)
        self._settle(ptx)

    def _send_best(self, ptx: ProxyTransaction, now: float) -> None:
        best = ptx.best
        if best is None:
            best = make_response(ptx.request, 480)
        out = best.copy()
        if out.status == 503 and not any(b.final is best and b.unreachable for b in ptx.branches):
            # RFC 3261 §16.7 step 6: a downstream 503 is not passed upstream; a next hop
            # we could not reach (nothing resolved, nothing took the request) stays 503
            out.status, out.reason = 500, "Server Internal Error"
        if out.status in (401, 407):
            # RFC 3261 §16.7 step 7: collect every branch's challenges
            for b in ptx.branches:
                if b.final is not None and b.final is not best and b.final.status in (401, 407):
                    for name in ("www-authenticate", "proxy-authenticate"):
                        for v in b.final.get_all(name):
                            out.add(name, v)
        ptx.final_sent = True
        self._forward_response(ptx, out, now)

    def _forward_response(self, ptx: ProxyTransaction, resp: Response, now: float, flow: Flow | None = None,
                          branch: Branch | None = None, from_node: bool = False) -> None:
        if ptx.media is not None:
            call_id = ptx.request.get("call-id") or ""
            if resp.status >= 300:
                if _to_tag_of(ptx.request) is not None and resp.status not in (408, 481):
                    # a refused re-INVITE/UPDATE leaves the established call (and its
                    # media) as it was (RFC 3261 §14.1); a 481 or 408 ends the dialog
                    # (§12.2.1.2), and its media goes with it
                    self._forward_response_now(ptx, resp, now, flow, from_node)
                    return
                try:
                    self._media_job("delete", call_id, ptx.request.from_.tag or "")
                except ParseError:
                    pass
            elif resp.status > 100 and _has_sdp(resp) and ptx.request.method in ("INVITE", "UPDATE"):
                try:
                    from_tag, to_tag = ptx.request.from_.tag or "", resp.to.tag or ""
                except ParseError:
                    from_tag = to_tag = ""

                # An INVITE without SDP makes the SDP of its answer the callee's offer
                # (late offer, RFC 3261 §13.2.1); the ACK carries the caller's answer.
                late_offer = ptx.request.method == "INVITE" and not _has_sdp(ptx.request)
                op = "offer" if late_offer else "answer"

                def then(sdp: bytes | None, error: tuple[int, str] | None, later: float) -> None:
                    if sdp is not None:
                        resp.body = sdp
                    else:
                        log.warning("media %s failed for %s: %s", op, call_id, error)
                    self._forward_response_now(ptx, resp, later, flow, from_node)

                offerer, answerer = (to_tag, from_tag) if late_offer else (from_tag, to_tag)  # as ng's tags
                own = branch if branch is not None and branch.via is not None else None  # offered per branch
                media = own.media if own is not None and own.media is not None else ptx.media
                flags = media if late_offer else media.for_answer()
                self._media_job(op, call_id, offerer, answerer, resp.body, flags, then, late_offer=late_offer,
                                via_branch=own.via if own is not None else None)
                return
        self._forward_response_now(ptx, resp, now, flow, from_node)

    def _forward_response_now(self, ptx: ProxyTransaction, resp: Response, now: float, flow: Flow | None,
                              from_node: bool = False) -> None:
        if self.router.reply_route is not None or self.services.route_observers:
            rctx = ReplyContext(self, resp, ptx.request, now, flow, from_node=from_node)
            try:
                self._route_reply(rctx)
            except Exception:
                log.exception("reply_route raised")
            if rctx.dropped:
                if resp.status < 200:
                    return
                # a final response is what ends the caller's transaction: as in Kamailio,
                # only provisional ones can be dropped
                log.warning("reply_route dropped a final %d response; it is forwarded anyway", resp.status)
        self.counters["sip_responses_relayed"] += 1
        if self.dialogs is not None and resp.status > 100:
            try:
                self.dialogs.response(ptx.request, resp, self.clock.wall())
            except ParseError as exc:
                log.debug("x dialog state of %s not updated: %s", ptx.request.get("call-id"), exc)
        if ptx.hide:
            self._hide_response(ptx, resp)
        self._respond_to(ptx, resp, now)
        resp.forget_parsed()
        if resp.status >= 200 and ptx.request.method != "INVITE":
            self._forget(ptx)

    def _respond_to(self, ptx: ProxyTransaction, resp: Response, now: float) -> None:
        """A response to ``ptx``'s sender (with the Call-ID it knows the call by)."""
        if ptx.masked_call_id:
            resp.set("call-id", ptx.masked_call_id)
        self.tl.respond(ptx.server_key, resp, now)

    def _hide_request(self, req: Request, outbound: Listener, initial: bool, outside: bool) -> None:
        """Topology hiding of a request about to leave (before our Via goes on); ``outside``:
        it comes from the side that sees the masked Call-ID."""
        call_id = req.get("call-id") or ""
        topology.hide_vias(req)
        try:
            if initial:
                topology.hide_record_route(req, self.identity.uri_is_me, self.topology, call_id)
        except ParseError:
            req.remove("record-route")  # (sanity_check parsed it: not reached)
        topology.hide_contact(req, outbound.uri, self.topology, call_id, outside)

    def _hide_response(self, ptx: ProxyTransaction, resp: Response) -> None:
        """Topology hiding of a response going back: the request's Vias, the sender's
        Record-Route (the responder's sealed into ours), a Contact of ours."""
        call_id = ptx.request.get("call-id") or ""
        topology.restore_vias(resp, ptx.request)
        try:
            if ptx.record_route and 100 < resp.status < 300 and _to_tag_of(ptx.request) is None:
                topology.restore_record_route(resp, ptx.request, self.identity.uri_is_me, self.topology, call_id)
        except ParseError:
            resp.remove("record-route")
        topology.hide_contact(resp, self.identity.listener_for_flow(ptx.flow).uri, self.topology, call_id, ptx.mask)

    def _settle(self, ptx: ProxyTransaction) -> None:
        """An INVITE answered upstream whose every branch is final: nothing but its winners'
        2xx retransmissions can come (a CANCEL finds it answered: RFC 3261 §9.2), so its
        state goes and each winner becomes an :data:`Accepted` tuple."""
        if not ptx.final_sent or not ptx.all_final or ptx.request.method != "INVITE" or ptx.groups:
            return
        if self._proxied.get(ptx.server_key) is not ptx:
            return  # settled already
        winners = [b for b in ptx.branches if b.final is not None and b.final.status < 300 and b.key is not None]
        for b in winners:
            self._accepted[tuple(b.key)] = _accepted(ptx, b)
        self._forget(ptx)

    def _forget(self, ptx: ProxyTransaction) -> None:
        """A non-INVITE's final response went out: nothing of it is relayed any more (late
        answers of other branches are dropped, RFC 3261 §16.7 step 5, and the transactions
        absorb retransmissions), so it is not kept while they linger (Timer J: 32 s)."""
        if self._proxied.get(ptx.server_key) is ptx:
            del self._proxied[ptx.server_key]
        for b in ptx.branches:
            found = self._branch_of.get(b.key)
            if found is not None and found[0] is ptx:
                self._unlink_branch(b.key)

    def _unlink_branch(self, key: Any) -> None:
        """Forget the branch of client transaction ``key`` (from every index)."""
        found = self._branch_of.pop(key, None)
        if found is None:
            return
        dest = found[1].dest
        if dest.transport in ("ws", "wss"):
            peer = (dest.transport, *_dest_address(dest))
            keys = self._ws_branches.get(peer)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._ws_branches[peer]

    def _forward_stray_response(self, resp: Response, flow: Flow, now: float) -> None:
        """A response with no transaction (e.g. a 2xx retransmission): forward it by its
        Via, statelessly (RFC 3261 §16.11). One Via only: an answer to a request we sent
        statelessly ourselves (a keepalive OPTIONS), offered to ``services.local_responses``.
        A Via that does not parse drops the response: there is no way back to send it."""
        try:
            vias = resp.vias
        except ParseError as exc:
            self.counters["sip_parse_errors"] += 1
            log.debug("x stray response from %s with a bad Via: %s", flow.remote, exc)
            return
        if len(vias) < 2:
            if vias:
                for consumer in self.services.local_responses:
                    if consumer(resp, flow, now):
                        break
            return
        top = vias[0]
        if not self.identity.is_me(top.host, top.port, top.transport.lower()):
            return
        resp = resp.copy()
        resp.pop_first("via")
        target = forwarding.response_target(vias[1])
        self.counters["sip_responses_relayed"] += 1
        self._out.append(Send(resp.serialize(), None, target))

    # -- CANCEL and Timer C ---------------------------------------------------------------------
    def _on_cancel(self, ev: Any, now: float) -> None:
        cancel_key, invite_key = ev.cancel_key, ev.invite_key
        if invite_key is None:
            self.tl.respond(cancel_key, make_response(ev.request, 481, to_tag=self._to_tag(ev.request)), now)
            return
        self.tl.respond(cancel_key, make_response(ev.request, 200, to_tag=self._to_tag(ev.request)), now)
        ptx = self._proxied.get(invite_key)
        if ptx is None:
            invite = self.tl.request(invite_key)
            if invite is not None:
                self.tl.respond(invite_key, make_response(invite, 487, to_tag=self._to_tag(invite)), now)
            return
        if ptx.final_sent:
            return  # answered already: the CANCEL has no effect on it (RFC 3261 §9.2)
        ptx.cancelled = True
        ptx.groups.clear()
        if not ptx.branches:
            return  # its offer is still at the relay; the answer to that ends it with 487
        self._cancel_pending(ptx, now)
        if ptx.media is not None and _to_tag_of(ptx.request) is None:  # not a re-INVITE's
            try:
                self._media_job("delete", ptx.request.get("call-id") or "", ptx.request.from_.tag or "")
            except ParseError:
                pass

    def _cancel_pending(self, ptx: ProxyTransaction, now: float, except_branch: Branch | None = None) -> None:
        """CANCEL every unanswered INVITE branch (the layer waits for a provisional
        response before sending it, RFC 3261 §9.1)."""
        ptx.groups.clear()
        for b in ptx.branches:
            if b is except_branch or b.final is not None or b.cancelled or b.request.method != "INVITE":
                continue
            b.cancelled = True
            if b.key is not None:  # (else its offer is at the relay: it ends when that comes back)
                self.tl.cancel(b.key, now)


def _leave_from(dest: Flow | Target, socket: Listener | None) -> Flow | Target:
    """A UDP target to be sent from ``socket``: as a flow from that listener, so a proxy
    on several interfaces sends a dialog's requests, or a phone's calls, from the address
    the other side knows (a NAT drops anything else). Other targets are unchanged."""
    if socket is None or socket.transport != "udp" or not isinstance(dest, Target) or dest.transport != "udp":
        return dest
    host = strip_brackets(dest.host)
    if not is_ip(host) or is_ipv6(host) != socket.ipv6:
        return dest
    return Flow("udp", (socket.host, socket.port), (host, dest.port))


def _dest_address(dest: Flow | Target) -> tuple[str, int]:
    return dest.remote if isinstance(dest, Flow) else (dest.host, dest.port)


def _dest_text(dest: Flow | Target) -> str:
    """A destination as the dialog store keeps it (:attr:`~sipedge.proxy.dialog.Leg.dest`)."""
    if isinstance(dest, Flow):
        return "flow:" + dest.token
    return f"target:{dest.transport}:{dest.port}:{dest.host}"


def _dest_of(text: str) -> Flow | Target | None:
    kind, _, rest = text.partition(":")
    if kind == "flow":
        return Flow.from_token(rest)
    if kind == "target":
        transport, _, rest = rest.partition(":")
        port, _, host = rest.partition(":")
        if port.isdigit() and host:
            return Target(transport, host, int(port))
    return None


def _branch_flags(call: Flags | None, target: BranchTarget | None) -> Flags | None:
    """A branch's media flags: its target's own (``BranchTarget.media``), else the call's."""
    return target.media if target is not None and target.media is not None else call


def _branch_reply(branch: Branch, status: int, reason: str | None = None) -> Response:
    """Our own final response for a branch that never left (as if from it: no Via of ours)."""
    resp = make_response(branch.request, status, reason)
    resp.pop_first("via")
    return resp


def _from_tag_of(req: Request) -> str:
    try:
        return req.from_.tag or ""
    except ParseError:
        return ""


def _to_tag_of(req: Request) -> str | None:
    """The To tag of a request (None outside a dialog, or when To does not parse)."""
    try:
        return req.to.tag or None
    except ParseError:
        return None


def _has_sdp(msg: Request | Response) -> bool:
    return bool(msg.body) and (msg.content_type or "application/sdp") == "application/sdp"
