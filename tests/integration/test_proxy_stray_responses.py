"""Responses that match no transaction (RFC 3261 §16.11): one whose top Via is ours is
forwarded statelessly by the next Via; one that is not ours is dropped."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from helpers.sipserver import Server, running_server
from sipedge.sip import message as m


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("stray")) as s:
        yield s


def response(top_via: str, caller_port: int) -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: {top_via}\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{caller_port};branch=z9hG4bKcaller{time.monotonic_ns()}\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\n"
        f"Call-ID: stray{time.monotonic_ns()}\r\nCSeq: 1 INVITE\r\nContact: <sip:b@127.0.0.1:9>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_a_stray_2xx_through_us_goes_on_by_the_next_via(server: Server) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        callee.bind((server.host, 0))
        caller.bind((server.host, 0))
        caller.settimeout(2)
        ours = f"SIP/2.0/UDP {server.host}:{server.udp};branch=z9hG4bKsEgone.0"
        callee.sendto(response(ours, caller.getsockname()[1]), (server.host, server.udp))
        data, _ = caller.recvfrom(65535)
        got = m.parse(data)
        assert isinstance(got, m.Response) and got.status == 200
        assert len(got.get_all("via")) == 1 and "branch=z9hG4bKcaller" in got.get_all("via")[0]


def test_a_stray_response_not_through_us_is_dropped(server: Server) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        callee.bind((server.host, 0))
        caller.bind((server.host, 0))
        caller.settimeout(0.7)
        other = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKelsewhere"
        callee.sendto(response(other, caller.getsockname()[1]), (server.host, server.udp))
        with pytest.raises(TimeoutError):
            caller.recvfrom(65535)


def test_a_stray_response_with_a_bad_second_via_is_dropped_without_a_traceback(server: Server) -> None:
    """Found by fuzz/targets.py (sip): the Via list was parsed outside any guard, so each
    such datagram logged a traceback and counted as a routing error."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:
        callee.bind((server.host, 0))
        ours = f"SIP/2.0/UDP {server.host}:{server.udp};branch=z9hG4bKsEgone.0"
        bad = response(ours, 9).replace(b"SIP/2.0/UDP 127.0.0.1:9;", b"SIP/2.0/UDP 255.255.255.25\xc2;")
        callee.sendto(bad, (server.host, server.udp))
        time.sleep(0.3)
    text = server.log_text()
    assert "error handling StrayResponse" not in text
    assert "stray response from" in text and "bad Via" in text
