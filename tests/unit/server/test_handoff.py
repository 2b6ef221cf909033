"""The worker channel's codec and ownership rules (server/handoff.py)."""

from __future__ import annotations

import socket

import pytest

from sipedge.server.handoff import (
    CLOSED,
    IN,
    MEDIA,
    NEW,
    QUERY,
    REPLY,
    Handoff,
    call_id_of,
    conn_ids,
    decode,
    encode,
    owner_of,
)
from sipedge.sip.flow import Flow, Target

MSG = (b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\ncall-ID : abc@h \r\n"
       b"CSeq: 1 INVITE\r\n\r\nCall-ID: not-this-one-it-is-the-body")


def test_call_id_is_read_from_the_head_in_any_case_and_compact_form() -> None:
    assert call_id_of(MSG) == b"abc@h"
    assert call_id_of(b"BYE sip:x SIP/2.0\r\nCALL-ID: thc-AbC/xY==\r\n\r\n") == b"thc-AbC/xY=="  # as sent
    assert call_id_of(b"SIP/2.0 200 OK\r\ni: xyz\r\n\r\n") == b"xyz"
    assert call_id_of(b"OPTIONS sip:x SIP/2.0\r\nTo: <sip:x>\r\n\r\nCall-ID: body") is None
    assert call_id_of(b"garbage") is None
    assert call_id_of(b"X\r\nCall-ID:   \r\n\r\n") is None


def test_the_owner_is_the_same_in_every_process_and_spreads() -> None:
    assert owner_of(b"abc@h", 2) == owner_of(b"abc@h", 2) == owner_of("abc@h", 2)  # (a dialog's, as text)
    owners = {owner_of(f"{i}@h".encode(), 4) for i in range(64)}
    assert owners == {0, 1, 2, 3}


@pytest.mark.parametrize("datagram", [b"", b"I", b"Z\x00\x00", b"I\x00\x09abc", b"I\x00\x02\xff\xfe", b"\x00" * 3])
def test_a_datagram_that_is_no_hand_off_decodes_to_none(datagram: bytes) -> None:
    assert decode(datagram) is None


def test_encode_decode_round_trip() -> None:
    flow = Flow("ws", ("127.0.0.1", 5060), ("::1", 40000), 7)
    assert decode(encode(IN, flow.token, b"payload")) == (IN, flow.token, b"payload")


def test_connection_ids_name_their_worker_and_generation() -> None:
    start, step = conn_ids(1, 2, 0)
    assert (start, step) == (3, 2)
    later, _ = conn_ids(1, 2, 1)
    assert later % 2 == 1 and later > start
    assert conn_ids(0, 1, 0) == (1, 1)  # (one worker: the ids of one process)


def test_bad_datagrams_are_counted_and_connections_tracked() -> None:
    rx0, tx0 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx1, tx1 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        h = Handoff(0, rx0, [tx0, tx1])
        closed: list[Flow] = []
        h.on_closed = closed.append
        flow = Flow("ws", ("127.0.0.1", 5060), ("127.0.0.1", 40001), conn_ids(1, 2, 0)[0])
        h._dispatch(b"\x01garbage")
        h._dispatch(encode(IN, "not~a~flow", b""))
        assert h.counters["sip_handoff_bad"] == 2
        assert h.flow_owner(flow) == 1 and h.remote_alive(flow)
        h._dispatch(encode(NEW, flow.token, b""))
        assert h.remote_flow(Target("ws", "127.0.0.1", 40001)) == flow
        h._dispatch(encode(CLOSED, flow.token, b""))
        assert closed == [flow] and not h.remote_alive(flow)
        assert h.remote_flow(Target("ws", "127.0.0.1", 40001)) is None
        h._dispatch(encode(b"G", "1:1", b""))  # worker 1 restarted: its old connections are gone
        other = Flow("tcp", ("127.0.0.1", 5060), ("127.0.0.1", 40002), conn_ids(1, 2, 0)[0] + 2)
        assert not h.remote_alive(other)
        h._dispatch(encode(b"G", "9:1", b""))
        assert h.counters["sip_handoff_bad"] == 3
    finally:
        for s in (rx0, tx0, rx1, tx1):
            s.close()


def test_a_flow_another_node_recorded_is_not_taken_for_a_connection_of_ours() -> None:
    """A binding in a shared database carries the flow of the node it registered on; its
    connection id may be one a worker here has, to another peer (test_cluster_sipp.py)."""
    rx0, tx0 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx1, tx1 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        h = Handoff(0, rx0, [tx0, tx1])
        h.is_listener = {("127.0.0.2", 5060)}.__contains__
        cid = conn_ids(1, 2, 0)[0]
        ours = Flow("tcp", ("127.0.0.2", 5060), ("127.0.0.9", 40001), cid)
        h._dispatch(encode(NEW, ours.token, b""))
        assert h.remote_alive(ours)
        same_id_elsewhere = Flow("tcp", ("127.0.0.1", 5060), ("127.0.0.8", 40002), cid)
        assert not h.remote_alive(same_id_elsewhere)  # worker 1's connection of that id is another
        unknown = Flow("tcp", ("127.0.0.1", 5060), ("127.0.0.8", 40002), cid + 2)
        assert not h.remote_alive(unknown)  # never announced, not on a listener of ours
        before_we_started = Flow("tcp", ("127.0.0.2", 5060), ("127.0.0.7", 40003), cid + 4)
        assert h.remote_alive(before_we_started)  # on our listener: may be worker 1's still
        h._dispatch(encode(CLOSED, ours.token, b""))
        assert not h.remote_alive(ours)
    finally:
        for s in (rx0, tx0, rx1, tx1):
            s.close()


def test_queries_replies_and_media_events_reach_their_handlers_and_garbage_is_counted() -> None:
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        h = Handoff(1, rx, [tx, tx])
        seen: list[object] = []
        h.on_query = lambda n, q: seen.append(("Q", n, q))
        h.on_reply = lambda n, r: seen.append(("R", n, r))
        h.on_media = lambda ev: seen.append(("M", ev))
        h._dispatch(encode(QUERY, "7", b'{"method": "dlg.list", "params": {}}'))
        h._dispatch(encode(REPLY, "7", b'{"result": []}'))
        h._dispatch(encode(MEDIA, "0", b'{"call_id": "c", "reason": "timeout", "totals": {}}'))
        assert seen == [("Q", 7, {"method": "dlg.list", "params": {}}), ("R", 7, {"result": []}),
                        ("M", {"call_id": "c", "reason": "timeout", "totals": {}})]
        for bad in (encode(QUERY, "x", b"{}"), encode(REPLY, "1", b"[1]"), encode(MEDIA, "0", b"not json")):
            h._dispatch(bad)
        h.on_media = lambda ev: 1 // 0  # a handler's bug: counted, the channel keeps serving
        h._dispatch(encode(MEDIA, "0", b"{}"))
        assert h.counters["sip_handoff_bad"] == 4 and len(seen) == 3
    finally:
        rx.close()
        tx.close()
