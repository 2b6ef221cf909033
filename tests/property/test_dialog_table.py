"""Whatever order responses, in-dialog requests, timeouts and server ends reach the
DialogTable in, it never raises, its per-user/per-source counts match its calls, and every
call that leaves the table leaves exactly one CDR."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.config import parse_config
from sipedge.proxy import dialog as dlgs
from sipedge.sip import message as m

CALLS = ["c0", "c1", "c2"]
STEP = st.tuples(
    st.sampled_from(["invite", "resp", "bye", "ack", "reinvite", "timer", "end"]),
    st.sampled_from(CALLS),
    st.sampled_from([100, 180, 183, 200, 408, 481, 486, 487, 503]),
    st.sampled_from(["", "t1", "t2"]),
    st.sampled_from(["", "1", "90", "junk", "2;refresher=uas"]),
)


def request(method: str, call_id: str, to_tag: str, se: str) -> m.Request:
    req = m.Request(method, "sip:bob@example.com")
    req.add("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp")
    req.add("From", "<sip:alice@example.com>;tag=a1")
    req.add("To", "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""))
    req.add("Call-ID", call_id)
    req.add("CSeq", f"3 {method}")
    req.add("Contact", "<sip:alice@192.0.2.1>")
    if se:
        req.add("Session-Expires", se)
    return req


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=40))
def test_any_sequence_keeps_the_table_consistent(steps: list[tuple[str, str, int, str, str]]) -> None:
    store = dlgs.MemoryDialogStore()
    table = dlgs.DialogTable(parse_config({"dialog": {"max_total": 2, "session_expires_min": 2}}).dialog, store)
    wall = 1000.0
    started = 0
    for kind, call_id, status, tag, se in steps:
        wall += 7.0
        if kind == "invite":
            if table.refuse("alice", "192.0.2.1") is None and call_id not in table.dialogs:
                table.start(request("INVITE", call_id, "", se), "flow:x", "alice", "192.0.2.1", wall)
                started += 1
        elif kind == "resp":
            req = request("INVITE", call_id, "", "")
            resp = m.make_response(req, status, to_tag=tag or None)
            if se:
                resp.add("Session-Expires", se)
            try:
                table.response(req, resp, wall)
            except ValueError:
                pass  # a bad Session-Expires of a request is the core's 400
        elif kind in ("bye", "ack", "reinvite"):
            method = {"bye": "BYE", "ack": "ACK", "reinvite": "INVITE"}[kind]
            req = request(method, call_id, tag or "t1", "")
            table.request(req, wall)
            if kind != "ack":
                table.response(req, m.make_response(req, status, to_tag=tag or "t1"), wall)
        elif kind == "timer":
            wall += 300.0
            for expired, why in table.expired(wall):
                table.end(expired, why, wall)
        elif call_id in table.dialogs:
            byes = table.end(call_id, "test", wall)
            assert len(byes) in (0, 2)
        assert sum(table._per_source.values()) == len(table.dialogs)
        assert sum(table._per_user.values()) == len(table.dialogs)
        assert len(table.dialogs) <= 2
        assert set(store.dialogs) == set(table.dialogs)
    assert len(store.cdrs) + len(table.dialogs) == started
