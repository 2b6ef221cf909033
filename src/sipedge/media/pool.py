"""A pool of remote media relays (sipedge media nodes or rtpengine), as Kamailio's rtpengine sets.

Sans-I/O: the adapter (``server.ng.NgPool``) sends the ng requests and tells this core
what happened; every entry point takes ``now``. The core decides:

- **which node takes a new call**: smooth weighted round robin over the nodes that are up
  (a node of weight 2 takes two calls for each call of a node of weight 1, interleaved);
- **stickiness**: once a node has taken a call's offer, every later request of that call
  (answer, delete, a re-INVITE's offer, each branch of a forked INVITE) goes to it, so the
  call stays on the relay that holds its ports. A re-offer whose node is down is moved to
  a live one (its new SDP then points there); an answer or delete is never moved;
- **failover**: an offer that fails on its node is tried on the next one; when every node
  is down an offer still tries them in turn (one may be back before its next ping);
- **health**: every node is sent an ng ``ping`` each ``ping_interval``; a node that does
  not answer (or times out on a request) is *down* and gets no new call; the first pong
  brings it back *up*.

The sticky table is bounded (``max_calls``, oldest forgotten first) so signalling that never
deletes its calls cannot grow it without limit.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field


class NodeState(enum.Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One relay of the pool: its ng address and weight."""

    host: str
    port: int
    weight: int = 1

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(slots=True, eq=False)
class Node:
    """A node and what the pool knows of it (compared by identity)."""

    spec: NodeSpec
    state: NodeState = NodeState.UP
    calls: int = 0
    """Calls currently stuck to it."""
    offers: int = 0
    failures: int = 0
    """Requests that failed on it (timeouts and error replies)."""
    last_change: float = 0.0
    next_ping: float = 0.0
    current: int = field(default=0, repr=False)  # smooth weighted round robin credit

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class NodeChanged:
    """A node went up or down (for the adapter to log and count)."""

    node: str
    state: NodeState
    reason: str


class MediaPool:
    """Node selection, per-call stickiness and health of a set of relays."""

    def __init__(self, specs: Iterable[NodeSpec], ping_interval: float = 5.0, max_calls: int = 10000,
                 now: float = 0.0) -> None:
        self.nodes: list[Node] = [Node(spec, last_change=now, next_ping=now) for spec in specs]
        if not self.nodes:
            raise ValueError("a media pool needs at least one node")
        self.ping_interval = ping_interval
        self.max_calls = max_calls
        self._calls: OrderedDict[str, Node] = OrderedDict()
        self._events: list[NodeChanged] = []
        self.counters: dict[str, int] = {
            "media_pool_offers": 0,
            "media_pool_retries": 0,
            "media_pool_no_node": 0,
            "media_pool_moved": 0,
            "media_pool_forgotten": 0,
            "media_pool_pings": 0,
            "media_pool_ping_failures": 0,
            "media_pool_node_down": 0,
            "media_pool_node_up": 0,
        }

    # -- selection ---------------------------------------------------------------------
    def pick(self, exclude: Iterable[Node] = ()) -> Node | None:
        """The next node for a new call among those up and not in ``exclude`` (None: none is)."""
        skip = set(exclude)
        eligible = [n for n in self.nodes if n.state is NodeState.UP and n not in skip]
        if not eligible:
            return None
        total = 0
        best = eligible[0]
        for n in eligible:
            n.current += n.spec.weight
            total += n.spec.weight
            if n.current > best.current:
                best = n
        best.current -= total
        return best

    def node_for(self, call_id: str) -> Node | None:
        """The node that holds ``call_id`` (None: no offer of it was taken)."""
        return self._calls.get(call_id)

    def offer_target(self, call_id: str, exclude: Iterable[Node] = ()) -> Node | None:
        """Where an offer of ``call_id`` goes: its node while that is up, else a new one."""
        node = self._calls.get(call_id)
        excluded = set(exclude)
        if node is not None and node.state is NodeState.UP and node not in excluded:
            return node
        picked = self.pick(excluded)
        if picked is None:  # every node down: try them anyway, one may be back before its ping
            picked = next((n for n in self.nodes if n not in excluded), None)
            if picked is None:
                self.counters["media_pool_no_node"] += 1
        if picked is not None and excluded:
            self.counters["media_pool_retries"] += 1
        return picked

    # -- outcomes ----------------------------------------------------------------------
    def offer_done(self, call_id: str, node: Node, now: float) -> None:
        """``node`` took the offer of ``call_id``: the call sticks to it."""
        node.offers += 1
        self.counters["media_pool_offers"] += 1
        self._set(node, NodeState.UP, now, "took an offer")
        old = self._calls.get(call_id)
        if old is node:
            self._calls.move_to_end(call_id)
            return
        if old is not None:
            old.calls -= 1
            self.counters["media_pool_moved"] += 1
        self._calls[call_id] = node
        node.calls += 1
        while len(self._calls) > self.max_calls:
            _, gone = self._calls.popitem(last=False)
            gone.calls -= 1
            self.counters["media_pool_forgotten"] += 1

    def call_ended(self, call_id: str) -> None:
        """The whole call was deleted: forget its node."""
        node = self._calls.pop(call_id, None)
        if node is not None:
            node.calls -= 1

    def request_failed(self, node: Node, now: float, timeout: bool) -> None:
        """A request to ``node`` failed; a timeout means the node is gone: take it out."""
        node.failures += 1
        if timeout:
            self._set(node, NodeState.DOWN, now, "request timed out")

    # -- health ------------------------------------------------------------------------
    def pings_due(self, now: float) -> list[Node]:
        """The nodes to ping now; each is due again ``ping_interval`` later."""
        due = [n for n in self.nodes if n.next_ping <= now]
        for n in due:
            n.next_ping = now + self.ping_interval
        self.counters["media_pool_pings"] += len(due)
        return due

    def ping_result(self, node: Node, ok: bool, now: float) -> None:
        if ok:
            self._set(node, NodeState.UP, now, "answers ping")
        else:
            self.counters["media_pool_ping_failures"] += 1
            self._set(node, NodeState.DOWN, now, "no answer to ping")

    def next_timer(self) -> float:
        return min(n.next_ping for n in self.nodes)

    def events(self) -> list[NodeChanged]:
        out, self._events = self._events, []
        return out

    def _set(self, node: Node, state: NodeState, now: float, reason: str) -> None:
        if node.state is state:
            return
        node.state = state
        node.last_change = now
        node.current = 0
        self.counters["media_pool_node_up" if state is NodeState.UP else "media_pool_node_down"] += 1
        self._events.append(NodeChanged(node.name, state, reason))

    # -- views -------------------------------------------------------------------------
    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counters)
        out["media_pool_nodes"] = len(self.nodes)
        out["media_pool_nodes_up"] = sum(n.state is NodeState.UP for n in self.nodes)
        out["media_pool_calls"] = len(self._calls)
        return out

    def describe(self, now: float) -> list[dict[str, object]]:
        """One row per node, for ``sipedge ctl media nodes``."""
        return [
            {
                "node": n.name,
                "state": n.state.value,
                "weight": n.spec.weight,
                "calls": n.calls,
                "offers": n.offers,
                "failures": n.failures,
                "since": round(now - n.last_change, 1),
            }
            for n in self.nodes
        ]
