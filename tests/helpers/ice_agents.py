"""aioice agents and SDP, for the relay's ICE tests: the SDP an agent offers (a data
channel section with its credentials and candidates) and taking the SDP the relay
rewrote for it. Imported inside the network-namespace scripts (PYTHONPATH=tests:src)."""

from __future__ import annotations

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
