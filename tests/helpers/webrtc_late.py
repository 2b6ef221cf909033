"""Late offers across the bridge (issue 12): an INVITE without SDP (RFC 3261 §13.2.1)
between aiortc over a WebSocket and a plain UDP phone, through ``sipedge serve`` with
its default routing. The callee's offer comes in its 200 and is converted for the caller
(the browser's DTLS-SRTP + ICE to RTP/AVP, or the phone's RTP/AVP to DTLS-SRTP + ICE);
the caller's answer comes in the ACK and is converted back.

    python -c "from helpers.webrtc_late import main; main('phone-late-offer-to-browser', '/tmp/x')"
"""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import webrtc_call
from helpers.ua import UA, in_dialog
from helpers.webrtc_call import (
    SDP_TYPE,
    Browser,
    Phone,
    Routing,
    _invite_with_auth,
    _report,
    _until,
)
from helpers.webrtc_fork import _hang_up
from sipedge.sip import message as m


def _ack_with(ua: UA, ok: m.Response, routes: list[str], answer: bytes) -> m.Request:
    ack = in_dialog(ua, "ACK", ok, routes, cseq=ok.cseq.number)
    for k, v in SDP_TYPE.items():
        ack.add(k, v)
    ack.body = answer
    return ack


async def late_offer(route: Routing, caller_is_phone: bool) -> dict[str, Any]:
    """The caller's INVITE has no SDP; the callee's 200 carries its offer (aiortc's, or
    the phone's), the caller's ACK the answer."""
    browser, phone = Browser(route.proxy), Phone(route.proxy)
    caller, callee = (phone.ua, browser.ua) if caller_is_phone else (browser.ua, phone.ua)
    uri = route.to_browser(browser) if caller_is_phone else route.to_phone(phone)
    out: dict[str, Any] = {}
    try:
        assert (await asyncio.to_thread(browser.ua.register)).status == 200
        assert (await asyncio.to_thread(phone.ua.register)).status == 200
        invite_task = asyncio.create_task(asyncio.to_thread(_invite_with_auth, caller, uri, b""))
        inv = await asyncio.to_thread(callee.wait, "INVITE", 10)
        assert isinstance(inv, m.Request)
        out["invite_body_at_callee"] = inv.body.decode()
        callee.answer(inv, 200, body=await browser.offer() if caller_is_phone else phone.sdp(), headers=SDP_TYPE)
        _, ok = await invite_task
        out["status"] = ok.status
        out["offer_to_caller"] = ok.body.decode()
        routes = list(reversed(ok.get_all("record-route")))
        answer = phone.sdp() if caller_is_phone else await browser.answer(ok.body)
        caller.send(_ack_with(caller, ok, routes, answer))
        ack = await asyncio.to_thread(callee.wait, "ACK", 10)
        assert isinstance(ack, m.Request)
        out["answer_to_callee"] = ack.body.decode()
        if caller_is_phone:
            await browser.accept(ack.body)
        phone.start(ok.body if caller_is_phone else ack.body)
        await _until(lambda: phone.voiced > 50 and browser.voiced > 25, 15)
        out.update(_report(browser, phone, route))
        out["bye"] = await _hang_up(caller, callee, ok, routes)
    finally:
        await browser.pc.close()
        phone.stop()
    out["metrics_after"] = route.stats()
    return out


SCENARIOS = {
    "phone-late-offer-to-browser": lambda route: late_offer(route, caller_is_phone=True),
    "browser-late-offer-to-phone": lambda route: late_offer(route, caller_is_phone=False),
}


def main(scenario: str, tmp: str) -> None:
    webrtc_call.SCENARIOS.update(SCENARIOS)
    webrtc_call.main(scenario, tmp)
