"""Values of the SIP transaction layer (RFC 3261 §17): keys, states, events, sends.

Everything here is a frozen value. :class:`~sipedge.sip.transaction.TransactionLayer`
returns events (past tense, what happened) through ``next_event()``/``events()`` and the
bytes to put on the wire as :class:`Send` items through ``outgoing()``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from .flow import Flow, Target
from .message import Request, Response


class TxState(enum.Enum):
    """Transaction states, named as in RFC 3261 §17 figures 5-8 and RFC 6026 §7."""

    CALLING = "Calling"  # client INVITE, request sent, nothing heard yet
    TRYING = "Trying"  # client and server non-INVITE, no provisional yet
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"  # server INVITE: ACK for the non-2xx final received
    ACCEPTED = "Accepted"  # RFC 6026: 2xx passed (client) or sent (server)
    TERMINATED = "Terminated"


class TxKind(enum.Enum):
    CLIENT_INVITE = "client INVITE"
    CLIENT_NON_INVITE = "client non-INVITE"
    SERVER_INVITE = "server INVITE"
    SERVER_NON_INVITE = "server non-INVITE"


class TransactionKey(NamedTuple):
    """Identifies one transaction (RFC 3261 §17.1.3 and §17.2.3).

    Client keys are ``(branch, CSeq method)``. Server keys are ``(branch, sent-by,
    method)`` with ACK folded into INVITE; for an RFC 2543 peer (branch without the
    ``z9hG4bK`` cookie) ``branch`` is a digest of Request-URI, tags, Call-ID, CSeq number
    and top Via, and ``sent_by`` is empty.

    A named tuple of atoms: it hashes in C and the garbage collector stops tracking it,
    which matters with a transaction table of tens of thousands of keys.
    """

    client: bool
    branch: str
    method: str
    sent_by: str = ""

    def __str__(self) -> str:
        side = "c" if self.client else "s"
        return f"{side}:{self.method}:{self.branch}"


# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request opened a server transaction; answer it with ``respond(key, ...)``.
    (CANCEL arrives as :class:`CancelReceived` instead, ACK as :class:`AckReceived`.)"""

    key: TransactionKey
    request: Request
    flow: Flow


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL opened its own server transaction ``cancel_key`` (answer it: 200, or 481
    when ``invite_key`` is None). ``invite_key`` is the server INVITE transaction it
    targets (RFC 3261 §9.2), in whatever state it is; check ``layer.state(invite_key)``."""

    cancel_key: TransactionKey
    invite_key: TransactionKey | None
    request: Request
    flow: Flow


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK the transaction layer does not absorb: the ACK for a 2xx (matching an
    INVITE server transaction in Accepted: ``key`` set) or an ACK matching nothing
    (``key`` None). A proxy forwards it statelessly (RFC 3261 §16.10, RFC 6026 §8.6)."""

    key: TransactionKey | None
    request: Request
    flow: Flow


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the client transaction ``key``: provisional, final, or (RFC 6026)
    a further 2xx while the INVITE client transaction is Accepted."""

    key: TransactionKey
    response: Response
    flow: Flow


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matches no client transaction (RFC 3261 §16.7 step 1 hands it to
    the proxy core, which forwards 2xx to INVITE statelessly and drops the rest)."""

    response: Response
    flow: Flow


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The transaction gave up: ``timer`` is "B"/"F" (client, no final response), "H"
    (server INVITE, no ACK), "C" (proxy INVITE Timer C: a CANCEL was sent; the
    transaction lives until the 487 or 64*T1), or "CANCEL" (no final response 64*T1
    after our CANCEL). A Terminated event follows unless ``timer`` is "C"."""

    key: TransactionKey
    timer: str


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport could not deliver for ``key`` (``transport_error``)."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is gone; its key matches nothing any more."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """A new request was answered statelessly by the layer itself: ``status`` 503 when
    ``max_transactions`` is reached, or the 4xx of a request too malformed to key."""

    request: Request
    flow: Flow
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class MessageDropped:
    """A message the layer could not use and could not answer (counted)."""

    message: Request | Response
    flow: Flow
    reason: str


TxEvent = (
    RequestReceived
    | CancelReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TimedOut
    | TransportFailed
    | Terminated
    | RequestRefused
    | MessageDropped
)


@dataclass(frozen=True, slots=True)
class Send:
    """Bytes for the transport: on ``flow`` (a reply, or a request down a known flow) or
    to ``target`` (the adapter picks or opens a connection). ``key`` names the
    transaction, so a failure can be reported with ``transport_error(key, now)``."""

    data: bytes
    flow: Flow | None
    target: Target | None
    key: TransactionKey | None = None


__all__ = [
    "AckReceived",
    "CancelReceived",
    "MessageDropped",
    "RequestReceived",
    "RequestRefused",
    "ResponseReceived",
    "Send",
    "StrayResponse",
    "Terminated",
    "TimedOut",
    "TransactionKey",
    "TransportFailed",
    "TxEvent",
    "TxKind",
    "TxState",
]
