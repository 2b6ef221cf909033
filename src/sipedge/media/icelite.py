"""ICE-lite for the relay's own candidates (RFC 8445 §2.5), and what a relay that passes
the endpoints' own checks on needs to know of them, on top of the STUN codec in
``sipedge.stun``.

A lite agent only answers: a Binding request that carries our short-term credentials
(USERNAME ``ours:theirs``, MESSAGE-INTEGRITY with our password) proves its source, and
gets a success response with XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT.
Anything else is not for us: the caller drops it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._common.addr import Address
from ..errors import ParseError
from ..stun import message as stun
from ..stun.attributes import UseCandidate, Username, XorMappedAddress
from ..stun.integrity import short_term_key


@dataclass(frozen=True, slots=True)
class PassingStun:
    """What a relay that forwards endpoints' own ICE checks needs of a STUN message,
    without credentials: its class (0 request, 1 indication, 2 success, 3 error), the
    transaction id and whether a request nominates (USE-CANDIDATE)."""

    cls: int
    transaction_id: bytes
    use_candidate: bool


def peek(data: bytes) -> PassingStun | None:
    """The facts of a well-formed STUN message, or None when it is not one."""
    try:
        msg = stun.Message.parse(data)
    except ParseError:
        return None
    return PassingStun(int(msg.cls), msg.transaction_id, msg.has(UseCandidate))


@dataclass(frozen=True, slots=True)
class BindingCheck:
    """An authenticated connectivity check for one of our candidates."""

    request: stun.Message
    use_candidate: bool

    @property
    def transaction_id(self) -> bytes:
        return self.request.transaction_id


def check_binding(data: bytes, local_ufrag: str, local_pwd: str) -> BindingCheck | None:
    """An authenticated Binding request for ``local_ufrag``, or None (drop) for anything else."""
    try:
        msg = stun.Message.parse(data)
    except ParseError:
        return None
    if msg.method != stun.Method.BINDING or msg.cls != stun.Class.REQUEST:
        return None
    username = msg.get(Username)
    if username is None or username.value.partition(":")[0] != local_ufrag:
        return None
    if not msg.check_integrity(short_term_key(local_pwd)):
        return None
    return BindingCheck(msg, msg.has(UseCandidate))


def binding_success(check: BindingCheck, source: Address, local_pwd: str) -> bytes:
    """The success response to ``check`` from ``source`` (RFC 8445 §7.3.1)."""
    reply = stun.success(check.request, [XorMappedAddress(source[0], source[1])])
    return reply.serialize(short_term_key(local_pwd), fingerprint=True)
