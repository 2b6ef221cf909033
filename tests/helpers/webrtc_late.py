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
from sipedge.sip import message as m


def _ack_with(ua: UA, ok: m.Response, routes: list[str], answer: bytes) -> m.Request:
    ack = in_dialog(ua, "ACK", ok, routes, cseq=ok.cseq.number)
    for k, v in SDP_TYPE.items():
        ack.add(k, v)
    ack.body = answer
    return ack


async def _bye(caller: UA, callee: UA, ok: m.Response, routes: list[str]) -> int:
    caller.send(in_dialog(caller, "BYE", ok, routes))
    got = await asyncio.to_thread(callee.wait, "BYE", 5)
    assert isinstance(got, m.Request)
    callee.answer(got, 200)
    return (await asyncio.to_thread(caller.expect_final)).status


async def phone_late_offer_to_browser(route: Routing) -> dict[str, Any]:
    """The phone's INVITE has no SDP; aiortc's 200 carries its offer, the phone's ACK the answer."""
    browser, phone = Browser(route.proxy), Phone(route.proxy)
    out: dict[str, Any] = {}
    try:
        assert (await asyncio.to_thread(browser.ua.register)).status == 200
        assert (await asyncio.to_thread(phone.ua.register)).status == 200
        invite_task = asyncio.create_task(asyncio.to_thread(
            _invite_with_auth, phone.ua, route.to_browser(browser), b""))
        inv = await asyncio.to_thread(browser.ua.wait, "INVITE", 10)
        assert isinstance(inv, m.Request)
        out["invite_body_at_browser"] = inv.body.decode()
        out["browser_offer"] = (await browser.offer()).decode()
        browser.ua.answer(inv, 200, body=out["browser_offer"].encode(), headers=SDP_TYPE)
        _, ok = await invite_task
        out["status"] = ok.status
        out["offer_to_phone"] = ok.body.decode()
        routes = list(reversed(ok.get_all("record-route")))
        phone.ua.send(_ack_with(phone.ua, ok, routes, phone.sdp()))
        ack = await asyncio.to_thread(browser.ua.wait, "ACK", 10)
        assert isinstance(ack, m.Request)
        out["answer_to_browser"] = ack.body.decode()
        await browser.accept(ack.body)
        phone.start(ok.body)
        await _until(lambda: phone.voiced > 50 and browser.voiced > 25, 15)
        out.update(_report(browser, phone, route))
        out["bye"] = await _bye(phone.ua, browser.ua, ok, routes)
    finally:
        await browser.pc.close()
        phone.stop()
    out["metrics_after"] = route.stats()
    return out


async def browser_late_offer_to_phone(route: Routing) -> dict[str, Any]:
    """aiortc's INVITE has no SDP; the phone's 200 carries its offer, aiortc's ACK the answer."""
    browser, phone = Browser(route.proxy), Phone(route.proxy)
    out: dict[str, Any] = {}
    try:
        assert (await asyncio.to_thread(browser.ua.register)).status == 200
        assert (await asyncio.to_thread(phone.ua.register)).status == 200
        invite_task = asyncio.create_task(asyncio.to_thread(
            _invite_with_auth, browser.ua, route.to_phone(phone), b""))
        inv = await asyncio.to_thread(phone.ua.wait, "INVITE", 10)
        assert isinstance(inv, m.Request)
        out["invite_body_at_phone"] = inv.body.decode()
        phone.ua.answer(inv, 200, body=phone.sdp(), headers=SDP_TYPE)
        _, ok = await invite_task
        out["status"] = ok.status
        out["offer_to_browser"] = ok.body.decode()
        routes = list(reversed(ok.get_all("record-route")))
        answer = await browser.answer(ok.body)
        browser.ua.send(_ack_with(browser.ua, ok, routes, answer))
        ack = await asyncio.to_thread(phone.ua.wait, "ACK", 10)
        assert isinstance(ack, m.Request)
        out["answer_to_phone"] = ack.body.decode()
        phone.start(ack.body)
        await _until(lambda: phone.voiced > 50 and browser.voiced > 25, 15)
        out.update(_report(browser, phone, route))
        out["bye"] = await _bye(browser.ua, phone.ua, ok, routes)
    finally:
        await browser.pc.close()
        phone.stop()
    out["metrics_after"] = route.stats()
    return out


SCENARIOS = {
    "phone-late-offer-to-browser": phone_late_offer_to_browser,
    "browser-late-offer-to-phone": browser_late_offer_to_phone,
}


def main(scenario: str, tmp: str) -> None:
    webrtc_call.SCENARIOS.update(SCENARIOS)
    webrtc_call.main(scenario, tmp)
