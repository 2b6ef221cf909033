"""aioice agents and SDP, for the relay's ICE tests: the SDP an agent offers (a data
channel section with its credentials and candidates) and taking the SDP the relay
rewrote for it. Imported inside the network-namespace scripts (PYTHONPATH=tests:src)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aioice

from sipedge import sdp as sdpmod


def offer_sdp(conn: aioice.Connection, candidates: list[aioice.Candidate] | None = None) -> bytes:
    """The agent's SDP: c=/m= name its first candidate; ``candidates`` replaces the
    agent's own list (to tell the far side something else)."""
    cands = list(conn.local_candidates) if candidates is None else candidates
    first = cands[0]
    lines = ["v=0", "o=- 1 1 IN IP4 " + first.host, "s=-", "c=IN IP4 " + first.host, "t=0 0",
             f"m=application {first.port} UDP/DTLS/SCTP webrtc-datachannel",
             "a=ice-ufrag:" + conn.local_username, "a=ice-pwd:" + conn.local_password]
    lines += ["a=candidate:" + c.to_sdp() for c in cands]
    lines += ["a=end-of-candidates", "a=rtcp-mux", ""]
    return "\r\n".join(lines).encode()


async def configure(conn: aioice.Connection, body: bytes) -> tuple[Any, Any]:
    """Give the agent the remote credentials and candidates of ``body``; returns the
    parsed session and its first media section."""
    d = sdpmod.parse(body)
    m = d.media[0]
    conn.remote_username, conn.remote_password = m.ice_ufrag, m.ice_pwd
    conn.remote_is_lite = d.ice_lite
    for c in m.candidates:
        await conn.add_remote_candidate(aioice.Candidate.from_sdp(str(c)))
    await conn.add_remote_candidate(None)
    return d, m


async def agents_through(media: Any, controlling_b: bool, told: Any = None) -> tuple[Any, Any, Any, Any]:
    """Two gathered agents ``a`` (controlling) and ``b``, an offer from a and an answer
    from b through the relay ``media`` (a ``MediaServer``), each agent given the SDP the
    relay wrote for it, connected. ``told(conn)`` may replace the candidates an agent
    announces. Returns a, b and the (session, media section) each was given."""
    a = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    b = aioice.Connection(ice_controlling=controlling_b, components=1, use_ipv6=False)
    await a.gather_candidates()
    await b.gather_candidates()
    tell = told or (lambda conn: None)
    to_b = await media.offer("ice-call", "a-tag", offer_sdp(a, tell(a)))
    to_a = await media.answer("ice-call", "a-tag", "b-tag", offer_sdp(b, tell(b)))
    given_a = await configure(a, to_a)
    given_b = await configure(b, to_b)
    await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 30)
    return a, b, given_a, given_b


async def report(out: dict[str, Any], media: Any, *agents: aioice.Connection) -> None:
    """Close the agents and the relay, then print ``out`` as the script's JSON result."""
    for conn in agents:
        await conn.close()
    media.close()
    print(json.dumps(out), flush=True)
