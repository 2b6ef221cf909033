"""A real ``sipedge serve`` process, real sockets: registrar and stateful proxy call flows
over UDP, TCP and TLS (RFC 3261 §10, §16; RFC 3665 basic flows)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.sipserver import Server, running_server
from helpers.ua import UA, cancel_of, in_dialog
from sipedge.sip import message as m

USERS = {f"{name}{i}": f"{name}{i}-pw" for name in ("alice", "bob", "carol", "dave") for i in range(14)}
TRANSPORTS = ["udp", "tcp", "tls"]
# What a browser offers: ICE and DTLS-SRTP, so the proxy leaves its media alone.
WEBRTC_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    b"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\n"
    b"a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11\r\na=setup:actpass\r\n"
    b"a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
)


@pytest.fixture(scope="module", params=[1, 2], ids=["workers1", "workers2"])
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    """One process, and a supervisor of two workers (docs/workers.md)."""
    with running_server(tmp_path_factory.mktemp("proxy"), users=USERS, general=f"workers = {request.param}") as s:
        yield s


def ua(server: Server, transport: str, user: str, password: str | None = None) -> UA:
    port = {"tls": server.tls, "ws": server.ws, "wss": server.wss}.get(transport, server.udp)
    return UA(transport, (server.host, port), user, server.host, USERS.get(user, "") if password is None else password)


def index(transport: str) -> int:
    return TRANSPORTS.index(transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_refresh_and_unregister(server: Server, transport: str) -> None:
    user = f"carol{index(transport)}"
    a = ua(server, transport, user)
    try:
        req = a.build("REGISTER", f"sip:{server.host}", to=a.aor, headers={"Expires": "120"})
        a.send(req)
        challenge = a.expect(401)
        assert any("algorithm=MD5" in v for v in challenge.get_all("www-authenticate"))
        a.send(a.authorize(req, challenge))
        ok = a.expect(200)
        contacts = ok.contacts
        assert isinstance(contacts, list) and len(contacts) == 1
        assert contacts[0].params["expires"] in ("120", "119")
        # refresh keeps one binding
        assert a.register(expires=300).status == 200
        again = a.register(expires=300)
        assert isinstance(again.contacts, list) and len(again.contacts) == 1
        # Expires: 0 removes it
        gone = a.register(expires=0)
        assert gone.status == 200 and gone.contacts == []
    finally:
        a.close()


def test_register_wrong_password_is_challenged_again(server: Server) -> None:
    a = ua(server, "udp", "carol5", password="not-the-password")
    try:
        assert a.register().status == 401
    finally:
        a.close()


def test_register_too_brief_gets_423(server: Server) -> None:
    a = ua(server, "udp", "carol6")
    try:
        resp = a.register(expires=5)
        assert resp.status == 423
        assert resp.get("min-expires") == "60"
    finally:
        a.close()


def call(server: Server, caller: UA, callee: UA) -> tuple[m.Response, m.Request, list[str]]:
    """INVITE (answering the 407), callee rings and answers; returns the 200, the
    INVITE as the callee saw it, and the caller's route set."""
    inv = caller.build("INVITE", callee.aor, body=WEBRTC_SDP, headers={"Content-Type": "application/sdp"})
    caller.send(inv)
    challenge = caller.expect(407)
    inv2 = caller.authorize(inv, challenge)
    caller.send(inv2)
    seen = callee.wait("INVITE")
    assert isinstance(seen, m.Request)
    callee.answer(seen, 180)
    assert caller.expect(180).status == 180
    callee.answer(seen, 200, body=WEBRTC_SDP)
    ok = caller.expect(200)
    return ok, seen, list(reversed(ok.get_all("record-route")))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_basic_call_through_the_proxy(server: Server, transport: str) -> None:
    i = index(transport)
    alice = ua(server, transport, f"alice{i}")
    bob = ua(server, "udp", f"bob{i}")
    try:
        assert bob.register().status == 200
        ok, seen, routes = call(server, alice, bob)
        # the callee sees the proxy in the path, and a double Record-Route across transports
        rr = seen.get_all("record-route")
        assert len(rr) == (1 if transport == "udp" else 2)
        assert len(seen.vias) == 2
        assert seen.max_forwards == 69
        assert seen.get_all("proxy-authorization") == []  # the caller's credentials were for us
        ack = in_dialog(alice, "ACK", ok, routes, cseq=ok.cseq.number)
        alice.send(ack)
        assert bob.wait("ACK").method == "ACK"
        bye = in_dialog(alice, "BYE", ok, routes)
        alice.send(bye)
        got = bob.wait("BYE")
        assert isinstance(got, m.Request)
        bob.answer(got, 200)
        assert alice.expect(200).cseq.method == "BYE"
    finally:
        alice.close()
        bob.close()


