"""The per-call SIP trace store: grouping by Call-ID, order, every bound, lazy parsing,
and garbage that must be counted, not kept, and never raise."""

from __future__ import annotations

import pytest

from sipedge.proxy.trace import TraceStore, call_id_of, parse_head
from sipedge.sip.flow import Flow, Target

LOCAL = ("127.0.0.1", 5060)
ALICE = ("127.0.0.1", 5070)
BOB = ("127.0.0.1", 5080)


def request(method: str, call_id: str, cseq: int = 1, display: str = "Alice", body: str = "") -> bytes:
    return (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        f'From: "{display}" <sip:alice@example.com>;tag=a\r\n'
        "To: <sip:bob@example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def response(code: int, reason: str, call_id: str, method: str = "INVITE", cseq: int = 1) -> bytes:
    return (
        f"SIP/2.0 {code} {reason}\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        "From: <sip:alice@example.com>;tag=a\r\n"
        "To: <sip:bob@example.com>;tag=b\r\n"
        f"i: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n\r\n"
    ).encode()


def call_flow(store: TraceStore, call_id: str, t: float = 1000.0) -> None:
    """A proxied call: every message received from one side and sent to the other."""
    steps = [
        (request("INVITE", call_id), ALICE, BOB),
        (response(100, "Trying", call_id), None, None),
        (response(180, "Ringing", call_id), BOB, ALICE),
        (response(200, "OK", call_id), BOB, ALICE),
        (request("ACK", call_id, 1), ALICE, BOB),
        (request("BYE", call_id, 2), ALICE, BOB),
        (response(200, "OK", call_id, "BYE", 2), BOB, ALICE),
    ]
    for data, src, dst in steps:
        if src is None:  # a 100 Trying the proxy sends itself
            store.sent(data, Flow("udp", LOCAL, ALICE), t)
        else:
            store.record(data, "in", "udp", LOCAL, src, t)
            store.sent(data, Target("udp", dst[0], dst[1]), t + 0.001)
        t += 0.01


def test_a_call_is_kept_in_order_with_direction_and_addresses() -> None:
    store = TraceStore()
    call_flow(store, "c1@x")
    messages = store.show("c1@x")
    assert messages is not None
    firsts = [m["first_line"].split(" ")[0] if not m["first_line"].startswith("SIP/") else m["first_line"].split(" ")[1]
              for m in messages]
    assert firsts == ["INVITE", "INVITE", "100", "180", "180", "200", "200", "ACK", "ACK", "BYE", "BYE", "200", "200"]
    assert [m["seq"] for m in messages] == sorted(m["seq"] for m in messages)
    first, second = messages[0], messages[1]
    assert (first["direction"], first["local"], first["remote"]) == ("in", "127.0.0.1:5060", "127.0.0.1:5070")
    assert (second["direction"], second["local"], second["remote"]) == ("out", None, "127.0.0.1:5080")
    assert messages[2]["local"] == "127.0.0.1:5060"  # sent on a flow: its local address is known
    assert first["message"].startswith("INVITE sip:bob@example.com SIP/2.0\r\n")
    assert first["from"] == '"Alice" <sip:alice@example.com>;tag=a'


def test_list_summarizes_calls_most_recent_first() -> None:
    store = TraceStore()
    call_flow(store, "c1@x", t=1000.0)
    store.record(request("OPTIONS", "o1@x"), "in", "udp", LOCAL, ALICE, 2000.0)
    store.sent(response(200, "OK", "o1@x", "OPTIONS"), Flow("udp", LOCAL, ALICE), 2000.1)
    calls = store.calls()
    assert [c["call_id"] for c in calls] == ["o1@x", "c1@x"]
    c1 = calls[1]
    assert c1["from"] == '"Alice" <sip:alice@example.com>;tag=a' and c1["to"] == "<sip:bob@example.com>"
    assert c1["messages"] == 13 and c1["status"] == 200 and c1["first"] == 1000.0
    assert calls[0]["status"] == 200
    assert store.calls(since=store.seq) == []
    seq = store.seq
    store.record(request("BYE", "c1@x", 3), "in", "udp", LOCAL, ALICE, 3000.0)
    assert [c["call_id"] for c in store.calls(since=seq)] == ["c1@x"]


def test_the_final_status_is_the_invites_after_a_challenge() -> None:
    store = TraceStore()
    store.record(request("INVITE", "c@x"), "in", "udp", LOCAL, ALICE, 1.0)
    store.sent(response(407, "Proxy Authentication Required", "c@x"), Flow("udp", LOCAL, ALICE), 1.0)
    assert store.calls()[0]["status"] == 407
    store.record(request("INVITE", "c@x", 2), "in", "udp", LOCAL, ALICE, 2.0)
    store.sent(response(486, "Busy Here", "c@x", cseq=2), Flow("udp", LOCAL, ALICE), 2.0)
    assert store.calls()[0]["status"] == 486


def test_oldest_call_forgotten_first_and_activity_keeps_one() -> None:
    store = TraceStore(max_calls=3)
    for n in range(3):
        store.record(request("OPTIONS", f"c{n}"), "in", "udp", LOCAL, ALICE, float(n))
    store.record(request("OPTIONS", "c0"), "in", "udp", LOCAL, ALICE, 10.0)  # c0 active again
    store.record(request("OPTIONS", "c3"), "in", "udp", LOCAL, ALICE, 11.0)
    assert len(store) == 3
    assert store.show("c1") is None and store.show("c0") is not None
    assert store.stats()["trace_calls_forgotten"] == 1


def test_messages_per_call_and_bytes_per_message_are_capped() -> None:
    store = TraceStore(max_messages=4, max_bytes=300)
    for n in range(10):
        store.record(request("INFO", "c", n + 1, body="x" * 1000), "in", "tcp", LOCAL, ALICE, float(n))
    messages = store.show("c")
    assert messages is not None and len(messages) == 4
    assert [m["cseq"] for m in messages] == ["7 INFO", "8 INFO", "9 INFO", "10 INFO"]  # the newest kept
    assert all(len(m["message"]) == 300 and m["truncated"] and m["size"] > 1000 for m in messages)
    summary = store.calls()[0]
    assert summary["messages"] == 10 and summary["kept"] == 4
    stats = store.stats()
    assert stats["trace_messages_forgotten"] == 6 and stats["trace_truncated"] == 10


def test_garbage_is_counted_not_kept() -> None:
    store = TraceStore()
    for junk in (b"\r\n\r\n", b"", b"\x00\xff" * 50, b"hello world", b"INVITE x SIP/2.0\r\nCall-ID:   \r\n\r\n"):
        store.record(junk, "in", "udp", LOCAL, ALICE, 1.0)
    assert len(store) == 0 and store.stats()["trace_no_call_id"] == 5
    store.sent(b"anything", None, 1.0)
    assert store.stats()["trace_messages"] == 0


def test_broken_messages_with_a_call_id_still_show() -> None:
    store = TraceStore()
    data = b"\xff\xfe not sip\r\nCall-ID: weird\r\nFrom\r\n\tfolded\r\nTo: <sip:\xc3(@x>\r\n"
    store.record(data, "in", "udp", LOCAL, ALICE, 1.0)
    (m,) = store.show("weird") or []
    assert m["first_line"].endswith("not sip") and "\ufffd" in m["message"]
    assert store.calls()[0]["from"] is None


def test_call_id_forms_and_limits() -> None:
    assert call_id_of(b"OPTIONS sip:x SIP/2.0\r\ncall-id:abc\r\n\r\n") == "abc"
    assert call_id_of(b"OPTIONS sip:x SIP/2.0\r\nI : compact@x \r\n\r\n") == "compact@x"
    assert call_id_of(b"OPTIONS sip:x SIP/2.0\r\nX-Call-ID: no\r\n\r\n") is None
    long = call_id_of(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: " + b"a" * 5000 + b"\r\n\r\n")
    assert long is not None and len(long) == 256
    assert call_id_of(b"OPTIONS sip:x SIP/2.0\r\n" + b"X: y\r\n" * 2000 + b"Call-ID: late\r\n") is None


def test_parse_head_folds_and_expands_compact_forms() -> None:
    first, headers = parse_head(b"SIP/2.0 200 OK\r\nf: <sip:a@x>\r\n ;tag=1\r\nt: <sip:b@x>\r\nCSeq: 1 INVITE\r\n\r\nv=0")
    assert first == "SIP/2.0 200 OK"
    assert headers == {"from": "<sip:a@x> ;tag=1", "to": "<sip:b@x>", "cseq": "1 INVITE"}


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TraceStore(max_calls=0)
