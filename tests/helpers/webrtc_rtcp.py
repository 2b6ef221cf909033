"""The relay's own RTCP towards a plain phone (issue 12, "RTCP"): aiortc calls a UDP
phone that listens on its RTCP port (RTP port + 1, RFC 3550 §11) through ``sipedge
serve`` with ``generate-RTCP=on`` (tests/helpers/generate_rtcp_routing.py); the phone
records the RTCP packets it receives there.

    python -c "from helpers.webrtc_rtcp import main; main('relay-reports-rtcp-to-the-phone', '/tmp/x')"
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from helpers import webrtc_call
from helpers.webrtc_call import Phone, Routing, SipProxy, browser_calls_phone
from sipedge.errors import ParseError
from sipedge.media.rtcp import RtcpPacket

ROUTING = Path(__file__).resolve().parent / "generate_rtcp_routing.py"


class RtcpPhone(Phone):
    """The plain phone, with a socket on its RTCP port recording each compound RTCP
    packet heard there as its parts' (type, sender SSRC)."""

    def __init__(self, server: SipProxy) -> None:
        super().__init__(server)
        for _ in range(20):  # bounded: find an RTP port whose successor is free
            self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.rtcp.bind((self.address, self.port + 1))
                break
            except OSError:
                self.rtcp.close()
                self.rtp.close()
                self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.rtp.bind((self.address, 0))
                self.rtp.settimeout(0.1)
                self.port = self.rtp.getsockname()[1]
        self.rtcp.settimeout(0.1)
        self.rtcp_heard: list[list[tuple[int, int]]] = []
        self._rtcp_thread = threading.Thread(target=self._listen_rtcp, daemon=True)
        self._rtcp_thread.start()

    def _listen_rtcp(self) -> None:
        while not self._stop.is_set() and len(self.rtcp_heard) < 100:
            try:
                data = self.rtcp.recv(2048)
            except (TimeoutError, OSError):
                continue
            try:
                parts = RtcpPacket.parse_compound(data)
            except ParseError:
                continue
            self.rtcp_heard.append([(p.packet_type, p.ssrc) for p in parts])

    def stop(self) -> None:
        super().stop()
        self._rtcp_thread.join(5)
        self.rtcp.close()


async def relay_reports_to_the_phone(route: Routing) -> dict[str, Any]:
    phone = RtcpPhone(route.proxy)
    out = await browser_calls_phone(route, "rtcp", phone=phone)  # ("rtcp": 6 s more of the call)
    out["phone_rtcp"] = phone.rtcp_heard
    return out


SCENARIOS = {"relay-reports-rtcp-to-the-phone": relay_reports_to_the_phone}


def main(scenario: str, tmp: str) -> None:
    webrtc_call.SCENARIOS.update(SCENARIOS)
    webrtc_call.main(scenario, tmp, routing=ROUTING)
