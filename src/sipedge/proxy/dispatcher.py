"""The dispatcher: destination sets of upstream gateways and PBXs, sans-I/O (Kamailio's
dispatcher module, with plain names; docs/routing.md, "Dispatcher").

:meth:`Dispatcher.select` orders a set's live destinations for one request: the one the
algorithm picks first, then the others as its failover list (the proxy core tries them
in turn on a timeout or a ``failover_codes`` answer, in the same transaction).

Probing: ``handle_timer(now)`` makes the OPTIONS due (``outgoing()``: bytes and where to
send them), times out those unanswered; the adapter (``server/dispatcher.py``) hands the
answers to ``response_received``. Only configured destinations are ever probed, and an
answer counts only from the address its probe went to (a spoofed 200 cannot bring a dead
gateway back).

States: ``up`` (answering), ``probing`` (up, but its last probes failed, fewer than
``failure_threshold`` in a row; still selected), ``down`` (not selected; probed until
``success_threshold`` answers in a row bring it back).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from .._common.addr import canonical_host, host_for_uri, is_ip, strip_brackets
from .._common.ids import TokenSource, token
from ..config.dispatcher import ALGORITHMS, DispatcherConfig, status_matches
from ..errors import ConfigError, ParseError
from ..sip.flow import Target
from ..sip.message import Request, Response
from ..sip.uri import SipUri
from . import forwarding
from .identity import Identity

UP, PROBING, DOWN = "up", "probing", "down"
CALL_ID_PREFIX = "sipedge-ds-"


@dataclass(slots=True)
class Destination:
    """One gateway or PBX of a set, and what the probes learned of it."""

    set_id: int
    uri: SipUri
    target: Target
    weight: int = 1
    priority: int = 0
    attrs: dict[str, str] = field(default_factory=dict)
    state: str = UP
    failures: int = 0  # probes failed in a row
    successes: int = 0  # probes answered in a row
    last_status: int | None = None  # of the last probe answer (None: none yet, or it timed out)
    selected: int = 0  # requests it was picked first for
    address: tuple[str, str, int] | None = None  # where its probes went (a name resolved by the adapter)
    next_probe: float = 0.0
    current_weight: int = 0  # smooth weighted round robin

    @property
    def text(self) -> str:
        return str(self.uri)


@dataclass(frozen=True, slots=True)
class Probe:
    """An OPTIONS to send to ``target``; tell ``sent_to`` where it went, if by a name."""

    call_id: str
    target: Target
    data: bytes


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A destination went up or down (the adapter logs it)."""

    destination: Destination
    old: str
    new: str
    why: str


