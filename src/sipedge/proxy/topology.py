"""Topology hiding (Kamailio's topoh/topos), stateless: what one side of a dialog would
learn of the other side's network never leaves this proxy.

A request leaving for the other side keeps only our Via, only our Record-Route entries
and, for Contact, a URI of ours. What was taken away travels with the dialog, sealed
(encrypted and authenticated with AES-SIV from ``cryptography``, the dialog's Call-ID as
associated data) into a ``th`` parameter of our own URIs:

- our Record-Route entries carry the route set towards the party that sent the message
  they were written into (the Record-Route entries on its side of us), so a request that
  follows them is given that route set back;
- the Contact we hand out (``sip:th@us;th=...``) carries the party's own Contact URI,
  which becomes the Request-URI again.

Responses get the Vias of the request back from its transaction. Nothing is stored, so
in-dialog requests still route after a restart, and nodes sharing the data directory's
secret route each other's dialogs. The key is derived from that secret as the
Record-Route stamp's is (:mod:`.route_stamp`). Pure functions on messages: the core
calls them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from ..errors import ParseError
from ..sip.headers import NameAddr
from ..sip.message import Message, Request, Response
from ..sip.uri import SipUri

PARAM = "th"
CALL_ID_PREFIX = "thc-"  # a Call-ID we masked (``sip.topology_mask_callid``)
USER = "th"  # the user part of our Contact URIs: no strict-router Request-URI (forwarding.route_set)
MAX_PARAM = 4096  # characters of a sealed parameter we accept (a long route set is ~1 kB)
_ROUTES = b"routes"
_CONTACT = b"contact"
_CALL_ID = b"call-id"
OUTSIDE = "outside"  # a sealed Contact's mark: requests to this party carry the masked Call-ID
INSIDE = "inside"
_VERSION = b"\x01"  # (AES-SIV refuses an empty plaintext, and an empty route set is one)


class TopologyError(ValueError):
    """A ``th`` parameter that is not one of ours (forged, tampered, of another dialog)."""


class TopologyCodec:
    """Seals and opens the ``th`` parameters; the same secret, the same key."""

    def __init__(self, secret: bytes) -> None:
        key = hashlib.blake2b(b"sipedge topology hiding", key=secret[:64], digest_size=64).digest()
        self._aead = AESSIV(key)

    def seal(self, kind: bytes, values: Sequence[str], call_id: str) -> str:
        plain = _VERSION + "\n".join(values).encode("utf-8", "surrogateescape")
        sealed = self._aead.encrypt(plain, [kind, call_id.encode("utf-8", "surrogateescape")])
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, kind: bytes, value: str | None, call_id: str) -> list[str]:
        if not value or len(value) > MAX_PARAM:
            raise TopologyError("missing or oversized th parameter")
        try:
            raw = base64.urlsafe_b64decode(value.encode("ascii") + b"=" * (-len(value) % 4))
            plain = self._aead.decrypt(raw, [kind, call_id.encode("utf-8", "surrogateescape")])
        except (UnicodeEncodeError, binascii.Error, ValueError, InvalidTag) as exc:
            raise TopologyError(f"th parameter does not open: {type(exc).__name__}") from None
        if not plain.startswith(_VERSION):
            raise TopologyError("th parameter of an unknown version")
        text = plain[1:].decode("utf-8", "surrogateescape")
        return text.split("\n") if text else []


# A URI of ours facing one side, with these parameters (Listener.uri of the side's listener).
OurUri = Callable[..., SipUri]


def hide_vias(msg: Request) -> None:
    """Before our own Via goes on: the Vias of the sender's side go (the transaction
    keeps them for the responses, :func:`restore_vias`)."""
    msg.remove("via")


def restore_vias(resp: Response, request: Request) -> None:
    """A response going back gets the Vias of the request as it arrived."""
    resp.remove("via")
    for v in request.get_all("via"):
        resp.add("via", v)


def mask_call_id(codec: TopologyCodec, call_id: str) -> str:
    """The Call-ID the outside (the callee's side) knows the call by (topoh's
    ``mask_callid``): the same for every message of the call."""
    return CALL_ID_PREFIX + codec.seal(_CALL_ID, [call_id], "")


def unmask_call_id(codec: TopologyCodec, value: str | None) -> str | None:
    """The Call-ID behind one :func:`mask_call_id` wrote; None for any other value (an
    unmasked Call-ID, or one that only looks masked: it stays what it is)."""
    if not value or not value.startswith(CALL_ID_PREFIX):
        return None
    try:
        found = codec.open(_CALL_ID, value[len(CALL_ID_PREFIX):], "")
    except TopologyError:
        return None
    return found[0] if len(found) == 1 else None


def hide_contact(msg: Message, ours: OurUri, codec: TopologyCodec, call_id: str, outside: bool = False) -> None:
    """Each Contact becomes ``sip:th@us;th=<sealed URI>`` (header parameters dropped: a
    ``received`` one names an address); a Contact that does not parse is removed.
    ``outside``: the party is on the side that sees the masked Call-ID."""
    if not msg.has("contact"):
        return
    try:
        contacts = msg.contacts
    except ParseError:
        contacts = []
    msg.remove("contact")
    for na in contacts if isinstance(contacts, list) else ():
        uri = ours(**{PARAM: codec.seal(_CONTACT, [str(na.uri), OUTSIDE if outside else INSIDE], call_id)})
        msg.add("contact", f"<{replace(uri, user=USER)}>")


def split_record_route(msg: Message, is_me: Callable[[SipUri], bool]) -> tuple[list[str], list[str], list[str]]:
    """The Record-Route values before our (first run of) entries, ours, and after them."""
    values = msg.get_all("record-route")
    entries = [NameAddr.parse(v, "Record-Route") for v in values]
    mine = [isinstance(e.uri, SipUri) and is_me(e.uri) for e in entries]
    if True not in mine:
        return values, [], []
    first = mine.index(True)
    last = first
    while last + 1 < len(mine) and mine[last + 1]:
        last += 1
    return values[:first], values[first:last + 1], values[last + 1:]


def seal_into_ours(ours: list[str], routes: list[str], codec: TopologyCodec, call_id: str) -> list[str]:
    """Our Record-Route entries, each with ``th`` = the sealed ``routes``."""
    sealed = codec.seal(_ROUTES, routes, call_id)
    out = []
    for value in ours:
        na = NameAddr.parse(value, "Record-Route")
        assert isinstance(na.uri, SipUri)
        params = {k: v for k, v in na.uri.params.items() if k != PARAM}
        params[PARAM] = sealed
        out.append(f"<{replace(na.uri, params=params)}>")
    return out


def _set_record_route(msg: Message, values: list[str]) -> None:
    msg.remove("record-route")
    for v in values:
        msg.add("record-route", v)


def hide_record_route(req: Request, is_me: Callable[[SipUri], bool], codec: TopologyCodec, call_id: str) -> None:
    """An initial request leaving, our Record-Route on top: the entries of the sender's
    side (after ours) go into ours, sealed, as the route set towards the sender."""
    before, ours, after = split_record_route(req, is_me)
    if not ours:
        return
    _set_record_route(req, seal_into_ours(ours, after, codec, call_id))


def restore_record_route(resp: Response, request: Request, is_me: Callable[[SipUri], bool],
                         codec: TopologyCodec, call_id: str) -> None:
    """A dialog-creating response going back: the responder's side of the Record-Route
    (before ours) goes into ours, sealed (reversed: the route set towards the responder),
    and the sender's side is the request's Record-Route as it arrived."""
    before, ours, _ = split_record_route(resp, is_me)
    if not ours:  # a responder that dropped our entries: at least none of its side leaks
        _set_record_route(resp, request.get_all("record-route"))
        return
    _set_record_route(resp, seal_into_ours(ours, list(reversed(before)), codec, call_id)
                      + request.get_all("record-route"))


def restore_in_dialog(req: Request, own_routes: Sequence[SipUri], codec: TopologyCodec) -> str | None:
    """An in-dialog request whose Request-URI is one of our hidden Contacts: the party's
    Contact URI becomes the Request-URI again and the route set sealed into our
    Record-Route entries goes first. Returns the party's side (:data:`INSIDE` or
    :data:`OUTSIDE`); None when the request is not of a hidden dialog;
    :class:`TopologyError` when a parameter does not open."""
    ruri = req.ruri
    if not isinstance(ruri, SipUri) or ruri.user != USER or PARAM not in ruri.params:
        return None
    call_id = req.get("call-id") or ""
    contact = codec.open(_CONTACT, ruri.params.get(PARAM), call_id)
    sealed = [u.params.get(PARAM) for u in own_routes if PARAM in u.params]
    routes = codec.open(_ROUTES, sealed[0], call_id) if sealed else []
    if len(contact) != 2 or contact[1] not in (INSIDE, OUTSIDE):
        raise TopologyError("th parameter of a Contact holds no single URI")
    try:
        target = SipUri.parse(contact[0])
        for value in reversed(routes):
            NameAddr.parse(value, "Route")
    except ParseError as exc:
        raise TopologyError(f"sealed value does not parse: {exc}") from None
    req.set_uri(target)
    for value in reversed(routes):
        req.add("route", value, first=True)
    return contact[1]
