"""STUN Binding keepalives on the SIP UDP port (RFC 5626 §4.4.2) through ``sipedge serve``:
Binding requests get the sender's XOR-MAPPED-ADDRESS back, other STUN is dropped and
counted, and SIP keeps working on the same port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest
from aioice import stun as aioice_stun

from helpers.metrics import metrics
from helpers.sipserver import Server, running_server, wait_ready


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("stun")) as s:
        yield s


def stun_request(method: aioice_stun.Method, fingerprint: bool = False) -> aioice_stun.Message:
    """A request encoded by aioice, an independent STUN implementation."""
    msg = aioice_stun.Message(message_method=method, message_class=aioice_stun.Class.REQUEST)
    if fingerprint:
        msg.add_fingerprint()
    return msg


def exchange(server: Server, data: bytes, timeout: float = 1.0) -> tuple[bytes | None, tuple[str, int]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", server.udp))
        try:
            return s.recv(2048), s.getsockname()
        except TimeoutError:
            return None, s.getsockname()


@pytest.mark.parametrize("fingerprint", [False, True])
def test_binding_request_gets_the_mapped_address(server: Server, fingerprint: bool) -> None:
    req = stun_request(aioice_stun.Method.BINDING, fingerprint)
    before = metrics(server)["sip_udp_stun_bindings"]
    data, local = exchange(server, bytes(req))
    assert data is not None, "no answer to a STUN Binding request on the SIP port"
    reply = aioice_stun.parse_message(data)  # checks FINGERPRINT when present
    assert reply.message_method == aioice_stun.Method.BINDING
    assert reply.message_class == aioice_stun.Class.RESPONSE
    assert reply.transaction_id == req.transaction_id
    assert reply.attributes["XOR-MAPPED-ADDRESS"] == local
    assert ("FINGERPRINT" in reply.attributes) == fingerprint
    assert metrics(server)["sip_udp_stun_bindings"] == before + 1


def test_other_stun_is_dropped_and_counted(server: Server) -> None:
    before = metrics(server)
    allocate = bytes(stun_request(aioice_stun.Method.ALLOCATE))
    indication = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.INDICATION)
    response = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.RESPONSE)
    truncated = bytes(stun_request(aioice_stun.Method.BINDING, fingerprint=True))[:-4]
    garbage = b"\x00\x01\x00\x08\x21\x12\xa4\x42" + os.urandom(12) + b"\xff" * 8
    for data in (allocate, bytes(indication), bytes(response), truncated, garbage):
        assert exchange(server, data, timeout=0.3)[0] is None, data
    after = metrics(server)
    assert after["sip_udp_stun_dropped"] == before["sip_udp_stun_dropped"] + 5
    assert after["sip_udp_stun_bindings"] == before["sip_udp_stun_bindings"]
    wait_ready(server.host, server.udp, server.proc, timeout=3)  # SIP still answered


def test_unknown_required_attribute_gets_420(server: Server) -> None:
    req = stun_request(aioice_stun.Method.BINDING)
    raw = bytearray(bytes(req))
    raw += b"\x00\x03\x00\x04\x00\x00\x00\x06"  # CHANGE-REQUEST: an RFC 5780 test, not served here
    raw[2:4] = (len(raw) - 20).to_bytes(2, "big")
    data, _ = exchange(server, bytes(raw))
    assert data is not None
    reply = aioice_stun.parse_message(data)
    assert reply.message_class == aioice_stun.Class.ERROR
    assert reply.attributes["ERROR-CODE"][0] == 420


@pytest.mark.coturn
@pytest.mark.skipif(shutil.which("turnutils_stunclient") is None, reason="needs Debian coturn")
def test_coturn_stunclient_sees_its_address(server: Server) -> None:
    out = subprocess.run(
        ["turnutils_stunclient", "-p", str(server.udp), "127.0.0.1"],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout
    assert "UDP reflexive addr: 127.0.0.1:" in out, out
