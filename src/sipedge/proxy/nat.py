"""Far-end NAT traversal helpers (the jobs of Kamailio's nathelper and nat_traversal).

Pure functions over a message and the flow it came on, callable from routing modules.
Contact aliases use Kamailio's wire encoding, ``;alias=ip~port~proto`` with proto
1 udp, 2 tcp, 3 tls, 4 sctp, 5 ws, 6 wss, so a sipedge and a Kamailio can share dialogs.
"""

from __future__ import annotations

from .._common.addr import host_for_uri, strip_brackets
from ..errors import ParseError
from ..sip.flow import Flow, Target
from ..sip.headers import NameAddr
from ..sip.message import Message, Request
from ..sip.uri import SipUri

PROTO_NUMBERS = {"udp": "1", "tcp": "2", "tls": "3", "sctp": "4", "ws": "5", "wss": "6"}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}


def alias_value(flow: Flow) -> str:
    host, port = flow.remote
    return f"{strip_brackets(host)}~{port}~{PROTO_NUMBERS.get(flow.transport, '1')}"


def parse_alias(value: str) -> Target | None:
    """``ip~port~proto`` -> Target, or None when malformed."""
    parts = value.split("~")
    if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in PROTO_NAMES:
        return None
    port = int(parts[1])
    if not 0 < port <= 65535 or not parts[0]:
        return None
    return Target(PROTO_NAMES[parts[2]], strip_brackets(parts[0]), port)


def contact_matches_source(na: NameAddr, flow: Flow) -> bool:
    uri = na.uri
    if not isinstance(uri, SipUri):
        return False
    port = uri.port or (5061 if uri.transport in ("tls", "wss") else 5060)
    return strip_brackets(uri.host) == strip_brackets(flow.remote[0]) and port == flow.remote[1] and flow.transport not in ("ws", "wss")


def add_contact_alias(msg: Message, flow: Flow) -> bool:
    """Add ``;alias=`` with the source address to the first Contact URI (unless the
    Contact already names the source), so later requests to that Contact come back on
    this flow. Returns True when the message was changed (nathelper ``add_contact_alias``)."""
    try:
        contacts = msg.contacts
    except ParseError:
        return False
    if not isinstance(contacts, list) or not contacts:
        return False
    first = contacts[0]
    if not isinstance(first.uri, SipUri) or "alias" in first.uri.params:
        return False
    if contact_matches_source(first, flow):
        return False
    new = first.with_uri(first.uri.with_params(alias=alias_value(flow)))
    if not new.angle:
        new = NameAddr(new.uri, new.display, new.params, True)
    msg.replace_first("contact", str(new))
    return True


def handle_ruri_alias(req: Request) -> Target | None:
    """If the Request-URI carries ``;alias=``, remove it and return where the request
    must go (nathelper ``handle_ruri_alias``); None when there is no usable alias."""
    ruri = req.ruri
    if not isinstance(ruri, SipUri):
        return None
    value = ruri.params.get("alias")
    if value is None:
        return None
    target = parse_alias(value)
    req.set_uri(ruri.without_params("alias"))
    return target


def source_uri(flow: Flow) -> str:
    """The flow's source as a SIP URI (``received`` for Path/registrations)."""
    host, port = flow.remote
    return f"sip:{host_for_uri(host)}:{port};transport={flow.transport}"


def is_websocket(flow: Flow) -> bool:
    return flow.transport in ("ws", "wss")


def is_behind_nat(msg: Message, flow: Flow) -> bool:
    """WebSocket, or the top Via / first Contact does not name the source address."""
    if is_websocket(flow):
        return True
    if isinstance(msg, Request):
        try:
            via = msg.top_via
        except ParseError:
            return False
        if strip_brackets(via.host) != strip_brackets(flow.remote[0]) or (via.port or 5060) != flow.remote[1]:
            return True
    try:
        contacts = msg.contacts
    except ParseError:
        return False
    if isinstance(contacts, list) and contacts:
        return not contact_matches_source(contacts[0], flow)
    return False
