"""The STUN Binding service (RFC 8489 §6.3, RFC 5780 §6) as a pure function.

With an alternate address configured (RFC 5780: a second IP and a second port), the
service honours CHANGE-REQUEST and RESPONSE-PORT, reports RESPONSE-ORIGIN and
OTHER-ADDRESS and echoes PADDING, so a client can classify its NAT's mapping and
filtering behaviour. The caller sends ``reply.message`` from ``reply.source`` to
``reply.destination``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._common.addr import Address
from ..errors import ParseError
from . import attributes as at
from .message import Class, Message, Method, error, success


@dataclass(frozen=True, slots=True)
class BindingConfig:
    software: str = ""
    primary: Address | None = None
    """(A1, P1): the main listener; with ``other`` set, RFC 5780 behaviour is on."""
    other: Address | None = None
    """(A2, P2): the alternate IP and port."""

    @property
    def rfc5780(self) -> bool:
        return self.primary is not None and self.other is not None


@dataclass(frozen=True, slots=True)
class BindingReply:
    source: Address
    destination: Address
    message: Message


def answer_binding(
    req: Message, transport: str, local: Address, remote: Address, config: BindingConfig
) -> BindingReply:
    """Answer a Binding request received on ``local`` from ``remote``."""
    extra: list[at.Attribute] = []
    if config.software:
        extra.append(at.Software(config.software))
    change = req.get(at.ChangeRequest)
    rport = req.get(at.ResponsePort)
    # RFC 5780 answers come from the configured address pair, of one family: a listener
    # of the other family (dual stack) is a plain Binding server
    if (
        not config.rfc5780
        or config.primary is None
        or config.other is None
        or (":" in local[0]) != (":" in config.primary[0])
    ):
        if change is not None or rport is not None:
            types = tuple(a.TYPE for a in (change, rport) if a is not None)
            return BindingReply(
                local, remote, error(req, 420, [at.UnknownAttributes(types), *extra])
            )
        return BindingReply(local, remote, success(req, [at.XorMappedAddress(*remote), *extra]))
    (a1, p1), (a2, p2) = config.primary, config.other
    lip, lport = local
    other_ip = a2 if lip == a1 else a1
    other_port = p2 if lport == p1 else p1
    source = local
    dest = remote
    if transport != "udp" and (change is not None and (change.change_ip or change.change_port)):
        return BindingReply(
            local, remote, error(req, 400, extra, reason="CHANGE-REQUEST needs UDP")
        )
    if transport != "udp" and rport is not None:
        return BindingReply(local, remote, error(req, 400, extra, reason="RESPONSE-PORT needs UDP"))
    if change is not None:
        source = (other_ip if change.change_ip else lip, other_port if change.change_port else lport)
    if rport is not None:
        dest = (remote[0], rport.port)
    attrs: list[at.Attribute] = [
        at.XorMappedAddress(*remote),
        at.ResponseOrigin(*source),
        at.OtherAddress(other_ip, other_port),
        *extra,
    ]
    pad = req.get(at.Padding)
    if pad is not None and transport == "udp":
        attrs.append(at.Padding(bytes(len(pad.value))))
    return BindingReply(source, dest, success(req, attrs))


_KEEPALIVE_UNDERSTOOD = frozenset(
    (at.Username.TYPE, at.MessageIntegrity.TYPE, at.MessageIntegritySha256.TYPE)
)
"""Required attributes a keepalive may carry and we may ignore: no credentials are
checked on a SIP port, the answer reveals only the sender's own address."""


def answer_sip_keepalive(data: bytes, remote: Address, software: str = "") -> bytes | None:
    """The reply to a STUN message that reached a SIP UDP port, or None to drop it.

    RFC 5626 §4.4.2 (outbound) clients keep their NAT binding open with Binding requests
    sent to the SIP port itself and read XOR-MAPPED-ADDRESS to see whether it changed.
    Only Binding requests are answered there (a comprehension-required attribute we do
    not know gets 420); anything else — responses, indications, other methods, bytes that
    are not STUN — is dropped: this port is no TURN server. FINGERPRINT is echoed when the
    request carries it, so the client can tell our answer from SIP (RFC 8489 §7.3).
    """
    try:
        req = Message.parse(data)
    except ParseError:
        return None
    if req.cls is not Class.REQUEST or req.method != Method.BINDING:
        return None
    extra: list[at.Attribute] = [at.Software(software)] if software else []
    unknown = req.unknown_required(_KEEPALIVE_UNDERSTOOD)
    if unknown:
        reply = error(req, 420, [at.UnknownAttributes(unknown), *extra])
    else:
        reply = success(req, [at.XorMappedAddress(*remote), *extra])
    return reply.serialize(fingerprint=req.has(at.Fingerprint))
