"""Transcoded calls through ``sipedge serve`` (issue 12, "Codecs"): an aiortc client that
offers and accepts Opus only (``RTCRtpTransceiver.setCodecPreferences``) and a PCMU-only
plain phone that decodes what it hears. With the default routing, the relay adds PCMU
and PCMA to the browser's offer and Opus to the phone's, and transcodes when the other
side picks the added codec. Both sides measure the audio they decode: its loudness, and
on the phone its pitch (the browser's 440 Hz tone).

    python -c "from helpers.webrtc_transcode import main; main('opus-browser-calls-pcmu-phone', '/tmp/x')"
"""

from __future__ import annotations

import array
from typing import Any

from aiortc import RTCRtpSender

from helpers import webrtc_call
from helpers.webrtc_call import (
    Browser,
    Phone,
    Routing,
    SipProxy,
    browser_calls_phone,
    phone_calls_browser,
)


def _linear(byte: int) -> int:
    """G.711 mu-law to a linear sample (ITU-T G.711's expansion)."""
    u = ~byte & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - magnitude) if u & 0x80 else (magnitude - 0x84)


ULAW = [_linear(b) for b in range(256)]


class OpusOnlyBrowser(Browser):
    """aiortc restricted to Opus, as a WebRTC client built without G.711 would be."""

    def __init__(self, server: SipProxy) -> None:
        super().__init__(server)
        opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        for t in self.pc.getTransceivers():
            t.setCodecPreferences(opus)


class DecodingPhone(Phone):
    """The PCMU phone, decoding every packet it hears (after the first second)."""

    def __init__(self, server: SipProxy) -> None:
        super().__init__(server)
        self.pcm = array.array("h")

    def heard(self, packet: bytes) -> None:
        if packet[1] & 0x7F == 0 and self.received > 50 and len(self.pcm) < 8000 * 10:
            self.pcm.extend(ULAW[b] for b in packet[12:])

    def energy(self) -> float:
        return sum(abs(x) for x in self.pcm) / max(1, len(self.pcm))

    def pitch(self) -> float:
        pcm = self.pcm
        crossings = sum(1 for i in range(1, len(pcm)) if (pcm[i - 1] < 0) != (pcm[i] < 0))
        return crossings / 2 / max(1e-9, len(pcm) / 8000)


async def _transcoded(route: Routing, caller: str) -> dict[str, Any]:
    browser, phone = OpusOnlyBrowser(route.proxy), DecodingPhone(route.proxy)
    if caller == "browser":
        out = await browser_calls_phone(route, browser=browser, phone=phone)
    else:
        out = await phone_calls_browser(route, browser=browser, phone=phone)
    out.update(phone_energy=phone.energy(), phone_pitch=phone.pitch(), phone_samples=len(phone.pcm),
               browser_loudest=browser.loudest)
    return out


SCENARIOS = {
    "opus-browser-calls-pcmu-phone": lambda route: _transcoded(route, "browser"),
    "pcmu-phone-calls-opus-browser": lambda route: _transcoded(route, "phone"),
}


KAMAILIO_CODEC_FLAGS = "codec-transcode-PCMU codec-transcode-PCMA codec-transcode-opus"
"""What a Kamailio WebRTC script adds to its rtpengine_manage() flags so that either side
may pick a codec the other lacks (sipedge adds only those missing from each offer)."""


def main(scenario: str, tmp: str) -> None:
    """Through ``sipedge serve`` with its own relay."""
    webrtc_call.SCENARIOS.update(SCENARIOS)
    webrtc_call.main(scenario, tmp)


def main_kamailio(scenario: str, tmp: str) -> None:
    """Kamailio's rtpengine module driving sipedge's relay with the codec flags too."""
    from helpers import webrtc_interop

    webrtc_call.SCENARIOS.update(SCENARIOS)
    webrtc_interop.main_kamailio(scenario, tmp, KAMAILIO_CODEC_FLAGS)


def main_rtpengine(scenario: str, tmp: str) -> None:
    """``sipedge serve`` with ``media.remote`` at rtpengine-daemon, which transcodes."""
    from helpers import webrtc_interop

    webrtc_call.SCENARIOS.update(SCENARIOS)
    webrtc_interop.main_rtpengine(scenario, tmp)
