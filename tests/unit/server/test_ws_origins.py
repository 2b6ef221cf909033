"""Which browser origins ``sipedge serve`` lets upgrade to SIP over WebSocket by default
(``sip.websocket.origins`` empty): the server's own web origins."""

from __future__ import annotations

from sipedge.config import parse_config
from sipedge.server.sip_service import websocket_origins
from sipedge.server.ws import origin, own_origins


def test_origin_is_spelled_as_browsers_send_it() -> None:
    assert origin("https", "Phone.Example.COM", 443) == "https://phone.example.com"
    assert origin("http", "127.0.0.1", 80) == "http://127.0.0.1"
    assert origin("http", "[::1]", 8088) == "http://[::1]:8088"
    assert origin("https", "2001:db8::1", 4443) == "https://[2001:db8::1]:4443"


def test_default_is_the_web_and_websocket_listeners() -> None:
    got = websocket_origins(parse_config({}))
    assert got is not None
    assert "http://127.0.0.1:8088" in got and "http://localhost:8088" in got  # the softphone page
    assert "http://127.0.0.1:8080" in got and "https://127.0.0.1:4443" in got  # ws / wss
    assert not any("example" in o for o in got)


def test_domains_advertised_names_and_wildcards() -> None:
    cfg = parse_config({
        "sip": {"listen": ["wss:0.0.0.0:8443", "ws:[::]:8080"], "domains": ["Example.com"],
                "advertise": "sip.example.com"},
        "web": {"listen": "0.0.0.0:8088"},
        "nat": {"advertise": ["wss:0.0.0.0:8443=198.51.100.7:443"]},
    })
    got = websocket_origins(cfg)
    assert got is not None
    for o in ("https://example.com:8443", "https://sip.example.com:8443", "http://example.com:8088",
              "https://example.com", "https://198.51.100.7", "https://127.0.0.1:8443",
              "http://[::1]:8080", "http://localhost:8088"):
        assert o in got, o
    assert "http://0.0.0.0:8088" not in got


def test_listed_origins_and_star() -> None:
    listed = parse_config({"sip": {"websocket": {"origins": ["https://phone.example.com/"]}}})
    assert websocket_origins(listed) == ("https://phone.example.com",)
    assert websocket_origins(parse_config({"sip": {"websocket": {"origins": ["*"]}}})) is None


def test_no_ports_no_names() -> None:
    assert own_origins([("http", "127.0.0.1", 0)], []) == ()