@pytest.mark.parametrize(("caller_t", "callee_t", "i"), [
    ("ws", "udp", 8), ("udp", "wss", 9), ("wss", "ws", 10), ("tcp", "ws", 12), ("wss", "tls", 13),
])
def test_websocket_calls_cross_transports(server: Server, caller_t: str, callee_t: str, i: int) -> None:
    """RFC 7118: a browser-like client on WS/WSS registers with an .invalid contact and
    calls (or is called by) a UDP, TCP or TLS phone; requests reach it down its own
    connection, and a call that changes transport gets a double Record-Route."""
    alice, bob = ua(server, caller_t, f"alice{i}"), ua(server, callee_t, f"bob{i}")
    try:
        assert alice.register().status == 200
        assert bob.register().status == 200
        ok, seen, routes = call(server, alice, bob)
        rr = seen.get_all("record-route")
        assert len(rr) == (2 if caller_t != callee_t else 1)
        for t in {caller_t, callee_t} - {"udp"}:  # each side's hop names its transport
            assert any(f"transport={'ws' if t == 'wss' else t}" in r.lower() for r in rr), (t, rr)
        alice.send(in_dialog(alice, "ACK", ok, routes, cseq=ok.cseq.number))
        assert bob.wait("ACK").method == "ACK"
        alice.send(in_dialog(alice, "BYE", ok, routes))
        got = bob.wait("BYE")
        assert isinstance(got, m.Request)
        bob.answer(got, 200)
        assert alice.expect(200).cseq.method == "BYE"
    finally:
        alice.close()
        bob.close()


def test_websocket_contact_gone_is_480(server: Server) -> None:
    """When the browser's connection is gone its contact is unreachable: 480, never a
    lookup of its .invalid host."""
    alice, bob = ua(server, "udp", "alice11"), ua(server, "ws", "bob11")
    try:
        assert bob.register().status == 200
        bob.close()
        time.sleep(0.3)
        inv = alice.build("INVITE", f"sip:bob11@{server.host}")
        alice.send(inv)
        alice.send(alice.authorize(inv, alice.expect(407)))
        assert alice.expect_final().status == 480
    finally:
        alice.close()


def test_in_dialog_request_to_a_gone_websocket_peer_is_480(server: Server) -> None:
    """A BYE routed (by Record-Route and alias) to a browser whose connection has closed
    is answered 480 at once: nothing is sent anywhere else, nothing waits for a timer."""
    alice, bob = ua(server, "udp", "dave2"), ua(server, "ws", "dave3")
    try:
        assert bob.register().status == 200
        ok, _, routes = call(server, alice, bob)
        alice.send(in_dialog(alice, "ACK", ok, routes, cseq=ok.cseq.number))
        assert bob.wait("ACK").method == "ACK"
        bob.close()
        time.sleep(0.3)
        alice.send(in_dialog(alice, "BYE", ok, routes))
        got = alice.wait(lambda x: isinstance(x, m.Response) and x.cseq.method == "BYE" and x.status >= 200, 3)
        assert isinstance(got, m.Response) and got.status == 480
    finally:
        alice.close()


def test_in_dialog_request_through_a_strict_router(server: Server) -> None:
    """A route set whose next entry has no ;lr (an RFC 2543 strict router): the proxy
    puts that entry in the Request-URI and the old Request-URI at the end of Route."""
    alice, bob = ua(server, "udp", "dave4"), ua(server, "udp", "dave5")
    try:
        assert bob.register().status == 200
        ok, _, routes = call(server, alice, bob)
        strict = f"<sip:{bob.host}:{bob.port}>"
        bye = in_dialog(alice, "BYE", ok, [*routes, strict])
        alice.send(bye)
        got = bob.wait("BYE")
        assert isinstance(got, m.Request)
        assert got.uri == f"sip:{bob.host}:{bob.port}"
        assert got.get_all("route")[-1] == f"<{bye.uri}>"
        bob.answer(got, 200)
        assert alice.wait(lambda x: isinstance(x, m.Response) and x.cseq.method == "BYE").status == 200
    finally:
        alice.close()
        bob.close()


