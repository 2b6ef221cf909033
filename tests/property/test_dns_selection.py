"""RFC 3263 selection over random answer sets: never raises, always valid Targets."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from sipedge.dns.naptr_srv import TRANSPORTS, Naptr, Query, Srv, drive, order_srv, select
from sipedge.sip.uri import SipUri

NAMES = ["example.com", "a.example.com", "b.example.com", "_sip._udp.example.com",
         "_sip._tcp.example.com", "_sips._tcp.example.com", "_sip._ws.example.com", ".", ""]
ints = st.integers(min_value=-5, max_value=70000)
names = st.sampled_from(NAMES) | st.text(max_size=20)
naptr = st.builds(
    Naptr, ints, ints, st.sampled_from(["s", "S", "u", "", "a"]) | st.text(max_size=3),
    st.sampled_from(["SIP+D2U", "SIP+D2T", "SIPS+D2T", "SIP+D2W", "SIPS+D2W", "E2U+sip"]) | st.text(max_size=8),
    names,
)
srv = st.builds(Srv, ints, ints, ints, names | st.ip_addresses().map(str))
addr = st.ip_addresses().map(str) | st.text(max_size=16)
record = st.one_of(naptr, srv, addr, st.integers(), st.none())
answer = st.none() | st.lists(record, max_size=6)
uris = st.sampled_from([
    "sip:bob@example.com", "sips:bob@example.com", "sip:bob@example.com;transport=tcp",
    "sip:bob@example.com;transport=ws", "sips:bob@example.com;transport=ws", "sip:bob@example.com:5080",
    "sip:bob@192.0.2.1", "sips:bob@[2001:db8::1]:5061", "sip:bob@example.com;transport=sctp",
    "sip:a.example.com", "sips:b.example.com;transport=udp",
])
transports = st.sets(st.sampled_from(sorted(TRANSPORTS)), max_size=5)


@given(uris, transports, st.dictionaries(st.tuples(names, st.sampled_from(["NAPTR", "SRV", "A", "AAAA"])), answer, max_size=12),
       answer, st.integers(0, 2**32))
def test_random_answers_give_valid_targets(
    uri: str, supported: set[str], zone: dict[tuple[str, str], Sequence[object] | None],
    default: Sequence[object] | None, seed: int,
) -> None:
    asked: list[Query] = []

    def lookup(q: Query) -> Sequence[object] | None:
        asked.append(q)
        return zone.get((q.name, q.rtype), default)

    targets = drive(select(SipUri.parse(uri), rng=random.Random(seed), transports=supported), lookup)
    assert isinstance(targets, list)
    assert len(targets) <= 16 and len(asked) <= 64
    assert len(set(targets)) == len(targets)
    for t in targets:
        assert t.transport in supported
        assert 0 < t.port <= 65535
        assert str(ipaddress.ip_address(t.host)) == t.host
    if uri.startswith("sips:"):
        assert all(t.transport in ("tls", "wss") for t in targets)


@given(st.lists(st.builds(Srv, st.integers(0, 3), st.integers(0, 100), st.integers(1, 9), st.text(max_size=2)), max_size=12),
       st.integers(0, 2**32))
def test_srv_order_is_a_priority_sorted_permutation(recs: list[Srv], seed: int) -> None:
    out = order_srv(recs, random.Random(seed))
    assert sorted(map(repr, out)) == sorted(map(repr, recs))
    assert [r.priority for r in out] == sorted(r.priority for r in out)
