"""Issue 10, item 7: a captured TURN Allocate replayed from another 5-tuple.

Through a real ``sipedge serve`` with ``[turn] enabled = true``: a raw UDP client
allocates with REST credentials; the exact bytes of its successful Allocate, sent again
from a new socket (a new client port), get 438 Stale Nonce with a fresh nonce instead of
a second allocation on the user's quota, and the original flow keeps working.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from helpers.sipserver import Server
from helpers.turnserver import running_turn_server
from sipedge.stun import attributes as at
from sipedge.stun import integrity
from sipedge.stun import message as sm
from sipedge.stun.message import Class, Message, Method
from sipedge.turn.auth import rest_password

SECRET = "replay-test-secret"
REALM = "sipedge"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_turn_server(tmp_path_factory.mktemp("turn-replay"), f'secrets = ["{SECRET}"]') as s:
        yield s


def exchange(sock: socket.socket, server: Server, data: bytes) -> Message:
    sock.sendto(data, ("127.0.0.1", server.turn_port))  # type: ignore[attr-defined]
    reply, _ = sock.recvfrom(65535)
    return Message.parse(reply)


def udp_client() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def allocations(server: Server) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(r"^sipedge_turn_allocations (\S+)$", text, re.M)
    assert found is not None, text
    return float(found.group(1))


def test_allocate_replayed_from_a_new_port_gets_438(server: Server) -> None:
    username = f"{int(time.time()) + 3600}:victim"
    key = integrity.long_term_key(username, REALM, rest_password(SECRET, username))
    allocate = [at.RequestedTransport(17)]
    with udp_client() as victim, udp_client() as attacker:
        challenge = exchange(victim, server, sm.request(Method.ALLOCATE, b"challenge-01", allocate).serialize())
        assert challenge.error_code == 401
        nonce = challenge.get(at.Nonce)
        assert nonce is not None
        signed = [*allocate, at.Username(username), at.Realm(REALM), nonce]
        captured = sm.request(Method.ALLOCATE, b"allocate--01", signed).serialize(key)
        ok = exchange(victim, server, captured)
        assert ok.cls is Class.SUCCESS and ok.check_integrity(key)
        before = allocations(server)

        replayed = exchange(attacker, server, captured)
        assert replayed.error_code == 438
        fresh = replayed.get(at.Nonce)
        assert fresh is not None and fresh.value != nonce.value
        assert allocations(server) == before  # nothing allocated for the replay

        # The victim's flow is unaffected: a retransmission, then a Refresh, work.
        again = exchange(victim, server, captured)
        assert again.cls is Class.SUCCESS and again.get(at.XorRelayedAddress) == ok.get(at.XorRelayedAddress)
        refresh = sm.request(Method.REFRESH, b"refresh---01", [at.Lifetime(600), *signed[1:]]).serialize(key)
        assert exchange(victim, server, refresh).cls is Class.SUCCESS

        # A legitimate client on a new port retries with the fresh nonce it was given.
        moved = [*allocate, at.Username(username), at.Realm(REALM), fresh]
        retry = exchange(attacker, server, sm.request(Method.ALLOCATE, b"allocate--02", moved).serialize(key))
        assert retry.cls is Class.SUCCESS
        assert allocations(server) == before + 1
