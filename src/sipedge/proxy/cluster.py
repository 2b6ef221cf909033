"""Node Path entries: several nodes as one service reach a user through the node that
holds its flow (docs/cluster.md).

A node that saves a registration with ``sip.node_path`` on stores, in front of the
binding's Path (RFC 3327), an entry naming itself and the flow the REGISTER came on::

    <sip:nf-TOKEN@this-node:port;lr;ob>

``TOKEN`` is the flow token (``Flow.token``) with a keyed BLAKE2b MAC in front, base64url:
only a holder of the nodes' shared secret can write one, so a Route naming us with a
token is proof that one of our nodes saw a REGISTER on that flow. Another node that finds
the binding sends the request along its Path, to the node in the entry; that node pops
the entry and sends the request on the flow (UDP from the socket the phone registered
on, through its NAT binding; a WebSocket on its connection).

The forwarding node adds ``;ns=`` to the entry, a MAC of the request's Call-ID and the
token: the holding node relays only requests a node of ours routed for this very call,
never one a stranger built around a token it saw. A token or ``ns`` that does not verify
is refused (:class:`FlowRoute`'s caller answers 403 and counts it), and nothing is ever
sent to an address named by an unsigned token: the entry would make us an open relay.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from ..errors import ParseError
from ..sip.headers import NameAddr
from ..sip.uri import SipUri
from .identity import Identity
from .location import Binding

PREFIX = "nf-"  # the user part of a node Path entry starts so
NODE_SIGNATURE = "ns"  # the forwarding node's parameter on the entry
_MAC = 10  # bytes of the token's MAC


class FlowRoute:
    """Writes and opens node Path entries (keys derived from the nodes' shared secret)."""

    def __init__(self, secret: bytes) -> None:
        # keys of their own, so neither doubles as a digest nonce or Record-Route stamp MAC
        self._token_key = hashlib.blake2b(b"sipedge node path token", key=secret[:64], digest_size=32).digest()
        self._call_key = hashlib.blake2b(b"sipedge node path call", key=secret[:64], digest_size=32).digest()

    def _mac(self, flow: bytes) -> bytes:
        return hashlib.blake2b(flow, key=self._token_key, digest_size=_MAC).digest()

    def user_for(self, flow_token: str) -> str:
        """The user part of the entry naming ``flow_token``."""
        raw = flow_token.encode("utf-8", "surrogateescape")
        return PREFIX + base64.urlsafe_b64encode(self._mac(raw) + raw).rstrip(b"=").decode("ascii")

    def entry(self, node: SipUri, flow_token: str) -> str:
        """The Path value naming this node (``node``, a listener's URI) and the flow."""
        uri = SipUri(node.scheme, self.user_for(flow_token), node.host, node.port, None,
                     {**node.params, "lr": None, "ob": None})
        return f"<{uri}>"

    def flow_of(self, user: str | None) -> str | None:
        """The flow token an entry's user part names, when its MAC is ours; else None."""
        if not is_node_user(user):
            return None
        assert user is not None
        text = user[len(PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None
        mac, flow = raw[:_MAC], raw[_MAC:]
        if len(raw) <= _MAC or not hmac.compare_digest(mac, self._mac(flow)):
            return None
        return flow.decode("utf-8", "surrogateescape")

    def sign_call(self, call_id: str, user: str) -> str:
        """``ns``: the forwarding node's MAC of this call and the entry."""
        material = f"{call_id}\x00{user}".encode("utf-8", "surrogateescape")
        return hashlib.blake2b(material, key=self._call_key, digest_size=10).hexdigest()

    def call_signed(self, call_id: str, user: str, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value or "", self.sign_call(call_id, user))


    def sign_hop(self, branch: str) -> str:
        """``nd`` on our Via towards another node: the hop is one of ours (so that node
        does not take our address for a NATed sender's, docs/cluster.md)."""
        return self.sign_call(branch, "\x00via")

    def hop_signed(self, branch: str | None, value: str | None) -> bool:
        return bool(branch) and self.call_signed(branch or "", "\x00via", value)


def held_elsewhere(b: Binding, identity: Identity) -> bool:
    """The binding's first Path entry is a node entry naming another node: that node
    holds its flow (no MAC is checked: this only tells who pings it, docs/cluster.md)."""
    if not b.path:
        return False
    try:
        uri = NameAddr.parse(b.path[0], "Path").uri
    except ParseError:
        return False
    return isinstance(uri, SipUri) and is_node_user(uri.user) and not identity.uri_is_me(uri)


def is_node_user(user: str | None) -> bool:
    """The user part of a node Path entry (whoever wrote it: check with ``flow_of``)."""
    return bool(user) and user is not None and user.startswith(PREFIX)


__all__ = ["NODE_SIGNATURE", "PREFIX", "FlowRoute", "held_elsewhere", "is_node_user"]
