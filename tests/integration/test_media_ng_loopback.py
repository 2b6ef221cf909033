"""The relay over real UDP on loopback: ng control socket + relay ports + RTP both ways."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sipedge.config.media import MediaConfig
from sipedge.media import bencode
from sipedge.media.relay import Flags, RelayError
from sipedge.media.rtp import RtpPacket
from sipedge.server.media import MediaServer
from sipedge.server.ng import NgControlServer, NgRemote

pytestmark = pytest.mark.timeout(30)


def sdp(port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def port_of(out: bytes) -> int:
    m = re.search(rb"m=audio (\d+)", out)
    assert m
    return int(m.group(1))


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def recv_n(sock: socket.socket, n: int, timeout: float = 5.0) -> list[bytes]:
    loop = asyncio.get_running_loop()
    out: list[bytes] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await loop.sock_recv(sock, 2048))
    return out


def rtp(seq: int, ssrc: int) -> bytes:
    return RtpPacket(0, seq, seq * 160, ssrc, bytes(160)).serialize()


@pytest.fixture
async def relay():  # type: ignore[no-untyped-def]
    base = 42000 + (os.getpid() % 200) * 20
    cfg = MediaConfig(listen="127.0.0.1", port_min=base, port_max=base + 9)
    server = MediaServer(cfg)
    control = NgControlServer(server, "127.0.0.1", 0)
    client = NgRemote(*control.address, timeout=3.0)
    yield server, control, client
    client.close()
    control.close()
    server.close()


async def test_offer_answer_rtp_both_ways_delete(relay) -> None:  # type: ignore[no-untyped-def]
    server, _control, client = relay
    assert await client.ping()
    a, b, stranger = udp(), udp(), udp()
    try:
        to_b = await client.offer("call-1", "ft", sdp(a.getsockname()[1]))
        to_a = await client.answer("call-1", "ft", "tt", sdp(b.getsockname()[1]))
        pa, pb = port_of(to_a), port_of(to_b)
        assert b"c=IN IP4 127.0.0.1" in to_a
        n = 50
        for i in range(n):
            a.sendto(rtp(i, 1), ("127.0.0.1", pa))
            b.sendto(rtp(i, 2), ("127.0.0.1", pb))
            if i % 10 == 9:
                await asyncio.sleep(0.005)
        got_b = await recv_n(b, n)
        got_a = await recv_n(a, n)
        assert sorted(got_b) == sorted(rtp(i, 1) for i in range(n))
        assert sorted(got_a) == sorted(rtp(i, 2) for i in range(n))
        # a stranger floods A's relay port: dropped and counted, the call goes on
        for i in range(300):
            stranger.sendto(rtp(i, 666), ("127.0.0.1", pa))
            if i % 50 == 49:
                await asyncio.sleep(0.01)
        async with asyncio.timeout(3):
            while server.stats()["media_packets_dropped_stranger"] < 300:
                await asyncio.sleep(0.01)
        a.sendto(rtp(n, 1), ("127.0.0.1", pa))
        assert await recv_n(b, 1) == [rtp(n, 1)]
        q = await client.query("call-1")
        assert q["result"] == "ok"
        assert q["totals"]["RTP"]["packets"] == 2 * n + 1
        assert q["totals"]["RTP"]["errors"] == 300
        assert server.stats()["media_packets_dropped_stranger"] == 300
        ft_stream = q["tags"]["ft"]["medias"][0]["streams"][0]
        assert ft_stream["endpoint"]["port"] == a.getsockname()[1]
        ports_before = set(server.allocator.sockets)
        assert {pa, pa + 1, pb, pb + 1} <= ports_before
        assert (await client.delete("call-1", "ft")) is not None
        assert server.allocator.sockets == {}
        assert server.relay.calls() == []
        with pytest.raises(RelayError):  # the ports are gone with the call
            await client.answer("call-1", "ft", "tt", sdp(1))
    finally:
        for s in (a, b, stranger):
            s.close()


async def test_bad_input_over_the_wire(relay) -> None:  # type: ignore[no-untyped-def]
    server, control, client = relay
    loop = asyncio.get_running_loop()
    s = udp()
    try:
        async def ask(data: bytes) -> dict[bytes, object]:
            s.sendto(data, control.address)
            async with asyncio.timeout(3):
                reply = await loop.sock_recv(s, 65535)
            cookie, _, body = reply.partition(b" ")
            assert cookie == data.partition(b" ")[0]
            out = bencode.decode(body)
            assert isinstance(out, dict)
            return out  # type: ignore[return-value]

        assert (await ask(b"x1 d7:command5:hello"))[b"result"] == b"error"
        r = await ask(b"x2 " + bencode.encode({"command": "dance"}))
        assert r == {b"result": b"error", b"error-reason": b"Unrecognized command 'dance'"}
        r = await ask(b"x3 " + bencode.encode({"command": "offer", "call-id": "c", "from-tag": "f", "sdp": b"v=0\r\nzz"}))
        assert r[b"result"] == b"error" and b"Failed to parse SDP" in r[b"error-reason"]  # type: ignore[operator]
        # port range exhaustion: 5 pairs in the range; each offer takes one
        for i in range(5):
            assert (await client.offer(f"x{i}", "f", sdp(9000))).startswith(b"v=0")
        with pytest.raises(RelayError, match="exhausted"):
            await client.offer("x-last", "f", sdp(9000))
        assert server.relay.calls() == [f"x{i}" for i in range(5)]
        assert await client.ping()
    finally:
        s.close()


def test_cli_media_serve(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        ng_port = probe.getsockname()[1]
    cfg = tmp_path / "sipedge.toml"
    cfg.write_text(f'[media]\nng_listen = "127.0.0.1:{ng_port}"\nport_min = 43000\nport_max = 43099\n')
    runner = textwrap.dedent(
        """
        import argparse, sys
        from sipedge.cli import media
        p = argparse.ArgumentParser(prog="sipedge")
        media.register(p.add_subparsers(dest="cmd", required=True))
        a = p.parse_args(sys.argv[1:])
        sys.exit(a.func(a))
        """
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[media]\nport_min = 5\nport_max = 5\n")
    res = subprocess.run([sys.executable, "-c", runner, "media", "serve", "--config", str(bad)],
                         capture_output=True, text=True, timeout=15)
    assert res.returncode == 2 and "port_min < port_max" in res.stderr and "Traceback" not in res.stderr
    proc = subprocess.Popen([sys.executable, "-c", runner, "media", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            reply = None
            for _ in range(50):
                s.sendto(b"p1 d7:command4:pinge", ("127.0.0.1", ng_port))
                try:
                    reply = s.recv(100)
                    break
                except TimeoutError:
                    continue
            assert reply == b"p1 d6:result4:ponge"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


async def test_in_process_api_and_timeout_timer() -> None:
    from sipedge.media.control import MediaControl

    base = 42000 + (os.getpid() % 200) * 20 + 10
    server = MediaServer(MediaConfig(listen="127.0.0.1", port_min=base, port_max=base + 9, timeout=0.2))
    control: MediaControl = server
    events: list[object] = []
    server.listeners.append(events.append)
    a, b = udp(), udp()
    try:
        to_b = await control.offer("t-1", "ft", sdp(a.getsockname()[1]))
        to_a = await control.answer("t-1", "ft", "tt", sdp(b.getsockname()[1]))
        a.sendto(rtp(1, 1), ("127.0.0.1", port_of(to_a)))
        assert await recv_n(b, 1) == [rtp(1, 1)]
        b.sendto(rtp(1, 2), ("127.0.0.1", port_of(to_b)))
        assert await recv_n(a, 1) == [rtp(1, 2)]
        # no more media: the core's timer (armed by the adapter) deletes the call
        async with asyncio.timeout(5):
            while server.relay.calls():
                await asyncio.sleep(0.05)
        assert server.allocator.sockets == {}
        assert server.stats()["media_calls_timed_out"] == 1
        assert any(type(e).__name__ == "CallDeleted" and e.reason == "timeout" for e in events)  # type: ignore[attr-defined]
    finally:
        a.close()
        b.close()
        server.close()


async def test_remote_client_times_out_with_503() -> None:
    silent = udp()
    client = NgRemote(*silent.getsockname(), timeout=0.3, retries=3)
    try:
        with pytest.raises(RelayError) as exc:
            await client.offer("x", "f", sdp(1))
        assert exc.value.hint == (503, "Media relay timeout")
        # it retransmitted the same datagram (same cookie) each time
        loop = asyncio.get_running_loop()
        got = [await asyncio.wait_for(loop.sock_recv(silent, 65535), 1) for _ in range(3)]
        assert got[0] == got[1] == got[2]
    finally:
        client.close()
        silent.close()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_relay_and_control() -> None:
    base = 42000 + (os.getpid() % 200) * 20 + 4
    server = MediaServer(MediaConfig(listen="::1", port_min=base, port_max=base + 5))
    control = NgControlServer(server, "::1", 0)
    client = NgRemote(*control.address, timeout=3.0)
    a = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("::1", 0))
        s.setblocking(False)

    def sdp6(port: int) -> bytes:
        return (f"v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
                f"m=audio {port} RTP/AVP 0\r\n").encode()

    try:
        to_b = await client.offer("v6", "ft", sdp6(a.getsockname()[1]))
        to_a = await client.answer("v6", "ft", "tt", sdp6(b.getsockname()[1]))
        assert b"c=IN IP6 ::1\r\n" in to_a
        a.sendto(rtp(1, 1), ("::1", port_of(to_a)))
        assert await recv_n(b, 1) == [rtp(1, 1)]
        b.sendto(rtp(1, 2), ("::1", port_of(to_b)))
        assert await recv_n(a, 1) == [rtp(1, 2)]
        q = await client.query("v6")
        assert q["tags"]["ft"]["medias"][0]["streams"][0]["endpoint"]["family"] == "IPv6"
        assert await client.delete("v6", "ft") is not None
    finally:
        a.close()
        b.close()
        client.close()
        control.close()
        server.close()


def party_sdp(host: str, port: int) -> bytes:
    family = "IP6" if ":" in host else "IP4"
    return sdp(port).replace(b"IN IP4 127.0.0.1", f"IN {family} {host}".encode())


@pytest.mark.parametrize(("a_host", "b_host"), [
    ("127.0.0.2", "127.0.0.3"),  # a private and a public network
    pytest.param("127.0.0.1", "::1", marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")),
], ids=["two-networks", "ipv4-ipv6"])
async def test_direction_bridges_two_interfaces_over_ng(a_host: str, b_host: str) -> None:
    """Two named interfaces: an ng offer with ``direction: [a, b]`` gives each party the
    relay address of its own network (or address family: rtpengine's IPv4/IPv6 bridging),
    and media crosses between them, leaving by the right side's socket."""
    base = 43000 + (os.getpid() % 200) * 20
    cfg = MediaConfig(interfaces=[f"a/{a_host}", f"b/{b_host}"], port_min=base, port_max=base + 9)
    server = MediaServer(cfg)
    control = NgControlServer(server, "127.0.0.1", 0)
    client = NgRemote(*control.address, timeout=3.0)
    a = socket.socket(socket.AF_INET6 if ":" in a_host else socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET6 if ":" in b_host else socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((a_host, 0))
    b.bind((b_host, 0))
    a.setblocking(False)
    b.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        offer = party_sdp(a_host, a.getsockname()[1])
        to_b = await client.offer("dir-1", "ft", offer, Flags(direction=("a", "b")))
        to_a = await client.answer("dir-1", "ft", "tt", party_sdp(b_host, b.getsockname()[1]))
        assert f" {b_host}\r\n".encode() in to_b and f"c=IN IP4 {a_host}".encode() in to_a
        pa, pb = port_of(to_a), port_of(to_b)
        a.sendto(rtp(1, 1), (a_host, pa))
        async with asyncio.timeout(5):
            data, src = await loop.sock_recvfrom(b, 2048)
        assert data == rtp(1, 1) and src[:2] == (b_host, pb)  # out of b's side
        b.sendto(rtp(2, 2), (b_host, pb))
        async with asyncio.timeout(5):
            data, src = await loop.sock_recvfrom(a, 2048)
        assert data == rtp(2, 2) and src[:2] == (a_host, pa)  # out of a's side
        with pytest.raises(RelayError) as exc:
            await client.offer("dir-2", "ft", offer, Flags(direction=("a", "dmz")))
        assert exc.value.hint[0] == 488
    finally:
        a.close()
        b.close()
        client.close()
        control.close()
        server.close()
