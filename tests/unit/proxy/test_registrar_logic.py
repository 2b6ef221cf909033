"""Registrar (RFC 3261 §10.3) against hand-built REGISTER messages and a memory store."""

from __future__ import annotations

import pytest

from sipedge.config.sip import RegistrarConfig
from sipedge.errors import StorageError
from sipedge.proxy.location import Binding, MemoryLocationStore
from sipedge.proxy.registrar import Registrar, contacts_equal, process_register, register
from sipedge.sip.headers import NameAddr
from sipedge.sip.message import Request, Response, parse

NOW = 1_700_000_000.0
AOR = "sip:alice@example.com"
CFG = RegistrarConfig(min_expires=60, max_expires=3600, default_expires=1800, max_contacts=3)


def reg(*contacts: str, cseq: int = 1, call_id: str = "cid-1", expires: int | None = None,
        extra: tuple[str, ...] = (), to: str = "<sip:alice@Example.COM>") -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1;rport",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=ft1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *[f"Contact: {c}" for c in contacts],
        *([f"Expires: {expires}"] if expires is not None else []),
        "User-Agent: TestUA/1.0",
        *extra,
        "Content-Length: 0",
    ]
    msg = parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def contacts_of(resp: Response) -> dict[str, dict[str, str | None]]:
    out = {}
    for v in resp.get_all("contact"):
        na = NameAddr.parse(v, "Contact")
        out[str(na.uri)] = na.params
    return out


def do(store: MemoryLocationStore, req: Request, now: float = NOW, **kw: str) -> Response:
    return register(req, store, CFG, now, **kw)


def test_add_refresh_remove() -> None:
    store = MemoryLocationStore()
    r = do(store, reg("<sip:alice@192.0.2.10:5060>"), flow="udp~x", received="sip:203.0.113.1:5070",
           socket="udp:127.0.0.1:5060")
    assert r.status == 200
    assert contacts_of(r) == {"sip:alice@192.0.2.10:5060": {"expires": "1800"}}
    assert r.to.tag and r.call_id == "cid-1" and r.cseq.number == 1
    assert r.get("date") and "path" in (r.get("supported") or "")
    (b,) = store.lookup(AOR, NOW)
    assert b == Binding(AOR, "sip:alice@192.0.2.10:5060", NOW + 1800, 1.0, "cid-1", 1,
                        "sip:203.0.113.1:5070", (), "", 0, "udp~x", "TestUA/1.0", "udp:127.0.0.1:5060")
    # refresh with the same Call-ID, higher CSeq, header Expires
    r = do(store, reg("<sip:alice@192.0.2.10:5060>", cseq=2, expires=600), NOW + 100)
    assert contacts_of(r)["sip:alice@192.0.2.10:5060"] == {"expires": "600"}
    assert store.lookup(AOR, NOW)[0].expires_at == NOW + 700
    # remove with expires=0 param
    r = do(store, reg("<sip:alice@192.0.2.10:5060>;expires=0", cseq=3))
    assert r.status == 200 and r.get_all("contact") == [] and store.count(AOR, NOW) == 0


def test_fetch_lists_bindings_with_q_and_instance() -> None:
    store = MemoryLocationStore()
    inst = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    do(store, reg(f"<sip:alice@10.0.0.1;transport=tcp;ob>;q=0.5;+sip.instance={inst};reg-id=1",
                  "<sip:alice@10.0.0.2>;expires=120",
                  extra=("Supported: path, outbound",)))
    r = do(store, reg(cseq=2), NOW + 20)
    got = contacts_of(r)
    assert got == {
        "sip:alice@10.0.0.2": {"expires": "100"},
        "sip:alice@10.0.0.1;transport=tcp;ob": {
            "expires": "1780", "q": "0.5", "+sip.instance": inst, "reg-id": "1"},
    }
    assert store.lookup(AOR, NOW)[0].contact == "sip:alice@10.0.0.2"  # q=1 first
    b = store.lookup(AOR, NOW)[1]
    assert b.instance == inst.strip('"') and b.reg_id == 1 and b.q == 0.5


def test_outbound_require_only_when_supported() -> None:
    store = MemoryLocationStore()
    c = '<sip:alice@10.0.0.1;ob>;+sip.instance="<urn:uuid:1>";reg-id=1'
    assert do(store, reg(c, extra=("Supported: outbound",))).get("require") == "outbound"
    assert do(store, reg(c, cseq=2)).get("require") is None


