"""Which Allocate requests go elsewhere with 300 Try Alternate (RFC 8489 §10, RFC 8656 §7.2).

Sans-I/O, ``now`` passed in. The TURN core asks :meth:`Redirector.target` for each new,
authenticated Allocate (RFC 8489 allows a 300 only in answer to a request with valid
message integrity, and the answer carries it too) and sends the client to the address it
returns, if any:

- only while this node holds ``threshold`` allocations or more (0: every new allocation,
  which drains a node);
- round robin over the alternates of the family the client reached us over (RFC 8489
  §14.15: ALTERNATE-SERVER is of the request's family); none of that family: served here;
- **never twice**: RFC 8489 §10 has the client break loops (it ignores a redirect to a
  server it already sent the request to within five minutes). A server cannot see where a
  client was before, so sipedge adds its own guard: a client (user and transport address)
  this node redirected in the last ``memory`` seconds is served here when it comes back (or
  refused 486 when full), so two loaded nodes never bounce a client between them. (A client
  that comes back over a new TCP connection has a new address: the RFC's client rule
  covers that case.) The table is bounded (``max_entries``, oldest forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .._common.addr import Address


class Redirector:
    def __init__(self, alternates: Sequence[Address], threshold: int = 0, memory: float = 300.0,
                 max_entries: int = 10000) -> None:
        self.alternates = tuple(alternates)
        self.threshold = threshold
        self.memory = memory
        self.max_entries = max_entries
        # (user, client address) -> (when, the redirected request's transaction ID, where to)
        self._sent: OrderedDict[tuple[str, Address], tuple[float, bytes, Address]] = OrderedDict()
        self._next = 0
        self.redirects = 0
        self.loops_avoided = 0

    def target(self, username: str, client: Address, transaction_id: bytes, load: int, now: float) -> Address | None:
        """The alternate to send this Allocate to, or None to serve it here. A retransmission
        of a redirected request (same transaction ID) is redirected the same way."""
        if not self.alternates:
            return None
        self._expire(now)
        key = (username, client)
        sent = self._sent.get(key)
        if sent is not None:
            if sent[1] == transaction_id:
                return sent[2]
            self.loops_avoided += 1
            return None
        if load < self.threshold:
            return None
        v6 = ":" in client[0]
        alts = [a for a in self.alternates if (":" in a[0]) == v6]
        if not alts:
            return None
        while len(self._sent) > self.max_entries:
            self._sent.popitem(last=False)
        target = alts[self._next % len(alts)]
        self._next += 1
        self.redirects += 1
        self._sent[key] = (now, transaction_id, target)
        while len(self._sent) > self.max_entries:
            self._sent.popitem(last=False)
        return target

    def _expire(self, now: float) -> None:
        while self._sent:
            key, (when, _, _) = next(iter(self._sent.items()))
            if when > now - self.memory:
                return
            del self._sent[key]
