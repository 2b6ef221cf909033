"""The location/subscriber model and its in-memory stores."""

from __future__ import annotations

import pytest

from sipedge.errors import ParseError
from sipedge.proxy.location import (
    Binding,
    DuplicateSubscriber,
    LocationStore,
    MemoryLocationStore,
    MemorySubscriberStore,
    SubscriberStore,
    normalize_aor,
    parse_user_address,
)
from sipedge.sip.auth import ha1

AOR = "sip:alice@example.com"
NOW = 1_700_000_000.0


def b(contact: str, expires: float = 3600, **kw: object) -> Binding:
    return Binding(AOR, contact, NOW + expires, **kw)  # type: ignore[arg-type]


def test_normalize_aor() -> None:
    assert normalize_aor("sips:alice@EXAMPLE.com:5061;transport=tls") == AOR
    assert normalize_aor("sip:Alice@example.com") == "sip:Alice@example.com"
    assert normalize_aor("sip:example.com") == "sip:example.com"
    with pytest.raises(ParseError):
        normalize_aor("tel:+123")
    with pytest.raises(ParseError):
        normalize_aor("http://x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("alice@example.com", ("alice", "example.com")), ("sip:bob@EX.org", ("bob", "ex.org")),
     (" carol@10.0.0.1 ", ("carol", "10.0.0.1"))],
)
def test_parse_user_address(text: str, expected: tuple[str, str]) -> None:
    assert parse_user_address(text) == expected


@pytest.mark.parametrize("text", ["alice", "@example.com", "alice@", "a b@x.org", "alice@x.org:5060",
                                  "alice:pw@x.org", "alice@x.org;transport=tcp", "alice@exa mple"])
def test_parse_user_address_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_user_address(text)


def test_binding_helpers() -> None:
    x = b("sip:a@1.2.3.4", 60)
    assert x.expires_in(NOW) == 60 and x.expires_in(NOW + 100) == 0
    assert x.with_changes(q=0.5).q == 0.5


def store_contract(store: LocationStore) -> None:
    """Behaviour every LocationStore must show (reused by the SQLite tests)."""
    store.put(b("sip:a@1.1.1.1", q=0.5))
    store.put(b("sip:a@2.2.2.2", q=1.0))
    store.put(b("sip:a@3.3.3.3", q=0.5))
    store.put(Binding("sip:bob@example.com", "sip:bob@4.4.4.4", NOW + 10))
    assert [x.contact for x in store.lookup(AOR, NOW)] == ["sip:a@2.2.2.2", "sip:a@3.3.3.3", "sip:a@1.1.1.1"]
    # refresh makes it newest and replaces (same aor+contact)
    store.put(b("sip:a@1.1.1.1", 7200, q=0.5, cseq=2))
    got = store.lookup(AOR, NOW)
    assert [x.contact for x in got] == ["sip:a@2.2.2.2", "sip:a@1.1.1.1", "sip:a@3.3.3.3"]
    assert got[1].cseq == 2 and got[1].expires_at == NOW + 7200
    assert store.count(AOR, NOW) == 3
    # expiry filtering
    assert store.count("sip:bob@example.com", NOW) == 1
    assert store.lookup("sip:bob@example.com", NOW + 10) == []
    assert store.count("sip:bob@example.com", NOW + 10) == 0
    assert len(store.bindings(NOW)) == 4 and len(store.bindings(NOW + 11)) == 3
    assert store.purge_expired(NOW + 11) == 1
    assert store.purge_expired(NOW + 11) == 0
    # removal
    store.remove(AOR, "sip:a@3.3.3.3")
    store.remove(AOR, "sip:nothing@there")
    store.remove("sip:nobody@x", "sip:x@y")
    assert [x.contact for x in store.lookup(AOR, NOW)] == ["sip:a@2.2.2.2", "sip:a@1.1.1.1"]
    store.remove_aor(AOR)
    store.remove_aor(AOR)
    assert store.lookup(AOR, NOW) == [] and store.count(AOR, NOW) == 0 and store.bindings(NOW) == []