def test_instance_reg_id_replaces_old_contact() -> None:
    store = MemoryLocationStore()
    inst = '"<urn:uuid:1>"'
    do(store, reg(f"<sip:alice@10.0.0.1:5060>;+sip.instance={inst};reg-id=1"))
    # after a NAT rebinding / new connection, the same instance+reg-id with a new contact
    r = do(store, reg(f"<sip:alice@10.0.0.9:6000>;+sip.instance={inst};reg-id=1", call_id="other", cseq=1))
    assert r.status == 200
    assert [b.contact for b in store.lookup(AOR, NOW)] == ["sip:alice@10.0.0.9:6000"]


def test_wildcard() -> None:
    store = MemoryLocationStore()
    do(store, reg("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"))
    assert do(store, reg("*", cseq=2)).status == 400
    assert do(store, reg("*", cseq=2, expires=30)).status == 400
    assert store.count(AOR, NOW) == 2
    assert do(store, reg("*", cseq=1, expires=0)).status == 500  # out of order
    r = do(store, reg("*", cseq=2, expires=0))
    assert r.status == 200 and r.get_all("contact") == [] and store.count(AOR, NOW) == 0
    # wildcard from another Call-ID removes regardless of CSeq
    do(store, reg("<sip:alice@10.0.0.1>", cseq=10))
    assert do(store, reg("*", call_id="x", cseq=1, expires=0)).status == 200
    assert do(store, reg("*", "<sip:alice@10.0.0.1>", cseq=20, expires=0)).status == 400


def test_expires_rules() -> None:
    store = MemoryLocationStore()
    r = do(store, reg("<sip:alice@10.0.0.1>", expires=30))
    assert (r.status, r.get("min-expires")) == (423, "60") and store.count(AOR, NOW) == 0
    r = do(store, reg("<sip:alice@10.0.0.1>;expires=59", expires=3000))
    assert r.status == 423
    # the contact param wins over the header
    r = do(store, reg("<sip:alice@10.0.0.1>;expires=120", expires=30))
    assert contacts_of(r)["sip:alice@10.0.0.1"]["expires"] == "120"
    # too long is lowered to max_expires
    r = do(store, reg("<sip:alice@10.0.0.2>", expires=999999, cseq=2))
    assert contacts_of(r)["sip:alice@10.0.0.2"]["expires"] == "3600"
    # a 423 leaves every other contact of the same request unapplied
    r = do(store, reg("<sip:alice@10.0.0.3>", "<sip:alice@10.0.0.4>;expires=5", cseq=3))
    assert r.status == 423 and store.count(AOR, NOW) == 2


@pytest.mark.parametrize("contact", ["<sip:alice@10.0.0.1>;expires=soon", "<sip:alice@10.0.0.1>;q=2",
                                     "<sip:alice@10.0.0.1>;q=high", "<sip:alice@10.0.0.1>;reg-id=x"])
def test_bad_contact_params(contact: str) -> None:
    store = MemoryLocationStore()
    r = do(store, reg(contact))
    assert r.status == 400 and store.count(AOR, NOW) == 0


def test_max_contacts() -> None:
    store = MemoryLocationStore()
    assert do(store, reg("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>", "<sip:alice@10.0.0.3>")).status == 200
    r = do(store, reg("<sip:alice@10.0.0.4>", cseq=2))
    assert (r.status, r.reason) == (403, "Too Many Contacts")
    # replacing one and adding one in the same request stays within the limit
    r = do(store, reg("<sip:alice@10.0.0.1>;expires=0", "<sip:alice@10.0.0.4>", cseq=3))
    assert r.status == 200 and set(contacts_of(r)) == {f"sip:alice@10.0.0.{i}" for i in (2, 3, 4)}


def test_call_id_cseq_ordering() -> None:
    store = MemoryLocationStore()
    do(store, reg("<sip:alice@10.0.0.1>", cseq=5))
    for cseq in (5, 4):
        r = do(store, reg("<sip:alice@10.0.0.1>", cseq=cseq, expires=100))
        assert r.status == 500
    assert store.lookup(AOR, NOW)[0].expires_at == NOW + 1800
    # a different Call-ID may update whatever its CSeq
    assert do(store, reg("<sip:alice@10.0.0.1>", call_id="new", cseq=1, expires=100)).status == 200
    assert store.lookup(AOR, NOW)[0].call_id == "new"


