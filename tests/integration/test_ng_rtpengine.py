"""sipedge's ng client drives a real rtpengine (Debian ``rtpengine-daemon``, userspace):
ping, offer, answer, RTP through rtpengine's ports both ways, query, delete. This proves
the client side of the protocol against the reference implementation, so the proxy can use
a remote rtpengine node as its relay.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpers.rtpengine import INSTALLED, running_rtpengine
from sipedge.media.relay import Flags, RelayError
from sipedge.media.rtp import RtpPacket
from sipedge.server.ng import NgRemote

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not INSTALLED, reason="rtpengine not installed (rtpengine-daemon)"),
]


def free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sdp(port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


@pytest.fixture
async def rtpengine(tmp_path: Path) -> AsyncIterator[NgRemote]:
    with running_rtpengine(tmp_path, 49000, 49199) as ng_port:
        client = NgRemote("127.0.0.1", ng_port, timeout=1.0, retries=2)
        try:
            yield client
        finally:
            client.close()


async def test_client_drives_rtpengine(rtpengine: NgRemote) -> None:
    loop = asyncio.get_running_loop()
    a, b = udp(), udp()
    try:
        flags = Flags(ice="remove", replace_origin=True)
        to_b = await rtpengine.offer("rte-1", "ft", sdp(a.getsockname()[1]), flags)
        to_a = await rtpengine.answer("rte-1", "ft", "tt", sdp(b.getsockname()[1]), flags)
        pb = int(re.search(rb"m=audio (\d+)", to_b).group(1))  # type: ignore[union-attr]
        pa = int(re.search(rb"m=audio (\d+)", to_a).group(1))  # type: ignore[union-attr]
        assert pa != pb and b"c=IN IP4 127.0.0.1" in to_a
        for i in range(20):
            a.sendto(RtpPacket(0, i, i * 160, 1, bytes(160)).serialize(), ("127.0.0.1", pa))
            b.sendto(RtpPacket(0, i, i * 160, 2, bytes(160)).serialize(), ("127.0.0.1", pb))
        async with asyncio.timeout(5):
            got_b = [await loop.sock_recv(b, 2048) for _ in range(20)]
            got_a = [await loop.sock_recv(a, 2048) for _ in range(20)]
        assert {RtpPacket.parse(p).ssrc for p in got_b} == {1}
        assert {RtpPacket.parse(p).ssrc for p in got_a} == {2}
        q = await rtpengine.query("rte-1")
        assert q["result"] == "ok" and set(q["tags"]) >= {"ft", "tt"}
        assert q["totals"]["RTP"]["packets"] >= 40
        assert await rtpengine.delete("rte-1", "ft") is not None
        # errors come back as RelayError with rtpengine's reason
        with pytest.raises(RelayError):
            await rtpengine.answer("no-such-call", "x", "y", sdp(1))
        with pytest.raises(RelayError) as exc:
            await rtpengine.offer("rte-2", "ft", b"v=0\r\nthis is not SDP\r\n")
        assert exc.value.hint[0] == 488, exc.value
    finally:
        a.close()
        b.close()
