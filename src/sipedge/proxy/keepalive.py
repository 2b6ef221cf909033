"""Keepalive of NAT bindings, sans-I/O (the jobs of nathelper's pinger and
nat_traversal's keepalive endpoints). See docs/nat.md.

Two sources of clients to keep alive, both reduced to the flow to ping:

* **Registered contacts** (nathelper): on every tick the location service is read and
  each binding whose Contact does not name the address it registered from (NATed; every
  binding with ``ping_nated_only`` off) gets a ping on the flow it registered on.
  WebSocket bindings are left to WebSocket pings. With SIP pings and
  ``keepalive_timeout``, a contact that has answered none for that long is removed.
* **Endpoints** (nat_traversal): a routing module calls ``ctx.nat_keepalive()`` for a
  REGISTER, SUBSCRIBE or initial INVITE. The endpoint (the flow of the request) is kept
  alive while any reason lasts: its registration (until the bindings from that flow
  expire), each subscription accepted with a 2xx (until its Expires, ended by an
  unsubscribe or a terminated NOTIFY) and each dialog started with a 2xx (until a BYE, or
  ``dialog_lifetime``). UDP endpoints are written through a :class:`EndpointStore` and
  loaded back at start, so a restart keeps pinging them (a TCP/TLS endpoint's connection
  closes with the process; WebSocket clients are left to WebSocket pings altogether).

A flow is pinged once per interval however many reasons it has. Pings are 4-byte zero
UDP datagrams (a double CRLF on TCP/TLS, RFC 5626 §4.4.1) or a stateless OPTIONS/NOTIFY
whose answer the proxy core hands to its local-response consumers
(:class:`KeepaliveHooks`, given to the core at construction) and so to
:meth:`KeepaliveCore.response_received`.

Time: ``now`` is wall-clock epoch seconds everywhere here (endpoint expiries are stored
and survive a restart); the adapter arms its timer with ``get_timer() - clock.wall()``.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .._common.addr import host_for_uri, strip_brackets
from .._common.clock import Clock
from .._common.ids import TokenSource, token
from ..config.nat import NatConfig
from ..errors import ParseError
from ..sip.flow import Flow
from ..sip.message import Request, Response
from ..sip.uri import SipUri
from .cluster import held_elsewhere
from .identity import Identity
from .location import Binding, LocationStore

if TYPE_CHECKING:
    from .context import ReplyContext, RequestContext

log = logging.getLogger(__name__)

UDP_PING = b"\x00\x00\x00\x00"
STREAM_PING = b"\r\n\r\n"
PENDING_TTL = 64.0  # seconds a request marked for keepalive waits for its final answer
MAX_PENDING = 100_000  # requests waiting for that answer, at most
CALL_ID_PREFIX = "sipedge-ka-"


@dataclass(slots=True)
class Endpoint:
    """One NATed client kept alive, and why (nat_traversal's reasons)."""

    token: str  # Flow.token of the flow to ping
    registered_until: float = 0.0
    subscriptions: dict[str, float] = field(default_factory=dict)  # key -> expires at
    dialogs: dict[str, float] = field(default_factory=dict)  # key -> expires at

    def prune(self, now: float) -> bool:
        """Forget expired reasons; True when some remain."""
        if self.registered_until <= now:
            self.registered_until = 0.0
        self.subscriptions = {k: t for k, t in self.subscriptions.items() if t > now}
        self.dialogs = {k: t for k, t in self.dialogs.items() if t > now}
        return self.alive

    @property
    def alive(self) -> bool:
        return self.registered_until > 0 or bool(self.subscriptions) or bool(self.dialogs)

    def copy(self) -> Endpoint:
        return dataclasses.replace(self, subscriptions=dict(self.subscriptions), dialogs=dict(self.dialogs))


class EndpointStore(Protocol):
    """Where endpoints are kept across restarts (``store/keepalive.py``)."""

    def load(self) -> list[Endpoint]: ...

    def save(self, endpoint: Endpoint) -> None: ...

    def delete(self, token: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Ping:
    """Bytes to send on ``flow`` (never anywhere else: the NAT binding is the point)."""

    data: bytes
    flow: Flow


@dataclass(slots=True)
class _Pinged:
    """SIP-ping bookkeeping of one flow (keepalive_timeout)."""

    first_sent: float
    last_answer: float = 0.0


@dataclass(frozen=True, slots=True)
class _Pending:
    flow: Flow
    created: float


def binding_is_nated(b: Binding) -> bool:
    """Does a binding's Contact fail to name the address it registered from? (The
    registrar keeps that address with the binding: ``flow`` and ``received``.)
    WebSocket bindings are NATed by nature."""
    flow = Flow.from_token(b.flow) if b.flow else None
    if flow is None:
        return False
    if flow.transport in ("ws", "wss"):
        return True
    try:
        uri = SipUri.parse(b.contact)
    except ParseError:
        return True
    if "alias" in uri.params:
        return True
    port = uri.port if uri.port is not None else (5061 if uri.scheme == "sips" else 5060)
    return strip_brackets(uri.host).lower() != strip_brackets(flow.remote[0]).lower() or port != flow.remote[1]


def _dialog_tags(req: Request | Response) -> tuple[str, str, str]:
    """``(call_id, from_tag, to_tag)`` ('' when missing)."""
    try:
        call_id = req.call_id
    except ParseError:
        call_id = ""
    try:
        ftag = req.from_.tag or ""
    except ParseError:
        ftag = ""
    try:
        ttag = req.to.tag or ""
    except ParseError:
        ttag = ""
    return call_id, ftag, ttag


def _expires_of(resp: Response, req: Request) -> int | None:
    for m in (resp, req):
        try:
            v = m.expires
        except ParseError:
            v = None
        if v is not None:
            return v
    return None


class KeepaliveCore:
    """Decides which flows to ping and when; see the module docstring.

    Inputs: :meth:`request_routed` / :meth:`reply_routed` (from the proxy core, through
    :class:`KeepaliveHooks`), :meth:`response_received` (answers to SIP pings),
    :meth:`handle_timer`. Outputs: :meth:`outgoing` (pings), :meth:`get_timer`,
    :meth:`stats`. Removing an unanswering contact is a write to the location store.
    """

    def __init__(
        self,
        config: NatConfig,
        location: LocationStore,
        identity: Identity,
        store: EndpointStore | None = None,
        token_source: TokenSource = secrets.token_bytes,
        now: float = 0.0,
        slices: int = 1,
    ) -> None:
        self.config = config
        self.location = location
        self.identity = identity
        self.store = store
        self._token = token_source
        self._endpoints: dict[str, Endpoint] = {}
        self._pending: dict[tuple[str, int, str], _Pending] = {}
        self._pinged: dict[str, _Pinged] = {}
        self._ping_calls: dict[str, str] = {}  # Call-ID of a SIP ping -> flow token
        self._out: list[Ping] = []
        # pings are spread over the interval: each flow belongs to one of ``slices``
        # slots (by a hash of its token) and a timer fires once per slot
        self.slices = max(1, slices)
        self._slice = 0
        # registered contacts by slot, read from the location service once per round of
        # slots (at slot 0), not once per slot: one scan per interval however many slots
        self._round: list[list[tuple[Flow, Binding]]] | None = None
        self._step = config.keepalive_interval / self.slices
        self._next_tick: float | None = now + self._step if config.keepalive_interval > 0 else None
        self._seq = 0
        self.counters: dict[str, int] = {
            "keepalive_pings_sent": 0,
            "keepalive_sip_pings_sent": 0,
            "keepalive_ping_answers": 0,
            "keepalive_ping_send_failures": 0,
            "keepalive_contacts_dropped": 0,
            "keepalive_store_errors": 0,
        }
        if store is not None:
            for ep in store.load():
                if ep.prune(now):
                    self._endpoints[ep.token] = ep

    # -- endpoints (nat_traversal) ------------------------------------------------------
    def request_routed(self, req: Request, flow: Flow, requested: bool, now: float) -> None:
        """After ``request_route`` ran for ``req`` from ``flow``; ``requested`` is whether
        it called ``ctx.nat_keepalive()``."""
        pinged = self._pinged.get(flow.token)
        if pinged is not None:
            # a request from the flow (a REGISTER refresh, a call) answers for it as well as
            # a ping's reply would: usrloc refreshes its keepalive time on every update too
            pinged.last_answer = now
        if not self.config.endpoints or self.config.keepalive_interval <= 0:
            return  # nothing would ever ping them
        method = req.method
        call_id, ftag, ttag = _dialog_tags(req)
        if method == "BYE" and ttag:
            self._end_dialog(call_id, ftag, ttag, now)
        if not requested or flow.transport in ("ws", "wss"):
            return  # (a WebSocket is kept open by WebSocket pings: nothing here pings it)
        if method == "REGISTER":
            self._registration_saved(req, flow, now)
            return
        if method in ("INVITE", "SUBSCRIBE"):
            try:
                key = (call_id, req.cseq.number, method)
            except ParseError:
                return
            if len(self._pending) >= MAX_PENDING:
                self._pending = {k: p for k, p in self._pending.items() if now - p.created < PENDING_TTL}
                if len(self._pending) >= MAX_PENDING:
                    return  # a flood of unanswered requests: keep none of them alive
            self._pending[key] = _Pending(flow, now)

    def reply_routed(self, req: Request | None, resp: Response, now: float) -> None:
        """A response forwarded upstream (reply route): finishes what ``request_routed``
        started (2xx to SUBSCRIBE/INVITE), and ends subscriptions (NOTIFY terminated is
        seen as a request, an unsubscribe by its 2xx)."""
        if req is None or not self.config.endpoints or self.config.keepalive_interval <= 0 or resp.status < 200:
            return
        call_id, ftag, ttag = _dialog_tags(req)
        try:
            cseq = req.cseq.number
        except ParseError:
            return
        pending = self._pending.pop((call_id, cseq, req.method), None)
        if resp.status >= 300:
            return
        if req.method == "SUBSCRIBE":
            expires = _expires_of(resp, req)
            key = f"{call_id};{ftag}"
            if expires == 0:
                self._end_subscription(call_id, ftag, ttag, now)
            elif pending is not None:
                until = now + (expires if expires is not None else 3600)
                self._update(pending.flow.token, now, lambda ep: ep.subscriptions.__setitem__(key, until))
        elif req.method == "INVITE" and pending is not None:
            key = f"{call_id};{ftag}"
            until = now + self.config.dialog_lifetime
            self._update(pending.flow.token, now, lambda ep: ep.dialogs.__setitem__(key, until))

    def notify_seen(self, req: Request, now: float) -> None:
        """A NOTIFY with ``Subscription-State: terminated`` ends its subscription."""
        state = (req.get("subscription-state") or "").split(";", 1)[0].strip().lower()
        if state == "terminated":
            call_id, ftag, ttag = _dialog_tags(req)
            self._end_subscription(call_id, ftag, ttag, now)

    def _registration_saved(self, req: Request, flow: Flow, now: float) -> None:
        try:
            to = req.to.uri
        except ParseError:
            return
        if not isinstance(to, SipUri):
            return
        until = 0.0
        for b in self.location.lookup(to.aor, now):
            if b.flow == flow.token:
                until = max(until, b.expires_at)

        def set_reg(ep: Endpoint) -> None:
            ep.registered_until = until

        self._update(flow.token, now, set_reg)

    def _end_dialog(self, call_id: str, tag_a: str, tag_b: str, now: float) -> None:
        keys = {f"{call_id};{tag_a}", f"{call_id};{tag_b}"}
        for ep in [e for e in self._endpoints.values() if keys & e.dialogs.keys()]:
            self._update(ep.token, now, lambda e: [e.dialogs.pop(k, None) for k in keys])

    def _end_subscription(self, call_id: str, tag_a: str, tag_b: str, now: float) -> None:
        keys = {f"{call_id};{tag_a}", f"{call_id};{tag_b}"}
        for ep in [e for e in self._endpoints.values() if keys & e.subscriptions.keys()]:
            self._update(ep.token, now, lambda e: [e.subscriptions.pop(k, None) for k in keys])

    def _update(self, tok: str, now: float, change: Callable[[Endpoint], object]) -> None:
        ep = self._endpoints.get(tok)
        new = ep.copy() if ep is not None else Endpoint(tok)
        change(new)
        alive = new.prune(now)
        try:
            # only UDP endpoints outlive a restart: every TCP/TLS connection closes with us
            if self.store is not None and tok.startswith("udp~"):
                if alive:
                    self.store.save(new)
                elif ep is not None:
                    self.store.delete(tok)
        except Exception as exc:  # a storage failure must not stop signalling
            self.counters["keepalive_store_errors"] += 1
            log.error("keepalive state not saved: %s", exc)
        if alive:
            self._endpoints[tok] = new
        else:
            self._endpoints.pop(tok, None)

    def endpoints(self) -> list[Endpoint]:
        return [ep.copy() for ep in self._endpoints.values()]

    # -- pinging --------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        return self._next_tick

    def handle_timer(self, now: float) -> None:
        if self._next_tick is None or now < self._next_tick:
            return
        self._next_tick = now + self._step
        current = self._slice
        self._slice = (self._slice + 1) % self.slices
        self.tick(now, current)

    def _slice_of(self, tok: str) -> int:
        return zlib.crc32(tok.encode()) % self.slices if self.slices > 1 else 0

    def tick(self, now: float, slice_index: int | None = None) -> None:
        """Expire what is due and ping the flows of one slot (every flow when
        ``slice_index`` is None): each flow gets one ping per interval."""
        for tok in [t for t, ep in self._endpoints.items() if not ep.prune(now)]:
            self._update(tok, now, lambda ep: None)
        self._pending = {k: p for k, p in self._pending.items() if now - p.created < PENDING_TTL}
        sip = self.config.keepalive_method != "udp"
        flows: dict[str, tuple[Flow, Binding | None]] = {}
        def mine(tok: str) -> bool:
            return slice_index is None or self._slice_of(tok) == slice_index

        if slice_index is None:
            contacts = self._pingable(now)
        else:
            if slice_index == 0 or self._round is None:
                self._round = [[] for _ in range(self.slices)]
                for fb in self._pingable(now):
                    self._round[self._slice_of(fb[0].token)].append(fb)
            contacts = self._round[slice_index]
        for flow, b in contacts:
            if sip and self.config.keepalive_timeout > 0 and self._timed_out(flow.token, now):
                self._drop(b, now)
                continue
            flows.setdefault(flow.token, (flow, b))
        for tok in self._endpoints:
            ep_flow = Flow.from_token(tok)
            if ep_flow is not None and ep_flow.transport not in ("ws", "wss") and mine(tok):
                flows.setdefault(tok, (ep_flow, None))
        self._pinged = {t: p for t, p in self._pinged.items() if t in flows or not mine(t)}
        for flow, binding in flows.values():
            self._ping(flow, binding, now)

    def _pingable(self, now: float) -> list[tuple[Flow, Binding]]:
        """Registered contacts to ping, with their flows (WebSocket ones have their own pings)."""
        out = []
        for b in self.location.bindings(now):
            flow = Flow.from_token(b.flow) if b.flow else None
            if flow is None or flow.transport in ("ws", "wss"):
                continue
            if held_elsewhere(b, self.identity):
                continue  # another node's phone: that node pings it from its socket (docs/cluster.md)
            if self.config.ping_nated_only and not binding_is_nated(b):
                continue
            out.append((flow, b))
        return out

    def _timed_out(self, tok: str, now: float) -> bool:
        p = self._pinged.get(tok)
        if p is None:
            return False
        since = max(p.first_sent, p.last_answer)
        return now - since >= self.config.keepalive_timeout

    def _drop(self, b: Binding, now: float) -> None:
        if not any(x.contact == b.contact and x.flow == b.flow for x in self.location.lookup(b.aor, now)):
            return  # re-registered (or gone) since this round began: not ours to drop
        try:
            self.location.remove(b.aor, b.contact)
        except Exception as exc:
            self.counters["keepalive_store_errors"] += 1
            log.error("cannot remove unanswering contact %s: %s", b.contact, exc)
            return
        self.counters["keepalive_contacts_dropped"] += 1
        if b.flow in self._endpoints and not any(x.flow == b.flow for x in self.location.lookup(b.aor, now)):

            def unregister(ep: Endpoint) -> None:
                ep.registered_until = 0.0

            self._update(b.flow, now, unregister)  # its registration is over
        log.info("removed %s of %s: no answer to keepalives for %.0f s", b.contact, b.aor,
                 self.config.keepalive_timeout)

    def _ping(self, flow: Flow, b: Binding | None, now: float) -> None:
        self.counters["keepalive_pings_sent"] += 1
        if self.config.keepalive_method == "udp":
            self._out.append(Ping(UDP_PING if flow.transport == "udp" else STREAM_PING, flow))
            return
        self.counters["keepalive_sip_pings_sent"] += 1
        if flow.token not in self._pinged:
            self._pinged[flow.token] = _Pinged(now)
        self._out.append(Ping(self.sip_ping(flow, b), flow))

    def sip_ping(self, flow: Flow, b: Binding | None) -> bytes:
        """The stateless OPTIONS/NOTIFY for ``flow`` (to the binding's Contact when known)."""
        method = self.config.keepalive_method
        ruri = ""
        if b is not None:
            try:
                ruri = str(SipUri.parse(b.contact).without_params("alias"))
            except ParseError:
                ruri = ""
        if not ruri:
            host, port = flow.remote
            ruri = f"sip:{host_for_uri(host)}:{port}"
            if flow.transport != "udp":
                ruri += f";transport={flow.transport}"
        listener = self.identity.listener_for_flow(flow)
        self._seq += 1
        call_id = f"{CALL_ID_PREFIX}{token(6, self._token)}{self._seq}"
        self._ping_calls[call_id] = flow.token
        if len(self._ping_calls) > 100_000:  # answers never came: forget the oldest
            for k in list(self._ping_calls)[:50_000]:
                del self._ping_calls[k]
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/{flow.transport.upper()} {listener.via_sent_by()};branch=z9hG4bK{token(8, self._token)};rport",
            f"From: <{self.config.ping_from}>;tag={token(5, self._token)}",
            f"To: <{ruri}>",
            f"Call-ID: {call_id}",
            f"CSeq: 1 {method}",
            "Max-Forwards: 70",
        ]
        if method == "NOTIFY":
            lines.append("Event: keep-alive")
            lines.append("Subscription-State: active")
        lines.extend(self.config.ping_headers)
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def response_received(self, resp: Response, flow: Flow, now: float) -> bool:
        """An answer to one of our SIP pings (any status counts: the client is there).
        False when it is not one of ours."""
        try:
            call_id = resp.call_id
        except ParseError:
            return False
        tok = self._ping_calls.pop(call_id, None)
        if tok is None:
            return False
        self.counters["keepalive_ping_answers"] += 1
        p = self._pinged.get(tok)
        if p is not None:
            p.last_answer = now
        return True

    def send_failed(self, flow: Flow, now: float) -> None:
        """The adapter could not send on ``flow`` (its connection is gone): stream
        endpoints are forgotten, a UDP one stays (the socket may come back)."""
        self.counters["keepalive_ping_send_failures"] += 1
        if flow.transport != "udp" and flow.token in self._endpoints:
            self._update(flow.token, now, lambda ep: _clear(ep))

    def outgoing(self) -> list[Ping]:
        out, self._out = self._out, []
        return out

    def stats(self) -> dict[str, int | float]:
        eps = self._endpoints.values()
        out: dict[str, int | float] = dict(self.counters)
        out["keepalive_endpoints"] = len(self._endpoints)
        out["registered_endpoints"] = sum(1 for e in eps if e.registered_until > 0)
        out["subscribed_endpoints"] = sum(1 for e in eps if e.subscriptions)
        out["dialog_endpoints"] = sum(1 for e in eps if e.dialogs)
        return out


def _clear(ep: Endpoint) -> None:
    ep.registered_until = 0.0
    ep.subscriptions.clear()
    ep.dialogs.clear()


class KeepaliveHooks:
    """What the proxy tells the keepalives, as the core's services hook
    (:class:`~sipedge.proxy.services.ProxyServices`: a route observer and a consumer of
    local responses): every routing decision, so ``ctx.nat_keepalive()`` in any routing
    module takes effect, and the answers to SIP pings. ``keepalive`` is the core it
    feeds (None: nothing to feed yet); ``now`` is ``clock.wall()``, as everywhere here."""

    def __init__(self, clock: Clock, keepalive: KeepaliveCore | None = None) -> None:
        self.clock = clock
        self.keepalive = keepalive

    def request_routed(self, ctx: RequestContext) -> None:
        ka = self.keepalive
        if ka is None:
            return
        now = self.clock.wall()
        ka.request_routed(ctx.request, ctx.flow, ctx.nat_keepalive_requested, now)
        if ctx.method == "NOTIFY":
            ka.notify_seen(ctx.request, now)

    def reply_routed(self, ctx: ReplyContext) -> None:
        if self.keepalive is not None:
            self.keepalive.reply_routed(ctx.request, ctx.response, self.clock.wall())

    def local_response(self, resp: Response, flow: Flow, now: float) -> bool:
        """An answer to a SIP ping (True: it was one)."""
        return self.keepalive is not None and self.keepalive.response_received(resp, flow, self.clock.wall())
