"""Flows and targets: where a SIP message came from and where one goes (DESIGN.md
"Flows, not addresses").

A :class:`Flow` names one path to a peer: the transport, our local listener address, the
peer's address and, for connection-oriented transports, the connection id. Replies and
requests to a NATed or WebSocket client go back on the flow it used. A :class:`Target` is
a destination still to be reached (any connection will do, or a new one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._common.addr import Address

RELIABLE = frozenset({"tcp", "tls", "ws", "wss"})
SECURE = frozenset({"tls", "wss"})
# Byte streams, where Content-Length is the only framing (WebSocket frames each message).
STREAM = frozenset({"tcp", "tls"})


@dataclass(frozen=True, slots=True)
class Flow:
    transport: str  # "udp" | "tcp" | "tls" | "ws" | "wss"
    local: Address
    remote: Address
    conn_id: int = 0  # 0 for UDP; the connection's id for stream transports

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE

    @property
    def stream(self) -> bool:
        """True on TCP/TLS, where the framer cut the message by Content-Length; a UDP
        datagram or WebSocket message may omit it (RFC 3261 §18.3, RFC 7118 §5)."""
        return self.transport in STREAM

    @property
    def token(self) -> str:
        """A compact string form, stored with registrations (``Binding.flow``)."""
        return "~".join(
            (self.transport, self.local[0], str(self.local[1]), self.remote[0], str(self.remote[1]), str(self.conn_id))
        )

    @classmethod
    def from_token(cls, token: str) -> Flow | None:
        parts = token.split("~")
        if len(parts) != 6 or not all(parts[i].isdigit() for i in (2, 4, 5)):
            return None
        t, lh, lp, rh, rp, cid = parts
        return cls(t, (lh, int(lp)), (rh, int(rp)), int(cid))

    @property
    def target(self) -> Target:
        return Target(self.transport, self.remote[0], self.remote[1])


@dataclass(frozen=True, slots=True)
class Target:
    """A destination: transport, host (IP literal or name to resolve) and port."""

    transport: str
    host: str
    port: int
    # the name an address was resolved from: what TLS checks the certificate against (and
    # sends as SNI); not part of what the target is
    name: str = field(default="", compare=False)

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE
