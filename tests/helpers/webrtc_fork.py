"""A call forked to a browser **and** a plain phone of the same user (bob registers aiortc
over a WebSocket and a UDP phone) through a real ``sipedge serve``: per-branch media offers
(rtpengine's ``via-branch``). alice (a plain phone, or a browser) calls bob; both branches
ring, each with the offer it can take; one answers, the other gets CANCEL; audio flows
both ways; after the BYE the relay holds no call and no port. Run in the loopback-only
namespace of :mod:`helpers.webrtc_call` (whose endpoints it uses):

    python -c "from helpers.webrtc_fork import main; main('phone-calls-fork-phone-answers', '/tmp/x')"
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from helpers import webrtc_call
from helpers.ua import UA, in_dialog
from helpers.webrtc_call import (
    SDP_TYPE,
    Browser,
    Phone,
    Routing,
    _invite_with_auth,
    _send_authorized_invite,
    _until,
)
from sipedge.sip import message as m


def _ring(ua: UA) -> m.Request:
    """Wait for the INVITE of ``ua``'s branch and answer 180 (a CANCEL needs a provisional)."""
    inv = ua.wait("INVITE", 10)
    assert isinstance(inv, m.Request)
    ua.answer(inv, 180)
    return inv


def _cancelled(ua: UA, inv: m.Request) -> bool:
    """The losing branch: its CANCEL is answered 200, its INVITE 487."""
    cancel = ua.wait("CANCEL", 10)
    assert isinstance(cancel, m.Request)
    ua.answer(cancel, 200)
    ua.answer(inv, 487)
    return cancel.cseq.number == inv.cseq.number


async def _hang_up(caller: UA, callee: UA, ok: m.Response, routes: list[str]) -> int:
    """The caller's BYE, answered 200 by the callee; the status the caller gets."""
    caller.send(in_dialog(caller, "BYE", ok, routes))
    bye = await asyncio.to_thread(callee.wait, "BYE", 5)
    assert isinstance(bye, m.Request)
    callee.answer(bye, 200)
    return (await asyncio.to_thread(caller.expect_final)).status


async def forked_call(route: Routing, caller_is_browser: bool, browser_answers: bool) -> dict[str, Any]:
    server = route.proxy
    bob_browser, bob_phone = Browser(server, user="bob"), Phone(server, user="bob")
    alice: Browser | Phone = Browser(server) if caller_is_browser else Phone(server, user="alice")
    out: dict[str, Any] = {}
    try:
        for ua in (bob_browser.ua, bob_phone.ua, alice.ua):
            assert (await asyncio.to_thread(ua.register)).status == 200
        offer = await alice.offer() if isinstance(alice, Browser) else alice.sdp()
        invite_task = asyncio.create_task(asyncio.to_thread(_invite_with_auth, alice.ua, f"sip:bob@{server.host}", offer))
        to_browser, to_phone = await asyncio.gather(asyncio.to_thread(_ring, bob_browser.ua),
                                                    asyncio.to_thread(_ring, bob_phone.ua))
        out["offer_to_browser"], out["offer_to_phone"] = to_browser.body.decode(), to_phone.body.decode()
        out["branches"] = sorted({to_browser.top_via.branch or "", to_phone.top_via.branch or ""})
        out["ringing"] = route.stats()
        if browser_answers:
            winner, loser, loser_inv = bob_browser.ua, bob_phone.ua, to_phone
            bob_browser.ua.answer(to_browser, 200, body=await bob_browser.answer(to_browser.body), headers=SDP_TYPE)
        else:
            winner, loser, loser_inv = bob_phone.ua, bob_browser.ua, to_browser
            bob_phone.ua.answer(to_phone, 200, body=bob_phone.sdp(), headers=SDP_TYPE)
            bob_phone.start(to_phone.body)
        out["loser_branch"] = loser_inv.top_via.branch
        out["loser_cancelled"] = await asyncio.to_thread(_cancelled, loser, loser_inv)
        _, ok = await invite_task
        out["status"] = ok.status
        out["answer_to_caller"] = ok.body.decode()
        routes = list(reversed(ok.get_all("record-route")))
        alice.ua.send(in_dialog(alice.ua, "ACK", ok, routes, cseq=ok.cseq.number))
        if isinstance(alice, Browser):
            await alice.accept(ok.body)
        else:
            alice.start(ok.body)
        callee: Browser | Phone = bob_browser if browser_answers else bob_phone
        await _until(lambda: alice.voiced > 40 and callee.voiced > 25, 15)
        out["caller_voiced"], out["callee_voiced"] = alice.voiced, callee.voiced
        for name, end in (("caller", alice), ("callee", callee)):
            if isinstance(end, Browser):
                out[f"{name}_connection"] = end.pc.connectionState
        out["talking"] = route.stats()
        out["bye"] = await _hang_up(alice.ua, winner, ok, routes)
    finally:
        for end in (bob_browser, bob_phone, alice):
            if isinstance(end, Browser):
                await end.pc.close()
            else:
                end.stop()
    await asyncio.sleep(0.3)
    out["after"] = route.stats()
    return out


def _is_183(msg: m.Request | m.Response) -> bool:
    return isinstance(msg, m.Response) and msg.status == 183


