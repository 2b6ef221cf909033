"""Several ``sipedge serve`` nodes as one service (issue 15, "Tests" and "A node that
stops"): nodes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 share one real PostgreSQL
(``pg_server``), driven by real clients.

- SIPp registered on node A as the callee (UAS), SIPp calling it with digest through
  node B: every call completes, over UDP and over TCP, with one process per node and with
  two workers per node (docs/workers.md).
- Three nodes under load: SIPp callers on B and C call the UAS registered through A; B is
  killed with SIGKILL mid-load: C's calls keep completing (at least 99%), and A still
  answers afterwards.
- DNS SRV failover between nodes, with a DNS server of the test's own
  (``_sip._udp.example.com``: A priority 10, B priority 20): a UA that resolves with
  sipedge's own RFC 3263 resolver (``DnsResolver``) registers on A; A is killed; its next
  REGISTER times out, the resolver marks A down and the REGISTER lands on B; a call
  arriving at B reaches the UA again, and so does a call through a third ``sipedge serve``
  (an edge in front of the cluster) whose next hop is ``sip:bob@example.com``: its
  resolver sends the INVITE to dead A first and fails over to B on Timer B, in the same
  transaction (docs/dns.md, "Failover").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.dnszone import Zone, serve_zone
from helpers.metrics import metrics
from helpers.pgserver import PgServer
from helpers.sippcallee import SippFlows, SippResult, registered_uas, sipp_marks
from helpers.sipserver import Server, running_server
from helpers.ua import UA
from integration.test_postgres_serve import DOMAIN, call, pg_extra, ua
from sipedge._common.clock import SystemClock
from sipedge.config.dns import DnsConfig
from sipedge.server.dns import DnsResolver
from sipedge.sip import message as m
from sipedge.sip.flow import Target
from sipedge.sip.uri import SipUri
from sipedge.store.backend import open_url
from sipedge.store.sqlite import SqliteSubscriberStore

pytestmark = sipp_marks(120)

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
USERS = ("alice", "bob")
NODE_SIP = f'domains = ["{DOMAIN}"]'


def password(user: str) -> str:
    return f"{user}-pw"  # as integration.test_postgres_serve.ua has it


def database(pg: PgServer) -> str:
    """A new database on ``pg``, migrated, with ``USERS`` (in this process: the CLI's
    ``user add --db`` is tested in test_postgres_serve.py)."""
    url = pg.create_database("cluster")
    db = open_url(url, migrate=True)
    try:
        for user in USERS:
            SqliteSubscriberStore(db).add(user, DOMAIN, password(user))
    finally:
        db.close()
    return url


@contextlib.contextmanager
def nodes(tmp: Path, url: str, count: int, *, general: str = "", sip: str = NODE_SIP,
          edge: dict[str, str] | None = None) -> Iterator[list[Server]]:
    """``count`` nodes on ``HOSTS`` sharing the database at ``url``; ``edge``: one more
    ``sipedge serve`` on the next host with these ``running_server`` arguments (and a
    database of its own). One after the other: started at once, on a loaded machine,
    they may not all answer within ``running_server``'s wait."""
    settings = [dict(extra=pg_extra(url), sip=sip, general=general) for _ in range(count)]
    if edge is not None:
        settings.append(edge)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(running_server(tmp / f"node{i}", HOSTS[i], log_level="info", **kw))
               for i, kw in enumerate(settings)]


def sigkill(node: Server) -> None:
    """The node stops at once: SIGKILL, no goodbye (workers notice their supervisor is gone)."""
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)


def flows(node: Server, root: Path, transport: str, name: str) -> SippFlows:
    return SippFlows(f"{node.host}:{node.udp}", DOMAIN, root / name, transport=transport, timeout=30)


def _ok(r: SippResult) -> None:
    assert r.ok, r.explain()


# -- 1. registered on A, called through B -----------------------------------------------
@pytest.fixture(scope="module", params=[1, 2], ids=["workers1", "workers2"])
def pair(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer,
         request: pytest.FixtureRequest) -> Iterator[list[Server]]:
    tmp = tmp_path_factory.mktemp("pair")
    with nodes(tmp, database(pg_server), 2, general=f"workers = {request.param}") as pair:
        yield pair


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_registered_on_a_is_called_through_b(pair: list[Server], transport: str, tmp_path: Path) -> None:
    a, b = pair
    callee = flows(a, tmp_path, transport, "a")
    with registered_uas(callee, "bob", password("bob")):
        r = flows(b, tmp_path, transport, "b").call("alice", password("alice"), "bob", calls=20, rate=10)
        _ok(r)
        assert r.successful == 20


# -- 2. a node killed under load --------------------------------------------------------
def test_a_node_killed_under_load_the_others_keep_serving(tmp_path: Path, pg_server: PgServer) -> None:
    calls = 150
    with nodes(tmp_path, database(pg_server), 3) as (a, b, c):
        callee = flows(a, tmp_path, "udp", "a")
        with registered_uas(callee, "bob", password("bob")):
            results: dict[str, SippResult] = {}

            def load(node: Server, name: str) -> None:
                results[name] = flows(node, tmp_path, "udp", name).call(
                    "alice", password("alice"), "bob", calls=calls, rate=15, talk_ms=200)

            threads = [threading.Thread(target=load, args=(n, name)) for n, name in ((b, "b"), (c, "c"))]
            for t in threads:
                t.start()
            time.sleep(3.0)  # both callers are well into their calls
            sigkill(b)
            for t in threads:
                t.join(90)
            assert not any(t.is_alive() for t in threads)
            survivor, killed = results["c"], results["b"]
            assert survivor.created == calls, survivor.explain()
            assert survivor.successful >= 0.99 * calls, survivor.explain()
            assert killed.successful < calls, "B was killed: some of its calls must have failed"
            # the callee's node was never in the call path; it serves on
            _ok(flows(a, tmp_path, "udp", "a-after").call("alice", password("alice"), "bob", calls=3, rate=10))


