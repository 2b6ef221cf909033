"""The local channel between SIP workers (docs/workers.md).

Every worker reads one Unix datagram socket of its own and may write to every other's.
A datagram is one hand-off::

    kind (1 byte) | flow token length (2 bytes, big endian) | flow token | payload

- ``I`` inbound: a SIP message received on that flow by a worker that does not own its
  Call-ID; the owner handles it as if it had read it itself.
- ``O`` outbound: send the payload on that flow, a connection the receiver holds.
- ``N`` new: the sender holds a new connection (the payload is empty); requests to
  that peer address go out on it.
- ``C`` closed: that connection ended (the payload is empty); forget what used it.
- ``S`` stats: the sender's counters as JSON (the flow token names it: its worker
  number, or ``supervisor`` for the media relay there), for worker 0's ``/metrics``.
- ``G`` generation: from the supervisor, ``"worker:generation"`` when it (re)starts a
  worker; connections of an older generation of that worker are gone.
- ``Q`` query / ``R`` reply: a ``sipedge ctl`` command that worker 0 asks another worker
  to run on its own state (the token is the request's number, the payload JSON), and
  its answer (server/worker.py ``WorkerControl``).
- ``M`` media: from the supervisor's relay, a call's media session ended
  (``CallDeleted`` as JSON) to the worker owning its Call-ID: its CDR gets the totals, a
  media timeout ends its dialog.

Connection ids are unique across workers and their restarts: worker ``w`` of ``n``, in
its generation ``g``, counts from ``n * (g * 2**24 + 1) + w`` in steps of ``n``, so any
worker can tell a connection's holder (``id % n``) and whether it may still be open (its
generation is the holder's current one and no ``C`` said it closed).

The owner of a message is ``crc32(Call-ID) % workers``: the same on every worker without
any shared state, and one worker sees a whole call (INVITE, its retransmissions, CANCEL,
ACK, the callee's responses, BYE). The channel is local and its peers are our own
processes, but a datagram that does not decode is still counted and dropped, never
raised (``sip_handoff_bad``); a full channel drops and counts (``sip_handoff_dropped``),
as a lost UDP datagram would be, and SIP retransmissions recover it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
import zlib
from collections.abc import Callable
from typing import Any

from ..sip.flow import Flow, Target

log = logging.getLogger(__name__)

IN, OUT, NEW, CLOSED, STATS, GENERATION = b"I", b"O", b"N", b"C", b"S", b"G"
QUERY, REPLY, MEDIA = b"Q", b"R", b"M"
_KINDS = frozenset((IN, OUT, NEW, CLOSED, STATS, GENERATION, QUERY, REPLY, MEDIA))
MAX_PAYLOAD = 120_000  # a query's answer or a media event at most (a read takes 128 KiB)
SUPERVISOR = "supervisor"  # the sender name of the supervisor's stats
_REMOTE_KEPT = 100_000  # connections of other workers known by peer address
_GEN_SHIFT = 24
# which hand-offs are counted on their own: a response, a CANCEL, an ACK (by first bytes)
_WHAT = {b"SIP/": "sip_handoff_responses", b"CANC": "sip_handoff_cancels", b"ACK ": "sip_handoff_acks"}
_DEAD_KEPT = 100_000  # ids of closed connections of other workers remembered, newest
_HEAD = struct.Struct("!cH")
# the channel's buffers: room for a burst of whole SIP messages (max_message_size each)
CHANNEL_BUFFER = 4 << 20
_READ_BURST = 64
# a header line "Call-ID:" or its compact form "i:" (RFC 3261 §7.3.3), in the lowered head
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)")


def call_id_of(data: bytes) -> bytes | None:
    """The Call-ID of one framed SIP message, from its head only, as sent (a Call-ID is
    case-sensitive, and a masked one is sealed text); None when it has none."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    m = _CALL_ID.search(head.lower())  # (bytes.lower keeps every offset)
    if m is None:
        return None
    value = head[m.start(1):m.end(1)].strip()
    return value or None


