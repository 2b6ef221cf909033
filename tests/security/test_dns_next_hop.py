"""Next hops named by host go through the configured DNS resolver only ([dns], RFC 3263),
proven through ``sipedge serve`` with a DNS server of the test's own on loopback: a name
it knows is reached (A, SRV, SRV failover over TCP), a name it does not know gets 503
(not 500), and the system resolver is never asked (``localhost`` does not resolve when the
configured server does not know it). RFC 3263 failover in the same transaction
(docs/dns.md, "Failover"): a name's SRV targets, user agents on 127.0.0.2/127.0.0.3, are
tried in turn when one does not answer at all (Timer B) or answers 503."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from helpers.dnszone import Zone, serve_zone
from helpers.metrics import metrics
from helpers.ports import free_port
from helpers.sipserver import Server, running_server
from helpers.ua import UA
from sipedge.sip import message as m

TRUSTED = "127.0.0.5"  # a trunk of ours: it may send requests to foreign destinations


@pytest.fixture(scope="module")
def zone() -> Zone:
    return Zone({}, origin="dns.test")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, zone: Zone) -> Iterator[Server]:
    with serve_zone(zone) as port:
        extra = f'\n[dns]\nnameservers = ["127.0.0.1:{port}"]\nhosts_file = ""\ntimeout = 2.0\n'
        sip = f'domains = ["127.0.0.1"]\ntrusted_peers = ["{TRUSTED}/32"]\n'
        with running_server(tmp_path_factory.mktemp("dns"), extra=extra, sip=sip) as s:
            yield s


@pytest.fixture
def trunk(server: Server) -> Iterator[UA]:
    ua = UA("udp", (server.host, server.udp), "trunk", server.host, host=TRUSTED)
    yield ua
    ua.close()


@pytest.fixture
def uas(server: Server) -> Iterator[UA]:
    """The callee: a UDP user agent on 127.0.0.1 that the test's DNS names."""
    ua = UA("udp", (server.host, server.udp), "bob", server.host)
    yield ua
    ua.close()


def call(trunk: UA, uri: str) -> m.Request:
    req = trunk.build("INVITE", uri)
    trunk.send(req)
    return req


def test_a_record_leads_to_the_callee(server: Server, zone: Zone, trunk: UA, uas: UA) -> None:
    zone.records[("bob-a.dns.test", "A")] = (60, ["127.0.0.1"])
    call(trunk, f"sip:bob@bob-a.dns.test:{uas.port}")
    invite = uas.wait("INVITE")
    assert isinstance(invite, m.Request)
    uas.answer(invite, 486)
    assert trunk.expect_final().status == 486
    assert zone.queries[("bob-a.dns.test", "A")] == 1


def test_srv_record_leads_to_the_callee(server: Server, zone: Zone, trunk: UA, uas: UA) -> None:
    zone.records[("_sip._udp.bob-srv.dns.test", "SRV")] = (60, [f"10 0 {uas.port} host-srv.dns.test."])
    zone.records[("host-srv.dns.test", "A")] = (60, ["127.0.0.1"])
    call(trunk, "sip:bob@bob-srv.dns.test")  # no port, no transport: NAPTR, then SRV
    invite = uas.wait("INVITE")
    assert isinstance(invite, m.Request)
    uas.answer(invite, 486)
    assert trunk.expect_final().status == 486
    assert zone.queries[("bob-srv.dns.test", "NAPTR")] == 1
    assert zone.queries[("_sip._udp.bob-srv.dns.test", "SRV")] == 1


def test_srv_failover_skips_a_dead_tcp_server(server: Server, zone: Zone, trunk: UA) -> None:
    live = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    live.bind(("127.0.0.1", 0))
    live.listen(4)
    live.settimeout(5)
    dead = free_port()  # nothing listens there: connection refused
    zone.records[("_sip._tcp.fo.dns.test", "SRV")] = (60, [
        f"10 0 {dead} dead.fo.dns.test.",
        f"20 0 {live.getsockname()[1]} live.fo.dns.test.",
    ])
    zone.records[("dead.fo.dns.test", "A")] = (60, ["127.0.0.1"])
    zone.records[("live.fo.dns.test", "A")] = (60, ["127.0.0.1"])
    try:
        call(trunk, "sip:bob@fo.dns.test;transport=tcp")
        conn, _ = live.accept()
        with conn:
            conn.settimeout(5)
            assert conn.recv(65535).startswith(b"INVITE sip:bob@fo.dns.test;transport=tcp ")
    finally:
        live.close()
    assert metrics(server)["dns_send_failovers"] >= 1