def test_a_contact_pointing_back_at_the_proxy_is_a_loop_482(tmp_path: Path) -> None:
    """dave6's binding names the proxy itself: the INVITE spirals once (new Request-URI)
    and then loops; the proxy spots its own branch in the Vias and answers 482 long
    before Max-Forwards would run out (483). (INVITEs unauthenticated here: a spiral
    through the same proxy would be challenged again, as in Kamailio.)"""
    with running_server(tmp_path, extra="[auth]\ninvite = false", users=USERS) as server:
        dave, eve = ua(server, "udp", "dave6"), ua(server, "udp", "dave7")
        try:
            reg = dave.build("REGISTER", f"sip:{server.host}", to=dave.aor, headers={"Expires": "300"})
            reg.set("Contact", f"<sip:dave6@{server.host}:{server.udp}>")
            dave.send(reg)
            dave.send(dave.authorize(reg, dave.expect(401)))
            assert dave.expect_final().status == 200
            eve.send(eve.build("INVITE", f"sip:dave6@{server.host}"))
            assert eve.expect_final().status == 482
        finally:
            dave.close()
            eve.close()


def test_websocket_callee_that_drops_mid_invite_gives_480_at_once(server: Server) -> None:
    """A browser that disconnects while its phone rings: the caller hears 480 right away,
    not after Timer C/B (the connection's close fails the branch)."""
    alice, bob = ua(server, "udp", "dave8"), ua(server, "ws", "dave9")
    try:
        assert bob.register().status == 200
        inv = alice.build("INVITE", bob.aor, body=WEBRTC_SDP, headers={"Content-Type": "application/sdp"})
        alice.send(inv)
        alice.send(alice.authorize(inv, alice.expect(407)))
        seen = bob.wait("INVITE")
        assert isinstance(seen, m.Request)
        bob.answer(seen, 180)
        assert alice.expect(180).status == 180
        bob.close()
        started = time.monotonic()
        got = alice.wait(lambda x: isinstance(x, m.Response) and x.cseq.method == "INVITE" and x.status >= 200 and x.status != 407, 3)
        assert isinstance(got, m.Response) and got.status == 480
        assert time.monotonic() - started < 3
    finally:
        alice.close()


def bindings_of(asker: UA) -> list[str]:
    """The contacts registered for ``asker``'s AoR, by a query REGISTER (no Contact)."""
    req = asker.build("REGISTER", f"sip:{asker.domain}", to=asker.aor)
    req.remove("contact")
    asker.send(req)
    asker.send(asker.authorize(req, asker.expect(401)))
    ok = asker.expect(200)
    contacts = ok.contacts
    assert isinstance(contacts, list)
    return [str(c.uri) for c in contacts]


def bindings_after_close(asker: UA, expected: int, timeout: float = 3.0) -> int:
    """Ask until the registrar shows ``expected`` bindings (the server notices a closed
    connection a moment later) or ``timeout`` passes; the last count."""
    deadline = time.monotonic() + timeout
    while True:
        n = len(bindings_of(asker))
        if n == expected or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def test_a_closed_websocket_takes_its_binding_with_it(server: Server) -> None:
    """A browser's binding is reachable only over its connection: when that closes the
    registrar forgets it (registrar.drop_on_disconnect = "ws", the default), so the
    next call finds no contact instead of a dead one. A TCP phone's binding stays: the
    proxy can open a new connection to it."""
    browser, phone = ua(server, "ws", "carol9"), ua(server, "tcp", "carol10")
    try:
        assert browser.register().status == 200
        assert phone.register().status == 200
        browser.close()
        phone.close()
        assert bindings_after_close(ua(server, "udp", "carol9"), 0) == 0
        time.sleep(0.3)
        assert len(bindings_of(ua(server, "udp", "carol10"))) == 1
        caller = ua(server, "udp", "carol11")
        inv = caller.build("INVITE", "sip:carol9@" + server.host)
        caller.send(inv)
        caller.send(caller.authorize(inv, caller.expect(407)))
        assert caller.expect_final().status in (404, 480)
    finally:
        browser.close()
        phone.close()


