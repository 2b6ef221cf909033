"""The relay as one more ICE candidate (``ice = "relay"``, the OpenSIPS + MediaProxy way)
against a real full ICE agent: two aioice agents (one controlling, one controlled) get
each other's own candidates plus the relay's ``typ relay`` one.

* When their direct paths work, ICE picks a direct pair: the relay stays out of the media.
* When no direct path works (the candidates they were sent point at closed ports, as for
  peers behind NATs that filter), ICE picks the relay candidate and the data flows through
  the relay. Each agent checks the relay from every one of its addresses: the relay passes
  all those checks on (none is a stranger), routes each answer back to the address that
  asked, and expects media from the nominated one.

aioice gathers host candidates on every interface except 127.0.0.1, so the test runs in a
private network namespace (``unshare --net``) holding only loopback and a veth pair with
documentation addresses (three, so each agent has three candidates): nothing leaves the
machine.
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
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace"),
    pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None,
                       reason="needs util-linux unshare and iproute2"),
]

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import aioice
    from helpers.ice_agents import agents_through, report
    from sipedge.config.media import MediaConfig
    from sipedge.server.media import MediaServer

    blocked = sys.argv[1] == "blocked"

    def told(conn):
        # what the far side is told: the agent's own candidates, or (blocked) the same
        # addresses at a closed port, so that no direct path works
        if not blocked:
            return None
        return [aioice.Candidate(c.foundation, c.component, c.transport, c.priority, c.host, 9, c.type)
                for c in conn.local_candidates]

    async def main():
        media = MediaServer(MediaConfig(listen="192.0.2.3", port_min=40000, port_max=40099, ice="relay"))
        a, b, (_, ma), _ = await agents_through(media, controlling_b=False, told=told)
        for i in range(5):
            await a.send(b"a%d" % i)
            await b.send(b"b%d" % i)
        got_b = sorted([(await asyncio.wait_for(b.recv(), 5)).decode() for _ in range(5)])
        got_a = sorted([(await asyncio.wait_for(a.recv(), 5)).decode() for _ in range(5)])
        await media.delete("ice-call", "a-tag")  # its packets are counted into the totals
        out = {
            "got_a": got_a, "got_b": got_b,
            "local": len(a.local_candidates),
            "offered": [str(c) for c in ma.candidates],
            "nominated": [c._nominated[1].remote_candidate.type for c in (a, b)],
            "stats": media.stats(),
        }
        await report(out, media, a, b)

    asyncio.run(main())
    """
)

NETNS_SETUP = (
    "ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 192.0.2.1/24 dev v0 "
    "&& ip addr add 192.0.2.2/24 dev v0 && ip addr add 192.0.2.3/24 dev v0 "
    "&& ip link set v1 up && ip link set v0 up && exec \"$0\" -c \"$1\" \"$2\""
)


def run(mode: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}:{ROOT / 'src'}")
    res = subprocess.run(
        ["unshare", "--net", "sh", "-c", NETNS_SETUP, sys.executable, SCRIPT, mode],
        capture_output=True, text=True, timeout=75, env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["got_b"] == [f"a{i}" for i in range(5)] and out["got_a"] == [f"b{i}" for i in range(5)]
    offered = out["offered"]
    assert isinstance(offered, list) and sum(" typ relay" in c for c in offered) == 1  # plus the peer's own
    return out


def test_direct_path_wins_when_it_works() -> None:
    out = run("direct")
    assert out["nominated"] == ["host", "host"]
    stats = out["stats"]
    assert isinstance(stats, dict) and stats["media_packets_dropped_stranger"] == 0


def test_relay_candidate_carries_the_call_when_nothing_else_works() -> None:
    out = run("blocked")
    assert out["nominated"] == ["relay", "relay"]
    stats = out["stats"]
    assert isinstance(stats, dict) and isinstance(out["local"], int) and out["local"] >= 3
    assert stats["media_stun_relayed"] >= 2  # answers routed back to the asking candidate
    assert stats["media_packets_dropped_stranger"] == 0  # no check from another address lost
    assert stats["media_packets_relayed"] >= 10  # the data went through the relay
