"""Hostile input to a bridged call in progress, through ``sipedge serve`` (issue 12,
"Bad input"): while aiortc talks to a plain UDP phone, SRTP with bad authentication tags
and replayed SRTP come from aiortc's own (latched) ICE address; a second caller offers
``UDP/TLS/RTP/SAVPF`` without ``a=fingerprint``, and an SDES phone offers a key of the
wrong length. The result says what each got, the relay's counters before and after,
and how much audio the call carried after each.

    python -c "from helpers.webrtc_bad import main; main('hostile-input-during-a-call', '/tmp/x')"
"""

from __future__ import annotations

import asyncio
import base64
import re
import struct
from typing import Any

from aiortc import RTCPeerConnection

from helpers import webrtc_call
from helpers.ua import UA
from helpers.webrtc_call import (
    USERS,
    Browser,
    Phone,
    Routing,
    _invite_with_auth,
    _until,
    browser_calls_phone,
)

BAD_TAGS = 30
REPLAYS = 30


def _ice_transport(browser: Browser) -> Any:
    sender = browser.pc.getTransceivers()[0].sender
    return sender.transport.transport  # RTCDtlsTransport -> RTCIceTransport


async def _captured_srtp(browser: Browser, count: int) -> list[bytes]:
    """The next ``count`` SRTP packets aiortc sends (its ICE transport's send, wrapped)."""
    ice = _ice_transport(browser)
    send, seen = ice._send, []

    async def recording(data: bytes) -> None:
        if len(data) > 12 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223 and len(seen) < count:
            seen.append(bytes(data))
        await send(data)

    ice._send = recording
    try:
        await _until(lambda: len(seen) >= count, 5)
    finally:
        ice._send = send
    return seen


async def _from_the_browser(browser: Browser, datagrams: list[bytes]) -> None:
    send = _ice_transport(browser)._send  # out of the latched 5-tuple, as aiortc's own
    for d in datagrams:
        await send(d)
        await asyncio.sleep(0.002)


def _tampered(packet: bytes, shift: int) -> bytes:
    """The packet with a sequence number it never had: its tag no longer authenticates it."""
    seq = (struct.unpack_from("!H", packet, 2)[0] + shift) & 0xFFFF
    return packet[:2] + struct.pack("!H", seq) + packet[4:]


def _refused_offer(server: webrtc_call.SipProxy, transport: str, user: str, uri: str, sdp: bytes) -> dict[str, Any]:
    ua = UA(transport, (server.host, server.ws if transport == "ws" else server.udp), user, server.host,
            USERS[user], host=server.host)
    try:
        _, final = _invite_with_auth(ua, uri, sdp)
        return {"status": final.status, "reason": final.reason}
    finally:
        ua.close()


async def _another_webrtc_offer() -> bytes:
    """A real WebRTC offer (aiortc's, audio only) from a peer connection of its own."""
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp.encode()
    finally:
        await pc.close()


def _sdes_offer_with_a_short_key(host: str) -> bytes:
    key = base64.b64encode(bytes(range(20))).decode()  # 20 bytes, not 30
    return (f"v=0\r\no=bob 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            "m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\na=sendrecv\r\n").encode()


async def hostile_input_during_a_call(route: Routing) -> dict[str, Any]:
    server = route.proxy

    async def during(browser: Browser, phone: Phone, out: dict[str, Any]) -> None:
        out["before"] = route.stats()
        srtp = await _captured_srtp(browser, REPLAYS)
        await _from_the_browser(browser, [_tampered(p, 1000) for p in srtp[:BAD_TAGS]])
        await _from_the_browser(browser, srtp)  # every one of them again: replays
        heard = phone.voiced
        await _until(lambda: phone.voiced > heard + 50, 10)
        out["voiced_after_srtp"] = phone.voiced - heard
        out["after_srtp"] = route.stats()

        bare = re.sub(rb"a=fingerprint:[^\r]*\r\n", b"", await _another_webrtc_offer())
        out["no_fingerprint"] = await asyncio.to_thread(
            _refused_offer, server, "ws", "alice", f"sip:bob@{server.host}", bare)
        out["short_sdes_key"] = await asyncio.to_thread(
            _refused_offer, server, "udp", "bob", f"sip:alice@{server.host}", _sdes_offer_with_a_short_key(server.host))
        heard = phone.voiced
        await _until(lambda: phone.voiced > heard + 50 and browser.voiced > 25, 10)
        out["voiced_after_offers"] = phone.voiced - heard
        out["after_offers"] = route.stats()

    return await browser_calls_phone(route, during=during)


SCENARIOS = {"hostile-input-during-a-call": hostile_input_during_a_call}


def main(scenario: str, tmp: str) -> None:
    webrtc_call.SCENARIOS.update(SCENARIOS)
    webrtc_call.main(scenario, tmp)
