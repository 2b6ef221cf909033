"""RFC 3261 §16 forwarding steps, one at a time, without sockets."""

from __future__ import annotations

from sipedge.proxy import forwarding as fw
from sipedge.proxy.identity import Identity, Listener
from sipedge.sip import message as m
from sipedge.sip.flow import Target
from sipedge.sip.headers import Via

ME = Identity(
    [Listener("udp", "127.0.0.1", 5060), Listener("tcp", "127.0.0.1", 5060), Listener("tls", "127.0.0.1", 5061)],
    ["example.com"],
)


def req(extra: str = "", uri: str = "sip:bob@example.com", via: str = "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKa;rport") -> m.Request:
    text = (
        f"INVITE {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=1\r\n"
        f"To: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    r = m.parse(text.encode())
    assert isinstance(r, m.Request)
    return r


def test_loose_route_pops_our_entries_including_double_record_route() -> None:
    r = req("Route: <sip:127.0.0.1:5061;transport=tls;r2=on;lr>, <sip:127.0.0.1;r2=on;lr>, <sip:next.example.net;lr>\r\n")
    assert fw.loose_route(r, ME) is True
    assert r.get_all("route") == ["<sip:next.example.net;lr>"]
    assert fw.next_hop(r).host == "next.example.net"


def test_loose_route_strict_router_compatibility() -> None:
    # previous hop was a strict router: the Request-URI is us, the real target is the last Route
    r = req("Route: <sip:bob@192.0.2.5:5070>\r\n", uri="sip:127.0.0.1:5060;lr")
    assert fw.loose_route(r, ME) is True
    assert r.uri == "sip:bob@192.0.2.5:5070"
    assert not r.has("route")


def test_loose_route_without_routes() -> None:
    assert fw.loose_route(req(), ME) is False


def test_record_route_single_and_double() -> None:
    udp, tls = ME.listeners[0], ME.listeners[2]
    r = req()
    fw.record_route(r, udp, udp)
    assert r.get_all("record-route") == ["<sip:127.0.0.1:5060;lr>"]
    r = req()
    fw.record_route(r, udp, tls)
    assert r.get_all("record-route") == [
        "<sip:127.0.0.1:5061;transport=tls;r2=on;lr>",
        "<sip:127.0.0.1:5060;r2=on;lr>",
    ]


def test_loop_detected_but_spiral_allowed() -> None:
    first = req()
    sent = first.copy()
    fw.add_via(sent, ME.listeners[0], fw.branch_id(first, 0))
    # the same request comes back to us unchanged: a loop
    assert fw.is_loop(sent, ME)
    # retargeted (new Request-URI) it is a spiral
    spiral = sent.copy()
    spiral.set_uri("sip:carol@example.com")
    assert not fw.is_loop(spiral, ME)


def test_branch_is_stable_and_rfc3261() -> None:
    r = req()
    assert fw.branch_id(r, 0) == fw.branch_id(r.copy(), 0)
    assert fw.branch_id(r, 0) != fw.branch_id(r, 1)
    assert fw.branch_id(r, 0).startswith("z9hG4bK")


def test_received_and_rport() -> None:
    r = req()
    fw.stamp_received(r, "203.0.113.9", 40000)
    via = r.top_via
    assert via.params["received"] == "203.0.113.9"
    assert via.params["rport"] == "40000"
    assert fw.response_target(via) == Target("udp", "203.0.113.9", 40000)


def test_response_target_without_rport() -> None:
    assert fw.response_target(Via.parse("SIP/2.0/TCP h.example:5070;branch=z9hG4bKx")) == Target("tcp", "h.example", 5070)
    assert fw.response_target(Via.parse("SIP/2.0/TLS h.example;branch=z9hG4bKx")) == Target("tls", "h.example", 5061)


def test_max_forwards() -> None:
    r = req()
    assert fw.decrement_max_forwards(r) == 69
    r.remove("max-forwards")
    assert fw.decrement_max_forwards(r) == 69


def test_next_hop_rewrites_the_request_for_a_strict_router() -> None:
    # RFC 3261 §16.6 step 6: a top Route without ;lr is an RFC 2543 strict router
    r = req("Route: <sip:192.0.2.9:5070>, <sip:198.51.100.1;lr>\r\n", uri="sip:bob@example.com")
    hop = fw.next_hop(r)
    assert (hop.host, hop.port) == ("192.0.2.9", 5070)
    assert r.uri == "sip:192.0.2.9:5070"
    assert r.get_all("route") == ["<sip:198.51.100.1;lr>", "<sip:bob@example.com>"]


def test_next_hop_leaves_a_loose_router_route_alone() -> None:
    r = req("Route: <sip:192.0.2.9:5070;lr>\r\n")
    assert fw.next_hop(r).host == "192.0.2.9"
    assert r.uri == "sip:bob@example.com"
    assert r.get_all("route") == ["<sip:192.0.2.9:5070;lr>"]


def test_record_route_of_a_secure_websocket_listener_says_transport_ws() -> None:
    # RFC 7118 §5.2: "ws" is the URI transport for WS and WSS alike ("WSS" only in Via)
    wss, udp = Listener("wss", "127.0.0.1", 4443), ME.listeners[0]
    r = req()
    fw.record_route(r, wss, udp)
    assert r.get_all("record-route") == ["<sip:127.0.0.1:5060;r2=on;lr>", "<sip:127.0.0.1:4443;transport=ws;r2=on;lr>"]
    me = Identity([udp, wss])
    assert all(me.uri_is_me(na.sip_uri) for na in r.name_addrs("record-route"))


def test_a_sips_request_is_record_routed_with_sips_uris_on_secure_listeners() -> None:
    """RFC 3261 §16.6 step 4: a sips: Request-URI (or top Route) gets sips: Record-Route,
    and the dialog's requests with it still find us (both entries popped)."""
    tls, wss = ME.listeners[2], Listener("wss", "127.0.0.1", 4443)
    r = req(uri="sips:bob@example.com")
    fw.record_route(r, wss, tls)
    assert r.get_all("record-route") == [
        "<sips:127.0.0.1:5061;transport=tls;r2=on;lr>",
        "<sips:127.0.0.1:4443;transport=ws;r2=on;lr>",
    ]
    me = Identity([*ME.listeners, wss])
    back = req("Route: " + ", ".join(reversed(r.get_all("record-route"))) + "\r\n", uri="sips:alice@192.0.2.7")
    assert fw.loose_route(back, me) is True and not back.has("route")
    r = req("Route: <sips:next.example.net;lr>\r\n")
    fw.record_route(r, tls, tls)
    assert r.get_all("record-route") == ["<sips:127.0.0.1:5061;transport=tls;lr>"]
    plain = req()
    fw.record_route(plain, tls, tls)
    assert plain.get_all("record-route") == ["<sip:127.0.0.1:5061;transport=tls;lr>"]
