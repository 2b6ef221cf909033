"""NAT behaviour discovery (RFC 5780 §4.3, §4.4): requests, responses and classification.

Pure helpers for a client (``sipedge probe``): build the Binding requests of each test,
read the responses, and classify mapping and filtering from the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .._common.addr import Address
from ..errors import ParseError
from . import attributes as at
from .message import Class, Message, Method, request


class Behaviour(Enum):
    """Mapping or filtering behaviour of a NAT (RFC 4787 terms)."""

    NO_NAT = "no NAT (the mapped address is the local address)"
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


@dataclass(frozen=True, slots=True)
class BindingResult:
    mapped: Address
    origin: Address | None
    other: Address | None


def binding_request(tid: bytes, change_ip: bool = False, change_port: bool = False) -> bytes:
    attrs: list[at.Attribute] = [at.Software("sipedge probe")]
    if change_ip or change_port:
        attrs.append(at.ChangeRequest(change_ip, change_port))
    return request(Method.BINDING, tid, attrs).serialize(fingerprint=True)


def parse_binding_response(data: bytes, tid: bytes) -> BindingResult | None:
    """The result of a success response to ``tid``; None for anything else."""
    try:
        m = Message.parse(data)
    except ParseError:
        return None
    if m.transaction_id != tid or m.method != Method.BINDING or m.cls is not Class.SUCCESS:
        return None
    xma = m.get(at.XorMappedAddress)
    mapped: Address | None = xma.address if xma else None
    if mapped is None:
        ma = m.get(at.MappedAddress)
        mapped = ma.address if ma else None
    if mapped is None:
        return None
    origin = m.get(at.ResponseOrigin)
    other = m.get(at.OtherAddress)
    return BindingResult(mapped, origin.address if origin else None, other.address if other else None)


def classify_mapping(local: Address, m1: Address, m2: Address | None, m3: Address | None) -> Behaviour | None:
    """RFC 5780 §4.3 from Test I (to the primary), II (other IP) and III (other IP+port)."""
    if m1 == local:
        return Behaviour.NO_NAT
    if m2 is None:
        return None
    if m2 == m1:
        return Behaviour.ENDPOINT_INDEPENDENT
    if m3 is None:
        return None
    if m3 == m2:
        return Behaviour.ADDRESS_DEPENDENT
    return Behaviour.ADDRESS_AND_PORT_DEPENDENT


def classify_filtering(change_both_answered: bool, change_port_answered: bool) -> Behaviour:
    """RFC 5780 §4.4 from Test II (change IP and port) and Test III (change port)."""
    if change_both_answered:
        return Behaviour.ENDPOINT_INDEPENDENT
    if change_port_answered:
        return Behaviour.ADDRESS_DEPENDENT
    return Behaviour.ADDRESS_AND_PORT_DEPENDENT
