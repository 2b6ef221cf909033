"""Far-end NAT traversal helpers (the jobs of Kamailio's nathelper and nat_traversal).

Pure functions over a message and the flow it came on, callable from routing modules
(through :class:`~sipedge.proxy.context.RequestContext` and ``ReplyContext``, which add
the flow for you). docs/nat.md documents every test flag and helper.

Contact aliases use Kamailio's wire encoding, ``;alias=ip~port~proto`` with proto
1 udp, 2 tcp, 3 tls, 4 sctp, 5 ws, 6 wss, so a sipedge and a Kamailio can share dialogs.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from .._common.addr import host_for_uri, strip_brackets
from ..errors import ParseError
from ..sip.flow import Flow, Target
from ..sip.headers import NameAddr, Via
from ..sip.message import Message, Request
from ..sip.uri import SipUri
from .identity import DEFAULT_PORTS, Listener

PROTO_NUMBERS = {"udp": "1", "tcp": "2", "tls": "3", "sctp": "4", "ws": "5", "wss": "6"}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}

# -- nat_uac_test flags (nathelper) ----------------------------------------------------
CONTACT_PRIVATE = 1
"""The first Contact URI's host is a private (RFC 1918 / RFC 6598) address."""
VIA_RECEIVED = 2
"""The top Via's host differs from the source IP (the "received" test)."""
VIA_PRIVATE = 4
"""The top Via's host is a private address."""
SDP_PRIVATE = 8
"""An SDP ``c=`` line names a private address."""
VIA_PORT = 16
"""The source port differs from the top Via's port (5060 when it has none)."""
SOURCE_PRIVATE = 32
"""The source IP itself is a private address (the client sits in a private network
reaching us directly, or through a NAT we are behind too)."""
WEBSOCKET = 64
"""The message came over WebSocket (WS or WSS): the client is reachable only on its
connection, so it is handled as NATed."""
CONTACT_PORT = 128
"""The first Contact URI's port differs from the source port (can be legal without NAT)."""
SDP_SOURCE = 256
"""An SDP ``c=`` address differs from the source IP."""
ALL_FLAGS = 511

RECIPE_FLAGS = CONTACT_PRIVATE | VIA_RECEIVED | VIA_PORT | WEBSOCKET | CONTACT_PORT
"""What the default routing module tests (nathelper's usual "19" plus 64 and 128)."""

# -- client_nat_test flags (nat_traversal) -----------------------------------------------
CLIENT_CONTACT_PRIVATE = 1
"""The Contact has a private address."""
CLIENT_SOURCE_NOT_VIA = 2
"""The source IP *and* port differ from the top Via's sent-by (either differing is enough)."""
CLIENT_VIA_PRIVATE = 4
"""The top Via has a private address."""
CLIENT_SOURCE_NOT_CONTACT = 8
"""The source IP differs from the Contact host (IP only; OpenSIPS' flag 8)."""

# -- fix_nated_sdp flags ---------------------------------------------------------------------
SDP_ADD_DIRECTION = 1
"""Add ``a=direction:active`` (the client is behind NAT: it must send first, RFC 4145)."""
SDP_REWRITE_C = 2
"""Rewrite every ``c=`` address (and the address of ``a=rtcp:``) with the given IP."""
SDP_ADD_NORTPPROXY = 4
"""Add ``a=nortpproxy:yes`` (marks the SDP as already mangled)."""
SDP_REWRITE_O = 8
"""Rewrite the ``o=`` origin address with the given IP."""

_PRIVATE_V4 = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/29")
)
_RESERVED_V4 = (ipaddress.ip_network("192.0.0.0/24"),)
_PRIVATE_V6 = (ipaddress.ip_network("fc00::/7"),)


@functools.lru_cache(maxsize=4096)
def is_rfc1918(host: str, reserved: bool = True) -> bool:
    """Is ``host`` an address no NAT leaves untouched: RFC 1918 (10/8, 172.16/12,
    192.168/16), RFC 6598 shared space (100.64/10), RFC 7335 192.0.0.0/29, IPv6 unique
    local fc00::/7, and with ``reserved`` (nathelper ``nat_addr_mode`` 1, the default) the
    rest of 192.0.0.0/24. Loopback, link-local and documentation ranges are *not*
    private here (unlike :func:`ipaddress.ip_address(...).is_private`). Host names: False."""
    try:
        ip = ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        return False
    if ip.version == 4:
        nets = _PRIVATE_V4 + _RESERVED_V4 if reserved else _PRIVATE_V4
        return any(ip in n for n in nets)
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return is_rfc1918(str(mapped), reserved)
    return any(ip in n for n in _PRIVATE_V6)