def test_drop_on_disconnect_all_also_forgets_tcp_bindings(tmp_path: Path) -> None:
    """``drop_on_disconnect = "all"``: as usrloc's handle_lost_tcp, a TCP phone's binding
    goes with its connection too; "none" keeps even a browser's until it expires."""
    for mode, left in (("all", 0), ("none", 1)):
        with running_server(tmp_path / mode, extra=f'[registrar]\ndrop_on_disconnect = "{mode}"', users=USERS) as srv:
            phone = ua(srv, "tcp" if mode == "all" else "ws", "carol9")
            assert phone.register().status == 200
            phone.close()
            if left:
                time.sleep(0.3)
            assert bindings_after_close(ua(srv, "udp", "carol9"), left, 3.0 if not left else 0.0) == left, mode


def test_websocket_message_without_content_length_keeps_its_body(server: Server) -> None:
    """RFC 7118 §5: a WebSocket message is framed by the WebSocket, so Content-Length may
    be left out; the body still reaches the callee whole (as over UDP, unlike TCP)."""
    alice, bob = ua(server, "ws", "dave0"), ua(server, "ws", "dave1")
    try:
        assert bob.register().status == 200
        req = alice.build("MESSAGE", f"sip:dave1@{server.host}", headers={"Content-Type": "text/plain"}, body=b"hello bob")
        alice.send(req)
        challenge = alice.expect(407)  # a local user's request is authenticated
        wire = alice.authorize(req, challenge).serialize().replace(b"Content-Length: 9\r\n", b"")
        assert b"content-length" not in wire.lower()
        alice.send(wire)
        got = bob.wait("MESSAGE")
        assert got.body == b"hello bob"
        assert isinstance(got, m.Request)
        bob.answer(got, 200)
        assert alice.expect(200).cseq.method == "MESSAGE"
    finally:
        alice.close()
        bob.close()


def test_cancel_before_answer_gives_487(server: Server) -> None:
    alice, bob = ua(server, "udp", "alice3"), ua(server, "tcp", "bob3")
    try:
        assert bob.register().status == 200
        inv = alice.build("INVITE", bob.aor)
        alice.send(inv)
        inv2 = alice.authorize(inv, alice.expect(407))
        alice.send(inv2)
        seen = bob.wait("INVITE")
        assert isinstance(seen, m.Request)
        bob.answer(seen, 180)
        alice.expect(180)
        cancel = cancel_of(inv2)
        alice.send(cancel)
        assert alice.expect(200).cseq.method == "CANCEL"
        got = bob.wait("CANCEL")
        assert isinstance(got, m.Request)
        bob.answer(got, 200)
        bob.answer(seen, 487)
        final = alice.expect(487)
        assert final.cseq.method == "INVITE"
    finally:
        alice.close()
        bob.close()


def test_parallel_forking_first_answer_wins_others_cancelled(server: Server) -> None:
    alice = ua(server, "udp", "alice4")
    b1, b2 = ua(server, "udp", "bob4"), ua(server, "tcp", "bob4")
    try:
        assert b1.register().status == 200
        assert b2.register().status == 200
        inv = alice.build("INVITE", b1.aor)
        alice.send(inv)
        alice.send(alice.authorize(inv, alice.expect(407)))
        s1, s2 = b1.wait("INVITE"), b2.wait("INVITE")
        assert isinstance(s1, m.Request) and isinstance(s2, m.Request)
        b1.answer(s1, 180)
        b2.answer(s2, 180)
        b1.answer(s1, 200)
        assert alice.expect(200).status == 200
        c = b2.wait("CANCEL")
        assert isinstance(c, m.Request)
        b2.answer(c, 200)
        b2.answer(s2, 487)
    finally:
        for u in (alice, b1, b2):
            u.close()


def test_unknown_user_404_and_offline_user_480(server: Server) -> None:
    alice = ua(server, "udp", "alice5")
    try:
        for target, status in ((f"sip:nobody@{server.host}", 404), (f"sip:bob5@{server.host}", 480)):
            inv = alice.build("INVITE", target)
            alice.send(inv)
            alice.send(alice.authorize(inv, alice.expect(407)))
            assert alice.expect(status).status == status
    finally:
        alice.close()