# -- 3. DNS SRV failover between nodes --------------------------------------------------
class Rfc3263Phone:
    """A UDP phone that finds its registrar with sipedge's RFC 3263 resolver: it tries the
    resolved targets in turn, and one that does not answer within ``timeout`` (a short
    Timer F) is marked down so the next resolution lists it last."""

    def __init__(self, resolver: DnsResolver, phone: UA, timeout: float = 2.0) -> None:
        self.resolver, self.phone, self.timeout = resolver, phone, timeout
        self.loop = asyncio.new_event_loop()
        self.used: list[Target] = []

    def register(self) -> m.Response:
        targets = self.loop.run_until_complete(self.resolver.resolve(SipUri.parse(f"sip:{DOMAIN}")))
        assert targets, "the zone names no registrar"
        for target in targets:
            self.phone.server = (target.host, target.port)
            req = self.phone.build("REGISTER", f"sip:{DOMAIN}", to=self.phone.aor, headers={"Expires": "300"})
            self.phone.send(req)
            try:
                first = self.phone.expect_final(self.timeout)
            except AssertionError:  # no answer: this node is gone
                self.resolver.mark_down(target)
                continue
            self.used.append(target)
            if first.status != 401:
                return first
            self.phone.send(self.phone.authorize(req, first))
            return self.phone.expect_final(self.timeout)
        raise AssertionError(f"no registrar answered: {targets}")

    def close(self) -> None:
        self.loop.close()


def cluster_records(zone: Zone, a: Server, b: Server) -> None:
    """``_sip._udp.example.com``: node A at priority 10, node B at priority 20."""
    zone.records.update({
        (f"_sip._udp.{DOMAIN}", "SRV"): (60, [f"10 0 {a.udp} a.{DOMAIN}.", f"20 0 {b.udp} b.{DOMAIN}."]),
        (f"a.{DOMAIN}", "A"): (60, [a.host]),
        (f"b.{DOMAIN}", "A"): (60, [b.host]),
    })


def answer_call(callee: UA, trunk: UA, uri: str) -> None:
    """A trunk's INVITE to ``uri`` reaches ``callee``, which answers 486."""
    trunk.send(trunk.build("INVITE", uri))
    invite = callee.wait("INVITE", timeout=15)
    assert isinstance(invite, m.Request)
    callee.answer(invite, 486)
    assert trunk.expect_final(15).status == 486


def test_dns_srv_failover_between_nodes(tmp_path: Path, pg_server: PgServer) -> None:
    edge_host, trunk_host = HOSTS[2], "127.0.0.5"
    trusted = f'trusted_peers = ["{edge_host}/32"]'  # the edge relays the trunk's calls in
    zone = Zone({}, origin=DOMAIN)
    with serve_zone(zone) as dns_port:
        edge_settings = {
            "extra": f'\n[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\nhosts_file = ""\ntimeout = 2.0\n',
            "sip": f'domains = ["edge.test"]\ntrusted_peers = ["{trunk_host}/32"]',
        }
        with nodes(tmp_path, database(pg_server), 2, sip=f"{NODE_SIP}\n{trusted}", edge=edge_settings) as (a, b, edge):
            cluster_records(zone, a, b)
            resolver = DnsResolver(DnsConfig(nameservers=[f"127.0.0.1:{dns_port}"], hosts_file="", timeout=2.0,
                                             ipv6=False), transports=("udp",), clock=SystemClock())
            bob = ua(a, "bob")
            phone = Rfc3263Phone(resolver, bob)
            trunk = UA("udp", (edge.host, edge.udp), "trunk", "trunk.test", host=trunk_host)
            alice = ua(b, "alice")
            try:
                assert phone.register().status == 200
                assert phone.used[-1] == Target("udp", a.host, a.udp)  # priority 10 first
                answer_call(bob, trunk, f"sip:bob@{DOMAIN}")  # edge -> A -> bob

                sigkill(a)
                assert phone.register().status == 200
                assert phone.used[-1] == Target("udp", b.host, b.udp)  # A timed out, B took it
                assert resolver.stats()["dns_targets_marked_down"] == 1
                assert phone.register().status == 200  # a refresh goes to B at once
                assert phone.used[-1] == Target("udp", b.host, b.udp)

                call(b, alice, bob)  # a call arriving at B reaches bob again
                before = metrics(edge).get("sip_branch_failovers", 0)
                t0 = time.monotonic()
                answer_call(bob, trunk, f"sip:bob@{DOMAIN}")  # edge -> dead A, Timer B -> B -> bob
                assert time.monotonic() - t0 > 3.0  # after Timer B (64*T1 = 6.4 s)
                counters = metrics(edge)
                assert counters["sip_branch_failovers"] == before + 1
                assert counters["dns_targets_marked_down"] >= 1  # A timed out: listed last
                t0 = time.monotonic()
                answer_call(bob, trunk, f"sip:bob@{DOMAIN}")  # edge -> B first now
                assert time.monotonic() - t0 < 3.0, "the next call waited for Timer B on A again"
                assert metrics(edge)["sip_branch_failovers"] == before + 1
                assert zone.queries[(f"_sip._udp.{DOMAIN}", "SRV")] >= 1
            finally:
                phone.close()
                for u in (bob, trunk, alice):
                    u.close()
