"""ICE-lite against a real full ICE agent: two aioice agents (independent implementation)
negotiate with the relay from the SDP it rewrote for each of them (``ice = "force"``),
pass their connectivity checks against the relay's own ICE-lite answers, and exchange
data through it.

aioice gathers host candidates on every interface except 127.0.0.1, so the test runs in a
private network namespace (``unshare --net``) holding only loopback and a veth pair
with a documentation address: nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("aioice")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace"),
    pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None,
                       reason="needs util-linux unshare and iproute2"),
]

SCRIPT = textwrap.dedent(
    """
    import asyncio
    from helpers.ice_agents import agents_through, report
    from sipedge.config.media import MediaConfig
    from sipedge.server.media import MediaServer

    async def main():
        media = MediaServer(MediaConfig(listen="192.0.2.1", port_min=40000, port_max=40099, ice="force"))
        # both agents controlling: the relay is ICE-lite, the controlled side
        a, b, (da, ma), (db, mb) = await agents_through(media, controlling_b=True)
        await a.send(b"hello from a")
        got_b = await asyncio.wait_for(b.recv(), 5)
        await b.send(b"hello from b")
        got_a = await asyncio.wait_for(a.recv(), 5)
        out = {
            "got_a": got_a.decode(), "got_b": got_b.decode(),
            "lite": [da.ice_lite, db.ice_lite],
            "candidates": [str(c) for c in ma.candidates + mb.candidates],
            "stats": media.stats(),
        }
        await report(out, media, a, b)

    asyncio.run(main())
    """
)

NETNS_SETUP = (
    "ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 192.0.2.1/24 dev v0 "
    "&& ip link set v1 up && ip link set v0 up && exec \"$0\" -c \"$1\""
)


def test_aioice_agents_connect_through_ice_lite_relay() -> None:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}:{ROOT / 'src'}")
    res = subprocess.run(
        ["unshare", "--net", "sh", "-c", NETNS_SETUP, sys.executable, SCRIPT],
        capture_output=True, text=True, timeout=45, env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["got_b"] == "hello from a" and out["got_a"] == "hello from b"
    assert out["lite"] == [True, True]
    # each agent saw only the relay as a candidate, never the other agent's addresses
    assert all(" 192.0.2.1 " in c and "typ host" in c for c in out["candidates"])
    assert out["stats"]["media_stun_answered"] >= 4  # checks and nominations, both sides
    assert out["stats"]["media_packets_dropped_stranger"] == 0
