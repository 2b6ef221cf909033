"""Stamped Record-Route (proxy/route_stamp.py) and the identity checks of the proxy
core: what makes an in-dialog Route ours, and whose credentials count."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.route_stamp import RouteStamp
from sipedge.proxy.routing import load_router
from sipedge.sip import message as m

KEY = b"s" * 32
tags = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)


@given(st.text(max_size=40), tags, tags)
def test_a_stamp_checks_out_from_either_side_of_its_dialog_only(call_id: str, caller: str, other: str) -> None:
    rs = RouteStamp(KEY)
    stamp = rs.stamp(call_id, caller)
    assert rs.verify(stamp, call_id, (caller, other))  # the caller's request
    assert rs.verify(stamp, call_id, (other, caller))  # the callee's
    if other != caller:
        assert not rs.verify(stamp, call_id, (other, None))
    assert not rs.verify(stamp, call_id + "x", (caller, other))
    assert not RouteStamp(b"t" * 32).verify(stamp, call_id, (caller, other))  # another key
    assert not rs.verify("", call_id, (caller,)) and not rs.verify(None, call_id, (caller,))


def core(realm: str = "", domains: list[str] | None = None) -> ProxyCore:
    subscribers = MemorySubscriberStore()
    return ProxyCore(
        parse_config({"auth": {"realm": realm}}),
        Identity([Listener("udp", "127.0.0.1", 5060)], domains if domains is not None else ["127.0.0.1", "example.test"]),
        MemoryLocationStore(), subscribers, load_router("sipedge.proxy.default_routing"), FakeClock(), secret=KEY,
    )


def request(from_uri: str) -> m.Request:
    req = m.Request("INVITE", "sip:bob@127.0.0.1")
    req.add("From", f"<{from_uri}>;tag=1")
    req.add("To", "<sip:bob@127.0.0.1>")
    return req


def test_credentials_count_for_their_user_at_their_realm_only() -> None:
    c = core()
    assert c._identity_matches(request("sip:alice@127.0.0.1"), "alice")
    assert c._identity_matches(request("sip:alice@127.0.0.1."), "alice")  # realm 127.0.0.1 too
    assert not c._identity_matches(request("sip:bob@127.0.0.1"), "alice")
    assert not c._identity_matches(request("sip:alice@elsewhere.invalid"), "alice")


def test_with_a_fixed_realm_the_from_domain_must_still_be_ours() -> None:
    c = core(realm="sipedge")
    assert c._identity_matches(request("sip:alice@example.test"), "alice")
    assert not c._identity_matches(request("sip:alice@elsewhere.invalid"), "alice")


def test_spellings_of_our_address_are_ours() -> None:
    ident = Identity([Listener("udp", "127.0.0.1", 5060)], ["Example.Test"])
    for host in ("127.0.0.1.", "[::ffff:127.0.0.1]", "EXAMPLE.test.", "example.test"):
        assert ident.is_local_domain(host), host
    assert ident.is_me("[::ffff:127.0.0.1]", 5060) and ident.is_me("example.test", 5060)
    assert not ident.is_me("example.test", 5999) and not ident.is_local_domain("127.0.0.2")