async def early_media_from_both_then_reinvite(route: Routing) -> dict[str, Any]:
    """alice (a plain phone) calls bob; both of bob's branches answer 183 with SDP (the
    browser its DTLS answer, the phone plain RTP): alice gets two early dialogs on two relay
    ports. The phone's 200 (same to-tag) wins, the browser is CANCELled; alice holds
    (re-INVITE sendonly) and resumes (sendrecv) through the dialog; then the BYE."""
    server = route.proxy
    bob_browser, bob_phone, alice = Browser(server, user="bob"), Phone(server, user="bob"), Phone(server, user="alice")
    out: dict[str, Any] = {}
    try:
        for ua in (bob_browser.ua, bob_phone.ua, alice.ua):
            assert (await asyncio.to_thread(ua.register)).status == 200
        uri = f"sip:bob@{server.host}"
        await asyncio.to_thread(_send_authorized_invite, alice.ua, uri, alice.sdp())
        to_browser, to_phone = await asyncio.gather(asyncio.to_thread(_ring, bob_browser.ua),
                                                    asyncio.to_thread(_ring, bob_phone.ua))
        bob_browser.ua.answer(to_browser, 183, body=await bob_browser.answer(to_browser.body), headers=SDP_TYPE)
        early = bob_phone.ua.answer(to_phone, 183, body=bob_phone.sdp(), headers=SDP_TYPE)
        bob_phone.start(to_phone.body)
        first = await asyncio.to_thread(alice.ua.wait, _is_183, 10)
        second = await asyncio.to_thread(alice.ua.wait, _is_183, 10)
        assert isinstance(first, m.Response) and isinstance(second, m.Response)
        by_tag = {r.to.tag: r.body.decode() for r in (first, second)}
        out["early_to_tags"] = sorted(t or "" for t in by_tag)
        out["early_ports"] = sorted({sdp.split("m=audio ")[1].split()[0] for sdp in by_tag.values()})
        out["early_from_browser"] = by_tag.get(bob_browser.ua.tag, "")
        alice.start(by_tag[bob_phone.ua.tag].encode())  # alice listens to the phone's early media
        await _until(lambda: alice.voiced > 25, 10)
        out["early_caller_voiced"] = alice.voiced
        out["ringing"] = route.stats()
        bob_phone.ua.answer(to_phone, 200, body=bob_phone.sdp(), headers=SDP_TYPE, to_tag=early.to.tag)
        out["loser_branch"] = to_browser.top_via.branch
        out["loser_cancelled"] = await asyncio.to_thread(_cancelled, bob_browser.ua, to_browser)
        ok = await asyncio.to_thread(alice.ua.expect_final, 10)
        out["status"] = ok.status
        routes = list(reversed(ok.get_all("record-route")))
        alice.ua.send(in_dialog(alice.ua, "ACK", ok, routes, cseq=ok.cseq.number))
        for session, direction in ((2, "sendonly"), (3, "sendrecv")):
            reinvite = in_dialog(alice.ua, "INVITE", ok, routes)
            reinvite.set("Content-Type", "application/sdp")
            reinvite.body = alice.sdp(session=session).replace(b"a=sendrecv", f"a={direction}".encode())
            alice.ua.send(reinvite)
            got = await asyncio.to_thread(bob_phone.ua.wait, "INVITE", 10)
            assert isinstance(got, m.Request)
            out[f"reoffer_{direction}"] = got.body.decode()
            answer = bob_phone.sdp(session=session)
            if direction == "sendonly":
                answer = answer.replace(b"a=sendrecv", b"a=recvonly")
            bob_phone.ua.answer(got, 200, body=answer, headers=SDP_TYPE, to_tag=early.to.tag)
            re_ok = await asyncio.to_thread(alice.ua.expect_final, 10)
            out[f"reinvite_{direction}"] = re_ok.status
            alice.ua.send(in_dialog(alice.ua, "ACK", re_ok, routes, cseq=re_ok.cseq.number))
        heard, sent = alice.voiced, bob_phone.voiced
        await _until(lambda: alice.voiced > heard + 25 and bob_phone.voiced > sent + 25, 10)
        out["caller_voiced"], out["callee_voiced"] = alice.voiced - heard, bob_phone.voiced - sent
        out["talking"] = route.stats()
        out["bye"] = await _hang_up(alice.ua, bob_phone.ua, ok, routes)
    finally:
        await bob_browser.pc.close()
        bob_phone.stop()
        alice.stop()
    await asyncio.sleep(0.3)
    out["after"] = route.stats()
    return out


FORK_SCENARIOS: dict[str, Callable[[Routing], Any]] = {
    "phone-calls-fork-early-media-from-both": early_media_from_both_then_reinvite,
    "phone-calls-fork-phone-answers": lambda s: forked_call(s, caller_is_browser=False, browser_answers=False),
    "phone-calls-fork-browser-answers": lambda s: forked_call(s, caller_is_browser=False, browser_answers=True),
    "browser-calls-fork-phone-answers": lambda s: forked_call(s, caller_is_browser=True, browser_answers=False),
    "browser-calls-fork-browser-answers": lambda s: forked_call(s, caller_is_browser=True, browser_answers=True),
}


def main(scenario: str, tmp: str) -> None:
    """Through ``sipedge serve`` with its own relay."""
    webrtc_call.SCENARIOS.update(FORK_SCENARIOS)
    webrtc_call.main(scenario, tmp)


def main_rtpengine(scenario: str, tmp: str) -> None:
    """Through ``sipedge serve`` with ``media.remote`` at Debian's rtpengine, which gets the
    per-branch offers over ng (``via-branch``)."""
    from helpers import webrtc_interop

    webrtc_call.SCENARIOS.update(FORK_SCENARIOS)
    webrtc_interop.main_rtpengine(scenario, tmp)