def test_unknown_name_gets_503(server: Server, zone: Zone, trunk: UA) -> None:
    before = metrics(server)["dns_resolves_empty"]
    call(trunk, "sip:bob@nowhere.dns.test")
    final = trunk.expect_final()
    assert final.status == 503, f"{final.status} {final.reason}"
    assert zone.queries[("nowhere.dns.test", "A")] == 1
    assert metrics(server)["dns_resolves_empty"] == before + 1


def test_the_system_resolver_is_not_asked(server: Server, zone: Zone, trunk: UA, uas: UA) -> None:
    # the system resolves "localhost" (its hosts file); the configured DNS server does not
    # know it and [dns] hosts_file is off: the call must fail, not reach 127.0.0.1
    call(trunk, f"sip:bob@localhost:{uas.port}")
    final = trunk.expect_final()
    assert final.status == 503, f"{final.status} {final.reason}"
    assert zone.queries[("localhost", "A")] == 1
    with pytest.raises(AssertionError):
        uas.wait("INVITE", timeout=0.3)


# -- failover over a name's addresses ---------------------------------------------------
@pytest.fixture
def parties(server: Server) -> Iterator[tuple[UA, UA, UA]]:
    """The trunk calling, and the name's first and second server."""
    uas = [UA("udp", (server.host, server.udp), name, server.host, host=host)
           for name, host in (("trunk", TRUSTED), ("first", "127.0.0.2"), ("second", "127.0.0.3"))]
    yield uas[0], uas[1], uas[2]
    for ua in uas:
        ua.close()


def name_for(zone: Zone, label: str, first: UA, second: UA) -> str:
    zone.records[(f"_sip._udp.{label}.fo.test", "SRV")] = (60, [
        f"10 0 {first.port} one.{label}.fo.test.", f"20 0 {second.port} two.{label}.fo.test."])
    zone.records[(f"one.{label}.fo.test", "A")] = (60, [first.host])
    zone.records[(f"two.{label}.fo.test", "A")] = (60, [second.host])
    return f"sip:bob@{label}.fo.test"


def test_a_silent_first_server_fails_over_on_timer_b(server: Server, zone: Zone,
                                                      parties: tuple[UA, UA, UA]) -> None:
    trunk, first, second = parties
    before = metrics(server).get("sip_branch_failovers", 0)
    invite = trunk.build("INVITE", name_for(zone, "silent", first, second))
    t0 = time.monotonic()
    trunk.send(invite)
    assert isinstance(first.wait("INVITE"), m.Request)  # ... and never answered
    got = second.wait("INVITE", timeout=15)
    assert time.monotonic() - t0 > 3.0  # after Timer B (64*T1 = 6.4 s)
    assert isinstance(got, m.Request) and got.get("call-id") == invite.get("call-id")
    second.answer(got, 486)
    assert trunk.expect_final(15).status == 486  # one transaction: the caller saw no 408
    assert metrics(server)["sip_branch_failovers"] == before + 1
    assert zone.queries[("_sip._udp.silent.fo.test", "SRV")] == 1


def test_a_503_from_the_first_server_fails_over_at_once(server: Server, zone: Zone,
                                                         parties: tuple[UA, UA, UA]) -> None:
    trunk, first, second = parties
    before = metrics(server).get("sip_branch_failovers", 0)
    trunk.send(trunk.build("INVITE", name_for(zone, "busy", first, second)))
    got = first.wait("INVITE")
    assert isinstance(got, m.Request)
    first.answer(got, 503)
    again = second.wait("INVITE", timeout=2)
    assert isinstance(again, m.Request)
    second.answer(again, 200)
    assert trunk.expect_final().status == 200
    assert metrics(server)["sip_branch_failovers"] == before + 1


def test_both_failing_passes_the_last_answer_on(server: Server, zone: Zone,
                                                 parties: tuple[UA, UA, UA]) -> None:
    trunk, first, second = parties
    trunk.send(trunk.build("INVITE", name_for(zone, "down", first, second)))
    for ua in (first, second):
        got = ua.wait("INVITE")
        assert isinstance(got, m.Request)
        ua.answer(got, 503)
    final = trunk.expect_final()
    assert final.status == 500  # a downstream 503 is not passed upstream (RFC 3261 §16.7)
