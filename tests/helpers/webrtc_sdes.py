"""SDES ↔ plain RTP through ``sipedge serve`` (issue 12): Debian baresip with
``mediaenc=srtp-mand`` (``RTP/SAVP``, SRTP keyed by ``a=crypto``) and a plain UDP phone
(``RTP/AVP``) call each other, with the routing module ``sdes_plain_routing`` asking the
relay to convert (the default routing cannot tell an SDES-only phone from a plain one by
its transport). The plain phone counts the voiced PCMU it gets (baresip's sine) and
baresip dumps what it decodes (the phone's tone).

    python -c "from helpers.webrtc_sdes import main; main('sdes-baresip-calls-plain-phone', '/tmp/x')"
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from helpers import webrtc_call
from helpers.sipserver import Server
from helpers.ua import in_dialog
from helpers.webrtc_call import SDP_TYPE, Baresip, Phone, _invite_with_auth, _metrics, _until
from sipedge.sip import message as m

ROUTING = Path(__file__).resolve().parent / "sdes_plain_routing.py"


def _phone_report(phone: Phone, server: Server) -> dict[str, Any]:
    return {"phone_received": phone.received, "phone_voiced": phone.voiced,
            "phone_payload_types": sorted(phone.payload_types), "metrics": _metrics(server)}


async def baresip_calls_phone(server: Server, folder: Path) -> dict[str, Any]:
    sdes, phone = Baresip(server, folder / "baresip", sdes=True), Phone(server, user="alice")
    out: dict[str, Any] = {}
    try:
        assert (await asyncio.to_thread(phone.ua.register)).status == 200
        sdes.start(f"/dial sip:alice@{server.host}")
        inv = await asyncio.to_thread(phone.ua.wait, "INVITE", 15)
        assert isinstance(inv, m.Request)
        out["offer_to_phone"] = inv.body.decode()
        ok = phone.ua.answer(inv, 200, body=phone.sdp(), headers=SDP_TYPE)
        out["acked"] = isinstance(await asyncio.to_thread(phone.ua.wait, "ACK", 10), m.Request)
        phone.start(inv.body)
        await _until(lambda: phone.voiced > 100, 15)
        await asyncio.sleep(1)
        out.update(_phone_report(phone, server), status=ok.status)
    finally:
        phone.stop()
        out["baresip_log"] = sdes.stop()[-3000:]
    out["baresip_energy"] = sdes.decoded_energy()
    return out


async def phone_calls_baresip(server: Server, folder: Path) -> dict[str, Any]:
    sdes, phone = Baresip(server, folder / "baresip", sdes=True), Phone(server, user="alice")
    out: dict[str, Any] = {}
    try:
        assert (await asyncio.to_thread(phone.ua.register)).status == 200
        sdes.start()
        assert await _until(sdes.registered, 10), sdes.stop()
        _, ok = await asyncio.to_thread(_invite_with_auth, phone.ua, f"sip:bob@{server.host}", phone.sdp())
        out["status"] = ok.status
        out["answer_to_phone"] = ok.body.decode()
        routes = list(reversed(ok.get_all("record-route")))
        phone.ua.send(in_dialog(phone.ua, "ACK", ok, routes, cseq=ok.cseq.number))
        phone.start(ok.body)
        await _until(lambda: phone.voiced > 100, 15)
        await asyncio.sleep(1)
        out.update(_phone_report(phone, server))
        phone.ua.send(in_dialog(phone.ua, "BYE", ok, routes))
        out["bye"] = (await asyncio.to_thread(phone.ua.expect_final)).status
    finally:
        phone.stop()
        out["baresip_log"] = sdes.stop()[-3000:]
    out["baresip_energy"] = sdes.decoded_energy()
    return out


SCENARIOS = {
    "sdes-baresip-calls-plain-phone": baresip_calls_phone,
    "plain-phone-calls-sdes-baresip": phone_calls_baresip,
}


def main(scenario: str, tmp: str) -> None:
    webrtc_call.FOLDER_SCENARIOS.update(SCENARIOS)
    webrtc_call.main(scenario, tmp, routing=ROUTING)
