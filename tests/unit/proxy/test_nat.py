"""NAT helpers (proxy/nat.py): every nat_uac_test / client_nat_test flag, the fixing
helpers, aliases and advertised listeners, on real-looking messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipedge.errors import ParseError
from sipedge.proxy import nat
from sipedge.proxy.identity import Listener
from sipedge.sip.flow import Flow
from sipedge.sip.message import Request, Response, parse

SERVER = ("203.0.113.10", 5060)
SDP_PRIVATE = (
    "v=0\r\no=- 3912 3912 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 8\r\na=rtcp:4001 IN IP4 192.168.1.20\r\na=sendrecv\r\n"
)


def invite(via: str = "192.168.1.20:5060", contact: str = "sip:alice@192.168.1.20:5060",
           sdp: str = "", transport: str = "UDP") -> Request:
    body = sdp.encode()
    text = (
        "INVITE sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via};branch=z9hG4bK776asdhds;rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: Bob <sip:bob@example.com>\r\n"
        "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
        "CSeq: 314159 INVITE\r\n"
        f"Contact: <{contact}>\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    msg = parse(text.encode() + body)
    assert isinstance(msg, Request)
    return msg


def flow(ip: str = "198.51.100.7", port: int = 5060, transport: str = "udp") -> Flow:
    return Flow(transport, SERVER, (ip, port), 0 if transport == "udp" else 3)


# A phone at 192.168.1.20:5060 behind a NAT whose public side is 198.51.100.7:40123.
NATED = flow(port=40123)
DIRECT = flow("192.0.2.44", 5060)  # a public phone talking to us directly


class TestIsRfc1918:
    @pytest.mark.parametrize("host", ["10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.77.2",
                                      "100.64.0.1", "100.127.255.254", "192.0.0.5", "[fd00::1]",
                                      "::ffff:10.0.0.1"])
    def test_private(self, host: str) -> None:
        assert nat.is_rfc1918(host)

    @pytest.mark.parametrize("host", ["203.0.113.1", "198.51.100.7", "192.0.2.1", "8.8.8.8",
                                      "127.0.0.1", "169.254.1.1", "172.32.0.1", "100.128.0.1",
                                      "2001:db8::1", "example.com", ""])
    def test_not_private(self, host: str) -> None:
        assert not nat.is_rfc1918(host)

    def test_reserved_mode(self) -> None:
        assert nat.is_rfc1918("192.0.0.100")
        assert not nat.is_rfc1918("192.0.0.100", reserved=False)
        assert nat.is_rfc1918("192.0.0.7", reserved=False)  # RFC 7335 /29 is always in


class TestNatUacTest:
    def test_flag_1_private_contact(self) -> None:
        assert nat.nat_uac_test(invite(), NATED, nat.CONTACT_PRIVATE)
        assert not nat.nat_uac_test(invite(contact="sip:alice@192.0.2.44"), DIRECT, 1)

    def test_flag_1_without_contact_is_false(self) -> None:
        msg = invite()
        msg.remove("contact")
        assert not nat.nat_uac_test(msg, NATED, 1)

    def test_flag_2_via_host_not_source(self) -> None:
        assert nat.nat_uac_test(invite(), NATED, nat.VIA_RECEIVED)
        assert not nat.nat_uac_test(invite(via="192.0.2.44:5060"), DIRECT, 2)
        assert nat.nat_uac_test(invite(via="pc33.example.com"), DIRECT, 2)  # a name is not the IP

    def test_flag_4_private_via(self) -> None:
        assert nat.nat_uac_test(invite(), NATED, nat.VIA_PRIVATE)
        assert not nat.nat_uac_test(invite(via="192.0.2.44"), NATED, 4)

    def test_flag_8_private_sdp(self) -> None:
        assert nat.nat_uac_test(invite(sdp=SDP_PRIVATE), NATED, nat.SDP_PRIVATE)
        assert not nat.nat_uac_test(invite(sdp=SDP_PRIVATE.replace("192.168.1.20", "192.0.2.44")), NATED, 8)
        assert not nat.nat_uac_test(invite(), NATED, 8)  # no body

    def test_flag_16_source_port_not_via_port(self) -> None:
        assert nat.nat_uac_test(invite(via="192.0.2.44:5060"), flow("192.0.2.44", 40123), nat.VIA_PORT)
        assert not nat.nat_uac_test(invite(via="192.0.2.44:5060"), DIRECT, 16)
        # no port in the Via: 5060
        assert not nat.nat_uac_test(invite(via="192.0.2.44"), DIRECT, 16)
        assert nat.nat_uac_test(invite(via="192.0.2.44"), flow("192.0.2.44", 5070), 16)

    def test_flag_32_private_source(self) -> None:
        assert nat.nat_uac_test(invite(), flow("10.0.0.9", 5060), nat.SOURCE_PRIVATE)
        assert not nat.nat_uac_test(invite(), NATED, 32)

    def test_flag_64_websocket(self) -> None:
        ws = flow(transport="ws")
        msg = invite(via="df7jal23ls0d.invalid", contact="sip:h7kjh12s@df7jal23ls0d.invalid;transport=ws",
                     transport="WS")
        assert nat.nat_uac_test(msg, ws, nat.WEBSOCKET)
        assert nat.nat_uac_test(msg, flow(transport="wss"), 64)
        assert not nat.nat_uac_test(invite(), NATED, 64)

    def test_flag_128_contact_port_not_source_port(self) -> None:
        public = invite(via="192.0.2.44:5060", contact="sip:alice@192.0.2.44:5060")
        assert nat.nat_uac_test(public, flow("192.0.2.44", 40000), nat.CONTACT_PORT)
        assert not nat.nat_uac_test(public, DIRECT, 128)
        assert not nat.nat_uac_test(invite(via="192.0.2.44", contact="sip:alice@192.0.2.44"), DIRECT, 128)

    def test_flag_256_sdp_not_source(self) -> None:
        sdp = SDP_PRIVATE.replace("192.168.1.20", "192.0.2.44")
        assert not nat.nat_uac_test(invite(sdp=sdp), DIRECT, nat.SDP_SOURCE)
        assert nat.nat_uac_test(invite(sdp=sdp), NATED, 256)
        assert not nat.nat_uac_test(invite(sdp=sdp.replace("c=IN IP4 192.0.2.44", "c=IN IP4 0.0.0.0")), NATED, 256)

    def test_flags_combine_with_or(self) -> None:
        public = invite(via="192.0.2.44:5060", contact="sip:alice@192.0.2.44:5060")
        assert not nat.nat_uac_test(public, DIRECT, nat.ALL_FLAGS)
        assert nat.nat_uac_test(invite(), NATED, 19)
        assert not nat.nat_uac_test(public, DIRECT, 19)

    def test_responses_skip_via_tests(self) -> None:
        resp = parse(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\n"
            b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\nCall-ID: c\r\n"
            b"CSeq: 1 INVITE\r\nContact: <sip:bob@192.168.1.30:5062>\r\nContent-Length: 0\r\n\r\n"
        )
        assert isinstance(resp, Response)
        assert not nat.nat_uac_test(resp, NATED, nat.VIA_RECEIVED | nat.VIA_PRIVATE | nat.VIA_PORT)
        assert nat.nat_uac_test(resp, NATED, nat.CONTACT_PRIVATE)

    def test_garbled_headers_never_raise(self) -> None:
        msg = invite()
        msg.set("contact", "<<<not a uri")
        msg.set("via", "garbage")
        assert not nat.nat_uac_test(msg, DIRECT, nat.CONTACT_PRIVATE | nat.CONTACT_PORT | 2 | 4 | 16)


class TestClientNatTest:
    def test_flag_1_private_contact(self) -> None:
        assert nat.client_nat_test(invite(), NATED, 1)
        assert not nat.client_nat_test(invite(contact="sip:a@192.0.2.44"), DIRECT, 1)

    def test_flag_2_source_differs_from_via_ip_or_port(self) -> None:
        assert nat.client_nat_test(invite(), NATED, 2)
        assert nat.client_nat_test(invite(via="192.0.2.44:5060"), flow("192.0.2.44", 1234), 2)
        assert not nat.client_nat_test(invite(via="192.0.2.44:5060"), DIRECT, 2)

    def test_flag_4_private_via(self) -> None:
        assert nat.client_nat_test(invite(), NATED, 4)
        assert not nat.client_nat_test(invite(via="192.0.2.44"), DIRECT, 4)

    def test_flag_8_source_ip_not_contact(self) -> None:
        assert nat.client_nat_test(invite(), NATED, 8)
        assert not nat.client_nat_test(invite(contact="sip:a@192.0.2.44:9999"), DIRECT, 8)


class TestFixing:
    def test_force_rport(self) -> None:
        msg = invite(via="192.168.1.20:5060")
        msg.set("via", "SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK776asdhds")
        assert nat.force_rport(msg, NATED)
        via = msg.top_via
        assert via.params["rport"] == "40123" and via.params["received"] == "198.51.100.7"
        assert not nat.force_rport(msg, NATED)  # idempotent

    def test_fix_nated_contact(self) -> None:
        msg = invite(contact="sip:alice@192.168.1.20:5060;transport=udp")
        assert nat.fix_nated_contact(msg, NATED)
        assert msg.get("contact") == "<sip:alice@198.51.100.7:40123;transport=udp>"
        assert not nat.fix_nated_contact(msg, NATED)

    def test_fix_nated_contact_leaves_websocket_alone(self) -> None:
        assert not nat.fix_nated_contact(invite(), flow(transport="wss"))

    def test_received_uri(self) -> None:
        assert nat.received_uri(NATED) == "sip:198.51.100.7:40123"
        assert nat.received_uri(flow(transport="tcp")) == "sip:198.51.100.7:5060;transport=tcp"
        assert nat.received_uri(Flow("udp", ("::1", 5060), ("2001:db8::7", 5062))) == "sip:[2001:db8::7]:5062"

    def test_add_rcv_param_header(self) -> None:
        msg = invite()
        assert nat.add_rcv_param(msg, NATED)
        assert msg.get("contact") == '<sip:alice@192.168.1.20:5060>;received="sip:198.51.100.7:40123"'
        assert not nat.add_rcv_param(msg, NATED)

    def test_add_rcv_param_uri(self) -> None:
        msg = invite()
        assert nat.add_rcv_param(msg, flow(transport="tcp"), to_uri=True)
        contact = msg.contacts
        assert isinstance(contact, list)
        assert str(contact[0].uri) == "sip:alice@192.168.1.20:5060;received=sip:198.51.100.7:5060%3Btransport%3Dtcp"

    def test_fix_nated_sdp_rewrites_c_and_rtcp(self) -> None:
        out = nat.fix_nated_sdp(SDP_PRIVATE.encode(), "198.51.100.7", nat.SDP_REWRITE_C)
        assert out == SDP_PRIVATE.replace("c=IN IP4 192.168.1.20", "c=IN IP4 198.51.100.7").replace(
            "a=rtcp:4001 IN IP4 192.168.1.20", "a=rtcp:4001 IN IP4 198.51.100.7").encode()

    def test_fix_nated_sdp_origin_direction_marker(self) -> None:
        out = nat.fix_nated_sdp(SDP_PRIVATE.encode(), "198.51.100.7",
                                nat.SDP_REWRITE_O | nat.SDP_ADD_DIRECTION | nat.SDP_ADD_NORTPPROXY).decode()
        assert "o=- 3912 3912 IN IP4 198.51.100.7\r\n" in out
        assert "c=IN IP4 192.168.1.20" in out
        head, _, media = out.partition("m=audio")
        assert head.endswith("a=direction:active\r\na=nortpproxy:yes\r\n")
        assert out.endswith("a=sendrecv\r\n")
        again = nat.fix_nated_sdp(out.encode(), "198.51.100.7", nat.SDP_ADD_DIRECTION | nat.SDP_ADD_NORTPPROXY)
        assert again == out.encode()

    def test_fix_nated_sdp_keeps_hold_and_ipv6(self) -> None:
        hold = SDP_PRIVATE.replace("c=IN IP4 192.168.1.20", "c=IN IP4 0.0.0.0")
        assert b"c=IN IP4 0.0.0.0" in nat.fix_nated_sdp(hold.encode(), "198.51.100.7", 2)
        out = nat.fix_nated_sdp(SDP_PRIVATE.encode(), "2001:db8::7", 2)
        assert b"c=IN IP6 2001:db8::7\r\n" in out

    def test_fix_message_sdp_updates_length(self) -> None:
        msg = invite(sdp=SDP_PRIVATE)
        assert nat.fix_message_sdp(msg, "198.51.100.7", 3)
        again = parse(msg.serialize())
        assert b"198.51.100.7" in again.body and again.content_length == len(again.body)
        assert not nat.fix_message_sdp(invite(), "198.51.100.7", 3)

    @given(st.binary(max_size=300), st.integers(0, 15))
    def test_fix_nated_sdp_never_raises(self, body: bytes, flags: int) -> None:
        nat.fix_nated_sdp(body, "198.51.100.7", flags)


class TestAliases:
    def test_alias_round_trip(self) -> None:
        msg = invite()
        assert nat.add_contact_alias(msg, NATED)
        assert msg.get("contact") == "<sip:alice@192.168.1.20:5060;alias=198.51.100.7~40123~1>"
        req = invite()
        req.set_uri("sip:alice@192.168.1.20:5060;alias=198.51.100.7~40123~1")
        target = nat.handle_ruri_alias(req)
        assert target is not None and (target.transport, target.host, target.port) == ("udp", "198.51.100.7", 40123)
        assert req.uri == "sip:alice@192.168.1.20:5060"

    def test_an_ipv6_alias_is_bracketed_as_kamailio_writes_it_and_read_back(self) -> None:
        v6 = Flow("udp", ("2001:db8::1", 5060), ("2001:db8::7", 40123))
        msg = invite(contact="sip:alice@[fd00::5]:5060")
        assert nat.add_contact_alias(msg, v6)
        assert msg.get("contact") == "<sip:alice@[fd00::5]:5060;alias=[2001:db8::7]~40123~1>"
        req = invite()
        req.set_uri("sip:alice@[fd00::5]:5060;alias=[2001:db8::7]~40123~1")
        target = nat.handle_ruri_alias(req)
        assert target is not None and (target.transport, target.host, target.port) == ("udp", "2001:db8::7", 40123)

    def test_a_contact_naming_the_source_over_another_transport_still_gets_an_alias(self) -> None:
        """Kamailio compares the protocol too: a TCP client whose Contact says nothing of
        TCP would be reached over UDP at that address."""
        tcp = Flow("tcp", ("203.0.113.10", 5060), ("192.0.2.44", 5060), conn_id=3)
        plain = invite(via="192.0.2.44:5060", contact="sip:alice@192.0.2.44:5060", transport="TCP")
        assert nat.add_contact_alias(plain, tcp)
        assert str(plain.get("contact")).endswith(";alias=192.0.2.44~5060~2>")
        tagged = invite(via="192.0.2.44:5060", contact="sip:alice@192.0.2.44:5060;transport=tcp", transport="TCP")
        assert not nat.add_contact_alias(tagged, tcp)

    @pytest.mark.parametrize("value", ["1.2.3.4~x~1", "1.2.3.4~5060~9", "~5060~1", "1.2.3.4~0~1", "a~b"])
    def test_bad_alias(self, value: str) -> None:
        assert nat.parse_alias(value) is None


class TestAdvertise:
    def test_per_listener(self) -> None:
        listeners = [Listener("udp", "10.0.0.5", 5060), Listener("tcp", "10.0.0.5", 5060),
                     Listener("tls", "10.0.0.5", 5061, advertise_host="sip.example.com")]
        out = nat.advertised_listeners(listeners, ["udp:10.0.0.5:5060=198.51.100.7:15060",
                                                   "tcp:0.0.0.0:0=198.51.100.7"])
        assert out[0].via_sent_by() == "198.51.100.7:15060"
        assert out[1].via_sent_by() == "198.51.100.7:5060"
        assert out[2].via_sent_by() == "sip.example.com:5061"

    @pytest.mark.parametrize("entry", ["udp:10.0.0.5:5060", "foo:1.2.3.4:5060=x", "udp:1.2.3.4:5060=h:99999"])
    def test_bad_entries(self, entry: str) -> None:
        with pytest.raises(ParseError):
            nat.parse_advertise(entry)

    def test_ipv6(self) -> None:
        assert nat.parse_advertise("udp:[::1]:5060=[2001:db8::1]:5062") == ("udp", "::1", 5060, "2001:db8::1", 5062)


class TestProperties:
    @given(st.text(max_size=60))
    def test_parse_alias_never_raises(self, value: str) -> None:
        target = nat.parse_alias(value)
        if target is not None:
            assert 0 < target.port <= 65535 and target.host

    @given(st.builds(Flow, st.sampled_from(["udp", "tcp", "tls", "ws", "wss"]), st.just(SERVER),
                     st.tuples(st.ip_addresses(v=4).map(str), st.integers(1, 65535))))
    def test_alias_round_trips_any_flow(self, f: Flow) -> None:
        target = nat.parse_alias(nat.alias_value(f))
        assert target is not None and (target.transport, target.host, target.port) == (
            f.transport, f.remote[0], f.remote[1])

    @given(st.text(max_size=80))
    def test_parse_advertise_raises_only_parse_error(self, entry: str) -> None:
        try:
            nat.parse_advertise(entry)
        except ParseError:
            pass

    @given(st.binary(max_size=400), st.integers(0, nat.ALL_FLAGS))
    def test_detection_never_raises_on_garbled_messages(self, data: bytes, flags: int) -> None:
        base = invite(sdp=SDP_PRIVATE).serialize()
        cut = base[: len(base) // 2] + data
        try:
            msg = parse(cut)
        except ParseError:
            return
        nat.nat_uac_test(msg, NATED, flags)
        nat.client_nat_test(msg, NATED, flags & 15)
        nat.add_contact_alias(msg, NATED)
        nat.fix_nated_contact(msg, NATED)
