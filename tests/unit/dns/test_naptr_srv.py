"""RFC 3263 §4 target selection against canned answers (no DNS)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from sipedge.dns.naptr_srv import Naptr, Query, Srv, drive, order_srv, select
from sipedge.sip.flow import Target
from sipedge.sip.uri import SipUri

Zone = dict[tuple[str, str], Sequence[object]]

ZONE: Zone = {
    ("example.com", "NAPTR"): [
        Naptr(50, 50, "s", "SIP+D2U", "_sip._udp.example.com"),
        Naptr(10, 60, "s", "SIP+D2T", "_sip._tcp.example.com"),
        Naptr(10, 50, "S", "SIPS+D2T", "_sips._tcp.example.com"),
        Naptr(5, 50, "s", "SIP+D2X", "_sip._sctp.example.com"),  # unknown service
        Naptr(5, 50, "u", "SIP+D2U", "!^.*$!sip:x@y!"),  # not an SRV pointer
    ],
    ("_sip._udp.example.com", "SRV"): [Srv(10, 0, 5060, "udp1.example.com")],
    ("_sip._tcp.example.com", "SRV"): [Srv(10, 0, 5070, "tcp1.example.com")],
    ("_sips._tcp.example.com", "SRV"): [Srv(10, 0, 5061, "tls1.example.com")],
    ("udp1.example.com", "A"): ["192.0.2.1"],
    ("tcp1.example.com", "A"): ["192.0.2.2"],
    ("tls1.example.com", "A"): ["192.0.2.3"],
    ("tls1.example.com", "AAAA"): ["2001:db8::3"],
}


class Dns:
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.asked: list[Query] = []

    def __call__(self, q: Query) -> Sequence[object] | None:
        self.asked.append(q)
        return self.zone.get((q.name, q.rtype))


def run(uri: str, zone: Zone = ZONE, seed: int = 1, **kw: object) -> tuple[list[Target], list[Query]]:
    dns = Dns(zone)
    plan = select(SipUri.parse(uri), rng=random.Random(seed), **kw)  # type: ignore[arg-type]
    return drive(plan, dns), dns.asked


def test_numeric_host_needs_no_dns() -> None:
    assert run("sip:bob@192.0.2.9")[0:2] == ([Target("udp", "192.0.2.9", 5060)], [])
    assert run("sips:bob@[2001:db8::9]:5081")[0] == [Target("tls", "2001:db8::9", 5081)]
    assert run("sip:bob@192.0.2.9;transport=tcp")[0] == [Target("tcp", "192.0.2.9", 5060)]


def test_explicit_port_is_a_and_aaaa_only() -> None:
    targets, asked = run("sip:bob@tls1.example.com:5099")
    assert asked == [Query("tls1.example.com", "A"), Query("tls1.example.com", "AAAA")]
    assert targets == [Target("udp", "192.0.2.3", 5099), Target("udp", "2001:db8::3", 5099)]


def test_transport_param_goes_straight_to_srv() -> None:
    targets, asked = run("sip:bob@example.com;transport=tcp")
    assert asked[0] == Query("_sip._tcp.example.com", "SRV")
    assert Query("example.com", "NAPTR") not in asked
    assert targets == [Target("tcp", "192.0.2.2", 5070)]


def test_transport_param_without_srv_falls_back_to_default_port() -> None:
    zone: Zone = {("example.net", "A"): ["192.0.2.7"]}
    targets, _ = run("sip:bob@example.net;transport=tcp", zone)
    assert targets == [Target("tcp", "192.0.2.7", 5060)]
    targets, _ = run("sips:bob@example.net;transport=tcp", zone)
    assert targets == [Target("tls", "192.0.2.7", 5061)]


def test_naptr_order_then_preference_filtered_to_supported() -> None:
    targets, asked = run("sip:bob@example.com")
    assert asked[0] == Query("example.com", "NAPTR")
    assert targets == [
        Target("tls", "192.0.2.3", 5061),
        Target("tls", "2001:db8::3", 5061),
        Target("tcp", "192.0.2.2", 5070),
        Target("udp", "192.0.2.1", 5060),
    ]
    targets, _ = run("sip:bob@example.com", transports=("udp", "tcp"))
    assert targets == [Target("tcp", "192.0.2.2", 5070), Target("udp", "192.0.2.1", 5060)]


def test_sips_keeps_only_secure_naptr_services() -> None:
    targets, _ = run("sips:bob@example.com")
    assert targets == [Target("tls", "192.0.2.3", 5061), Target("tls", "2001:db8::3", 5061)]


def test_websocket_naptr_services() -> None:
    zone: Zone = {
        ("ws.example", "NAPTR"): [
            Naptr(10, 10, "s", "SIPS+D2W", "_sips._ws.ws.example"),
            Naptr(10, 20, "s", "SIP+D2W", "_sip._ws.ws.example"),
        ],
        ("_sips._ws.ws.example", "SRV"): [Srv(1, 1, 443, "edge.ws.example")],
        ("_sip._ws.ws.example", "SRV"): [Srv(1, 1, 80, "edge.ws.example")],
        ("edge.ws.example", "A"): ["198.51.100.1"],
        ("ws.example", "A"): ["198.51.100.2"],
    }
    targets, _ = run("sip:bob@ws.example", zone, transports=("ws", "wss"))
    assert targets == [Target("wss", "198.51.100.1", 443), Target("ws", "198.51.100.1", 80)]
    # ws not supported: nothing usable in NAPTR, no SRV, udp unsupported: A with tcp
    assert run("sip:bob@ws.example", zone, transports=("tcp",))[0] == [Target("tcp", "198.51.100.2", 5060)]


def test_no_naptr_tries_srv_per_transport_in_our_order() -> None:
    zone: Zone = {k: v for k, v in ZONE.items() if k[1] != "NAPTR"}
    targets, asked = run("sip:bob@example.com", zone)
    assert asked[:4] == [
        Query("example.com", "NAPTR"),
        Query("_sip._udp.example.com", "SRV"),
        Query("_sip._tcp.example.com", "SRV"),
        Query("_sips._tcp.example.com", "SRV"),
    ]
    assert [t.transport for t in targets] == ["udp", "tcp", "tls", "tls"]


def test_naptr_leading_nowhere_falls_through_to_srv_then_a() -> None:
    zone: Zone = {
        ("example.org", "NAPTR"): [Naptr(1, 1, "s", "SIP+D2T", "_sip._tcp.gone.example.org")],
        ("example.org", "A"): ["203.0.113.5"],
        ("example.org", "AAAA"): ["2001:db8::5"],
    }
    targets, asked = run("sip:bob@example.org", zone)
    assert Query("_sip._tcp.gone.example.org", "SRV") in asked
    assert Query("_sip._udp.example.org", "SRV") in asked
    assert targets == [Target("udp", "203.0.113.5", 5060), Target("udp", "2001:db8::5", 5060)]
    targets, _ = run("sips:bob@example.org", zone)
    assert targets == [Target("tls", "203.0.113.5", 5061), Target("tls", "2001:db8::5", 5061)]


def test_nothing_resolves_gives_empty_list() -> None:
    assert run("sip:bob@nowhere.invalid", {})[0] == []
    assert run("sip:bob@nowhere.invalid:5060", {})[0] == []


def test_unsupported_transport_gives_empty_list() -> None:
    assert run("sip:bob@192.0.2.1;transport=sctp")[0] == []
    assert run("sip:bob@example.com;transport=ws")[0] == []


def test_bad_records_are_skipped() -> None:
    zone: Zone = {
        ("bad.example", "NAPTR"): [Naptr(1, 1, "s", "SIP+D2U", "_sip._udp.bad.example"), "junk", 7],
        ("_sip._udp.bad.example", "SRV"): [
            Srv(0, 0, 0, "port0.bad.example"),
            Srv(0, 0, 5060, "."),
            Srv(0, 0, 5060, ""),
            "junk",
            Srv(1, 0, 5062, "ok.bad.example"),
        ],
        ("ok.bad.example", "A"): ["not-an-ip", "2001:db8::1", "192.0.2.10"],
        ("ok.bad.example", "AAAA"): ["192.0.2.11", "2001:db8::10"],
    }
    targets, _ = run("sip:bob@bad.example", zone)
    assert targets == [Target("udp", "192.0.2.10", 5062), Target("udp", "2001:db8::10", 5062)]


def test_ipv4_only_family() -> None:
    targets, asked = run("sip:bob@tls1.example.com:5061;transport=tls", families=("A",))
    assert targets == [Target("tls", "192.0.2.3", 5061)]
    assert all(q.rtype == "A" for q in asked)


def test_srv_priority_first() -> None:
    recs = [Srv(20, 100, 1, "c"), Srv(10, 0, 1, "a"), Srv(10, 0, 1, "b"), Srv(30, 5, 1, "d")]
    for seed in range(20):
        out = order_srv(recs, random.Random(seed))
        assert [r.priority for r in out] == [10, 10, 20, 30]
        assert {r.target for r in out[:2]} == {"a", "b"}


def test_srv_weights_distribution() -> None:
    recs = [Srv(10, 10, 1, "a"), Srv(10, 20, 1, "b"), Srv(10, 70, 1, "c"), Srv(10, 0, 1, "z")]
    rng = random.Random(42)
    n = 20000
    first = Counter(order_srv(recs, rng)[0].target for _ in range(n))
    # expected shares of the first pick: 10/101, 20/101, 70/101, 1/101 (the draw of 0)
    for name, share in (("a", 10 / 101), ("b", 20 / 101), ("c", 70 / 101), ("z", 1 / 101)):
        assert abs(first[name] / n - share) < 0.015, (name, first[name])


def test_srv_all_zero_weights_keeps_every_record() -> None:
    recs = [Srv(1, 0, 1, "a"), Srv(1, 0, 1, "b"), Srv(1, 0, 1, "c")]
    out = order_srv(recs, random.Random(3))
    assert sorted(r.target for r in out) == ["a", "b", "c"]


def test_same_seed_same_order() -> None:
    zone: Zone = {
        ("lb.example", "NAPTR"): [],
        ("_sip._udp.lb.example", "SRV"): [Srv(1, 50, 5060, f"h{i}.lb.example") for i in range(5)],
        **{(f"h{i}.lb.example", "A"): [f"192.0.2.{i + 1}"] for i in range(5)},
    }
    a, _ = run("sip:x@lb.example", zone, seed=9)
    b, _ = run("sip:x@lb.example", zone, seed=9)
    assert a == b and len(a) == 5
    orders = {tuple(run("sip:x@lb.example", zone, seed=s)[0]) for s in range(30)}
    assert len(orders) > 5  # the weighted draw does spread the load


def test_max_targets_bound() -> None:
    zone: Zone = {("many.example", "A"): [f"10.0.{i // 256}.{i % 256}" for i in range(100)]}
    targets, _ = run("sip:x@many.example:5060", zone)
    assert len(targets) == 16


def test_select_host_is_a_and_aaaa_for_known_transport_and_port() -> None:
    from sipedge.dns.naptr_srv import select_host

    dns = Dns(ZONE)
    assert drive(select_host("tls", "TLS1.example.com.", 5061), dns) == [
        Target("tls", "192.0.2.3", 5061),
        Target("tls", "2001:db8::3", 5061),
    ]
    assert drive(select_host("udp", "[2001:db8::1]", 5060), dns) == [Target("udp", "2001:db8::1", 5060)]
    assert drive(select_host("sctp", "tls1.example.com", 5060), dns) == []
    assert drive(select_host("udp", "bad host", 5060), dns) == []
