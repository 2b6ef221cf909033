"""Who may make a real ``sipedge serve`` relay a request, tried as an attacker would
(issue 10, items 1 to 4): preloaded Routes, in-dialog requests with a Route we never
recorded, spoofed local callers and asserted identities. Beside each refusal, the
legitimate use of the same branch: a phone with an outbound proxy calling a local user,
over every transport."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.sipserver import Server, running_server
from helpers.ua import UA, in_dialog
from sipedge.sip import message as m

USERS = {f"{name}{i}": f"{name}{i}-pw" for name in ("alice", "bob") for i in range(8)}
TRUSTED = "127.0.0.5"
SIP = f"""
domains = ["127.0.0.1"]
trusted_peers = ["{TRUSTED}/32"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("relay"), users=USERS, sip=SIP) as s:
        yield s


def ua(server: Server, transport: str, user: str, host: str = "127.0.0.1") -> UA:
    port = {"tls": server.tls, "ws": server.ws, "wss": server.wss}.get(transport, server.udp)
    return UA(transport, (server.host, port), user, server.host, USERS.get(user, ""), host=host)


def route_to(server: Server, transport: str) -> str:
    """The Route a phone preloads when the server is its outbound proxy."""
    port = {"tls": server.tls, "ws": server.ws, "wss": server.wss}.get(transport, server.udp)
    param = "" if transport == "udp" else f";transport={'ws' if transport == 'wss' else transport}"
    return f"<sip:{server.host}:{port}{param};lr>"