def test_invite_without_credentials_is_challenged(server: Server) -> None:
    alice = ua(server, "tls", "alice6")
    try:
        alice.send(alice.build("INVITE", f"sip:bob6@{server.host}"))
        resp = alice.expect(407)
        assert resp.get_all("proxy-authenticate")
    finally:
        alice.close()


def test_max_forwards_zero_gets_483(server: Server) -> None:
    alice = ua(server, "udp", "alice7")
    try:
        req = alice.build("MESSAGE", f"sip:bob7@{server.host}")
        req.set("Max-Forwards", "0")
        alice.send(req)
        assert alice.expect(483).status == 483
    finally:
        alice.close()


# -- bad input: answered or dropped as RFC 3261 says, and the server keeps serving ------------


def options(port: int, call_id: str, extra: str = "", drop: str = "") -> bytes:
    lines = [
        "OPTIONS sip:127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id}",
        "Max-Forwards: 70",
        "From: <sip:x@127.0.0.1>;tag=1",
        "To: <sip:127.0.0.1>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
    ]
    lines = [ln for ln in lines if not (drop and ln.startswith(drop))]
    return ("\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n").encode()


def udp_exchange(server: Server, data: bytes, sock: socket.socket, wait: float = 1.0) -> bytes | None:
    sock.sendto(data, (server.host, server.udp))
    sock.settimeout(wait)
    try:
        return sock.recvfrom(65535)[0]
    except TimeoutError:
        return None


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x00\xff garbage \r\n\r\n", None),
        # truncated: no CSeq, so no reply could be matched by the sender (RFC 4475 §3.1.2.4)
        (b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKt\r\nFrom", None),
        ("missing-call-id", 400),
        ("cseq-mismatch", 400),
        ("content-length-lie", 400),
        ("huge-header", 400),
        ("unknown-method", 200),
    ],
)
def test_bad_udp_input_then_still_serving(server: Server, data: bytes | str, status: int | None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((server.host, 0))
        port = s.getsockname()[1]
        cid = f"bad{time.monotonic_ns()}"
        if data == "missing-call-id":
            data = options(port, cid, drop="Call-ID")
        elif data == "cseq-mismatch":
            data = options(port, cid).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 BYE")
        elif data == "content-length-lie":
            data = options(port, cid).replace(b"Content-Length: 0", b"Content-Length: 999")
        elif data == "huge-header":
            data = options(port, cid, extra="Subject: " + "x" * 60000 + "\r\n")
            data = data.replace(b"Subject", b"Bad Header Name")
        elif data == "unknown-method":
            data = options(port, cid).replace(b"OPTIONS sip:", b"FOOBAR sip:").replace(b"1 OPTIONS", b"1 FOOBAR")
        assert isinstance(data, bytes)
        reply = udp_exchange(server, data, s)
        if status is None:
            assert reply is None
        else:
            assert reply is not None
            resp = m.parse(reply)
            assert isinstance(resp, m.Response)
            if status != 200:
                assert resp.status == status, resp.reason
        # and the next good request is served
        good = udp_exchange(server, options(port, cid + "ok"), s)
        assert good is not None and b"SIP/2.0 200" in good


def test_garbage_on_tcp_closes_only_that_connection(server: Server) -> None:
    with socket.create_connection((server.host, server.tcp), timeout=3) as c:
        c.sendall(b"\x16\x03\x01 not sip at all\r\n\r\n")
        try:
            data = c.recv(1000)
        except ConnectionResetError:
            data = b""
        assert data in (b"",) or data.startswith(b"SIP/2.0 4")
    with socket.create_connection((server.host, server.tcp), timeout=3) as c:
        c.sendall(options(1, f"tcpok{time.monotonic_ns()}").replace(b"UDP", b"TCP"))
        assert c.recv(65535).startswith(b"SIP/2.0 200")


def test_log_lines_are_structured(server: Server) -> None:
    text = server.log_text()
    assert "sipedge ready" in text
    assert "Traceback" not in text


def test_user_cli_errors_are_one_line(tmp_path: Path, server: Server) -> None:
    from helpers.sipserver import cli

    r = cli(["user", "add", "not-an-address", "--password", "x", "--config", str(server.config)], check=False)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