def owner_of(call_id: bytes | str, workers: int) -> int:
    """The worker that handles every message of this Call-ID (as text: a dialog's, a
    media session's)."""
    if isinstance(call_id, str):
        call_id = call_id.encode("utf-8", "surrogateescape")
    return zlib.crc32(call_id) % workers


def conn_ids(worker: int, workers: int, generation: int) -> tuple[int, int]:
    """``(start, step)`` of the connection ids of one worker generation."""
    return workers * ((generation << _GEN_SHIFT) + 1) + worker, workers


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A worker's channel: (the end it reads, the end every worker writes to)."""
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (rx, tx):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BUFFER)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CHANNEL_BUFFER)
    return rx, tx


def encode(kind: bytes, token: str, payload: bytes) -> bytes:
    t = token.encode("ascii")
    return _HEAD.pack(kind, len(t)) + t + payload


def decode(datagram: bytes) -> tuple[bytes, str, bytes] | None:
    """``(kind, token, payload)``, or None when the datagram is not a hand-off."""
    if len(datagram) < _HEAD.size:
        return None
    kind, n = _HEAD.unpack_from(datagram)
    if kind not in _KINDS or len(datagram) < _HEAD.size + n:
        return None
    try:
        token = datagram[_HEAD.size:_HEAD.size + n].decode("ascii")
    except UnicodeDecodeError:
        return None
    return kind, token, datagram[_HEAD.size + n:]


Handler = Callable[[bytes, Flow], object]