@functools.lru_cache(maxsize=4096)
def _same_ip(a: str, b: str) -> bool:
    """Equal addresses, textually different forms allowed (cached: on every request)."""
    if a == b:
        return True
    a, b = strip_brackets(a), strip_brackets(b)
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


# -- message facts -------------------------------------------------------------------------
def _top_via(msg: Message) -> Via | None:
    if not isinstance(msg, Request):
        return None  # a reply's top Via is ours: the Via tests read requests only
    try:
        return msg.top_via
    except ParseError:
        return None


def _first_contact(msg: Message) -> NameAddr | None:
    try:
        contacts = msg.contacts
    except ParseError:
        return None
    if isinstance(contacts, list) and contacts:
        return contacts[0]
    return None


def _contact_uri(msg: Message) -> SipUri | None:
    na = _first_contact(msg)
    if na is None or not isinstance(na.uri, SipUri) or na.uri.scheme == "tel":
        return None
    return na.uri


def _uri_port(uri: SipUri) -> int:
    if uri.port is not None:
        return uri.port
    return 5061 if uri.scheme == "sips" or uri.transport in ("tls",) else 5060


def sdp_addresses(body: bytes) -> list[str]:
    """The addresses of every ``c=`` line of an SDP body (session and media level)."""
    out: list[str] = []
    for line in body.splitlines():
        if line.startswith(b"c="):
            parts = line[2:].decode("latin-1").split()
            if len(parts) >= 3:
                out.append(parts[2].split("/", 1)[0])
    return out


def _has_sdp(msg: Message) -> bool:
    return bool(msg.body) and (msg.content_type or "application/sdp") == "application/sdp"


def nat_uac_test(msg: Message, flow: Flow, flags: int, reserved: bool = True) -> bool:
    """nathelper's ``nat_uac_test(flags)``: True when any test selected by ``flags`` says
    the sender is behind a NAT. Flags are the module constants (1 ``CONTACT_PRIVATE`` ...
    256 ``SDP_SOURCE``); Via tests (2, 4, 16) apply to requests only; see docs/nat.md."""
    src_ip, src_port = flow.remote
    if flags & WEBSOCKET and flow.transport in ("ws", "wss"):
        return True
    if flags & SOURCE_PRIVATE and is_rfc1918(src_ip, reserved):
        return True
    if flags & (VIA_RECEIVED | VIA_PRIVATE | VIA_PORT):
        via = _top_via(msg)
        if via is not None:
            if flags & VIA_RECEIVED and not _same_ip(via.host, src_ip):
                return True
            if flags & VIA_PRIVATE and is_rfc1918(via.host, reserved):
                return True
            if flags & VIA_PORT and (via.port or 5060) != src_port:
                return True
    if flags & (CONTACT_PRIVATE | CONTACT_PORT):
        uri = _contact_uri(msg)
        if uri is not None:
            if flags & CONTACT_PRIVATE and is_rfc1918(uri.host, reserved):
                return True
            if flags & CONTACT_PORT and _uri_port(uri) != src_port:
                return True
    if flags & (SDP_PRIVATE | SDP_SOURCE) and _has_sdp(msg):
        for addr in sdp_addresses(msg.body):
            if flags & SDP_PRIVATE and is_rfc1918(addr, reserved):
                return True
            if flags & SDP_SOURCE and not _same_ip(addr, src_ip) and addr not in ("0.0.0.0", "::"):
                return True
    return False


def client_nat_test(msg: Message, flow: Flow, flags: int) -> bool:
    """nat_traversal's ``client_nat_test(type)``: 1 private Contact, 2 source address or
    port differs from the top Via, 4 private top Via, 8 source IP differs from the
    Contact host. True when any selected test is."""
    src_ip, src_port = flow.remote
    if flags & (CLIENT_CONTACT_PRIVATE | CLIENT_SOURCE_NOT_CONTACT):
        uri = _contact_uri(msg)
        if uri is not None:
            if flags & CLIENT_CONTACT_PRIVATE and is_rfc1918(uri.host, reserved=False):
                return True
            if flags & CLIENT_SOURCE_NOT_CONTACT and not _same_ip(uri.host, src_ip):
                return True
    if flags & (CLIENT_SOURCE_NOT_VIA | CLIENT_VIA_PRIVATE):
        via = _top_via(msg)
        if via is not None:
            if flags & CLIENT_SOURCE_NOT_VIA and (
                not _same_ip(via.host, src_ip) or (via.port or 5060) != src_port
            ):
                return True
            if flags & CLIENT_VIA_PRIVATE and is_rfc1918(via.host, reserved=False):
                return True
    return False


