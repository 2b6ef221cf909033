"""BUNDLE and the relay's own RTCP across the WebRTC bridge, end to end (issue 12): aiortc
sends audio and video on one 5-tuple to a plain SIP phone with an audio and a video
``m=`` line on ports of their own, and back; and what the relay's sender reports look like
to aiortc. Built on :mod:`helpers.webrtc_call` and run the same way, inside a network
namespace (``python -c "from helpers.webrtc_bundle import main; main(name, tmp)"``).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from av import VideoFrame

from helpers.sipserver import running_server
from helpers.ua import in_dialog
from helpers.webrtc_call import (
    HOST,
    SDP_TYPE,
    USERS,
    Browser,
    Phone,
    Routing,
    _invite_with_auth,
    _report,
    _until,
    sipedge_routing,
)
from sipedge.sip import message as m


def vp8_payloads(frames: int = 30) -> list[list[bytes]]:
    """Real VP8 (libvpx through aiortc's encoder, RFC 7741 payloads): a moving grey
    picture, one list of RTP payloads per frame, the first a key frame."""
    from aiortc.codecs.vpx import Vp8Encoder

    encoder = Vp8Encoder()
    out: list[list[bytes]] = []
    for n in range(frames):
        frame = VideoFrame(width=160, height=120, format="yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(n * 8) & 0xFF]) * plane.buffer_size)
        frame.pts, frame.time_base = n * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=n == 0)
        out.append(payloads)
    return out


class VideoPhone(Phone):
    """A plain SIP phone with a camera: :class:`Phone`'s PCMU audio on one port and VP8
    video on a port of its own (RTP/AVP, no BUNDLE, no rtcp-mux), counting the video RTP
    it receives there."""

    def __init__(self, server: Any, address: str | None = None) -> None:
        super().__init__(server, address)
        self.video = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.video.bind((self.address, 0))
        self.video.settimeout(0.1)
        self.video_port = self.video.getsockname()[1]
        self.video_pt = 96
        self.video_dest: tuple[str, int] | None = None
        self.video_received = 0
        self.video_payload_types: set[int] = set()
        self.video_on_audio_port = 0
        self._frames = vp8_payloads()
        self._video_thread = threading.Thread(target=self._run_video, daemon=True)

    def sdp(self, session: int = 1, refuse_video: bool = False) -> bytes:
        return super().sdp(session) + (
            f"m=video {self.video_port} RTP/AVP {self.video_pt}\r\na=rtpmap:{self.video_pt} VP8/90000\r\n"
            "a=sendrecv\r\n").encode()

    def answer_to(self, offer: bytes) -> bytes:
        """Its answer to a browser's offer: PCMU, and VP8 with the offer's payload type."""
        found = re.search(rb"^a=rtpmap:(\d+) VP8/90000", offer, re.M)
        assert found is not None, offer
        self.video_pt = int(found.group(1))
        return self.sdp()

    def start(self, remote_sdp: bytes) -> None:
        port = re.search(r"^m=video (\d+)", remote_sdp.decode(), re.M)
        assert port is not None, remote_sdp
        super().start(remote_sdp)
        assert self.dest is not None
        self.video_dest = (self.dest[0], int(port.group(1)))
        self._video_thread.start()

    def _run_video(self) -> None:
        """30 frames/s round the encoded clip (for a minute at most), and in between count
        what comes back."""
        seq, start = 1, time.monotonic()
        for n in range(60 * 30):
            if self._stop.is_set() or self.video_dest is None:
                return
            payloads = self._frames[n % len(self._frames)]
            for k, payload in enumerate(payloads):
                marker = 0x80 if k == len(payloads) - 1 else 0
                head = struct.pack("!BBHII", 0x80, marker | self.video_pt, seq & 0xFFFF, n * 3000, 0x71DE0)
                self.video.sendto(head + payload, self.video_dest)
                seq += 1
            self._receive_video(until=start + (n + 1) / 30)

    def _receive_video(self, until: float) -> None:
        while (left := until - time.monotonic()) > 0:
            self.video.settimeout(left)
            try:
                data, _ = self.video.recvfrom(4096)
            except (TimeoutError, OSError):
                return
            if len(data) > 12 and data[0] >> 6 == 2:
                self.video_received += 1
                self.video_payload_types.add(data[1] & 0x7F)

    def stop(self) -> None:
        super().stop()
        if self._video_thread.is_alive():
            self._video_thread.join(5)
        self.video.close()


async def _inbound_packets(browser: Browser) -> dict[str, int]:
    """aiortc's getStats: RTP packets received per receiver kind ("audio", "video")."""
    out: dict[str, int] = {}
    for receiver in browser.pc.getReceivers():
        for r in (await receiver.getStats()).values():
            if getattr(r, "type", "") == "inbound-rtp":
                out[r.kind] = out.get(r.kind, 0) + r.packetsReceived
    return out


async def _remote_outbound(browser: Browser) -> list[dict[str, Any]]:
    """aiortc's getStats: the remote-outbound-rtp entries (what our sender reports said)."""
    found: list[dict[str, Any]] = []
    for receiver in browser.pc.getReceivers():
        for r in (await receiver.getStats()).values():
            if getattr(r, "type", "") == "remote-outbound-rtp":
                found.append({"kind": r.kind, "packets": r.packetsSent, "bytes": r.bytesSent,
                              "wall_offset": r.remoteTimestamp.timestamp() - time.time()})
    return found


async def _registered(route: Routing, video: bool, phone: Phone) -> Browser:
    browser = Browser(route.proxy, video=video)
    assert (await asyncio.to_thread(browser.ua.register)).status == 200
    assert (await asyncio.to_thread(phone.ua.register)).status == 200
    return browser


async def _both_ways(browser: Browser, phone: VideoPhone, route: Routing) -> dict[str, Any]:
    """Audio and video both ways, then what each end counted."""
    await _until(lambda: phone.voiced > 50 and browser.voiced > 25 and phone.video_received > 50, 15)
    await asyncio.sleep(1)
    return {"browser_inbound": await _inbound_packets(browser), "phone_video_received": phone.video_received,
            "phone_video_payload_types": sorted(phone.video_payload_types), "phone_video_pt": phone.video_pt,
            **_report(browser, phone, route)}


async def browser_calls(route: Routing, phone: Phone, video: bool) -> dict[str, Any]:
    """aiortc calls ``phone`` (with ``video``: a :class:`VideoPhone`, and aiortc offers
    audio + video in one BUNDLE group, which the phone answers with two ports; without,
    the phone sends no RTCP and the relay's sender reports are looked at)."""
    browser = await _registered(route, video, phone)
    out: dict[str, Any] = {}
    try:
        offer = await browser.offer()
        invite_task = asyncio.create_task(asyncio.to_thread(_invite_with_auth, browser.ua, route.to_phone(phone), offer))
        inv = await asyncio.to_thread(phone.ua.wait, "INVITE", 10)
        assert isinstance(inv, m.Request)
        out["offer_to_phone"] = inv.body.decode()
        answer = phone.answer_to(inv.body) if isinstance(phone, VideoPhone) else phone.sdp()
        phone.ua.answer(inv, 200, body=answer, headers=SDP_TYPE)
        _, ok = await invite_task
        out["status"], out["answer_to_browser"] = ok.status, ok.body.decode()
        routes = list(reversed(ok.get_all("record-route")))
        browser.ua.send(in_dialog(browser.ua, "ACK", ok, routes, cseq=ok.cseq.number))
        phone.start(inv.body)
        await browser.accept(ok.body)
        if isinstance(phone, VideoPhone):
            out.update(await _both_ways(browser, phone, route))
        else:
            await _until(lambda: phone.voiced > 50 and browser.voiced > 25, 15)
            await asyncio.sleep(11)  # two RTCP intervals
            out["remote_outbound"] = await _remote_outbound(browser)
            out.update(_report(browser, phone, route))
    finally:
        await browser.pc.close()
        phone.stop()
    return out


async def video_phone_calls_browser(route: Routing) -> dict[str, Any]:
    """The phone offers audio and video on two ports; the browser gets one BUNDLE group."""
    phone = VideoPhone(route.proxy)
    browser = await _registered(route, True, phone)
    out: dict[str, Any] = {}
    try:
        invite_task = asyncio.create_task(asyncio.to_thread(
            _invite_with_auth, phone.ua, route.to_browser(browser), phone.sdp()))
        inv = await asyncio.to_thread(browser.ua.wait, "INVITE", 10)
        assert isinstance(inv, m.Request)
        out["offer_to_browser"] = inv.body.decode()
        browser.ua.answer(inv, 200, body=await browser.answer(inv.body), headers=SDP_TYPE)
        _, ok = await invite_task
        out["status"], out["answer_to_phone"] = ok.status, ok.body.decode()
        routes = list(reversed(ok.get_all("record-route")))
        phone.ua.send(in_dialog(phone.ua, "ACK", ok, routes, cseq=ok.cseq.number))
        phone.start(ok.body)
        out.update(await _both_ways(browser, phone, route))
    finally:
        await browser.pc.close()
        phone.stop()
    return out


NO_RTCP_ROUTING = '''"""The default routing, with the relay's own RTCP turned off (ng generate-RTCP=off)."""
from dataclasses import replace

from sipedge.media.relay import Flags
from sipedge.proxy import default_routing


class NoGeneratedRtcp:
    """The request's context, except that the relay's flags say generate-RTCP=off."""

    def __init__(self, ctx):
        object.__setattr__(self, "_ctx", ctx)

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def __setattr__(self, name, value):
        setattr(self._ctx, name, value)

    def rtpengine_manage(self, flags=None):
        return self._ctx.rtpengine_manage(replace(flags or Flags(), generate_rtcp="off"))


def request_route(ctx):
    default_routing.request_route(NoGeneratedRtcp(ctx))


reply_route = default_routing.reply_route
'''

SCENARIOS: dict[str, Callable[[Routing], Awaitable[dict[str, Any]]]] = {
    "browser-video-calls-video-phone": lambda route: browser_calls(route, VideoPhone(route.proxy), video=True),
    "video-phone-calls-browser": video_phone_calls_browser,
    "relay-sends-sender-reports": lambda route: browser_calls(route, Phone(route.proxy), video=False),
    "routing-turns-generated-rtcp-off": lambda route: browser_calls(route, Phone(route.proxy), video=False),
}


def main(scenario: str, tmp: str) -> None:
    extra = f'\n[media]\nlisten = "{HOST}"\n'
    if scenario == "routing-turns-generated-rtcp-off":
        module = Path(tmp) / "no_rtcp_routing.py"
        Path(tmp).mkdir(parents=True, exist_ok=True)
        module.write_text(NO_RTCP_ROUTING)
        extra = f'\n[routing]\nmodule = "{module}"\n' + extra

    async def run() -> dict[str, Any]:
        with running_server(Path(tmp), host=HOST, users=USERS, log_level=os.environ.get("SIPEDGE_LOG", "info"),
                            web='metrics_allow = ["192.0.2.0/24"]', extra=extra) as server:
            try:
                return await SCENARIOS[scenario](sipedge_routing(server))
            finally:
                sys.stderr.write(server.log_text()[-6000:])

    print(json.dumps(asyncio.run(run())), flush=True)