@dataclass(slots=True)
class _Pending:
    destination: Destination
    sent: float


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process and release (not Python's hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")


class Dispatcher:
    """Destination sets, selection algorithms and OPTIONS probing of one proxy."""

    def __init__(self, config: DispatcherConfig, identity: Identity, token_source: TokenSource | None = None) -> None:
        self.config = config
        self.identity = identity
        self._token: TokenSource = token_source or secrets.token_bytes
        self.sets: dict[int, list[Destination]] = {}
        for dset in config.destination_sets():
            dests = []
            for i, d in enumerate(dset.destinations):
                try:
                    uri = SipUri.parse(d.uri)
                except ParseError as exc:
                    raise ConfigError(f"dispatcher.sets (id {dset.id}).destinations[{i}].uri = {d.uri!r}: "
                                      f"expected a SIP URI like \"sip:192.0.2.10:5060\" ({exc})") from exc
                dests.append(Destination(dset.id, uri, forwarding.uri_target(uri), d.weight, d.priority, dict(d.attrs)))
            dests.sort(key=lambda x: -x.priority)  # (stable: the file's order among equals)
            self.sets[dset.id] = dests
        self.algorithms = {s.id: s.algorithm for s in config.destination_sets()}
        self._rr: dict[int, int] = dict.fromkeys(self.sets, 0)
        self._pending: dict[str, _Pending] = {}
        self._out: list[Probe] = []
        self._events: list[StateChanged] = []
        self._seq = 0
        self.counters: dict[str, int] = {
            "dispatcher_selections": 0,
            "dispatcher_no_destination": 0,
            "dispatcher_probes_sent": 0,
            "dispatcher_probe_answers": 0,
            "dispatcher_probe_failures": 0,
            "dispatcher_probe_replies_refused": 0,
            "dispatcher_marked_down": 0,
            "dispatcher_marked_up": 0,
        }

    @property
    def probing(self) -> bool:
        return self.config.probe_interval > 0 and bool(self.sets)

    def destinations(self) -> list[Destination]:
        return [d for dests in self.sets.values() for d in dests]

    # -- selection ------------------------------------------------------------------
    def select(self, set_id: int, request: Request, algorithm: str | None = None, limit: int | None = None) -> list[Destination]:
        """The live destinations of set ``set_id`` to try for ``request``, first one first;
        [] when all are down. ValueError for a set or algorithm that is not configured."""
        dests = self.sets.get(set_id)
        if dests is None:
            raise ValueError(f"dispatcher set {set_id} is not configured ([[dispatcher.sets]] ids: "
                             f"{', '.join(map(str, self.sets)) or 'none'})")
        alg = algorithm or self.algorithms[set_id]
        if alg not in ALGORITHMS:
            raise ValueError(f"dispatcher algorithm {alg!r} is not one of {', '.join(ALGORITHMS)}")
        live = [i for i, d in enumerate(dests) if d.state != DOWN]
        if not live:
            self.counters["dispatcher_no_destination"] += 1
            return []
        first = self._pick(set_id, dests, live, alg, request)
        n = len(dests)
        order = [dests[(first + k) % n] for k in range(n) if dests[(first + k) % n].state != DOWN]
        if limit is not None:
            order = order[: max(1, limit)]
        order[0].selected += 1
        self.counters["dispatcher_selections"] += 1
        return order

    def _pick(self, set_id: int, dests: list[Destination], live: list[int], alg: str, request: Request) -> int:
        n = len(dests)
        if alg == "priority":
            return live[0]
        if alg == "weighted":
            return self._weighted(dests, live)
        if alg == "round_robin":  # turns among the live ones: each its equal share
            turn = self._rr[set_id]
            self._rr[set_id] = turn + 1
            return live[turn % len(live)]
        start = stable_hash(_hash_key(request, alg)) % n
        # the first live one from there on: a destination going down moves only its own share
        return next(i for k in range(n) if dests[i := (start + k) % n].state != DOWN)

    @staticmethod
    def _weighted(dests: list[Destination], live: list[int]) -> int:
        """Smooth weighted round robin over the live destinations: each gets its share of
        every sum-of-weights requests, spread out (no burst to one gateway)."""
        weighted = [i for i in live if dests[i].weight > 0] or live
        total = 0
        best = weighted[0]
        for i in weighted:
            d = dests[i]
            d.current_weight += max(d.weight, 1)
            total += max(d.weight, 1)
            if d.current_weight > dests[best].current_weight:
                best = i
        dests[best].current_weight -= total
        return best

    def is_from(self, host: str, port: int | None = None, set_id: int | None = None) -> bool:
        """``host`` (and ``port``, when given) is a destination of set ``set_id`` (any set
        when None): its IP literal, or the address its probes went to."""
        host = canonical_host(strip_brackets(host))
        dests = self.destinations() if set_id is None else self.sets.get(set_id, [])
        for d in dests:
            addrs = []
            if is_ip(d.target.host):
                addrs.append((canonical_host(strip_brackets(d.target.host)), d.target.port))
            if d.address is not None:
                addrs.append((canonical_host(d.address[1]), d.address[2]))
            if any(h == host and (port is None or p == port) for h, p in addrs):
                return True
        return False

    # -- probing --------------------------------------------------------------------
    def get_timer(self) -> float | None:
        if not self.probing:
            return None
        when = min(d.next_probe for d in self.destinations())
        if self._pending:
            when = min(when, min(p.sent for p in self._pending.values()) + self.config.probe_timeout)
        return when

    def handle_timer(self, now: float) -> None:
        if not self.probing:
            return
        timeout = self.config.probe_timeout
        for call_id, p in list(self._pending.items()):
            if now >= p.sent + timeout:
                del self._pending[call_id]
                self._failed(p.destination, None, now, f"no answer to OPTIONS in {timeout:g} s")
        waiting = {id(p.destination) for p in self._pending.values()}
        for d in self.destinations():
            if now >= d.next_probe and id(d) not in waiting:
                d.next_probe = now + self.config.probe_interval
                self._probe(d, now)

    def _probe(self, d: Destination, now: float) -> None:
        self._seq += 1
        call_id = f"{CALL_ID_PREFIX}{token(6, self._token)}{self._seq}"
        target = d.target
        listener = self.identity.listener_for_target(target)
        ruri = f"sip:{host_for_uri(strip_brackets(target.host))}:{target.port}"
        if target.transport != "udp":
            ruri += f";transport={target.transport}"
        lines = [
            f"OPTIONS {ruri} SIP/2.0",
            f"Via: SIP/2.0/{target.transport.upper()} {listener.via_sent_by()};branch=z9hG4bK{token(8, self._token)};rport",
            f"From: <{self.config.probe_from}>;tag={token(5, self._token)}",
            f"To: <{ruri}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 OPTIONS",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ]
        self._pending[call_id] = _Pending(d, now)
        self.counters["dispatcher_probes_sent"] += 1
        self._out.append(Probe(call_id, target, ("\r\n".join(lines) + "\r\n\r\n").encode()))

    def sent_to(self, call_id: str, target: Target) -> None:
        """The adapter sent probe ``call_id`` to ``target`` (an address a name resolved to)."""
        p = self._pending.get(call_id)
        if p is not None:
            p.destination.address = (target.transport, strip_brackets(target.host), target.port)

    def send_failed(self, call_id: str, now: float) -> None:
        p = self._pending.pop(call_id, None)
        if p is not None:
            self._failed(p.destination, None, now, "the OPTIONS could not be sent")

    def response_received(self, resp: Response, source: tuple[str, int], now: float) -> bool:
        """An answer to one of our probes (True: it was ours, used or refused)."""
        try:
            call_id = resp.call_id
        except ParseError:
            return False
        if not call_id.startswith(CALL_ID_PREFIX):
            return False
        p = self._pending.get(call_id)
        if p is None or resp.status < 200:
            return True  # late, repeated or provisional
        d = p.destination
        expected = d.address[1:] if d.address is not None else (strip_brackets(d.target.host), d.target.port)
        if (canonical_host(strip_brackets(source[0])), source[1]) != (canonical_host(expected[0]), expected[1]):
            self.counters["dispatcher_probe_replies_refused"] += 1
            return True  # not from where the probe went: ignored (the real answer may follow)
        del self._pending[call_id]
        self.counters["dispatcher_probe_answers"] += 1
        d.last_status = resp.status
        if 200 <= resp.status < 300 or status_matches(self.config.probe_ok_codes, resp.status):
            self._answered(d, now)
        else:
            self._failed(d, resp.status, now, f"OPTIONS answered {resp.status}")
        return True

    def _answered(self, d: Destination, now: float) -> None:
        d.failures = 0
        d.successes += 1
        if d.state == PROBING:
            d.state = UP
        elif d.state == DOWN and d.successes >= self.config.success_threshold:
            self._change(d, UP, f"{d.successes} probe(s) answered")

    def _failed(self, d: Destination, status: int | None, now: float, why: str) -> None:
        self.counters["dispatcher_probe_failures"] += 1
        d.successes = 0
        d.failures += 1
        if status is None:
            d.last_status = None
        if d.state != DOWN:
            if d.failures >= self.config.failure_threshold:
                self._change(d, DOWN, f"{why} ({d.failures} in a row)")
            else:
                d.state = PROBING

    def _change(self, d: Destination, new: str, why: str) -> None:
        old, d.state = d.state, new
        self.counters["dispatcher_marked_down" if new == DOWN else "dispatcher_marked_up"] += 1
        self._events.append(StateChanged(d, old, new, why))

    def outgoing(self) -> list[Probe]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[StateChanged]:
        out, self._events = self._events, []
        return out

    # -- views ----------------------------------------------------------------------
    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counters)
        dests = self.destinations()
        out["dispatcher_destinations_up"] = sum(1 for d in dests if d.state != DOWN)
        out["dispatcher_destinations_down"] = sum(1 for d in dests if d.state == DOWN)
        out["dispatcher_probes_pending"] = len(self._pending)
        return out

    def snapshot(self) -> list[dict[str, object]]:
        """Every destination with its state (``sipedge ctl ds list``)."""
        return [
            {
                "set": d.set_id,
                "uri": d.text,
                "algorithm": self.algorithms[d.set_id],
                "state": d.state,
                "weight": d.weight,
                "priority": d.priority,
                "failures": d.failures,
                "last_status": d.last_status,
                "selected": d.selected,
                "attrs": dict(d.attrs),
            }
            for d in self.destinations()
        ]


def _hash_key(request: Request, alg: str) -> str:
    """What a hash algorithm hashes: the Call-ID, or the From user (the From URI when it
    has none)."""
    if alg == "hash_call_id":
        return request.get("call-id") or ""
    try:
        uri = request.from_.uri
    except ParseError:
        return request.get("from") or ""
    if isinstance(uri, SipUri) and uri.user:
        return uri.user
    return str(uri)
