"""The SIP transaction layer (RFC 3261 §17, RFC 6026), sans-I/O.

One :class:`TransactionLayer` holds every client and server transaction of a SIP element.
Messages come in with ``receive(msg, flow, now)``; the transaction user (the proxy core)
answers with ``respond(key, response, now)`` and sends with ``send_request(request, dest,
now)``. What happened comes out of ``next_event()``/``events()`` (see :mod:`.txevents`),
what to put on the wire out of ``outgoing()``, and the next deadline out of
``get_timer()``; call ``handle_timer(now)`` when it is reached.

The four machines follow RFC 3261 §17.1.1 (client INVITE), §17.1.2 (client non-INVITE),
§17.2.1 (server INVITE) and §17.2.2 (server non-INVITE), with RFC 6026's Accepted state
on both INVITE sides. Timers:

====== ======================================== ================================
timer  meaning                                  value (unreliable / reliable)
====== ======================================== ================================
A      client INVITE retransmit, doubling       T1, 2*T1, ... / none
B      client INVITE timeout in Calling         64*T1
C      proxy INVITE timeout in Proceeding       ``timers.timer_c`` (optional)
D      client INVITE Completed (absorb 3xx+)    64*T1 (32 s at T1=0.5) / 0
E      client non-INVITE retransmit             T1 doubling up to T2, T2 in
                                                Proceeding / none
F      client non-INVITE timeout                64*T1
G      server INVITE final retransmit           T1 doubling up to T2 / none
H      server INVITE wait for ACK               64*T1
I      server INVITE Confirmed (absorb ACK)     T4 / 0
J      server non-INVITE Completed              64*T1 / 0
K      client non-INVITE Completed              T4 / 0
L      server INVITE Accepted (RFC 6026)        64*T1
M      client INVITE Accepted (RFC 6026)        64*T1
====== ======================================== ================================

Two guards beyond the RFC keep memory bounded when a peer or the TU goes quiet: a
server non-INVITE transaction that the TU never answers ends after 64*T1 (by then the
client's Timer F has fired; RFC 4320 tells proxies not to send a late 408), and an INVITE
client transaction ends 64*T1 after we sent a CANCEL for it if no final response came
(RFC 3261 §9.1).

A transaction that only waits for its last timer (Timers D, I, J, K, L, M: up to 32 s
over UDP, absorbing retransmissions) is *parked*: its object goes and one tuple of
strings, bytes and numbers stays (:meth:`TransactionLayer._park`), with its deadline on
a heap of such tuples. CPython's collector stops tracking tuples of atoms, so a full
collection no longer walks the tens of thousands of transactions a loaded UDP server
keeps lingering. A message or timer for a parked transaction rebuilds a short-lived
machine from the tuple (:meth:`TransactionLayer._unpark`) and runs it as before.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections import deque
from collections.abc import Callable

from ..config.sip import TimersConfig
from ..errors import ParseError, UsageError
from .flow import Flow, Target
from .headers import Via
from .message import Message, Request, Response, make_response
from .txevents import (
    AckReceived,
    CancelReceived,
    MessageDropped,
    RequestReceived,
    RequestRefused,
    ResponseReceived,
    Send,
    StrayResponse,
    Terminated,
    TimedOut,
    TransactionKey,
    TransportFailed,
    TxEvent,
    TxKind,
    TxState,
)

logger = logging.getLogger(__name__)

MAGIC_COOKIE = "z9hG4bK"

Destination = Flow | Target


# -- small helpers (reading what matching needs without parsing the whole message) ------


def _top_via(msg: Message) -> Via:
    """The top Via, parsed once per message (ParseError when missing or malformed)."""
    return msg.top_via


def _sent_by(via: Via) -> str:
    port = "" if via.port is None else str(via.port)
    return f"{via.host.lower()}:{port}"


def _tag(msg: Message, name: str) -> str:
    na = msg.to if name == "to" else msg.from_
    return na.tag or ""


def _rfc2543_id(req: Request, via: Via, to_tag: str) -> str:
    """RFC 3261 §17.2.3 fallback for branches without the magic cookie: Request-URI, To
    tag, From tag, Call-ID, CSeq number and top Via identify the transaction."""
    material = "\x00".join(
        (req.uri, to_tag, _tag(req, "from"), req.call_id, str(req.cseq.number), str(via))
    )
    digest = hashlib.blake2b(material.encode("utf-8", "surrogateescape"), digest_size=12)
    return "2543." + digest.hexdigest()


def _hop_request(invite: Request, method: str, to_value: str, reason: str | None) -> Request:
    """ACK for a non-2xx (RFC 3261 §17.1.1.3) or CANCEL (§9.1) built from the INVITE:
    same Request-URI, Call-ID, From, CSeq number and top Via only; Route copied; To from
    ``to_value`` (the response's To for ACK, the INVITE's own for CANCEL)."""
    headers: list[list[str]] = []
    via = invite.get("via")
    if via is not None:
        headers.append(["via", "Via", via])
    max_fwd = invite.get("max-forwards")
    headers.append(["max-forwards", "Max-Forwards", max_fwd.strip() if max_fwd else "70"])
    routes = invite.get_all("route")
    if routes:
        headers.append(["route", "Route", ", ".join(routes)])
    for key, name in (("from", "From"), ("call-id", "Call-ID")):
        value = invite.get(key)
        if value is not None:
            headers.append([key, name, value])
    headers.append(["to", "To", to_value])
    headers.append(["cseq", "CSeq", f"{invite.cseq.number} {method}"])
    if reason:
        headers.append(["reason", "Reason", reason])
    return Request(method, invite.uri, headers)


def make_ack(invite: Request, response: Response) -> Request:
    """The hop-by-hop ACK for a 3xx-6xx final response to ``invite`` (§17.1.1.3)."""
    return _hop_request(invite, "ACK", response.get("to") or invite.get("to") or "", None)


def make_cancel(invite: Request, reason: str | None = None) -> Request:
    """A CANCEL for ``invite`` (RFC 3261 §9.1); ``reason`` becomes a Reason header
    (RFC 3326), e.g. ``'SIP;cause=200;text="Call completed elsewhere"'``."""
    return _hop_request(invite, "CANCEL", invite.get("to") or "", reason)


# -- the machines ------------------------------------------------------------------------


class _Transaction:
    """State shared by the four machines. Subclasses implement the RFC figures."""

    kind: TxKind
    __slots__ = (
        "final_bytes",
        "interval",
        "key",
        "layer",
        "provisional_bytes",
        "reliable",
        "request",
        "silent",
        "state",
        "timers",
    )

    def __init__(
        self, layer: TransactionLayer, key: TransactionKey, request: Request, reliable: bool
    ) -> None:
        self.layer = layer
        self.key = key
        # None once a final response was sent or received (see _linger)
        self.request: Request | None = request
        self.reliable = reliable
        self.state = TxState.TRYING
        self.timers: dict[str, int] = {}
        self.interval = layer.t1
        self.silent = False
        self.provisional_bytes: bytes | None = None
        self.final_bytes: bytes | None = None

    # plumbing
    def _set_state(self, new: TxState) -> None:
        old = self.state
        self.state = new
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s - %s -> %s", self.key, old.value, new.value)

    def _emit(self, event: TxEvent) -> None:
        if not self.silent:
            self.layer._events.append(event)

    def _arm(self, name: str, delay: float, now: float) -> None:
        """Start (or restart) a timer; a zero delay (reliable transports) fires at once."""
        if delay <= 0:
            self.timers.pop(name, None)
            self.on_timer(name, now)
            return
        self.layer._arm(self, name, now + delay)

    def _disarm(self, *names: str) -> None:
        for name in names:
            self.timers.pop(name, None)

    def _linger(self) -> None:
        """After the final response only stored bytes (or nothing) answer retransmissions,
        so the parsed request goes. A loaded UDP server keeps tens of thousands of
        transactions lingering (Timers J, L, M: 32 s) and the garbage collector walks
        every object they hold."""
        self.request = None

    def _terminate(self) -> None:
        if self.state is TxState.TERMINATED:
            return
        self._set_state(TxState.TERMINATED)
        self.timers.clear()
        self.layer._remove(self)
        self._emit(Terminated(self.key))

    # inputs (defaults: ignore)
    def on_timer(self, name: str, now: float) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def on_transport_error(self, now: float) -> None:
        self.layer._count("sip_tx_transport_errors")
        self._emit(TransportFailed(self.key))
        self._terminate()


class _ClientTransaction(_Transaction):
    __slots__ = ("dest", "request_bytes")

    def __init__(
        self,
        layer: TransactionLayer,
        key: TransactionKey,
        request: Request,
        dest: Destination,
    ) -> None:
        super().__init__(layer, key, request, dest.reliable)
        self.dest = dest
        self.request_bytes = request.serialize()

    def _transmit(self, data: bytes, retransmit: bool = False) -> None:
        self.layer._send(data, self.dest, self.key, retransmit)

    def on_response(self, resp: Response, flow: Flow, now: float) -> None:  # pragma: no cover
        raise NotImplementedError


class _ClientInvite(_ClientTransaction):
    """RFC 3261 §17.1.1 figure 5, with RFC 6026 §7.2 (Accepted, Timer M)."""

    kind = TxKind.CLIENT_INVITE
    __slots__ = ("ack_bytes", "cancel_pending", "cancel_reason", "cancel_sent")

    def __init__(
        self, layer: TransactionLayer, key: TransactionKey, request: Request, dest: Destination
    ) -> None:
        super().__init__(layer, key, request, dest)
        self.ack_bytes: bytes | None = None
        self.cancel_pending = False
        self.cancel_sent = False
        self.cancel_reason: str | None = None

    def start(self, now: float) -> None:
        self.state = TxState.CALLING
        self._transmit(self.request_bytes)
        if not self.reliable:
            self._arm("A", self.interval, now)
        self._arm("B", 64 * self.layer.t1, now)

    def on_response(self, resp: Response, flow: Flow, now: float) -> None:
        status = resp.status
        state = self.state
        if state is TxState.CALLING or state is TxState.PROCEEDING:
            if status < 200:
                if state is TxState.CALLING:
                    self._disarm("A", "B")
                    self._set_state(TxState.PROCEEDING)
                    if self.layer.timer_c is not None:
                        self._arm("C", self.layer.timer_c, now)
                elif status > 100 and self.layer.timer_c is not None:
                    self._arm("C", self.layer.timer_c, now)
                self._emit(ResponseReceived(self.key, resp, flow))
                if self.cancel_pending:
                    self.layer._send_cancel(self, now)
            elif status < 300:
                self._disarm("A", "B", "C", "X")
                self._set_state(TxState.ACCEPTED)
                self._linger()
                self._emit(ResponseReceived(self.key, resp, flow))
                self._arm("M", 64 * self.layer.t1, now)
            else:
                self._disarm("A", "B", "C", "X")
                self._set_state(TxState.COMPLETED)
                assert self.request is not None  # kept until a final response
                self.ack_bytes = make_ack(self.request, resp).serialize()
                self._linger()
                self._transmit(self.ack_bytes)
                self._emit(ResponseReceived(self.key, resp, flow))
                self._arm("D", 0 if self.reliable else 64 * self.layer.t1, now)
        elif state is TxState.COMPLETED:
            if status >= 300 and self.ack_bytes is not None:
                self._transmit(self.ack_bytes, retransmit=True)
            self.layer._count("sip_tx_responses_absorbed")
        elif state is TxState.ACCEPTED:
            if 200 <= status < 300:
                self._emit(ResponseReceived(self.key, resp, flow))
            else:
                self.layer._count("sip_tx_responses_absorbed")

    def on_timer(self, name: str, now: float) -> None:
        state = self.state
        if name == "A" and state is TxState.CALLING:
            self._transmit(self.request_bytes, retransmit=True)
            self.interval *= 2
            self._arm("A", self.interval, now)
        elif name == "B" and state is TxState.CALLING:
            self.layer._count("sip_tx_timeouts")
            self._emit(TimedOut(self.key, "B"))
            self._terminate()
        elif name == "C" and state is TxState.PROCEEDING:
            self.layer._count("sip_tx_timeouts")
            self._emit(TimedOut(self.key, "C"))
            self.layer._send_cancel(self, now)
        elif name == "X" and state in (TxState.CALLING, TxState.PROCEEDING):
            self.layer._count("sip_tx_timeouts")
            self._emit(TimedOut(self.key, "CANCEL"))
            self._terminate()
        elif name in ("D", "M"):
            self._terminate()

    def on_transport_error(self, now: float) -> None:
        if self.state is TxState.ACCEPTED:
            # nothing of ours is in flight: the ACK for a 2xx belongs to the TU
            self.layer._count("sip_tx_transport_errors")
            self._emit(TransportFailed(self.key))
            return
        super().on_transport_error(now)


class _ClientNonInvite(_ClientTransaction):
    """RFC 3261 §17.1.2 figure 6."""

    kind = TxKind.CLIENT_NON_INVITE
    __slots__ = ()

    def start(self, now: float) -> None:
        self.state = TxState.TRYING
        self._transmit(self.request_bytes)
        if not self.reliable:
            self._arm("E", self.interval, now)
        self._arm("F", 64 * self.layer.t1, now)

    def on_response(self, resp: Response, flow: Flow, now: float) -> None:
        state = self.state
        if state is TxState.TRYING or state is TxState.PROCEEDING:
            if resp.status < 200:
                if state is TxState.TRYING:
                    self._set_state(TxState.PROCEEDING)
                self._emit(ResponseReceived(self.key, resp, flow))
            else:
                self._disarm("E", "F")
                self._set_state(TxState.COMPLETED)
                self._linger()
                self._emit(ResponseReceived(self.key, resp, flow))
                self._arm("K", 0 if self.reliable else self.layer.t4, now)
        else:
            self.layer._count("sip_tx_responses_absorbed")

    def on_timer(self, name: str, now: float) -> None:
        state = self.state
        if name == "E" and state in (TxState.TRYING, TxState.PROCEEDING):
            self._transmit(self.request_bytes, retransmit=True)
            if state is TxState.TRYING:
                self.interval = min(2 * self.interval, self.layer.t2)
            else:
                self.interval = self.layer.t2
            self._arm("E", self.interval, now)
        elif name == "F" and state in (TxState.TRYING, TxState.PROCEEDING):
            self.layer._count("sip_tx_timeouts")
            self._emit(TimedOut(self.key, "F"))
            self._terminate()
        elif name == "K":
            self._terminate()


class _ServerTransaction(_Transaction):
    __slots__ = ("arrived", "flow", "sent_tag")

    def __init__(
        self,
        layer: TransactionLayer,
        key: TransactionKey,
        request: Request,
        flow: Flow,
    ) -> None:
        super().__init__(layer, key, request, flow.reliable)
        self.flow = flow
        self.sent_tag: str | None = None  # To tag of our last response, for RFC 2543 ACKs
        self.arrived = 0.0  # the request's ``now`` (TransactionLayer ``on_final``)

    def _transmit(self, data: bytes, retransmit: bool = False) -> None:
        self.layer._send(data, self.flow, self.key, retransmit)

    def _store(self, resp: Response) -> bytes:
        """Serialize once (the bytes are reused for every retransmission). An RFC 2543
        peer's ACK is matched on the To tag we sent (its key has no sent-by), so for
        those INVITEs that tag is kept."""
        if self.kind is TxKind.SERVER_INVITE and not self.key.sent_by:
            try:
                self.sent_tag = resp.to.tag
            except ParseError:
                self.sent_tag = None
        return resp.serialize()

    def on_request(self, req: Request, flow: Flow, now: float) -> None:
        """A retransmission of the request (RFC 3261 §17.2.1/§17.2.2): re-send the most
        recent response, if any, and absorb it."""
        self.layer._count("sip_tx_requests_absorbed")
        state = self.state
        if state is TxState.PROCEEDING and self.provisional_bytes is not None:
            self._transmit(self.provisional_bytes, retransmit=True)
        elif state is TxState.COMPLETED and self.final_bytes is not None:
            self._transmit(self.final_bytes, retransmit=True)

    def respond(self, resp: Response, now: float) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError


class _ServerInvite(_ServerTransaction):
    """RFC 3261 §17.2.1 figure 7, with RFC 6026 §7.1 (Accepted, Timer L)."""

    kind = TxKind.SERVER_INVITE
    __slots__ = ()

    def start(self, now: float) -> None:
        self.state = TxState.PROCEEDING
        if self.layer.send_100:
            request = self.request
            assert request is not None  # kept until a final response
            trying = make_response(request, 100)
            stamp = request.get("timestamp")
            if stamp is not None:
                trying.set("Timestamp", stamp)
            self.provisional_bytes = trying.serialize()
            self._transmit(self.provisional_bytes)

    def respond(self, resp: Response, now: float) -> bool:
        status = resp.status
        state = self.state
        if state is TxState.PROCEEDING:
            data = self._store(resp)
            self._transmit(data)
            if status < 200:
                self.provisional_bytes = data
                return True
            self.layer._final_sent(self)
            if status < 300:
                self._set_state(TxState.ACCEPTED)
                self._linger()
                self._arm("L", 64 * self.layer.t1, now)
            else:
                self.final_bytes = data
                self._set_state(TxState.COMPLETED)
                self._linger()
                if not self.reliable:
                    self._arm("G", self.interval, now)
                self._arm("H", 64 * self.layer.t1, now)
            return True
        if state is TxState.ACCEPTED and 200 <= status < 300:
            # RFC 6026 §8.5: further 2xx (retransmissions by a UAS core, or other
            # branches' 2xx through a forking proxy) go out through the transaction
            self._transmit(self._store(resp))
            return True
        return False

    def on_request(self, req: Request, flow: Flow, now: float) -> None:
        if self.state is TxState.ACCEPTED or self.state is TxState.CONFIRMED:
            self.layer._count("sip_tx_requests_absorbed")  # RFC 6026 §8.7
            return
        super().on_request(req, flow, now)

    def on_ack(self, ack: Request, flow: Flow, now: float) -> None:
        state = self.state
        if state is TxState.COMPLETED:
            self._disarm("G", "H")
            self._set_state(TxState.CONFIRMED)
            self._arm("I", 0 if self.reliable else self.layer.t4, now)
        elif state is TxState.ACCEPTED:
            self._emit(AckReceived(self.key, ack, flow))
        else:
            # Confirmed: retransmitted ACK; Proceeding: an ACK before any final (bogus)
            self.layer._count("sip_tx_acks_absorbed")

    def on_timer(self, name: str, now: float) -> None:
        state = self.state
        if name == "G" and state is TxState.COMPLETED and self.final_bytes is not None:
            self._transmit(self.final_bytes, retransmit=True)
            self.interval = min(2 * self.interval, self.layer.t2)
            self._arm("G", self.interval, now)
        elif name == "H" and state is TxState.COMPLETED:
            self.layer._count("sip_tx_timeouts")
            self._emit(TimedOut(self.key, "H"))
            self._terminate()
        elif name in ("I", "L"):
            self._terminate()

    def on_transport_error(self, now: float) -> None:
        if self.state is TxState.ACCEPTED:
            # RFC 6026 §8.8: report it, but stay to absorb retransmissions and pass ACKs
            self.layer._count("sip_tx_transport_errors")
            self._emit(TransportFailed(self.key))
            return
        super().on_transport_error(now)


class _ServerNonInvite(_ServerTransaction):
    """RFC 3261 §17.2.2 figure 8 (CANCEL included), plus the unanswered guard."""

    kind = TxKind.SERVER_NON_INVITE
    __slots__ = ()

    def start(self, now: float) -> None:
        self.state = TxState.TRYING
        self._arm("U", 64 * self.layer.t1, now)

    def respond(self, resp: Response, now: float) -> bool:
        state = self.state
        if state is not TxState.TRYING and state is not TxState.PROCEEDING:
            return False
        data = self._store(resp)
        self._transmit(data)
        if resp.status < 200:
            self.provisional_bytes = data
            if state is TxState.TRYING:
                self._set_state(TxState.PROCEEDING)
        else:
            self.layer._final_sent(self)
            self.final_bytes = data
            self._disarm("U")
            self._set_state(TxState.COMPLETED)
            self._linger()
            self._arm("J", 0 if self.reliable else 64 * self.layer.t1, now)
        return True

    def on_timer(self, name: str, now: float) -> None:
        if name == "J":
            self._terminate()
        elif name == "U" and self.state in (TxState.TRYING, TxState.PROCEEDING):
            self.layer._count("sip_tx_unanswered")
            self._terminate()


# The timers after which each kind of machine only absorbs retransmissions and ends: arming
# one parks the transaction (TransactionLayer._park).
_LINGER_TIMERS: dict[TxKind, frozenset[str]] = {
    TxKind.CLIENT_INVITE: frozenset({"D", "M"}),
    TxKind.CLIENT_NON_INVITE: frozenset({"K"}),
    TxKind.SERVER_INVITE: frozenset({"I", "L"}),
    TxKind.SERVER_NON_INVITE: frozenset({"J"}),
}
_MACHINES: tuple[type[_Transaction], ...] = (_ClientInvite, _ClientNonInvite, _ServerInvite, _ServerNonInvite)


def _conduit(dest: Destination) -> tuple[object, ...]:
    if isinstance(dest, Flow):
        return (dest.transport, dest.local, dest.remote, dest.conn_id)
    return (dest.transport, dest.host, dest.port)


# A parked transaction: (machine index in _MACHINES, TxState name, timer seq, timer name,
# deadline, flow (transport, local, remote, conn_id) or target (transport, host, port),
# final bytes, provisional bytes, ACK bytes (client INVITE) or To tag sent (server),
# silent). Only atoms and tuples of atoms: the collector stops tracking it.
_Parked = tuple[int, str, int, str, float, tuple[object, ...], bytes | None, bytes | None, bytes | str | None, bool]


# -- the facade --------------------------------------------------------------------------


class TransactionLayer:
    """Every transaction of one SIP element (RFC 3261 §17), driven by the caller.

    ``timers`` gives T1/T2/T4 and Timer C. ``send_100``: answer each new INVITE with
    100 Trying at once (a proxy does; RFC 3261 §16.2). ``max_transactions``: live
    transactions above which a new request is refused with a stateless 503 (client
    transactions are never refused: they carry calls already accepted). ``timer_c``:
    run the proxy's Timer C on INVITE client transactions (RFC 3261 §16.6 step 11): when
    it fires in Proceeding, TimedOut(key, "C") is reported and a CANCEL sent.
    ``on_final(method, arrived)``: called as a server transaction sends its first final
    response (stateless ones too), with the ``now`` its request arrived at (the proxy's
    response-time histogram).
    """

    def __init__(
        self,
        timers: TimersConfig | None = None,
        *,
        send_100: bool = True,
        max_transactions: int = 100_000,
        timer_c: bool = True,
        on_final: Callable[[str, float], None] | None = None,
    ) -> None:
        timers = timers if timers is not None else TimersConfig()
        self.t1 = float(timers.t1)
        self.t2 = float(timers.t2)
        self.t4 = float(timers.t4)
        self.timer_c: float | None = float(timers.timer_c) if timer_c else None
        self.send_100 = send_100
        self.on_final = on_final
        self.max_transactions = max_transactions
        self._table: dict[TransactionKey, _Transaction] = {}
        self._events: deque[TxEvent] = deque()
        self._out: list[Send] = []
        # live timers: (deadline, seq, key as a plain tuple, timer name); stale ones skipped
        self._heap: list[tuple[float, int, tuple[object, ...], str]] = []
        # parked transactions (see the module docstring) and their last timers
        self._lingering: dict[tuple[object, ...], _Parked] = {}
        self._linger_heap: list[tuple[float, int, tuple[object, ...]]] = []
        self._seq = 0
        self._stats: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    # -- inputs ----------------------------------------------------------------------
    def receive(self, msg: Request | Response, flow: Flow, now: float) -> None:
        """Feed one parsed message that arrived on ``flow``. Never raises for peer data:
        malformed keys become a stateless 4xx (RequestRefused) or MessageDropped."""
        if isinstance(msg, Response):
            self._receive_response(msg, flow, now)
        else:
            self._receive_request(msg, flow, now)

    def respond(self, key: TransactionKey, response: Response, now: float) -> bool:
        """Send ``response`` on server transaction ``key``. False when the transaction is
        gone or no longer takes this response (e.g. a second final), so late answers
        after a timeout are harmless; the response is then not sent."""
        if key.client:
            raise UsageError(f"respond() needs a server transaction key, got {key}")
        tx = self._find(key)
        if not isinstance(tx, _ServerTransaction) or not 100 <= response.status <= 699:
            self._count("sip_tx_responses_refused")
            return False
        if tx.respond(response, now):
            self._settle(tx)
            return True
        self._count("sip_tx_responses_refused")
        return False

    def send_request(self, request: Request, dest: Destination, now: float) -> TransactionKey:
        """Start a client transaction for ``request``, whose top Via already carries our
        branch, towards ``dest`` (a flow to reuse or a target to reach). Returns its key.
        ACK is not a transaction: use :meth:`send_stateless`."""
        if request.method == "ACK":
            raise UsageError("ACK opens no transaction; use send_stateless()")
        try:
            branch = _top_via(request).branch
            request.cseq  # noqa: B018 - ACK/CANCEL are built from it
        except ParseError as exc:
            raise UsageError(f"request to send has no usable top Via: {exc}") from exc
        if not branch:
            raise UsageError("request to send has no branch in its top Via")
        key = TransactionKey(True, branch, request.method)
        if key in self._table or key in self._lingering:
            raise UsageError(f"a client transaction {key} already exists (reused branch?)")
        tx: _ClientInvite | _ClientNonInvite
        if request.method == "INVITE":
            tx = _ClientInvite(self, key, request, dest)
            self._count("sip_tx_client_invite")
        else:
            tx = _ClientNonInvite(self, key, request, dest)
            self._count("sip_tx_client_non_invite")
        self._table[key] = tx
        tx.start(now)
        if request.method == "CANCEL":
            invite = self._table.get(TransactionKey(True, branch, "INVITE"))
            if isinstance(invite, _ClientInvite):
                self._mark_cancelled(invite, now)
        return key

    def send_stateless(self, message: Request | Response, dest: Destination) -> None:
        """Queue a message outside any transaction (an ACK for a 2xx, a stray 2xx)."""
        self._send(message.serialize(), dest, None, False)
        self._count("sip_tx_stateless_sent")

    def cancel(self, invite_key: TransactionKey, now: float, reason: str | None = None) -> bool:
        """CANCEL the INVITE client transaction ``invite_key`` (RFC 3261 §9.1): sent now
        if a provisional response came, else as soon as one does. The CANCEL's own
        transaction runs silently (its 200 is of no interest; the INVITE gets its 487).
        False when there is nothing to cancel (unknown key, or a final response came)."""
        tx = self._table.get(invite_key)
        if not isinstance(tx, _ClientInvite):
            return False
        if tx.state is TxState.CALLING:
            tx.cancel_pending = True
            tx.cancel_reason = reason
            return True
        if tx.state is TxState.PROCEEDING:
            tx.cancel_reason = reason
            self._send_cancel(tx, now)
            return True
        return False

    def respond_and_forget(self, key: TransactionKey, resp: Response) -> bool:
        """Send a final response for the server transaction ``key`` and forget the
        transaction at once: the stateless UAS of RFC 3261 §8.2.7, whose main use is
        challenging unauthenticated requests. Nothing is retransmitted (an INVITE's 407
        would go out ten times over UDP to a source that never ACKs, perhaps spoofed)
        and nothing is kept for 32 s (Timers H and J): a retransmitted request starts a
        new transaction and is answered afresh, and the ACK of a non-2xx answer finds no
        transaction, so the core absorbs it. False when there is nothing to answer."""
        tx = self._table.get(key)
        if not isinstance(tx, _ServerTransaction) or tx.state not in (TxState.TRYING, TxState.PROCEEDING):
            return False
        if resp.status < 300:
            raise UsageError("only a final non-2xx response can be sent statelessly")
        tx._transmit(resp.serialize())
        self._final_sent(tx)
        self._count("sip_tx_stateless_replies")
        tx._terminate()
        return True

    def discard(self, key: TransactionKey) -> None:
        """Forget an unanswered server transaction without answering it: a request
        dropped on purpose (from a flooding source). Kept, an INVITE would wait for a
        final response for ever; a retransmission starts a new transaction."""
        tx = self._table.get(key)
        if isinstance(tx, _ServerTransaction) and tx.state in (TxState.TRYING, TxState.PROCEEDING):
            self._count("sip_tx_discarded")
            tx.silent = True
            tx._terminate()

    def transport_error(self, key: TransactionKey, now: float) -> None:
        """The transport could not send for ``key`` (RFC 3261 §17.1.4, §17.2.4)."""
        tx = self._find(key)
        if tx is not None:
            tx.on_transport_error(now)

    # -- outputs ---------------------------------------------------------------------
    def next_event(self) -> TxEvent | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[TxEvent]:
        """Drain every pending event, oldest first."""
        out = list(self._events)
        self._events.clear()
        return out

    def outgoing(self) -> list[Send]:
        """Drain the messages to put on the wire, in order."""
        out = self._out
        self._out = []
        return out

    datagrams_to_send = outgoing

    def get_timer(self) -> float | None:
        """The earliest deadline at which :meth:`handle_timer` has work, or None."""
        heap = self._heap  # always modified in place, so these aliases stay valid
        table = self._table
        while heap:
            deadline, seq, key, name = heap[0]
            tx = table.get(key)  # type: ignore[call-overload]
            if tx is not None and tx.timers.get(name) == seq:
                break
            heapq.heappop(heap)
        lheap = self._linger_heap
        lingering = self._lingering
        while lheap:
            rec = lingering.get(lheap[0][2])
            if rec is not None and rec[2] == lheap[0][1]:
                break
            heapq.heappop(lheap)
        if not heap:
            return lheap[0][0] if lheap else None
        return heap[0][0] if not lheap or heap[0][0] <= lheap[0][0] else lheap[0][0]

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is at or before ``now``, in deadline order."""
        heap = self._heap
        lheap = self._linger_heap
        table = self._table
        while True:
            live = bool(heap) and heap[0][0] <= now
            parked = bool(lheap) and lheap[0][0] <= now
            if live and (not parked or heap[0][:2] <= lheap[0][:2]):
                _, seq, key, name = heapq.heappop(heap)
                tx = table.get(key)  # type: ignore[call-overload]
                if tx is None or tx.timers.get(name) != seq:
                    continue
            elif parked:
                _, seq, key = heapq.heappop(lheap)
                rec = self._lingering.get(key)
                if rec is None or rec[2] != seq:
                    continue
                tx = self._unpark(key, rec)
                name = rec[3]
            else:
                return
            del tx.timers[name]
            tx.on_timer(name, now)

    # -- inspection ------------------------------------------------------------------
    def state(self, key: TransactionKey) -> TxState | None:
        tx = self._table.get(key)
        if tx is not None:
            return tx.state
        rec = self._lingering.get(key)
        return TxState[rec[1]] if rec is not None else None

    def kind(self, key: TransactionKey) -> TxKind | None:
        tx = self._table.get(key)
        if tx is not None:
            return tx.kind
        rec = self._lingering.get(key)
        return _MACHINES[rec[0]].kind if rec is not None else None

    def request(self, key: TransactionKey) -> Request | None:
        """The request that opened transaction ``key``, until its final response (None
        after, as for a transaction that is gone)."""
        tx = self._table.get(key)
        return tx.request if tx is not None else None

    def __len__(self) -> int:
        return len(self._table) + len(self._lingering)

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self._stats)
        out["sip_tx_live"] = len(self)
        out["sip_tx_lingering"] = len(self._lingering)
        return out

    # -- receive paths ---------------------------------------------------------------
    def _receive_response(self, resp: Response, flow: Flow, now: float) -> None:
        try:
            branch = _top_via(resp).branch or ""
            method = resp.cseq.method
        except ParseError as exc:
            self._count("sip_tx_malformed_dropped")
            self._events.append(MessageDropped(resp, flow, str(exc)))
            return
        tx = self._find(TransactionKey(True, branch, method))
        if isinstance(tx, _ClientTransaction):
            tx.on_response(resp, flow, now)
            return
        self._count("sip_tx_stray_responses")
        self._events.append(StrayResponse(resp, flow))

    def _server_key(
        self, req: Request, via: Via, method: str, to_tag: str | None
    ) -> TransactionKey:
        branch = via.branch or ""
        if branch.startswith(MAGIC_COOKIE):
            return TransactionKey(False, branch, method, _sent_by(via))
        tag = _tag(req, "to") if to_tag is None else to_tag
        return TransactionKey(False, _rfc2543_id(req, via, tag), method)

    def _receive_request(self, req: Request, flow: Flow, now: float) -> None:
        method = req.method
        try:
            via = _top_via(req)
            cseq = req.cseq
            if cseq.method != method:
                raise ParseError(
                    f"CSeq method {cseq.method} does not match {method}",
                    (400, "CSeq method mismatch"),
                )
            if method == "ACK":
                self._receive_ack(req, via, flow, now)
                return
            key = self._server_key(req, via, method, None)
        except ParseError as exc:
            self._refuse_malformed(req, flow, exc)
            return
        tx = self._find(key)
        if isinstance(tx, _ServerTransaction):
            tx.on_request(req, flow, now)
            return
        if len(self) >= self.max_transactions:
            self._refuse(req, flow, 503, "Service Unavailable", "sip_tx_refused_overload")
            return
        new: _ServerInvite | _ServerNonInvite
        if method == "INVITE":
            new = _ServerInvite(self, key, req, flow)
            self._count("sip_tx_server_invite")
        else:
            new = _ServerNonInvite(self, key, req, flow)
            self._count("sip_tx_server_non_invite")
        self._table[key] = new
        new.arrived = now
        new.start(now)
        if method == "CANCEL":
            invite_key = TransactionKey(False, key.branch, "INVITE", key.sent_by)
            target = self._find(invite_key)
            if not isinstance(target, _ServerInvite):
                self._count("sip_tx_cancel_unmatched")
                self._events.append(CancelReceived(key, None, req, flow))
            else:
                self._events.append(CancelReceived(key, invite_key, req, flow))
            return
        self._events.append(RequestReceived(key, req, flow))

    def _receive_ack(self, ack: Request, via: Via, flow: Flow, now: float) -> None:
        """ACK matches the INVITE server transaction (RFC 3261 §17.2.3): by branch and
        sent-by, or for RFC 2543 peers by the INVITE's fields with the To tag of the
        ACK equal to the INVITE's (re-INVITE) or to the tag of the response we sent."""
        tx: _Transaction | None
        branch = via.branch or ""
        if branch.startswith(MAGIC_COOKIE):
            tx = self._find(TransactionKey(False, branch, "INVITE", _sent_by(via)))
        else:
            ack_tag = _tag(ack, "to")
            tx = self._find(self._server_key(ack, via, "INVITE", ack_tag))
            if tx is None and ack_tag:
                tx = self._find(self._server_key(ack, via, "INVITE", ""))
                sent_tag = tx.sent_tag if isinstance(tx, _ServerTransaction) else None
                if sent_tag not in (None, ack_tag):
                    tx = None
        if isinstance(tx, _ServerInvite):
            tx.on_ack(ack, flow, now)
            return
        self._count("sip_tx_acks_unmatched")
        self._events.append(AckReceived(None, ack, flow))

    def _refuse_malformed(self, req: Request, flow: Flow, exc: ParseError) -> None:
        hint = exc.hint
        if req.method != "ACK" and isinstance(hint, tuple) and req.get("via") is not None:
            self._refuse(req, flow, hint[0], hint[1], "sip_tx_malformed_refused")
            return
        self._count("sip_tx_malformed_dropped")
        self._events.append(MessageDropped(req, flow, str(exc)))

    def _refuse(self, req: Request, flow: Flow, status: int, reason: str, counter: str) -> None:
        self._count(counter)
        resp = make_response(req, status, reason)
        self._out.append(Send(resp.serialize(), flow, None, None))
        self._events.append(RequestRefused(req, flow, status, reason))

    # -- CANCEL of our own INVITEs ---------------------------------------------------
    def _send_cancel(self, invite: _ClientInvite, now: float) -> None:
        invite.cancel_pending = False
        if invite.cancel_sent:
            return
        key = TransactionKey(True, invite.key.branch, "CANCEL")
        if key in self._table or key in self._lingering:
            self._mark_cancelled(invite, now)
            return
        assert invite.request is not None  # kept until a final response (no CANCEL after)
        cancel = make_cancel(invite.request, invite.cancel_reason)
        tx = _ClientNonInvite(self, key, cancel, invite.dest)
        tx.silent = True
        self._table[key] = tx
        self._count("sip_tx_cancels_sent")
        tx.start(now)
        self._mark_cancelled(invite, now)

    def _mark_cancelled(self, invite: _ClientInvite, now: float) -> None:
        if invite.cancel_sent:
            return
        invite.cancel_sent = True
        invite.cancel_pending = False
        if invite.state in (TxState.CALLING, TxState.PROCEEDING):
            invite._disarm("C")
            invite._arm("X", 64 * self.t1, now)

    # -- plumbing used by the machines -----------------------------------------------
    def _send(
        self, data: bytes, dest: Destination, key: TransactionKey | None, retransmit: bool
    ) -> None:
        if isinstance(dest, Flow):
            self._out.append(Send(data, dest, None, key))
        else:
            self._out.append(Send(data, None, dest, key))
        if retransmit:
            self._stats["sip_tx_retransmissions"] += 1

    def _arm(self, tx: _Transaction, name: str, deadline: float) -> None:
        self._seq += 1
        seq = self._seq
        key = tx.key
        if name in _LINGER_TIMERS[tx.kind] and self._table.get(key) is tx:
            self._park(tx, name, seq, deadline)
            return
        tx.timers[name] = seq
        heap = self._heap
        heapq.heappush(heap, (deadline, seq, tuple(key), name))
        if len(heap) > 256 and len(heap) > 8 * len(self._table):
            table = self._table
            heap[:] = [
                e for e in heap if (t := table.get(e[2])) is not None and t.timers.get(e[3]) == e[1]  # type: ignore[call-overload]
            ]
            heapq.heapify(heap)

    def _park(self, tx: _Transaction, name: str, seq: int, deadline: float) -> None:
        """``tx`` now only waits for its last timer ``name``: keep it as one tuple of
        atoms (see :data:`_Parked`) and drop the object."""
        extra: bytes | str | None
        if isinstance(tx, _ServerTransaction):
            conduit, extra = _conduit(tx.flow), tx.sent_tag
        else:
            assert isinstance(tx, _ClientTransaction)
            conduit = _conduit(tx.dest)
            extra = tx.ack_bytes if isinstance(tx, _ClientInvite) else None
        key = tuple(tx.key)  # a plain tuple: untracked by the collector (a named tuple is not)
        del self._table[tx.key]
        tx.timers.clear()
        self._lingering[key] = (
            _MACHINES.index(type(tx)), tx.state.name, seq, name, deadline, conduit,
            tx.final_bytes, tx.provisional_bytes, extra, tx.silent,
        )
        heapq.heappush(self._linger_heap, (deadline, seq, key))

    def _unpark(self, key: tuple[object, ...], rec: _Parked) -> _Transaction:
        """A machine for the parked transaction ``key``, to run one input or its last
        timer; it stays parked (:meth:`_settle` records what changed) unless it ends."""
        cls = _MACHINES[rec[0]]
        tx = cls.__new__(cls)
        conduit = rec[5]
        dest: Flow | Target = Flow(*conduit) if len(conduit) == 4 else Target(*conduit)  # type: ignore[arg-type]
        tx.layer = self
        tx.key = key if isinstance(key, TransactionKey) else TransactionKey(*key)  # type: ignore[arg-type]
        tx.request = None
        tx.reliable = dest.reliable
        tx.state = TxState[rec[1]]
        tx.timers = {rec[3]: rec[2]}
        tx.interval = self.t2
        tx.silent = rec[9]
        tx.final_bytes = rec[6]
        tx.provisional_bytes = rec[7]
        if isinstance(tx, _ServerTransaction):
            tx.flow = dest  # type: ignore[assignment]
            tx.sent_tag = rec[8]  # type: ignore[assignment]
        else:
            assert isinstance(tx, _ClientTransaction)
            tx.dest = dest
            tx.request_bytes = b""
            if isinstance(tx, _ClientInvite):
                tx.ack_bytes = rec[8]  # type: ignore[assignment]
                tx.cancel_pending = tx.cancel_sent = False
                tx.cancel_reason = None
        return tx

    def _find(self, key: TransactionKey) -> _Transaction | None:
        """The live transaction ``key``, or a machine rebuilt for a parked one."""
        tx = self._table.get(key)
        if tx is not None:
            return tx
        rec = self._lingering.get(key)
        return self._unpark(key, rec) if rec is not None else None

    def _settle(self, tx: _Transaction) -> None:
        """After a rebuilt machine answered (a 2xx again in Accepted): keep the To tag
        it sent, which RFC 2543 ACK matching reads."""
        if isinstance(tx, _ServerTransaction) and self._table.get(tx.key) is not tx:
            rec = self._lingering.get(tx.key)
            if rec is not None and rec[8] != tx.sent_tag:
                self._lingering[tuple(tx.key)] = (*rec[:8], tx.sent_tag, rec[9])

    def _remove(self, tx: _Transaction) -> None:
        if self._table.get(tx.key) is tx:
            del self._table[tx.key]
        else:
            self._lingering.pop(tx.key, None)
        self._stats["sip_tx_terminated"] += 1

    def _final_sent(self, tx: _ServerTransaction) -> None:
        if self.on_final is not None:
            self.on_final(tx.key.method, tx.arrived)

    def _count(self, name: str) -> None:
        self._stats[name] += 1


_COUNTERS = (
    "sip_tx_server_invite",
    "sip_tx_server_non_invite",
    "sip_tx_client_invite",
    "sip_tx_client_non_invite",
    "sip_tx_terminated",
    "sip_tx_retransmissions",
    "sip_tx_requests_absorbed",
    "sip_tx_responses_absorbed",
    "sip_tx_acks_absorbed",
    "sip_tx_acks_unmatched",
    "sip_tx_stray_responses",
    "sip_tx_cancel_unmatched",
    "sip_tx_cancels_sent",
    "sip_tx_discarded",
    "sip_tx_stateless_replies",
    "sip_tx_timeouts",
    "sip_tx_unanswered",
    "sip_tx_transport_errors",
    "sip_tx_refused_overload",
    "sip_tx_malformed_refused",
    "sip_tx_malformed_dropped",
    "sip_tx_responses_refused",
    "sip_tx_stateless_sent",
)


__all__ = [
    "MAGIC_COOKIE",
    "Destination",
    "TransactionLayer",
    "make_ack",
    "make_cancel",
]