# -- fixing ----------------------------------------------------------------------------------
def force_rport(req: Request, flow: Flow) -> bool:
    """RFC 3581 as if the client had asked for it: put ``rport=<source port>`` and
    ``received=<source IP>`` on the top Via, so responses sent by Via (stateless
    forwarding, RFC 3261 §18.2.2) reach the NAT binding. True when the Via changed."""
    try:
        via = req.top_via
    except ParseError:
        return False
    host, port = flow.remote
    params = dict(via.params)
    params["rport"] = str(port)
    params["received"] = strip_brackets(host)
    if params == via.params:
        return False
    req.set_top_via(Via(via.transport, via.host, via.port, params, via.protocol))
    return True


def fix_nated_contact(msg: Message, flow: Flow) -> bool:
    """nathelper ``fix_nated_contact``: rewrite the first Contact URI's host and port with
    the source address (breaks RFC 3261 for strict peers; prefer aliases). True when it
    changed. WebSocket flows are left alone (their Contact host is not routable anyway)."""
    na = _first_contact(msg)
    if na is None or not isinstance(na.uri, SipUri) or na.uri.scheme == "tel":
        return False
    if flow.transport in ("ws", "wss"):
        return False
    host, port = flow.remote
    new_uri = SipUri(na.uri.scheme, na.uri.user, host_for_uri(host).lower(), port, na.uri.password,
                     na.uri.params, na.uri.headers)
    if new_uri == na.uri:
        return False
    new = na.with_uri(new_uri)
    if not new.angle:
        new = NameAddr(new.uri, new.display, new.params, True)
    msg.replace_first("contact", str(new))
    return True


def received_uri(flow: Flow) -> str:
    """The source of a request as a SIP URI, ``sip:ip:port;transport=x``: what
    ``fix_nated_register`` makes the registrar keep (``Binding.received``) and what
    ``add_rcv_param`` adds. UDP gets no ``transport`` parameter, as nathelper writes it."""
    host, port = flow.remote
    uri = f"sip:{host_for_uri(host)}:{port}"
    return uri if flow.transport == "udp" else f"{uri};transport={flow.transport}"


def add_rcv_param(msg: Message, flow: Flow, to_uri: bool = False) -> bool:
    """nathelper ``add_rcv_param``: add ``received="<source URI>"`` to the first Contact
    as a header parameter (default) or, with ``to_uri``, inside the Contact URI. True
    when it was added; a Contact that already has one is left alone."""
    na = _first_contact(msg)
    if na is None or not isinstance(na.uri, SipUri) or na.uri.scheme == "tel":
        return False
    value = received_uri(flow)
    if to_uri:
        if "received" in na.uri.params:
            return False
        new = na.with_uri(na.uri.with_params(received=value.replace(";", "%3B").replace("=", "%3D")))
        if not new.angle:
            new = NameAddr(new.uri, new.display, new.params, True)
    else:
        if "received" in na.params:
            return False
        new = na.with_params(received=f'"{value}"')
    msg.replace_first("contact", str(new))
    return True


