"""The DTLS-SRTP bridge inside the relay core, with real associations on both ends (the
"browser" is a second ``DtlsContext``): the relay in the client role that ``DTLS=active``
asks for sends its ClientHello once ICE has latched the browser, completes the handshake,
and turns the browser's SRTP into the phone's RTP and back."""

from __future__ import annotations

import random
import re
import struct
from pathlib import Path

from helpers.ice_check import binding_request
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig
from sipedge.media.srtp import SrtpTransform
from sipedge.server.dtls import DtlsContext

BROWSER = ("203.0.113.20", 50000)
PHONE = ("198.51.100.9", 4000)


def browser_offer(fingerprint: str) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 203.0.113.20\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "m=audio 50000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 203.0.113.20\r\na=mid:0\r\n"
        "a=ice-ufrag:brow\r\na=ice-pwd:browserpasswordbrowser00\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\na=rtcp-mux\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
    ).encode()


PHONE_ANSWER = (
    b"v=0\r\no=p 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xB0B) + bytes([seq & 0xFF]) * 160


def test_dtls_active_makes_the_relay_the_client_after_ice(tmp_path: Path) -> None:
    relay_ctx, browser_ctx = DtlsContext(tmp_path / "relay"), DtlsContext(tmp_path / "browser")
    r = MediaRelay(RelayConfig(advertised_address="192.0.2.1"), RangePortAllocator(40000, 40099, random.Random(3)),
                   dtls=relay_ctx)
    flags = Flags(transport_protocol="RTP/AVP", ice="remove", rtcp_mux=("demux",), dtls="active")
    to_phone = r.offer("c", "browser", browser_offer(browser_ctx.fingerprint.value), 0.0, flags)
    to_browser = r.answer("c", "browser", "phone", PHONE_ANSWER, 0.1, flags).decode()
    assert "a=setup:active" in to_browser and f"a=fingerprint:{relay_ctx.fingerprint}" in to_browser
    browser_port = int(re.search(r"^m=audio (\d+)", to_browser, re.M).group(1))  # type: ignore[union-attr]
    phone_port = int(re.search(rb"^m=audio (\d+)", to_phone, re.M).group(1))  # type: ignore[union-attr]
    ufrag = re.search(r"a=ice-ufrag:(\S+)", to_browser).group(1)  # type: ignore[union-attr]
    pwd = re.search(r"a=ice-pwd:(\S+)", to_browser).group(1)  # type: ignore[union-attr]
    assert r.output() == []  # no ClientHello before ICE has found the browser

    assert r.receive(binding_request(ufrag, pwd), browser_port, BROWSER, 0.2) is not None
    browser = browser_ctx("server", [relay_ctx.fingerprint])
    for _ in range(6):  # shuttle the flights: relay (client) <-> browser (server)
        out = r.output()
        assert all(port == browser_port and dest == BROWSER for port, dest, _ in out)
        for _, _, datagram in out:
            for back in browser.receive(datagram, 0.3):
                assert r.receive(back, browser_port, BROWSER, 0.3) is None
        if browser.keys is not None and r.stats()["media_dtls_established"]:
            break
    assert browser.keys is not None and r.stats()["media_dtls_established"] == 1

    srtp = SrtpTransform(browser.keys)
    wire = srtp.protect(rtp(1), False)
    assert wire is not None
    assert r.receive(wire, browser_port, BROWSER, 0.4) == (phone_port, PHONE, rtp(1))  # decrypted
    sent = r.receive(rtp(7), phone_port, PHONE, 0.5)
    assert sent is not None and sent[:2] == (browser_port, BROWSER)
    assert srtp.unprotect(sent[2], False) == rtp(7)  # encrypted for the browser
