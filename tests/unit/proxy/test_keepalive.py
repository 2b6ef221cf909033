"""Keepalive of NAT bindings (proxy/keepalive.py) through a real ProxyCore running the
default routing module: nathelper pings of NATed registered contacts (UDP and SIP, drop
on timeout) and nat_traversal endpoints for registrations, subscriptions and dialogs,
with their counters and their SQLite state across a restart. FakeClock, no sockets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sipedge._common.clock import FakeClock
from sipedge.config import AuthConfig, Config
from sipedge.config.nat import NatConfig
from sipedge.proxy.core import ProxyCore, Send
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.keepalive import (
    STREAM_PING,
    UDP_PING,
    Endpoint,
    KeepaliveCore,
    KeepaliveHooks,
    binding_is_nated,
)
from sipedge.proxy.location import Binding, MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import load_router
from sipedge.proxy.services import ProxyServices
from sipedge.sip.flow import Flow
from sipedge.sip.message import Request, Response, make_response, parse
from sipedge.store.keepalive import SqliteEndpointStore
from sipedge.store.sqlite import SqliteDatabase

ME = ("203.0.113.10", 5060)
# alice: a phone at 192.168.1.20:5060 behind a NAT seen as 198.51.100.7:40123
ALICE = Flow("udp", ME, ("198.51.100.7", 40123))
# bob: a public phone, Contact = source
BOB = Flow("udp", ME, ("192.0.2.44", 5060))
# carol: behind NAT on TCP
CAROL = Flow("tcp", ME, ("198.51.100.8", 50111), 7)


@dataclass
class Rig:
    core: ProxyCore
    ka: KeepaliveCore
    clock: FakeClock
    location: MemoryLocationStore
    sent: list[Send]

    def feed(self, text: str, flow: Flow) -> None:
        self.core.receive(text.encode(), flow, self.clock.monotonic())
        self.sent.extend(self.core.outgoing())

    def tick(self, seconds: float) -> list[bytes]:
        self.clock.advance(seconds)
        self.ka.handle_timer(self.clock.wall())
        out = self.ka.outgoing()
        assert all(p.flow is not None for p in out)
        return [p.data for p in out]

    def last(self) -> Request | Response:
        return parse(self.sent[-1].data)


def rig(nat: NatConfig | None = None, store: SqliteEndpointStore | None = None,
        clock: FakeClock | None = None, location: MemoryLocationStore | None = None) -> Rig:
    cfg = Config(auth=AuthConfig(register=False, invite=False))
    identity = Identity([Listener("udp", *ME), Listener("tcp", *ME)])
    location = location if location is not None else MemoryLocationStore()
    clock = clock or FakeClock()
    ka = KeepaliveCore(nat or NatConfig(keepalive_interval=10.0), location, identity, store,
                       now=clock.wall())
    hooks = KeepaliveHooks(clock, ka)  # the core's services hook, as server/keepalive.py's
    core = ProxyCore(cfg, identity, location, MemorySubscriberStore(),
                     load_router("sipedge.proxy.default_routing"), clock, secret=b"k" * 32,
                     services=ProxyServices(route_observers=(hooks,), local_responses=(hooks.local_response,)))
    return Rig(core, ka, clock, location, [])


def register(user: str, contact: str, via: str, transport: str = "UDP", expires: int = 300) -> str:
    return (
        f"REGISTER sip:203.0.113.10 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via};branch=z9hG4bKreg{user}{expires};rport\r\n"
        f"Max-Forwards: 70\r\nTo: <sip:{user}@203.0.113.10>\r\n"
        f"From: <sip:{user}@203.0.113.10>;tag=r{user}\r\nCall-ID: reg-{user}\r\n"
        f"CSeq: {1000 - expires} REGISTER\r\nContact: <{contact}>\r\nExpires: {expires}\r\n"
        "Content-Length: 0\r\n\r\n"
    )


def dialog_request(method: str, to_user: str, via: str, contact: str, call_id: str,
                   extra: str = "", cseq: int = 1) -> str:
    return (
        f"{method} sip:{to_user}@203.0.113.10 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bK{call_id}{method}{cseq}\r\n"
        f"Max-Forwards: 70\r\nTo: <sip:{to_user}@203.0.113.10>\r\n"
        f"From: <sip:alice@203.0.113.10>;tag=alicetag\r\nCall-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\nContact: <{contact}>\r\n{extra}Content-Length: 0\r\n\r\n"
    )


def register_all(r: Rig) -> None:
    r.feed(register("alice", "sip:alice@192.168.1.20:5060", "192.168.1.20:5060"), ALICE)
    assert r.last().status == 200  # type: ignore[union-attr]
    r.feed(register("bob", "sip:bob@192.0.2.44:5060", "192.0.2.44:5060"), BOB)
    assert r.last().status == 200  # type: ignore[union-attr]


def answer(r: Rig, to_flow: Flow, status: int = 200, extra: list[tuple[str, str]] | None = None) -> Response:
    """Answer the last request the proxy relayed (it went to ``to_flow``)."""
    sent = r.sent[-1]
    assert sent.flow == to_flow or sent.target is not None
    req = parse(sent.data)
    assert isinstance(req, Request)
    resp = make_response(req, status, to_tag="bobtag")
    for rr in req.get_all("record-route"):  # a UAS copies the Record-Route set
        resp.add("Record-Route", rr)
    resp.add("Contact", "<sip:bob@192.0.2.44:5060>")
    for name, value in extra or []:
        resp.add(name, value)
    r.feed(resp.serialize().decode(), to_flow)
    out = r.last()
    assert isinstance(out, Response) and out.status == status
    return out


class TestNathelperPings:
    def test_nated_contact_gets_udp_ping_every_interval(self) -> None:
        r = rig()
        register_all(r)
        assert r.tick(9.0) == []
        pings = r.ka.outgoing()
        assert pings == []
        assert r.tick(1.0) == [UDP_PING]  # alice only: bob's Contact is his source
        assert r.tick(10.0) == [UDP_PING]
        assert r.ka.stats()["keepalive_pings_sent"] == 2

    def test_every_contact_without_nated_only(self) -> None:
        r = rig(NatConfig(keepalive_interval=10.0, ping_nated_only=False, endpoints=False))
        register_all(r)
        assert r.tick(10.0) == [UDP_PING, UDP_PING]

    def test_stream_flow_gets_double_crlf(self) -> None:
        r = rig()
        r.feed(register("carol", "sip:carol@10.0.0.3:5060;transport=tcp", "10.0.0.3:5060", "TCP"), CAROL)
        assert r.tick(10.0) == [STREAM_PING]

    def test_interval_zero_disables(self) -> None:
        r = rig(NatConfig(keepalive_interval=0.0))
        register_all(r)
        r.feed(dialog_request("INVITE", "bob", "192.168.1.20:5060", "sip:alice@192.168.1.20:5060", "c0"), ALICE)
        assert r.ka.get_timer() is None
        assert r.tick(100.0) == []
        assert r.ka.stats()["keepalive_endpoints"] == 0 and not r.ka._pending

    def test_sip_ping_is_a_stateless_options_to_the_contact(self) -> None:
        r = rig(NatConfig(keepalive_interval=10.0, keepalive_method="OPTIONS",
                          ping_from="sip:pinger@example.net", ping_headers=["X-Ping: yes"]))
        register_all(r)
        (data,) = r.tick(10.0)
        ping = parse(data)
        assert isinstance(ping, Request) and ping.method == "OPTIONS"
        assert ping.uri == "sip:alice@192.168.1.20:5060"
        assert ping.top_via.host == "203.0.113.10" and ping.top_via.port == 5060
        assert str(ping.from_.uri) == "sip:pinger@example.net" and ping.from_.tag
        assert ping.get("x-ping") == "yes"
        # the phone answers (any status will do), through the proxy core's stray path
        resp = make_response(ping, 404, to_tag="x")
        r.feed(resp.serialize().decode(), ALICE)
        assert r.ka.stats()["keepalive_ping_answers"] == 1

    def test_notify_ping_has_event(self) -> None:
        r = rig(NatConfig(keepalive_interval=10.0, keepalive_method="NOTIFY"))
        register_all(r)
        (data,) = r.tick(10.0)
        ping = parse(data)
        assert isinstance(ping, Request) and ping.method == "NOTIFY"
        assert ping.get("event") == "keep-alive"

    @pytest.mark.parametrize("endpoints", [False, True])
    def test_unanswering_contact_is_dropped_after_timeout(self, endpoints: bool) -> None:
        r = rig(NatConfig(keepalive_interval=10.0, keepalive_method="OPTIONS", keepalive_timeout=25.0,
                          endpoints=endpoints))
        register_all(r)
        for _ in range(3):
            assert len(r.tick(10.0)) == 1  # t=10 first ping, 20, 30: 20 s < 25 s
        assert r.tick(10.0) == []  # t=40: 30 s without an answer
        assert r.location.lookup("sip:alice@203.0.113.10", r.clock.wall()) == []
        assert r.location.lookup("sip:bob@203.0.113.10", r.clock.wall()) != []
        assert r.ka.stats()["keepalive_contacts_dropped"] == 1
        assert r.ka.stats()["keepalive_endpoints"] == 0  # its registration endpoint went too
        assert r.tick(10.0) == []

    def test_answering_contact_is_kept(self) -> None:
        r = rig(NatConfig(keepalive_interval=10.0, keepalive_method="OPTIONS", keepalive_timeout=25.0))
        register_all(r)
        for _ in range(6):
            (data,) = r.tick(10.0)
            ping = parse(data)
            assert isinstance(ping, Request)
            r.feed(make_response(ping, 200, to_tag="y").serialize().decode(), ALICE)
        assert r.ka.stats()["keepalive_contacts_dropped"] == 0
        assert r.ka.stats()["keepalive_ping_answers"] == 6

    def test_a_contact_that_refreshes_its_registration_is_kept_without_answering_pings(self) -> None:
        """usrloc refreshes a contact's keepalive time on every update: a phone that
        re-registers every 10 s but ignores OPTIONS (many do) is not dropped."""
        r = rig(NatConfig(keepalive_interval=10.0, keepalive_method="OPTIONS", keepalive_timeout=25.0))
        register_all(r)
        for i in range(6):
            assert len(r.tick(10.0)) == 1  # pinged, never answered
            r.feed(register("alice", "sip:alice@192.168.1.20:5060", "192.168.1.20:5060", expires=299 - i), ALICE)
            assert r.last().status == 200  # type: ignore[union-attr]
        assert r.ka.stats()["keepalive_contacts_dropped"] == 0
        assert r.location.lookup("sip:alice@203.0.113.10", r.clock.wall()) != []

    def test_unknown_responses_are_not_answers(self) -> None:
        r = rig(NatConfig(keepalive_interval=10.0, keepalive_method="OPTIONS"))
        resp = parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.10;branch=z9hG4bKzz\r\n"
                     b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: other\r\nCSeq: 1 OPTIONS\r\n"
                     b"Content-Length: 0\r\n\r\n")
        assert isinstance(resp, Response)
        assert not r.ka.response_received(resp, ALICE, 0.0)

    @pytest.mark.parametrize(("contact", "flow", "nated"), [
        ("sip:a@192.168.1.20:5060", ALICE.token, True),
        ("sip:a@198.51.100.7:40123", ALICE.token, False),
        ("sip:a@198.51.100.7", ALICE.token, True),  # 5060 is not 40123
        ("sip:a@198.51.100.7:40123;alias=198.51.100.7~40123~1", ALICE.token, True),
        ("sip:a@x.invalid;transport=ws", Flow("ws", ME, ("192.0.2.9", 1000), 4).token, True),
        ("sip:a@192.168.1.20", "", False),  # no flow: nothing to ping on
    ])
    def test_binding_is_nated(self, contact: str, flow: str, nated: bool) -> None:
        assert binding_is_nated(Binding("sip:a@h", contact, 1e12, flow=flow)) is nated


class TestEndpoints:
    def test_registration_endpoint_lives_with_the_binding(self) -> None:
        r = rig(NatConfig(keepalive_interval=10.0, ping_nated_only=False))
        register_all(r)
        s = r.ka.stats()
        assert (s["keepalive_endpoints"], s["registered_endpoints"]) == (1, 1)  # bob is not NATed
        # unregister: the endpoint goes
        r.feed(register("alice", "sip:alice@192.168.1.20:5060", "192.168.1.20:5060", expires=0), ALICE)
        assert r.ka.stats()["keepalive_endpoints"] == 0

    def test_registration_expiry_ends_it(self) -> None:
        r = rig()
        register_all(r)
        r.tick(301.0)
        assert r.ka.stats()["registered_endpoints"] == 0

    def test_dialog_of_an_unregistered_caller(self) -> None:
        r = rig()
        r.feed(register("bob", "sip:bob@192.0.2.44:5060", "192.0.2.44:5060"), BOB)
        r.feed(dialog_request("INVITE", "bob", "192.168.1.20:5060", "sip:alice@192.168.1.20:5060", "call1"), ALICE)
        relayed = parse(r.sent[-1].data)
        assert isinstance(relayed, Request) and relayed.method == "INVITE"
        # the caller's Contact carries its flow, the top Via was given rport
        assert "alias=198.51.100.7~40123~1" in (relayed.get("contact") or "")
        assert "rport=40123" in relayed.get_all("via")[1]
        assert r.ka.stats()["keepalive_endpoints"] == 0  # only once answered
        ok = answer(r, BOB)
        assert ok.get_all("record-route")
        s = r.ka.stats()
        assert (s["keepalive_endpoints"], s["dialog_endpoints"]) == (1, 1)
        assert r.tick(10.0) == [UDP_PING]  # alice is pinged though not registered
        # BYE from the callee ends the dialog (tags swapped)
        rr = ok.get_all("record-route")[0]
        bye = (
            "BYE sip:alice@192.168.1.20:5060;alias=198.51.100.7~40123~1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.44:5060;branch=z9hG4bKbye1\r\nMax-Forwards: 70\r\n"
            f"Route: {rr}\r\nFrom: <sip:bob@203.0.113.10>;tag=bobtag\r\n"
            "To: <sip:alice@203.0.113.10>;tag=alicetag\r\nCall-ID: call1\r\nCSeq: 2 BYE\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        r.feed(bye, BOB)
        assert r.sent[-1].flow is not None and r.sent[-1].flow.remote[1] == 40123  # by alias
        assert r.ka.stats()["keepalive_endpoints"] == 0

    def test_failed_invite_adds_nothing(self) -> None:
        r = rig()
        r.feed(register("bob", "sip:bob@192.0.2.44:5060", "192.0.2.44:5060"), BOB)
        r.feed(dialog_request("INVITE", "bob", "192.168.1.20:5060", "sip:alice@192.168.1.20:5060", "call2"), ALICE)
        answer(r, BOB, 486)
        assert r.ka.stats()["keepalive_endpoints"] == 0

    def test_dialog_lifetime_bounds_a_lost_bye(self) -> None:
        r = rig(NatConfig(keepalive_interval=10.0, dialog_lifetime=60.0))
        r.feed(register("bob", "sip:bob@192.0.2.44:5060", "192.0.2.44:5060"), BOB)
        r.feed(dialog_request("INVITE", "bob", "192.168.1.20:5060", "sip:alice@192.168.1.20:5060", "call3"), ALICE)
        answer(r, BOB)
        r.tick(61.0)
        assert r.ka.stats()["dialog_endpoints"] == 0

    def test_subscription_until_expires_or_terminated(self) -> None:
        r = rig()
        r.feed(register("bob", "sip:bob@192.0.2.44:5060", "192.0.2.44:5060"), BOB)
        sub = dialog_request("SUBSCRIBE", "bob", "192.168.1.20:5060", "sip:alice@192.168.1.20:5060",
                             "sub1", "Event: presence\r\nExpires: 600\r\n")
        r.feed(sub, ALICE)
        answer(r, BOB, 202, [("Expires", "600")])
        s = r.ka.stats()
        assert (s["keepalive_endpoints"], s["subscribed_endpoints"]) == (1, 1)
        notify = (
            "NOTIFY sip:alice@192.168.1.20:5060;alias=198.51.100.7~40123~1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.44:5060;branch=z9hG4bKn1\r\nMax-Forwards: 70\r\n"
            "From: <sip:bob@203.0.113.10>;tag=bobtag\r\nTo: <sip:alice@203.0.113.10>;tag=alicetag\r\n"
            "Call-ID: sub1\r\nCSeq: 1 NOTIFY\r\nEvent: presence\r\n"
            "Subscription-State: terminated;reason=timeout\r\nContent-Length: 0\r\n\r\n"
        )
        r.feed(notify, BOB)
        assert r.ka.stats()["subscribed_endpoints"] == 0

    def test_subscription_expires(self) -> None:
        r = rig()
        r.feed(register("bob", "sip:bob@192.0.2.44:5060", "192.0.2.44:5060"), BOB)
        r.feed(dialog_request("SUBSCRIBE", "bob", "192.168.1.20:5060", "sip:alice@192.168.1.20:5060",
                              "sub2", "Event: presence\r\nExpires: 60\r\n"), ALICE)
        answer(r, BOB, 200, [("Expires", "60")])
        assert r.ka.stats()["subscribed_endpoints"] == 1
        r.tick(61.0)
        assert r.ka.stats()["subscribed_endpoints"] == 0

    def test_endpoints_off(self) -> None:
        r = rig(NatConfig(keepalive_interval=10.0, endpoints=False))
        register_all(r)
        assert r.ka.stats()["keepalive_endpoints"] == 0
        assert r.tick(10.0) == [UDP_PING]  # nathelper pings still go

    def test_stream_send_failure_forgets_endpoint(self) -> None:
        r = rig()
        r.feed(register("carol", "sip:carol@10.0.0.3:5060;transport=tcp", "10.0.0.3:5060", "TCP"), CAROL)
        assert r.ka.stats()["keepalive_endpoints"] == 1
        r.ka.send_failed(CAROL, r.clock.wall())
        assert r.ka.stats()["keepalive_endpoints"] == 0
        assert r.ka.stats()["keepalive_ping_send_failures"] == 1


    def test_websocket_clients_are_no_endpoints_and_tcp_ones_are_not_stored(self, tmp_path: Path) -> None:
        """A browser's connection is kept by WebSocket pings: asking for a keepalive adds
        nothing to track. A TCP endpoint is pinged but not written to the database: its
        connection would not survive a restart anyway. A UDP one is written."""
        db = SqliteDatabase(tmp_path / "s.db")
        try:
            r = rig(store=SqliteEndpointStore(db))
            dave = Flow("ws", ME, ("198.51.100.9", 50222), 9)
            r.feed(register("dave", "sip:dave@df7jal23ls0d.invalid;transport=ws", "df7jal23ls0d.invalid", "WS"), dave)
            assert r.last().status == 200  # type: ignore[union-attr]
            assert r.ka.stats()["keepalive_endpoints"] == 0
            r.feed(register("carol", "sip:carol@10.0.0.3:5060;transport=tcp", "10.0.0.3:5060", "TCP"), CAROL)
            register_all(r)
            assert r.ka.stats()["keepalive_endpoints"] == 2  # carol (TCP) and alice (UDP)
            assert [e.token for e in SqliteEndpointStore(db).load()] == [ALICE.token]
        finally:
            db.close()


class TestRestart:
    def test_state_survives_a_restart(self, tmp_path: Path) -> None:
        db = SqliteDatabase(tmp_path / "s.db")
        clock = FakeClock()
        r = rig(store=SqliteEndpointStore(db), clock=clock)
        r.feed(register("bob", "sip:bob@192.0.2.44:5060", "192.0.2.44:5060"), BOB)
        r.feed(register("alice", "sip:alice@192.168.1.20:5060", "192.168.1.20:5060"), ALICE)
        r.feed(dialog_request("INVITE", "bob", "192.168.1.20:5060", "sip:alice@192.168.1.20:5060", "c9"), ALICE)
        answer(r, BOB)
        before = r.ka.stats()
        db.close()
        db2 = SqliteDatabase(tmp_path / "s.db")
        try:
            clock.advance(5.0)
            again = rig(store=SqliteEndpointStore(db2), clock=clock)
            after = again.ka.stats()
            for k in ("keepalive_endpoints", "registered_endpoints", "dialog_endpoints"):
                assert after[k] == before[k] == 1
            (ep,) = again.ka.endpoints()
            assert ep.token == ALICE.token and ep.dialogs
            assert again.tick(10.0) == [UDP_PING]
        finally:
            db2.close()

    def test_expired_rows_are_not_restored(self, tmp_path: Path) -> None:
        db = SqliteDatabase(tmp_path / "s.db")
        try:
            store = SqliteEndpointStore(db)
            store.save(Endpoint(ALICE.token, registered_until=10.0))
            store.save(Endpoint(BOB.token, dialogs={"x;y": 1e12}))
            with db.transaction() as c:
                c.execute("INSERT INTO nat_keepalive VALUES ('junk', 0, 'not json', '[1]', 0)")
            ka = KeepaliveCore(NatConfig(), MemoryLocationStore(), Identity([Listener("udp", *ME)]), store,
                               now=100.0)
            assert [e.token for e in ka.endpoints()] == [BOB.token]
            store.delete(BOB.token)
            assert {e.token for e in store.load()} == {ALICE.token, "junk"}
        finally:
            db.close()


class TestSlices:
    def test_pings_are_spread_but_each_flow_gets_one_per_interval(self) -> None:
        clock = FakeClock()
        location = MemoryLocationStore()
        identity = Identity([Listener("udp", *ME)])
        ka = KeepaliveCore(NatConfig(keepalive_interval=10.0, endpoints=False), location, identity,
                           now=clock.wall(), slices=5)
        for i in range(50):
            flow = Flow("udp", ME, ("198.51.100.7", 40000 + i))
            location.put(Binding(f"sip:u{i}@h", f"sip:u{i}@192.168.1.20", clock.wall() + 3600, flow=flow.token))
        per_tick = []
        for _ in range(10):  # two intervals, five timers each
            when = ka.get_timer()
            assert when is not None and when - clock.wall() == pytest.approx(2.0)
            clock.advance(2.0)
            ka.handle_timer(clock.wall())
            per_tick.append({p.flow.remote[1] for p in ka.outgoing()})
        first, second = per_tick[:5], per_tick[5:]
        assert set().union(*first) == set().union(*second) == {40000 + i for i in range(50)}
        assert sum(len(t) for t in first) == 50  # each flow once per interval
        assert max(len(t) for t in first) < 50  # not in one burst
        assert first == second  # a flow keeps its slot

    def test_timeout_drops_with_slices(self) -> None:
        clock = FakeClock()
        location = MemoryLocationStore()
        flow = Flow("udp", ME, ("198.51.100.7", 40000))
        location.put(Binding("sip:u@h", "sip:u@192.168.1.20", clock.wall() + 3600, flow=flow.token))
        ka = KeepaliveCore(NatConfig(keepalive_interval=10.0, keepalive_method="OPTIONS", keepalive_timeout=25.0,
                                     endpoints=False), location, Identity([Listener("udp", *ME)]),
                           now=clock.wall(), slices=4)
        for _ in range(4 * 6):
            clock.advance(2.5)
            ka.handle_timer(clock.wall())
            ka.outgoing()
        assert location.bindings(clock.wall()) == []
        assert ka.stats()["keepalive_contacts_dropped"] == 1

    def test_the_location_service_is_read_once_per_interval_not_per_slot(self) -> None:
        class Counting(MemoryLocationStore):
            reads = 0

            def bindings(self, now: float) -> list[Binding]:
                Counting.reads += 1
                return super().bindings(now)

        clock = FakeClock()
        location = Counting()
        for i in range(20):
            flow = Flow("udp", ME, ("198.51.100.7", 40000 + i))
            location.put(Binding(f"sip:u{i}@h", f"sip:u{i}@192.168.1.20", clock.wall() + 3600, flow=flow.token))
        ka = KeepaliveCore(NatConfig(keepalive_interval=10.0, endpoints=False), location,
                           Identity([Listener("udp", *ME)]), now=clock.wall(), slices=5)
        pinged = set()
        for _ in range(5):
            clock.advance(2.0)
            ka.handle_timer(clock.wall())
            pinged |= {p.flow.remote[1] for p in ka.outgoing()}
        assert Counting.reads == 1 and len(pinged) == 20

    def test_a_contact_that_moved_to_a_new_flow_is_not_dropped_for_the_old_ones_silence(self) -> None:
        """The round's list is read at slot 0. A phone that re-registers its contact from a
        new NAT mapping later in the round must not lose it when the old flow's slot comes
        up timed out."""
        clock = FakeClock()
        location = MemoryLocationStore()
        ka = KeepaliveCore(NatConfig(keepalive_interval=10.0, keepalive_method="OPTIONS", keepalive_timeout=25.0,
                                     endpoints=False), location, Identity([Listener("udp", *ME)]),
                           now=clock.wall(), slices=4)
        old = next(f for f in (Flow("udp", ME, ("198.51.100.7", p)) for p in range(40000, 40100))
                   if ka._slice_of(f.token) == 3)  # the last slot of each round
        location.put(Binding("sip:u@h", "sip:u@192.168.1.20", clock.wall() + 3600, flow=old.token))

        def tick() -> None:
            clock.advance(2.5)
            ka.handle_timer(clock.wall())
            ka.outgoing()

        for _ in range(13):  # pinged from t=10 on, never answered; t=32.5 starts a round
            tick()
        new = Flow("udp", ME, ("198.51.100.7", 40101))
        location.put(Binding("sip:u@h", "sip:u@192.168.1.20", clock.wall() + 3600, flow=new.token))
        for _ in range(3):  # t=40: the old flow's slot, 30 s of silence on it
            tick()
        assert [b.flow for b in location.bindings(clock.wall())] == [new.token]
        assert ka.stats()["keepalive_contacts_dropped"] == 0