class Handoff:
    """One worker's ends of the channel: ``rx`` it reads, ``tx[i]`` reaches worker i."""

    def __init__(
        self, worker: int, rx: socket.socket, tx: list[socket.socket], generations: list[int] | None = None
    ) -> None:
        self.worker = worker
        self.workers = len(tx)
        self.generations = list(generations or [0] * len(tx))
        self._dead: dict[int, None] = {}  # closed connections of other workers
        # open connections of other workers by (transport, peer ip, peer port)
        self._remote: dict[tuple[str, str, int], Flow] = {}
        self._open: dict[int, Flow] = {}  # open connections of other workers by id (from ``N``)
        # whether an address is one of this node's listeners (the worker sets it)
        self.is_listener: Callable[[tuple[str, int]], bool] = lambda local: True
        self.rx = rx
        self.tx = tx
        for s in (rx, *tx):
            s.setblocking(False)
        self.on_in: Handler = lambda data, flow: None
        self.on_out: Handler = lambda data, flow: None
        self.on_closed: Callable[[Flow], None] = lambda flow: None
        self.on_stats: Callable[[str, dict[str, int | float]], None] = lambda sender, stats: None
        self.on_query: Callable[[int, dict[str, Any]], None] = lambda number, query: None
        self.on_reply: Callable[[int, dict[str, Any]], None] = lambda number, reply: None
        self.on_media: Callable[[dict[str, Any]], None] = lambda event: None
        self.counters: dict[str, int] = dict.fromkeys(
            ("sip_handoff_in_sent", "sip_handoff_responses", "sip_handoff_cancels", "sip_handoff_acks",
             "sip_handoff_out_sent", "sip_handoff_received", "sip_handoff_dropped", "sip_handoff_bad"),
            0,
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.rx.fileno(), self._read)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.rx.fileno())
            self._loop = None

    # -- who owns what ---------------------------------------------------------------
    def flow_owner(self, flow: Flow) -> int:
        """The worker holding a connection (connection ids are unique across workers:
        each counts from its number in steps of the worker count); UDP: any worker."""
        return flow.conn_id % self.workers if flow.reliable else self.worker

    def remote_alive(self, flow: Flow) -> bool:
        """Whether another worker's connection may still be open: its holder is the
        generation that opened it, it has not said it closed, and it is that connection:
        the one its holder announced under that id (``N``) or, when none was (this worker
        started after it), one accepted on a listener of ours. A flow another node
        recorded (a binding in a shared database) is neither: its id means nothing here."""
        holder = flow.conn_id % self.workers
        generation = (flow.conn_id // self.workers) >> _GEN_SHIFT
        if generation != self.generations[holder] or flow.conn_id in self._dead:
            return False
        known = self._open.get(flow.conn_id)
        if known is not None:
            return known.local == flow.local and known.remote == flow.remote
        return self.is_listener(flow.local)

    def remote_flow(self, target: Target) -> Flow | None:
        """Another worker's open connection to ``target``, if one is known."""
        flow = self._remote.get((target.transport, target.host, target.port))
        return flow if flow is not None and self.remote_alive(flow) else None

    # -- sending ---------------------------------------------------------------------
    def send(self, worker: int, kind: bytes, token: str, payload: bytes = b"") -> bool:
        try:
            self.tx[worker].send(encode(kind, token, payload))
        except OSError:  # full (the owner is slow or restarting), or too big
            self.counters["sip_handoff_dropped"] += 1
            return False
        if kind == IN:
            self.counters["sip_handoff_in_sent"] += 1
            what = _WHAT.get(payload[:4])
            if what is not None:
                self.counters[what] += 1
        elif kind == OUT:
            self.counters["sip_handoff_out_sent"] += 1
        return True

    def broadcast_opened(self, flow: Flow) -> None:
        self._broadcast(NEW, flow)

    def broadcast_closed(self, flow: Flow) -> None:
        self._broadcast(CLOSED, flow)

    def _broadcast(self, kind: bytes, flow: Flow) -> None:
        for w in range(self.workers):
            if w != self.worker:
                self.send(w, kind, flow.token)

    def push_stats(self, stats: dict[str, int | float]) -> None:
        if self.worker != 0:
            self.send(0, STATS, str(self.worker), json.dumps(stats).encode())

    def stats(self) -> dict[str, int | float]:
        return dict(self.counters)

    # -- receiving -------------------------------------------------------------------
    def _read(self) -> None:
        for _ in range(_READ_BURST):
            try:
                datagram = self.rx.recv(1 << 17)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("x worker channel: %s", exc)
                return
            self._dispatch(datagram)

    def _dispatch(self, datagram: bytes) -> None:
        item = decode(datagram)
        if item is None:
            self.counters["sip_handoff_bad"] += 1
            return
        self.counters["sip_handoff_received"] += 1
        try:
            if not self._handle(*item):
                self.counters["sip_handoff_bad"] += 1
        except Exception:  # a bug in a handler: logged, counted, the channel keeps serving
            self.counters["sip_handoff_bad"] += 1
            log.exception("x worker hand-off %r failed", item[0])

    def _handle(self, kind: bytes, token: str, payload: bytes) -> bool:
        """One decoded hand-off; False when it does not make sense (counted as bad)."""
        if kind == GENERATION:
            w, _, g = token.partition(":")
            if not (w.isdigit() and g.isdigit() and int(w) < self.workers):
                return False
            self.generations[int(w)] = int(g)
            return True
        if kind in (STATS, QUERY, REPLY, MEDIA):
            try:
                value = json.loads(payload)
            except ValueError:
                value = None
            named = token.isdigit() or (kind == STATS and token == SUPERVISOR)
            if not isinstance(value, dict) or not named:
                return False
            if kind == STATS:
                self.on_stats(token, value)
            elif kind == QUERY:
                self.on_query(int(token), value)
            elif kind == REPLY:
                self.on_reply(int(token), value)
            else:
                self.on_media(value)
            return True
        flow = Flow.from_token(token)
        if flow is None:
            return False
        if kind == IN:
            self.on_in(payload, flow)
        elif kind == OUT:
            self.on_out(payload, flow)
        elif kind == NEW:
            if len(self._remote) >= _REMOTE_KEPT:
                del self._remote[next(iter(self._remote))]
            self._remote[(flow.transport, *flow.remote)] = flow
            if len(self._open) >= _REMOTE_KEPT:
                del self._open[next(iter(self._open))]
            self._open[flow.conn_id] = flow
        else:
            self._open.pop(flow.conn_id, None)
            key = (flow.transport, *flow.remote)
            if self._remote.get(key) == flow:
                del self._remote[key]
            self._dead[flow.conn_id] = None
            if len(self._dead) > _DEAD_KEPT:
                del self._dead[next(iter(self._dead))]
            self.on_closed(flow)
        return True