class Catcher:
    """A UDP socket where a relayed request would land: nothing may arrive."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.host, self.port = host, self.sock.getsockname()[1]

    def received(self, wait: float = 0.8) -> list[bytes]:
        got: list[bytes] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                got.append(self.sock.recvfrom(65535)[0])
            except TimeoutError:
                continue
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def catcher() -> Iterator[Catcher]:
    c = Catcher("127.0.0.6")
    yield c
    c.close()


def stranger_invite(attacker: UA, uri: str, route: str | None, to_tag: str | None = None) -> m.Request:
    req = attacker.build("INVITE", uri, to_tag=to_tag)
    req.set("From", f"<sip:evil@evil.invalid>;tag={attacker.tag}")
    if route is not None:
        req.add("Route", route)
    return req


# -- 1. open relay through a preloaded Route --------------------------------------------
def test_a_route_to_us_does_not_make_a_stranger_s_request_leave_for_elsewhere(server: Server, catcher: Catcher) -> None:
    attacker = ua(server, "udp", "mallory")
    try:
        attacker.send(stranger_invite(attacker, f"sip:x@{catcher.host}:{catcher.port}", route_to(server, "udp")))
        final = attacker.expect_final()
        assert final.status == 403, final
        assert catcher.received() == []
    finally:
        attacker.close()


def test_a_route_to_another_hop_is_a_foreign_destination(server: Server) -> None:
    other = Catcher("127.0.0.7")
    attacker = ua(server, "udp", "mallory")
    try:
        attacker.send(stranger_invite(attacker, "sip:x@nothing.invalid", f"<sip:{other.host}:{other.port};lr>"))
        final = attacker.expect_final()
        assert final.status == 403, final
        # a Route to us first, then to the other hop: the same
        attacker.send(stranger_invite(attacker, "sip:bob0@127.0.0.1",
                                      f"{route_to(server, 'udp')}, <sip:{other.host}:{other.port};lr>"))
        assert attacker.expect_final().status == 403
        assert other.received() == []
    finally:
        attacker.close()
        other.close()


def test_our_authenticated_user_may_preload_a_route_to_another_hop(server: Server) -> None:
    """The branch the refusals above protect: relaying to a foreign hop is for our users."""
    other = Catcher("127.0.0.7")
    alice = ua(server, "udp", "alice7")
    try:
        inv = alice.build("INVITE", "sip:x@nothing.invalid", headers={"Route": f"<sip:{other.host}:{other.port};lr>"})
        alice.send(inv)
        alice.send(alice.authorize(inv, alice.expect(407)))
        arrived = other.received(1.5)
        assert arrived and arrived[0].startswith(b"INVITE sip:x@nothing.invalid")
    finally:
        alice.close()
        other.close()


def test_default_domains_refuse_a_tel_caller_s_preloaded_route(tmp_path: Path, catcher: Catcher) -> None:
    """With the defaults (sip.domains empty: every domain is ours) a caller whose From is
    not a SIP URI is a foreigner, never challenged: its Route to us must not carry it on."""
    with running_server(tmp_path, users=USERS) as srv:
        attacker = ua(srv, "udp", "mallory")
        try:
            req = attacker.build("INVITE", f"sip:x@{catcher.host}:{catcher.port}", headers={"Route": route_to(srv, "udp")})
            req.set("From", f"<tel:+15550100>;tag={attacker.tag}")
            attacker.send(req)
            assert attacker.expect_final().status in (403, 404, 407)
            assert catcher.received() == []
        finally:
            attacker.close()


# -- 2. a phone with an outbound proxy calls a local user ---------------------------------
@pytest.mark.parametrize(("transport", "caller", "callee"),
                         [("udp", "alice0", "bob0"), ("tcp", "alice1", "bob1"), ("tls", "alice2", "bob2"),
                          ("ws", "alice3", "bob3"), ("wss", "alice4", "bob4")])
def test_a_phone_with_us_as_outbound_proxy_calls_a_local_user(server: Server, transport: str, caller: str,
                                                              callee: str) -> None:
    a, b = ua(server, transport, caller), ua(server, "udp", callee)
    try:
        reg = b.build("REGISTER", f"sip:{server.host}", to=b.aor, headers={"Expires": "300", "Route": route_to(server, "udp")})
        b.send(reg)
        b.send(b.authorize(reg, b.expect(401)))
        assert b.expect_final().status == 200
        inv = a.build("INVITE", b.aor, headers={"Route": route_to(server, transport)})
        a.send(inv)
        inv = a.authorize(inv, a.expect(407))
        a.send(inv)
        seen = b.wait("INVITE")
        assert isinstance(seen, m.Request) and not seen.has("proxy-authorization")
        b.answer(seen, 200)
        ok = a.expect(200)
        routes = list(reversed(ok.get_all("record-route")))
        assert routes and all(";sg=" in r for r in routes)
        a.send(in_dialog(a, "ACK", ok, routes, cseq=inv.cseq.number))
        assert b.wait("ACK").method == "ACK"
        a.send(in_dialog(a, "BYE", ok, routes))
        got = b.wait("BYE")
        assert isinstance(got, m.Request)
        b.answer(got, 200)
        assert a.expect(200).cseq.method == "BYE"
    finally:
        a.close()
        b.close()


# -- 3. in-dialog relay for anyone ----------------------------------------------------------
@pytest.mark.parametrize("route", ["plain", "forged", "other-hop"])
def test_an_in_dialog_request_needs_a_route_we_recorded(server: Server, catcher: Catcher, route: str) -> None:
    attacker = ua(server, "udp", "mallory")
    ours = route_to(server, "udp")
    value = {
        "plain": ours,
        "forged": ours.replace(";lr>", ";lr;sg=00112233445566778899>"),
        "other-hop": f"<sip:{catcher.host}:{catcher.port};lr>",
    }[route]
    uri = f"sip:x@{catcher.host}:{catcher.port}" if route != "other-hop" else "sip:x@nothing.invalid"
    try:
        attacker.send(stranger_invite(attacker, uri, value, to_tag=uuid.uuid4().hex[:8]))
        final = attacker.expect_final()
        assert final.status == 403, final
        ack = attacker.build("ACK", uri, to_tag="t1")
        ack.add("Route", value)
        attacker.send(ack)  # an ACK cannot be answered: dropped, never relayed
        assert catcher.received() == []
    finally:
        attacker.close()


def test_a_trusted_peer_s_in_dialog_request_is_relayed(server: Server, catcher: Catcher) -> None:
    peer = ua(server, "udp", "trunk", host=TRUSTED)
    try:
        req = peer.build("BYE", f"sip:x@{catcher.host}:{catcher.port}", to_tag="t1",
                         headers={"Route": route_to(server, "udp")})
        peer.send(req)
        arrived = catcher.received(1.5)
        assert arrived and arrived[0].startswith(b"BYE ")
    finally:
        peer.close()


# -- 4. caller identity ---------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1.", "[::ffff:127.0.0.1]", "[::FFFF:7f00:1]"])
def test_a_local_caller_spelled_differently_is_still_challenged(server: Server, host: str) -> None:
    alice, attacker = ua(server, "udp", "alice5"), ua(server, "udp", "mallory")
    try:
        assert alice.register().status == 200
        req = attacker.build("INVITE", alice.aor)
        req.set("From", f"<sip:bob5@{host}>;tag={attacker.tag}")
        attacker.send(req)
        challenge = attacker.expect_final()
        assert challenge.status == 407
        assert 'realm="127.0.0.1"' in challenge.get_all("proxy-authenticate")[0]
        with pytest.raises(AssertionError):
            alice.wait("INVITE", 0.5)
    finally:
        alice.close()
        attacker.close()


def test_asserted_identities_from_untrusted_callers_are_removed(server: Server) -> None:
    alice, bob = ua(server, "udp", "alice6"), ua(server, "udp", "bob6")
    spoof = {"P-Asserted-Identity": "<sip:ceo@127.0.0.1>", "P-Preferred-Identity": "<sip:ceo@127.0.0.1>",
             "Remote-Party-ID": '"CEO" <sip:ceo@127.0.0.1>;party=calling'}
    try:
        assert bob.register().status == 200
        inv = alice.build("INVITE", bob.aor, headers=spoof)
        alice.send(inv)
        alice.send(alice.authorize(inv, alice.expect(407)))
        seen = bob.wait("INVITE")
        assert isinstance(seen, m.Request)
        assert not any(seen.has(h) for h in spoof)
        bob.answer(seen, 486)
        assert alice.expect_final().status == 486
    finally:
        alice.close()
        bob.close()


def test_a_trusted_peer_asserts_identity_and_is_not_challenged(server: Server) -> None:
    bob, trunk = ua(server, "udp", "bob7"), ua(server, "udp", "trunk", host=TRUSTED)
    try:
        assert bob.register().status == 200
        inv = trunk.build("INVITE", bob.aor, headers={"P-Asserted-Identity": "<sip:+15550100@127.0.0.1>"})
        inv.set("From", f"<sip:+15550100@127.0.0.1>;tag={trunk.tag}")  # a local-looking From, no credentials
        trunk.send(inv)
        seen = bob.wait("INVITE")
        assert isinstance(seen, m.Request)
        assert seen.get("p-asserted-identity") == "<sip:+15550100@127.0.0.1>"
        bob.answer(seen, 486)
        assert trunk.expect_final().status == 486
    finally:
        bob.close()
        trunk.close()