def test_uri_equivalence_on_update() -> None:
    store = MemoryLocationStore()
    do(store, reg("<sip:alice@HOST.example.org:5060;transport=udp>"))
    r = do(store, reg("<sip:alice@host.example.org:5060;TRANSPORT=UDP>", cseq=2, expires=0))
    assert r.status == 200 and store.count(AOR, NOW) == 0
    assert contacts_equal("sip:a@h;transport=tcp", "sip:a@H;transport=TCP")
    assert not contacts_equal("sip:a@h", "sip:a@h:5060")
    assert not contacts_equal("sip:a@h;transport=tcp", "sip:a@h")
    assert contacts_equal("sip:a@h;foo=1", "sip:a@h")
    assert contacts_equal("mailto:x@y", "mailto:x@y") and not contacts_equal("mailto:x@y", "mailto:X@y")


def test_path_stored_and_echoed_when_supported() -> None:
    store = MemoryLocationStore()
    paths = ("Path: <sip:edge1.example.net;lr>", "Path: <sip:edge2.example.net;lr>")
    r = do(store, reg("<sip:alice@10.0.0.1>", extra=(*paths, "Supported: path")))
    assert r.get_all("path") == ["<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"]
    assert store.lookup(AOR, NOW)[0].path == ("<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>")
    r = do(store, reg("<sip:alice@10.0.0.1>", cseq=2, extra=paths))
    assert r.get_all("path") == []
    assert do(store, reg("<sip:alice@10.0.0.1>", cseq=3, extra=("Path: <bad",))).status == 400


@pytest.mark.parametrize(
    ("to", "status"),
    [("<tel:+15551234>", 404), ("<mailto:alice@example.com>", 404), ("<sip:alice@example.com", 400)],
)
def test_bad_to(to: str, status: int) -> None:
    assert do(MemoryLocationStore(), reg("<sip:alice@10.0.0.1>", to=to)).status == status


def test_sips_aor_normalized() -> None:
    store = MemoryLocationStore()
    do(store, reg("<sips:alice@10.0.0.1>", to="<sips:alice@EXAMPLE.com:5061>"))
    assert store.count(AOR, NOW) == 1


def test_response_is_serializable_and_stable() -> None:
    store = MemoryLocationStore()
    req = reg("<sip:alice@10.0.0.1>")
    a = do(store, req)
    b = do(store, reg("<sip:alice@10.0.0.1>", cseq=2))
    assert a.to.tag == b.to.tag  # same dialog-less REGISTER stream, same tag
    data = a.serialize()
    assert data.startswith(b"SIP/2.0 200 OK\r\n") and b"Contact: <sip:alice@10.0.0.1>;expires=1800" in data


class FailingStore(MemoryLocationStore):
    def __init__(self, fail_on: str) -> None:
        super().__init__()
        self.fail_on = fail_on
        self.armed = False

    def put(self, binding: Binding) -> None:
        if self.armed and binding.contact == self.fail_on:
            raise StorageError("disk full")
        super().put(binding)


def test_storage_failure_is_500_and_restores() -> None:
    store = FailingStore("sip:alice@10.0.0.9")
    do(store, reg("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"))
    before = store.lookup(AOR, NOW)
    store.armed = True
    out = process_register(reg("<sip:alice@10.0.0.1>;expires=0", "<sip:alice@10.0.0.9>", cseq=2),
                           store, CFG, NOW)
    assert (out.response.status, out.response.reason) == (500, "Storage failure")
    assert "disk full" in out.error
    assert {b.contact for b in store.lookup(AOR, NOW)} == {b.contact for b in before}


def test_registrar_outcome_and_stats() -> None:
    r = Registrar(MemoryLocationStore(), CFG)
    out = r.handle(reg("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"), NOW)
    assert out.aor == AOR and len(out.added) == 2 and not out.refreshed
    out = r.handle(reg("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>;expires=0", cseq=2), NOW)
    assert [b.contact for b in out.refreshed] == ["sip:alice@10.0.0.1"]
    assert [b.contact for b in out.removed] == ["sip:alice@10.0.0.2"]
    r.handle(reg("<sip:alice@10.0.0.1>", expires=1, cseq=3), NOW)
    assert r.stats() == {
        "registrar_requests": 3, "registrar_ok": 2, "registrar_rejected": 1,
        "registrar_bindings_added": 2, "registrar_bindings_refreshed": 1,
        "registrar_bindings_removed": 1, "registrar_storage_errors": 0,
    }
