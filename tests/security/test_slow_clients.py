"""Slow and greedy stream clients against a real ``sipedge serve`` (issue 10 item 6):
a TCP sender trickling a message is closed at ``sip.limits.message_timeout``, a TLS
client that never handshakes at ``handshake_timeout``, and one address gets at most
``max_connections_per_ip`` connections (TLS and WebSocket ones count while they
handshake); legitimate clients on the same server keep working."""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from collections.abc import Iterator

import pytest

from helpers.metrics import metrics
from helpers.sipserver import Server, running_server
from helpers.ua import insecure_tls

CAP = 5


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Short deadlines, so the tests need not wait the defaults."""
    extra = "\n[sip.limits]\nmessage_timeout = 1.0\nhandshake_timeout = 1.0\n"
    with running_server(tmp_path_factory.mktemp("quick"), extra=extra) as s:
        yield s


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra = f"\n[sip.limits]\nmax_connections_per_ip = {CAP}\n"
    with running_server(tmp_path_factory.mktemp("capped"), extra=extra) as s:
        yield s


def options(port: int, transport: str = "TCP") -> bytes:
    tag = uuid.uuid4().hex[:8]
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bK{tag}\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: {tag}\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=3, source_address=(source, 0))
    s.settimeout(3)
    return s


def answered(sock: socket.socket | ssl.SSLSocket) -> bool:
    """Whether a SIP response comes back (the server answers OPTIONS to itself)."""
    try:
        return sock.recv(65535).startswith(b"SIP/2.0 ")
    except (OSError, ssl.SSLError):
        return False


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the server closes the connection within ``within`` seconds (whatever it
    sends first, e.g. a TLS alert)."""
    deadline = time.monotonic() + within
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(65535) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        pass
    return False


# -- a message must arrive whole within message_timeout ---------------------------------
def test_a_tcp_client_trickling_a_message_is_closed(quick: Server) -> None:
    before = metrics(quick).get("sip_connections_closed_slow", 0.0)
    sock = connect(quick.tcp)
    msg = options(quick.tcp)
    start = time.monotonic()
    closed_after = None
    try:
        for i in range(40):  # one byte every 0.1 s: the message would take 20 s
            try:
                sock.send(msg[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
                break
            if closed_by_peer(sock, 0.1):
                closed_after = time.monotonic() - start
                break
    finally:
        sock.close()
    assert closed_after is not None, "a trickling sender was never closed"
    assert 0.9 < closed_after < 3.0
    assert metrics(quick)["sip_connections_closed_slow"] == before + 1


def test_a_message_sent_in_two_quick_parts_is_served(quick: Server) -> None:
    sock = connect(quick.tcp)
    try:
        msg = options(quick.tcp)
        sock.sendall(msg[:40])
        time.sleep(0.3)
        sock.sendall(msg[40:])
        assert answered(sock)
        time.sleep(1.5)  # an idle connection between messages is not a slow message
        sock.sendall(options(quick.tcp))
        assert answered(sock)
    finally:
        sock.close()


# -- TLS must handshake within handshake_timeout ----------------------------------------
def test_a_tls_client_that_never_handshakes_is_closed(quick: Server) -> None:
    before = metrics(quick).get("sip_tls_handshake_timeouts", 0.0)
    sock = connect(quick.tls)
    start = time.monotonic()
    try:
        assert closed_by_peer(sock, 5.0), "a silent TLS client was never closed"
    finally:
        sock.close()
    assert 0.9 < time.monotonic() - start < 3.0
    assert metrics(quick)["sip_tls_handshake_timeouts"] == before + 1
    with insecure_tls().wrap_socket(connect(quick.tls)) as tls:  # a real TLS client is served
        tls.sendall(options(quick.tls, "TLS"))
        assert answered(tls)


# -- at most max_connections_per_ip from one address ------------------------------------
@pytest.mark.parametrize("transport", ["tcp", "tls", "ws", "wss"])
def test_one_address_gets_at_most_the_cap(capped: Server, transport: str) -> None:
    """Raw connections that send nothing: accepted TCP, or TLS/WebSocket handshakes under
    way, all hold a slot of their address."""
    port = {"tcp": capped.tcp, "tls": capped.tls, "ws": capped.ws, "wss": capped.wss}[transport]
    source = {"tcp": "127.0.0.2", "tls": "127.0.0.3", "ws": "127.0.0.4", "wss": "127.0.0.5"}[transport]
    before = metrics(capped).get("sip_connections_refused_per_ip", 0.0)
    held = [connect(port, source) for _ in range(CAP)]
    try:
        time.sleep(0.2)
        extra = connect(port, source)
        try:
            assert closed_by_peer(extra, 2.0), "the connection over the cap was kept"
        finally:
            extra.close()
        assert not any(closed_by_peer(s, 0.05) for s in held)
        assert metrics(capped)["sip_connections_refused_per_ip"] == before + 1
        with connect(capped.tcp) as other:  # another address is not affected
            other.sendall(options(capped.tcp))
            assert answered(other)
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)  # the slots come back once those connections are gone
    with connect(capped.tcp, source) as again:
        again.sendall(options(capped.tcp))
        assert answered(again)


def test_garbage_instead_of_a_tls_handshake_is_closed_and_counted(quick: Server) -> None:
    before = metrics(quick).get("sip_tls_handshake_failures", 0.0)
    sock = connect(quick.tls)
    try:
        sock.sendall(options(quick.tls, "TLS"))  # plain SIP on the TLS port
        assert closed_by_peer(sock, 3.0)
    finally:
        sock.close()
    assert metrics(quick)["sip_tls_handshake_failures"] == before + 1
