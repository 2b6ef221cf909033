"""TURN inside ``sipedge serve``: a WebRTC app's back end asks the HTTP endpoint for its
iceServers (with the ``[turn] api_key``), then an independent TURN client (aioice) allocates with those time-limited credentials
and relays to an echo peer; the counters show up on /metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.sipserver import Server
from helpers.turnserver import running_turn_server

aioice_turn = pytest.importorskip("aioice.turn")
API_KEY = "app-back-end-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    turn = f'secrets = ["s3cret-for-tests"]\napi_key = "{API_KEY}"\nallow_peers = ["127.0.0.0/8"]'
    with running_turn_server(tmp_path_factory.mktemp("turn"), turn, ("udp", "tcp")) as s:
        yield s


class Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


def get(server: Server, path: str) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{server.http}{path}", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return bytes(r.read())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_ice_servers_credentials_allocate_and_relay(server: Server, transport: str) -> None:
    ice = json.loads(get(server, "/turn/ice-servers?user=webapp"))
    entry = next(e for e in ice["iceServers"] if any(u.startswith("turn:") for u in e["urls"]))
    loop = asyncio.get_running_loop()
    echo_t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    echo = echo_t.get_extra_info("sockname")
    turn, proto = await asyncio.wait_for(
        aioice_turn.create_turn_endpoint(
            Receiver,
            server_addr=("127.0.0.1", server.turn_port),  # type: ignore[attr-defined]
            username=entry["username"],
            password=entry["credential"],
            transport=transport,
        ),
        5,
    )
    try:
        for i in range(10):
            turn.sendto(b"hello %d" % i, echo)
        got = {(await asyncio.wait_for(proto.queue.get(), 5))[0] for _ in range(10)}
        assert got == {b"hello %d" % i for i in range(10)}
    finally:
        turn.close()
        echo_t.close()
    metrics = get(server, "/metrics").decode()
    values = {}
    for line in metrics.splitlines():
        if line.startswith("sipedge_turn_"):
            name, _, value = line.partition(" ")
            values[name.split("{")[0]] = float(value)
    # what was just relayed shows in the counters, both ways
    assert values["sipedge_turn_allocations_total"] >= 1
    assert values["sipedge_turn_permissions_created"] >= 1
    assert values["sipedge_turn_packets_to_peer"] >= 10 and values["sipedge_turn_bytes_to_peer"] >= 70
    assert values["sipedge_turn_packets_from_peer"] >= 10 and values["sipedge_turn_bytes_from_peer"] >= 70
    for name in ("allocations", "permissions", "channels", "auth_failures", "denied_peers", "drops_malformed"):
        assert f"sipedge_turn_{name}" in values
