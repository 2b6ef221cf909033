"""A worker's sends on connections another worker holds (server/worker.py
``WorkerSipService._send``): handed to the holder over its channel, and when that
channel is full the branch fails at once (``ProxyCore.transport_failed``) instead of
waiting for its timer."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sipedge.config import parse_config
from sipedge.proxy.core import Send
from sipedge.server.handoff import NEW, OUT, Handoff, conn_ids, decode, encode
from sipedge.server.worker import WorkerSipService
from sipedge.sip.flow import Flow, Target
from sipedge.store.sqlite import SqliteDatabase, SqliteLocationStore, SqliteSubscriberStore

KEY = ("z9hG4bK-branch-1", "INVITE")


class RecordingCore:
    """What the service tells the proxy core: the transactions whose send failed."""

    def __init__(self) -> None:
        self.failed: list[Any] = []

    def transport_failed(self, key: Any, now: float) -> None:
        self.failed.append(key)

    def outgoing(self) -> list[Send]:
        return []

    def media_jobs(self) -> list[Any]:
        return []

    def resolve_jobs(self) -> list[Any]:
        return []

    def silent_targets(self) -> list[Any]:
        return []

    def get_timer(self) -> float | None:
        return None


@pytest.fixture
def channels() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
    yield pairs
    for a, b in pairs:
        a.close()
        b.close()


async def service(tmp_path: Path, channels: list[tuple[socket.socket, socket.socket]]) -> tuple[
        WorkerSipService, RecordingCore, Handoff]:
    config = parse_config({"general": {"data_dir": str(tmp_path), "workers": 2}})
    db = SqliteDatabase(tmp_path / "t.db")
    svc = WorkerSipService(config, SqliteLocationStore(db), SqliteSubscriberStore(db), b"k" * 32)
    handoff = Handoff(0, channels[0][0], [channels[0][1], channels[1][1]])
    svc.attach(handoff)
    core = RecordingCore()
    svc.core = core  # type: ignore[assignment]
    return svc, core, handoff


def worker1_flow(port: int = 40000) -> Flow:
    return Flow("tcp", ("127.0.0.1", 5060), ("127.0.0.1", port), conn_ids(1, 2, 0)[0])


def fill(sock: socket.socket) -> None:
    """Fill a datagram socket's queue to its reader until the kernel says it is full."""
    sock.setblocking(False)
    for _ in range(100_000):
        try:
            sock.send(b"x" * 4096)
        except BlockingIOError:
            return
    raise AssertionError("the channel never filled")


async def test_a_send_on_another_workers_connection_goes_to_that_worker(
        tmp_path: Path, channels: list[tuple[socket.socket, socket.socket]]) -> None:
    svc, core, handoff = await service(tmp_path, channels)
    flow = worker1_flow()
    svc._send(Send(b"SIP/2.0 200 OK\r\n\r\n", flow, None, KEY))
    assert decode(channels[1][0].recv(1 << 16)) == (OUT, flow.token, b"SIP/2.0 200 OK\r\n\r\n")
    assert core.failed == [] and handoff.counters["sip_handoff_out_sent"] == 1


async def test_a_send_handed_to_a_full_channel_fails_its_branch(
        tmp_path: Path, channels: list[tuple[socket.socket, socket.socket]]) -> None:
    svc, core, handoff = await service(tmp_path, channels)
    fill(channels[1][1])  # worker 1 reads nothing: its channel is full
    svc._send(Send(b"INVITE sip:b@x SIP/2.0\r\n\r\n", worker1_flow(), None, KEY))
    assert core.failed == [KEY]
    assert handoff.counters["sip_handoff_dropped"] == 1 and handoff.counters["sip_handoff_out_sent"] == 0


async def test_a_request_to_a_browser_whose_connection_another_worker_holds_fails_when_it_cannot_be_handed(
        tmp_path: Path, channels: list[tuple[socket.socket, socket.socket]]) -> None:
    svc, core, handoff = await service(tmp_path, channels)

    class NoConnections:
        def has_connection(self, target: Target) -> bool:
            return False

    svc.transports = NoConnections()  # type: ignore[assignment]
    ws = Flow("ws", ("127.0.0.1", 5066), ("127.0.0.1", 41000), conn_ids(1, 2, 0)[0])
    handoff._dispatch(encode(NEW, ws.token, b""))  # worker 1 said it holds this WebSocket
    fill(channels[1][1])
    svc._send(Send(b"INVITE sip:browser@x SIP/2.0\r\n\r\n", None, Target("ws", "127.0.0.1", 41000), KEY))
    assert core.failed == [KEY]


def test_the_answers_of_every_worker_are_put_together() -> None:
    from sipedge.server.control import ControlError
    from sipedge.server.worker import TRACE_BITS, merge_answers

    assert merge_answers("dlg.list", [[{"call_id": "a"}], [{"call_id": "b"}]]) == [
        {"call_id": "a", "worker": 0}, {"call_id": "b", "worker": 1}]
    traced = merge_answers("trace.list", [{"seq": 5, "calls": [{"call_id": "a", "last": 1.0}]},
                                          {"seq": 3, "calls": [{"call_id": "b", "last": 2.0}]}])
    assert traced["seq"] == 5 + (3 << TRACE_BITS) and [c["call_id"] for c in traced["calls"]] == ["b", "a"]
    bans = merge_answers("ban.list", [[{"source": "192.0.2.1", "seconds_left": 10.0, "dropped": 2}],
                                      [{"source": "192.0.2.1", "seconds_left": 30.0, "dropped": 3}]])
    assert bans == [{"source": "192.0.2.1", "seconds_left": 30.0, "dropped": 5}]
    missing = ControlError(404, "192.0.2.9 is not banned")
    assert merge_answers("ban.rm", [missing, {"source": "192.0.2.9", "lifted": True}])["workers"] == 1
    with pytest.raises(ControlError):
        merge_answers("ban.rm", [missing, missing])
    assert merge_answers("log.level", [{"level": "info"}, {"level": "info"}]) == {"level": "info", "workers": 2}
