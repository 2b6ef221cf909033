"""Random REGISTER sequences: the registrar never raises, keeps its limits, and a refused
request changes nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.config.sip import RegistrarConfig
from sipedge.proxy.location import MemoryLocationStore
from sipedge.proxy.registrar import register
from sipedge.sip.headers import NameAddr
from sipedge.sip.message import Request, parse

NOW = 1_700_000_000.0
AOR = "sip:alice@example.com"
CFG = RegistrarConfig(min_expires=60, max_expires=3600, default_expires=1800, max_contacts=3)
POOL = ["<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2;transport=tcp>", "<sip:alice@HOST.example>",
        '<sip:alice@10.0.0.3>;+sip.instance="<urn:uuid:1>";reg-id=1',
        '<sip:alice@10.0.0.4>;+sip.instance="<urn:uuid:1>";reg-id=1', "<sip:alice@10.0.0.5>;q=0.3",
        "*", "<sip:alice@10.0.0.6>;expires=soon", "garbage<<"]

contact_param = st.sampled_from([None, 0, 30, 120, 999999])
request_spec = st.fixed_dictionaries({
    "contacts": st.lists(st.tuples(st.sampled_from(POOL), contact_param), max_size=4),
    "expires": st.sampled_from([None, 0, 30, 300, 99999999]),
    "call_id": st.sampled_from(["c1", "c2"]),
    "cseq": st.integers(0, 6),
    "advance": st.sampled_from([0, 100, 2000]),
})


def build(spec: dict[str, object]) -> Request | None:
    contacts = []
    for c, exp in spec["contacts"]:  # type: ignore[attr-defined]
        contacts.append(c if exp is None or c == "*" else f"{c};expires={exp}")
    lines = ["REGISTER sip:example.com SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
             "From: <sip:alice@example.com>;tag=1", "To: <sip:alice@example.com>",
             f"Call-ID: {spec['call_id']}", f"CSeq: {spec['cseq']} REGISTER",
             *[f"Contact: {c}" for c in contacts]]
    if spec["expires"] is not None:
        lines.append(f"Expires: {spec['expires']}")
    msg = parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    return msg if isinstance(msg, Request) else None


@settings(max_examples=150, deadline=None)
@given(st.lists(request_spec, min_size=1, max_size=12))
def test_random_sequences(specs: list[dict[str, object]]) -> None:
    store = MemoryLocationStore()
    now = NOW
    for spec in specs:
        now += spec["advance"]  # type: ignore[operator]
        req = build(spec)
        assert req is not None
        before = store.lookup(AOR, now)
        resp = register(req, store, CFG, now)
        assert resp.status in (200, 400, 403, 423, 500)
        after = store.lookup(AOR, now)
        assert len(after) <= CFG.max_contacts
        assert all(0 < b.expires_at - now <= CFG.max_expires for b in after)
        if resp.status != 200:
            assert after == before
        else:
            listed = {str(NameAddr.parse(v, "Contact").uri) for v in resp.get_all("contact")}
            assert listed == {b.contact for b in after}
        resp.serialize()
