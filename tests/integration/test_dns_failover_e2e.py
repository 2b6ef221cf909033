"""RFC 3263 failover through ``sipedge serve`` (docs/dns.md, "Failover"): a name's SRV
targets are the branch's failover list, tried in turn in the same transaction when one
does not answer at all (Timer B: 408) or answers 503, with a DNS server of the test's own
on loopback and user agents on 127.0.0.2/127.0.0.3 as the name's servers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from helpers.dnszone import Zone, serve_zone
from helpers.metrics import metrics
from helpers.sipserver import Server, running_server
from helpers.ua import UA
from sipedge.sip import message as m

TRUSTED = "127.0.0.5"  # a trunk: it may send requests to foreign destinations


@pytest.fixture(scope="module")
def zone() -> Zone:
    return Zone({}, origin="fo.test")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, zone: Zone) -> Iterator[Server]:
    with serve_zone(zone) as port:
        extra = f'\n[dns]\nnameservers = ["127.0.0.1:{port}"]\nhosts_file = ""\ntimeout = 2.0\n'
        sip = f'domains = ["127.0.0.1"]\ntrusted_peers = ["{TRUSTED}/32"]\n'
        with running_server(tmp_path_factory.mktemp("dnsfo"), extra=extra, sip=sip, log_level="info") as s:
            yield s


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