def instance_contract(store: LocationStore) -> None:
    inst = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    store.put(b("sip:a@10.0.0.1:5060", instance=inst, reg_id=1, flow="f1"))
    store.put(b("sip:a@10.0.0.1:5062", instance=inst, reg_id=2, flow="f2"))
    # new contact, same instance and reg-id: replaces the first
    store.put(b("sip:a@192.0.2.9:40000", instance=inst, reg_id=1, flow="f3"))
    got = {(x.contact, x.reg_id, x.flow) for x in store.lookup(AOR, NOW)}
    assert got == {("sip:a@192.0.2.9:40000", 1, "f3"), ("sip:a@10.0.0.1:5062", 2, "f2")}
    # each binding is found by the flow it registered over, and only by that one
    assert store.on_flow("f1") == [] and [x.contact for x in store.on_flow("f3")] == ["sip:a@192.0.2.9:40000"]
    # a binding matching one by contact and another by instance replaces both
    store.put(b("sip:a@10.0.0.1:5062", instance=inst, reg_id=1))
    assert [(x.contact, x.reg_id) for x in store.lookup(AOR, NOW)] == [("sip:a@10.0.0.1:5062", 1)]
    assert store.on_flow("f2") == [] and store.on_flow("f3") == []
    # re-registered over another connection: the old flow no longer holds it
    store.put(b("sip:a@10.0.0.9", flow="f4"))
    store.put(b("sip:a@10.0.0.9", flow="f5", cseq=2))
    assert store.on_flow("f4") == [] and [x.flow for x in store.on_flow("f5")] == ["f5"]
    store.remove(AOR, "sip:a@10.0.0.9")
    assert store.on_flow("f5") == []
    store.put(b("sip:a@10.0.0.10", 5, flow="f6"))
    store.purge_expired(NOW + 6)
    assert store.on_flow("f6") == []
    store.put(b("sip:a@10.0.0.11", flow="f7"))
    store.remove_aor(AOR)
    assert store.on_flow("f7") == []
    store.put(b("sip:a@10.0.0.10:5060", flow="f8"))
    # no instance: never matched by instance
    store.put(b("sip:a@10.0.0.7"))
    store.put(b("sip:a@10.0.0.8"))
    assert store.count(AOR, NOW) == 3


def test_memory_store_contract() -> None:
    store_contract(MemoryLocationStore())
    instance_contract(MemoryLocationStore())


def test_memory_store_keeps_all_fields_and_stats() -> None:
    s = MemoryLocationStore()
    full = b("sip:a@1.1.1.1;ob", q=0.7, call_id="c1", cseq=9, received="sip:203.0.113.1:5070;transport=udp",
             path=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"), instance="<urn:x>", reg_id=3,
             flow="udp~127.0.0.1~5060~203.0.113.1~5070~0", user_agent="UA/1", socket="udp:127.0.0.1:5060")
    s.put(full)
    assert s.lookup(AOR, NOW) == [full]
    assert s.stats() == {"location_aors": 1, "location_bindings": 1}


def subscriber_contract(s: SubscriberStore) -> None:
    s.add("alice", "Example.com", "secret")
    s.add("bob", "example.com", "pw2")
    s.add("alice", "other.org", "x")
    with pytest.raises(DuplicateSubscriber):
        s.add("alice", "example.com", "again")
    assert s.exists("alice", "example.com") and s.exists("alice", "EXAMPLE.COM")
    assert not s.exists("carol", "example.com")
    assert s.ha1("alice", "example.com", "MD5") == ha1("alice", "example.com", "secret", "MD5")
    assert s.ha1("alice", "example.com", "SHA-256") == ha1("alice", "example.com", "secret", "SHA-256")
    assert s.ha1("alice", "example.com", "SHA-512") is None
    assert s.ha1("carol", "example.com", "MD5") is None
    assert s.ha1("Alice", "example.com", "MD5") is None  # user part is case-sensitive
    assert s.list() == [("alice", "example.com"), ("bob", "example.com"), ("alice", "other.org")]
    assert s.list("OTHER.org") == [("alice", "other.org")]
    assert s.set_password("alice", "example.com", "new")
    assert not s.set_password("carol", "example.com", "new")
    assert s.ha1("alice", "example.com", "MD5") == ha1("alice", "example.com", "new", "MD5")
    assert s.delete("alice", "example.com")
    assert not s.delete("alice", "example.com")
    assert s.list() == [("bob", "example.com"), ("alice", "other.org")]


def test_memory_subscriber_contract() -> None:
    subscriber_contract(MemorySubscriberStore())
