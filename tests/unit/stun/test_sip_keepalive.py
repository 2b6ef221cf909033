"""``stun.server.answer_sip_keepalive``: what a SIP UDP port answers to STUN."""

from __future__ import annotations

from sipedge.stun import attributes as at
from sipedge.stun.message import Class, Message, Method, indication, request
from sipedge.stun.server import answer_sip_keepalive

TID = bytes(range(12))
SOURCE = ("192.0.2.7", 40123)


def test_binding_request_gets_the_source_address_software_and_fingerprint() -> None:
    data = request(Method.BINDING, TID).serialize(fingerprint=True)
    raw = answer_sip_keepalive(data, SOURCE, "sipedge")
    assert raw is not None
    reply = Message.parse(raw)  # the FINGERPRINT is checked here
    assert (reply.cls, reply.method, reply.transaction_id) == (Class.SUCCESS, Method.BINDING, TID)
    assert reply.get(at.XorMappedAddress) == at.XorMappedAddress(*SOURCE)
    assert reply.get(at.Software) == at.Software("sipedge")
    assert reply.has(at.Fingerprint)


def test_no_fingerprint_without_one_in_the_request() -> None:
    raw = answer_sip_keepalive(request(Method.BINDING, TID).serialize(), SOURCE)
    assert raw is not None
    reply = Message.parse(raw)
    assert not reply.has(at.Fingerprint) and not reply.has(at.Software)


def test_unknown_required_attribute_gets_420() -> None:
    req = request(Method.BINDING, TID, [at.ChangeRequest(True, True)])
    raw = answer_sip_keepalive(req.serialize(), SOURCE)
    assert raw is not None
    reply = Message.parse(raw)
    assert reply.cls is Class.ERROR and reply.error_code == 420
    assert reply.get(at.UnknownAttributes) == at.UnknownAttributes((at.ChangeRequest.TYPE,))


def test_everything_else_is_dropped() -> None:
    binding = request(Method.BINDING, TID).serialize()
    for data in (
        request(Method.ALLOCATE, TID).serialize(),
        indication(Method.BINDING, TID).serialize(),
        Message(Method.BINDING, Class.SUCCESS, TID).serialize(),
        binding[:-1],
        b"\x00\x01\x00\x00" + b"\0" * 16,  # no magic cookie
        b"",
    ):
        assert answer_sip_keepalive(data, SOURCE) is None, data
