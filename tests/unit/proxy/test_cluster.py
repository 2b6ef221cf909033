"""Node Path entries (proxy/cluster.py): a token opens only with the key that wrote it,
a tampered or garbled one never names a flow, and the per-call and per-hop MACs bind
their call and branch (docs/cluster.md)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sipedge.proxy.cluster import PREFIX, FlowRoute, is_node_user
from sipedge.sip.headers import NameAddr
from sipedge.sip.uri import SipUri

KEY = b"k" * 32
flows = st.text(st.characters(codec="utf-8"), min_size=1, max_size=80)


@given(flows)
def test_a_token_names_its_flow_only_with_its_key(flow: str) -> None:
    fr = FlowRoute(KEY)
    user = fr.user_for(flow)
    assert is_node_user(user) and fr.flow_of(user) == flow
    assert FlowRoute(b"j" * 32).flow_of(user) is None  # a node with another secret
    i = len(PREFIX)  # a byte of the MAC changed
    tampered = user[:i] + ("A" if user[i] != "A" else "B") + user[i + 1:]
    assert fr.flow_of(tampered) is None


@given(st.text(max_size=60))
def test_garbage_after_the_prefix_never_opens(text: str) -> None:
    assert FlowRoute(KEY).flow_of(PREFIX + text) is None
    assert FlowRoute(KEY).flow_of(text if not text.startswith(PREFIX) else "x") is None


def test_the_entry_is_a_loose_outbound_route_to_the_node() -> None:
    fr = FlowRoute(KEY)
    entry = NameAddr.parse(fr.entry(SipUri.parse("sip:127.0.0.1:5070;transport=tcp"), "udp~a~1~b~2~0"), "Path")
    uri = entry.sip_uri
    assert (uri.host, uri.port, uri.transport) == ("127.0.0.1", 5070, "tcp")
    assert "lr" in uri.params and "ob" in uri.params and fr.flow_of(uri.user) == "udp~a~1~b~2~0"


def test_the_call_and_hop_signatures_bind_their_call_and_branch() -> None:
    fr, other = FlowRoute(KEY), FlowRoute(b"j" * 32)
    ns = fr.sign_call("call-1", "nf-x")
    assert fr.call_signed("call-1", "nf-x", ns)
    assert not fr.call_signed("call-2", "nf-x", ns) and not fr.call_signed("call-1", "nf-y", ns)
    assert not other.call_signed("call-1", "nf-x", ns) and not fr.call_signed("call-1", "nf-x", None)
    nd = fr.sign_hop("z9hG4bKsEabc.0")
    assert fr.hop_signed("z9hG4bKsEabc.0", nd) and not fr.hop_signed("z9hG4bKsEabc.1", nd)
    assert not fr.hop_signed(None, nd) and not fr.hop_signed("z9hG4bKsEabc.0", None)
    assert nd != fr.sign_call("z9hG4bKsEabc.0", "")  # (a hop MAC is no call MAC)
