"""Several nodes as one service (docs/cluster.md): two ``sipedge serve`` nodes, A on
127.0.0.1 and B on 127.0.0.2, share one real PostgreSQL (``sip.node_path = "on"``, the
same ``nonce.key``), and one pair shares a real redis-server (``node_path`` at its "auto"
default). A call arriving at B for a user whose flow A holds goes through A, which sends
it on that flow: a browser's WebSocket, a NATed phone's UDP binding (from A's socket).
Calls between users of A and B work both ways, in-dialog requests included; a forged
node Path entry is refused and nothing reaches the address it names; one node alone
behaves as before. Node A runs with one worker (PostgreSQL) and with two (Redis)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.metrics import metrics
from helpers.pgserver import PgServer
from helpers.redisserver import RedisServer, redis_server, redis_url  # noqa: F401 (fixtures)
from helpers.sipserver import Server, add_users, cli, running_server
from helpers.ua import UA, cancel_of, in_dialog
from sipedge.server.handoff import owner_of
from sipedge.sip import message as m

pytestmark = pytest.mark.timeout(180)

DOMAIN = "example.com"
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"}
NAT_HOSTPORT = "10.99.0.7:5070"  # the private address a NATed phone puts in Via and Contact
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
       b"c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
       b"a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=rtpmap:111 opus/48000/2\r\n")
SECRET = bytes(range(32))  # DATA_DIR/nonce.key, the same on both PostgreSQL nodes


class NatUA(UA):
    """A phone behind a NAT: its Via and Contact name a private address it is not at."""

    @property
    def hostport(self) -> str:
        return NAT_HOSTPORT


def node(tmp: Path, host: str, extra: str, sip: str, general: str = "") -> Any:
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    key = tmp / "data" / "nonce.key"
    key.write_bytes(SECRET)
    key.chmod(0o600)
    return running_server(tmp, host, extra=extra, sip=sip, general=general, log_level="info")


@pytest.fixture(scope="module", params=["postgresql", "redis-workers2"])
def nodes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """A and B on one PostgreSQL database (``node_path = "on"``, one worker each: the
    supervisor of several workers needs a SQLite file), or with the location in Redis
    (``node_path`` at its "auto" default) and two workers on A."""
    tmp = tmp_path_factory.mktemp("nodes")
    sip = f'domains = ["{DOMAIN}"]'
    if request.param == "postgresql":
        pg: PgServer = request.getfixturevalue("pg_server")
        url = pg.create_database()
        for user, password in USERS.items():
            cli(["user", "add", f"{user}@{DOMAIN}", "--password", password, "--db", url])
        extra, sip, general = f'\n[database]\nurl = "{url}"\nconnect_timeout = 2.0\n', f'{sip}\nnode_path = "on"', ""
    else:
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        redis_server.flush()
        extra, general = f'\n[redis]\nurl = "{redis_server.url}"\n', "workers = 2"
    with node(tmp / "a", "127.0.0.1", extra, sip, general=general) as a, node(tmp / "b", "127.0.0.2", extra, sip) as b:
        if request.param != "postgresql":
            for s in (a, b):  # subscribers stay in each node's SQLite file
                add_users(s.config, DOMAIN, USERS)
        yield a, b


def ua(server: Server, user: str, transport: str = "udp", cls: type[UA] = UA) -> UA:
    port = {"udp": server.udp, "ws": server.ws}[transport]
    return cls(transport, (server.host, port), user, DOMAIN, USERS[user], host=server.host)


def call_ids(workers: int) -> list[str]:
    """Call-IDs owned by each worker in turn (so with two workers, one of them is not the
    worker holding the callee's connection: the send is handed over)."""
    out: list[str] = []
    while len(out) < workers:
        cid = uuid.uuid4().hex
        if owner_of(cid, workers) == len(out):
            out.append(cid)
    return out


def invite(caller: UA, callee: UA, call_id: str | None = None) -> m.Request:
    """``caller`` calls ``callee``'s AoR through the node it talks to (answering the 407);
    returns the INVITE as sent."""
    caller.call_id = call_id or uuid.uuid4().hex
    inv = caller.build("INVITE", callee.aor, body=SDP, headers={"Content-Type": "application/sdp"})
    caller.send(inv)
    first = caller.expect_final()
    assert first.status == 407, first
    again = caller.authorize(inv, first)
    caller.send(again)
    return again


def arrived_from(phone: UA, msg: m.Request | m.Response) -> tuple[str, int]:
    found = [src for seen, src in phone.arrivals if seen is msg]
    assert found, "not a UDP arrival"
    return found[0]


def callee_request(callee: UA, inv: m.Request, method: str) -> m.Request:
    """``method`` from the callee inside the dialog ``inv`` set up: to the caller's
    Contact along the INVITE's Record-Route."""
    contacts = inv.contacts
    assert isinstance(contacts, list)
    req = callee.build(method, str(contacts[0].uri), to=str(inv.from_.uri), to_tag=inv.from_.tag)
    req.set("call-id", inv.get("call-id") or "")
    for rr in inv.get_all("record-route"):
        req.add("Route", rr)
    return req


def whole_call(caller: UA, callee: UA, callee_node: Server, bye_from_callee: bool,
               call_id: str | None = None) -> tuple[m.Request, m.Response]:
    """INVITE, 180, 200, ACK and BYE (by either party); the callee talks to
    ``callee_node`` (the node holding its flow). Returns the INVITE the callee saw and the
    200 the caller got."""
    invite(caller, callee, call_id)
    seen = callee.wait("INVITE")
    assert isinstance(seen, m.Request)
    callee.server = (callee_node.host, callee_node.udp) if callee.transport == "udp" else callee.server
    callee.answer(seen, 180)
    callee.answer(seen, 200, body=SDP)
    ok = caller.expect(200)
    routes = list(reversed(ok.get_all("record-route")))
    caller.send(in_dialog(caller, "ACK", ok, routes, cseq=ok.cseq.number))
    assert callee.wait("ACK").method == "ACK"
    if bye_from_callee:
        hang_up(callee, caller, callee_request(callee, seen, "BYE"))
    else:
        hang_up(caller, callee, in_dialog(caller, "BYE", ok, routes))
    return seen, ok


def hang_up(sender: UA, peer: UA, bye: m.Request) -> None:
    """``bye`` from ``sender`` reaches ``peer``, whose 200 comes back."""
    sender.send(bye)
    got = peer.wait("BYE")
    assert isinstance(got, m.Request)
    peer.answer(got, 200)
    assert sender.expect(200).cseq.method == "BYE"


def counted(server: Server, name: str, at_least: float, timeout: float = 5.0) -> None:
    """Until ``name`` on /metrics reaches ``at_least`` (with workers, worker 0 sums the
    others' counters as they push them, every second)."""
    deadline = time.monotonic() + timeout
    while (value := metrics(server).get(name, 0)) < at_least:
        assert time.monotonic() < deadline, f"{name} = {value}, expected at least {at_least}"
        time.sleep(0.2)


def hosts_in(values: list[str]) -> set[str]:
    return {h for v in values for h in ("127.0.0.1", "127.0.0.2") if f"@{h}" in v or f":{h}" in v}


def test_a_browser_on_a_is_called_through_b(nodes: tuple[Server, Server]) -> None:
    """A WebSocket client registered on A; a UDP phone calls it through B: the INVITE
    reaches it on its connection to A, 200 and ACK pass, and a BYE from either side ends
    the call (Record-Route of both nodes), and a CANCEL before the answer ends a ringing
    one with 487. With two workers on A, calls are owned by each worker (so one by the
    worker without the connection)."""
    a, b = nodes
    browser, phone = ua(a, "alice", "ws"), ua(b, "bob")
    try:
        assert browser.register().status == 200
        for i, cid in enumerate(call_ids(a.workers) * 2):
            seen, ok = whole_call(phone, browser, a, bye_from_callee=i % 2 == 1, call_id=cid)
            assert seen.uri.startswith(f"sip:alice@{browser.tag}.invalid")
            assert seen.top_via.transport.upper() == "WS"  # sent by A, down the WebSocket
            assert not any("nf-" in r for r in seen.get_all("route"))  # A popped its entry
            assert hosts_in(ok.get_all("record-route")) == {"127.0.0.1", "127.0.0.2"}
        for cid in call_ids(a.workers):  # a CANCEL before the answer: B, A, the WebSocket
            sent = invite(phone, browser, cid)
            seen = browser.wait("INVITE")
            assert isinstance(seen, m.Request)
            browser.answer(seen, 180)
            phone.expect(180)
            cancel = cancel_of(sent)
            phone.send(cancel)
            assert phone.expect(200).cseq.method == "CANCEL"
            got = browser.wait("CANCEL")
            assert isinstance(got, m.Request)
            browser.answer(got, 200)
            browser.answer(seen, 487)
            assert phone.expect(487).cseq.method == "INVITE"
        counted(a, "sip_node_routed", 3 * a.workers)
    finally:
        browser.close()
        phone.close()


def test_a_nated_phone_on_a_gets_the_call_from_as_socket(nodes: tuple[Server, Server]) -> None:
    """A UDP phone behind a NAT registered on A (its Contact a private address it is not
    at) is called through B: the INVITE, the ACK and the caller's BYE reach it from A's
    socket, where its NAT binding is, never from B's; its own BYE ends the next call."""
    a, b = nodes
    nated, phone = ua(a, "carol", cls=NatUA), ua(b, "bob")
    try:
        reg = nated.build("REGISTER", f"sip:{DOMAIN}", to=nated.aor, headers={"Expires": "300", "Supported": "path"})
        nated.send(reg)
        challenge = nated.expect_final()
        nated.send(nated.authorize(reg, challenge))
        ok = nated.expect_final()
        assert ok.status == 200 and ok.get_all("path") == []  # our node entry is never echoed
        for bye_from_callee in (False, True):
            nated.arrivals.clear()
            seen, _ = whole_call(phone, nated, a, bye_from_callee)
            assert seen.uri == f"sip:carol@{NAT_HOSTPORT}"
            sources = {src for msg, src in nated.arrivals if isinstance(msg, m.Request)}
            assert sources == {(a.host, a.udp)}, nated.arrivals
    finally:
        nated.close()
        phone.close()


def test_calls_between_users_of_a_and_b_both_ways(nodes: tuple[Server, Server]) -> None:
    """dave on A calls bob on B and bob calls dave: each INVITE reaches its callee from
    the callee's own node; ACK, a re-INVITE and BYE pass both ways."""
    a, b = nodes
    dave, bob = ua(a, "dave"), ua(b, "bob")
    try:
        assert dave.register().status == 200 and bob.register().status == 200
        for caller, callee, home in ((dave, bob, b), (bob, dave, a)):
            invite(caller, callee)
            seen = callee.wait("INVITE")
            assert isinstance(seen, m.Request)
            assert arrived_from(callee, seen) == (home.host, home.udp)
            callee.server = (home.host, home.udp)
            callee.answer(seen, 200, body=SDP)
            ok = caller.expect(200)
            routes = list(reversed(ok.get_all("record-route")))
            assert hosts_in(routes) == {"127.0.0.1", "127.0.0.2"}
            caller.send(in_dialog(caller, "ACK", ok, routes, cseq=ok.cseq.number))
            assert callee.wait("ACK").method == "ACK"
            reinvite = in_dialog(caller, "INVITE", ok, routes)
            reinvite.body = SDP
            reinvite.set("content-type", "application/sdp")
            caller.send(reinvite)
            again = callee.wait("INVITE")
            assert isinstance(again, m.Request)
            callee.answer(again, 200, body=SDP)
            ok2 = caller.expect(200)
            caller.send(in_dialog(caller, "ACK", ok2, routes, cseq=ok2.cseq.number))
            assert callee.wait("ACK").method == "ACK"
            hang_up(callee, caller, callee_request(callee, seen, "BYE"))
    finally:
        dave.close()
        bob.close()


def test_a_forged_node_route_is_refused_and_nothing_reaches_its_address(nodes: tuple[Server, Server]) -> None:
    """A stranger sends A a request routed by a node Path entry naming A: with a token
    whose MAC is forged, and with a genuine token (taken from the location store) but
    without the forwarding node's call signature. Both get 403, counted; the address
    the token names (a socket of the test) receives nothing."""
    a, _ = nodes
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.1", 0))
    victim.settimeout(0.5)
    stranger, owner = ua(a, "bob"), ua(a, "alice")
    try:
        flow = f"udp~127.0.0.1~{a.udp}~127.0.0.1~{victim.getsockname()[1]}~0"
        forged = "nf-" + base64.urlsafe_b64encode(b"\x00" * 10 + flow.encode()).rstrip(b"=").decode()
        assert owner.register().status == 200
        shown = json.loads(cli(["ctl", "--config", str(a.config), "--json", "ul", "show", f"alice@{DOMAIN}"]).stdout)
        genuine = shown[0]["path"][0].strip("<>")
        assert genuine.startswith("sip:nf-") and ";ob" in genuine
        before = metrics(a).get("sip_node_route_refused", 0)
        for route in (f"<sip:{forged}@127.0.0.1:{a.udp};lr;ob>", f"<{genuine}>"):
            req = stranger.build("MESSAGE", f"sip:anyone@127.0.0.1:{victim.getsockname()[1]}",
                                 headers={"Route": route, "Content-Type": "text/plain"}, body=b"relay me")
            stranger.send(req)
            refused = stranger.expect_final()
            assert (refused.status, refused.reason) == (403, "Bad Node Route")
        with pytest.raises(TimeoutError):
            victim.recvfrom(65535)
        counted(a, "sip_node_route_refused", before + 2)
    finally:
        victim.close()
        stranger.close()
        owner.register(expires=0)
        owner.close()


def test_one_node_alone_keeps_its_bindings_without_a_node_path(tmp_path: Path) -> None:
    """On SQLite (``node_path`` "auto" is off) a binding has no node entry and a call to
    it goes straight to the phone, as before."""
    with running_server(tmp_path, sip=f'domains = ["{DOMAIN}"]', log_level="info") as s:
        add_users(s.config, DOMAIN, USERS)
        alice, bob = ua(s, "alice"), ua(s, "bob")
        try:
            assert alice.register().status == 200
            shown = json.loads(cli(["ctl", "--config", str(s.config), "--json", "ul", "show", f"alice@{DOMAIN}"]).stdout)
            assert shown[0]["path"] == []
            seen, _ = whole_call(bob, alice, s, bye_from_callee=True)
            assert seen.get_all("route") == []
            assert metrics(s).get("sip_node_routed", 0) == 0
        finally:
            alice.close()
            bob.close()


def test_each_nated_phone_is_kept_alive_by_the_node_holding_its_flow(redis_url: str, tmp_path: Path) -> None:  # noqa: F811
    """SIP keepalives every 0.2 s, contacts dropped after 3 s without an answer, on both
    nodes of one Redis: the NATed phone registered on A is pinged from A's socket only,
    answers, and keeps its binding. B leaves it alone: it could only ping from its own
    socket, which the phone's NAT would drop, and would then remove a live binding."""
    extra = (f'\n[redis]\nurl = "{redis_url}"\n\n[nat]\nkeepalive_interval = 0.2\nkeepalive_method = "OPTIONS"\n'
             "keepalive_timeout = 3.0\n")
    sip = f'domains = ["{DOMAIN}"]'
    with node(tmp_path / "a", "127.0.0.1", extra, sip) as a, node(tmp_path / "b", "127.0.0.2", extra, sip) as b:
        for s in (a, b):
            add_users(s.config, DOMAIN, USERS)
        nated = ua(a, "carol", cls=NatUA)
        try:
            assert nated.register().status == 200
            shown: list[subprocess.CompletedProcess[str]] = []
            asking = threading.Thread(target=lambda: shown.append(cli(  # (while the phone keeps answering)
                ["ctl", "--config", str(b.config), "--json", "ul", "show", f"carol@{DOMAIN}"], check=False)))
            started = time.monotonic()

            def answer_pings_until(done: Callable[[], bool]) -> None:
                while not done():
                    nated._pump()
                    for ping in [x for x in nated.inbox if isinstance(x, m.Request) and x.method == "OPTIONS"]:
                        nated.inbox.remove(ping)
                        nated.answer(ping, 200)
                    assert time.monotonic() < started + 60

            answer_pings_until(lambda: time.monotonic() > started + 5.0)
            asking.start()
            answer_pings_until(lambda: not asking.is_alive())
            pings = [src for msg, src in nated.arrivals if isinstance(msg, m.Request) and msg.method == "OPTIONS"]
            assert len(pings) >= 5 and set(pings) == {(a.host, a.udp)}, pings
            assert shown[0].returncode == 0, shown[0].stderr  # not dropped by either node
            assert [x["contact"] for x in json.loads(shown[0].stdout)] == [f"sip:carol@{NAT_HOSTPORT}"]
        finally:
            nated.close()
