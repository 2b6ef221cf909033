"""Issue 10, item 9: an ng datagram with a 5,000-digit bencoded integer.

Python's ``int()`` refuses strings past 4300 digits with ValueError; the codec bounds
integers to 20 digits and raises its ParseError, so a running ``sipedge serve`` answers
with an rtpengine-shaped error reply (before: a traceback and silence) and keeps
answering pings.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from helpers.ports import free_port
from helpers.sipserver import Server, running_server
from sipedge.media import bencode


@pytest.fixture(scope="module")
def ng_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    ng_port = free_port()
    low = free_port() & ~1
    extra = f'\n[media]\nenabled = true\nng_listen = "127.0.0.1:{ng_port}"\nport_min = {low}\nport_max = {low + 9}\n'
    with running_server(tmp_path_factory.mktemp("ng-limits"), extra=extra) as s:
        yield s, ng_port


def ask(ng_port: int, datagram: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        s.sendto(datagram, ("127.0.0.1", ng_port))
        return s.recv(65535)


def test_huge_integer_gets_an_error_reply_and_the_server_still_answers(ng_server: tuple[Server, int]) -> None:
    server, ng_port = ng_server
    assert ask(ng_port, b"warm d7:command4:pinge") == b"warm d6:result4:ponge"
    cookie, _, body = ask(ng_port, b"huge d7:command4:ping5:counti" + b"9" * 5000 + b"ee").partition(b" ")
    assert cookie == b"huge"
    reply = bencode.decode(body)
    assert isinstance(reply, dict) and reply[b"result"] == b"error"
    assert b"longer than 20 digits" in reply[b"error-reason"]  # type: ignore[operator]
    assert ask(ng_port, b"after d7:command4:pinge") == b"after d6:result4:ponge"
    assert "Traceback" not in server.log_text()