def fix_nated_sdp(body: bytes, ip: str, flags: int) -> bytes:
    """nathelper ``fix_nated_sdp``: return ``body`` with the changes ``flags`` select
    (``SDP_ADD_DIRECTION`` 1, ``SDP_REWRITE_C`` 2, ``SDP_ADD_NORTPPROXY`` 4,
    ``SDP_REWRITE_O`` 8). Line endings and every other line are kept; ``c=`` lines that
    put media on hold (0.0.0.0) are kept too. The address family follows ``ip``."""
    if not body:
        return body
    eol = b"\r\n" if b"\r\n" in body else b"\n"
    lines = body.split(eol)
    trailing = lines and lines[-1] == b""
    if trailing:
        lines = lines[:-1]
    family = b"IP6" if ":" in strip_brackets(ip) else b"IP4"
    addr = strip_brackets(ip).encode()
    out: list[bytes] = []
    for line in lines:
        if flags & SDP_REWRITE_C and line.startswith(b"c="):
            parts = line[2:].split()
            if len(parts) >= 3 and parts[2].split(b"/", 1)[0] not in (b"0.0.0.0", b"::"):
                suffix = parts[2].partition(b"/")
                ttl = b"/" + suffix[2] if suffix[1] else b""
                line = b"c=" + parts[0] + b" " + family + b" " + addr + ttl
        elif flags & SDP_REWRITE_C and line.startswith(b"a=rtcp:"):
            parts = line[7:].split()
            if len(parts) >= 4:
                line = b"a=rtcp:" + parts[0] + b" " + parts[1] + b" " + family + b" " + addr
        elif flags & SDP_REWRITE_O and line.startswith(b"o="):
            parts = line[2:].split()
            if len(parts) >= 6:
                line = b"o=" + b" ".join([*parts[:4], family, addr])
        out.append(line)
    extra: list[bytes] = []
    if flags & SDP_ADD_DIRECTION and b"a=direction:active" not in out:
        extra.append(b"a=direction:active")
    if flags & SDP_ADD_NORTPPROXY and b"a=nortpproxy:yes" not in out:
        extra.append(b"a=nortpproxy:yes")
    if extra:
        first_m = next((i for i, ln in enumerate(out) if ln.startswith(b"m=")), len(out))
        out[first_m:first_m] = extra
    result = eol.join(out)
    return result + eol if trailing else result


def fix_message_sdp(msg: Message, ip: str, flags: int) -> bool:
    """:func:`fix_nated_sdp` on a message's SDP body; True when the body changed
    (Content-Length follows on serialization)."""
    if not _has_sdp(msg):
        return False
    new = fix_nated_sdp(msg.body, ip, flags)
    if new == msg.body:
        return False
    msg.body = new
    return True


# -- aliases ----------------------------------------------------------------------------------
def alias_value(flow: Flow) -> str:
    """``ip~port~proto`` as Kamailio writes it: an IPv6 address in brackets."""
    host, port = flow.remote
    return f"{host_for_uri(strip_brackets(host))}~{port}~{PROTO_NUMBERS.get(flow.transport, '1')}"


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
    """Does the Contact name the flow's source: address, port and transport (a TCP
    client whose Contact says UDP is not reached by it, so it needs an alias too)?"""
    uri = na.uri
    if not isinstance(uri, SipUri) or flow.transport in ("ws", "wss"):
        return False
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).lower()
    port = uri.port or (5061 if transport == "tls" else 5060)
    return (
        strip_brackets(uri.host) == strip_brackets(flow.remote[0]) and port == flow.remote[1]
        and transport == flow.transport
    )


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


# -- advertised addresses per listener -------------------------------------------------------
def parse_advertise(entry: str) -> tuple[str, str, int, str, int]:
    """``"udp:10.0.0.5:5060=198.51.100.7:5060"`` (port after the ``=`` optional) ->
    ``(transport, host, port, public_host, public_port)``; ParseError when malformed."""
    left, eq, right = entry.partition("=")
    proto, _, rest = left.partition(":")
    host, _, port = rest.rpartition(":")
    if not eq or proto not in DEFAULT_PORTS or not host or not port.isdigit() or not right:
        raise ParseError(f"{entry!r} is not transport:ip:port=public_host[:port]")
    if right.startswith("["):
        end = right.find("]")
        pub_host, after = right[: end + 1], right[end + 1 :]
        pub_port = after[1:] if after.startswith(":") else ""
    elif right.count(":") == 1:
        pub_host, _, pub_port = right.partition(":")
    else:
        pub_host, pub_port = right, ""
    if not pub_host or (pub_port and not pub_port.isdigit()) or int(pub_port or 0) > 65535:
        raise ParseError(f"{entry!r}: bad public address {right!r}")
    return proto, strip_brackets(host), int(port), strip_brackets(pub_host), int(pub_port or 0)


def advertised_listeners(listeners: Iterable[Listener], entries: Iterable[str]) -> list[Listener]:
    """Listeners with their public address set from ``nat.advertise`` entries (matched by
    transport, bound host and port; host ``0.0.0.0``/``::`` or port 0 in an entry match
    any). A listener no entry names keeps what it had (``sip.advertise``)."""
    parsed = [parse_advertise(e) for e in entries]
    out: list[Listener] = []
    for li in listeners:
        for proto, host, port, pub_host, pub_port in parsed:
            if proto != li.transport:
                continue
            if host not in ("0.0.0.0", "::") and not _same_ip(host, li.host):
                continue
            if port and port != li.port:
                continue
            li = Listener(li.transport, li.host, li.port, pub_host, pub_port)
            break
        out.append(li)
    return out
