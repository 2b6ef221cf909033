"""JsSIP in Chromium across two nodes (issue 15, docs/cluster.md): alice's page on node A,
bob's on node B, both over WSS, one Redis between the nodes. Calls cross both nodes in
each direction with media, and either party's hang-up reaches the other.

The worker (``tests/browser/cluster_worker.py``) runs redis-server, both nodes and
Chromium in a loopback-only namespace, as the single-node browser tests do."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser.netns import missing, report, run_scenario
from helpers.redisserver import REDIS_SERVER

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

WORKER = Path(__file__).resolve().parents[1] / "browser" / "cluster_worker.py"


def test_browsers_on_two_nodes_call_each_other_both_ways(tmp_path: Path) -> None:
    why = missing()
    if why:
        pytest.skip(why)
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed (scripts/setup test installs it)")
    result = run_scenario("calls", tmp_path, timeout=90, worker=WORKER)
    why = report(tmp_path, result)
    for name in ("a/sipedge.log", "b/sipedge.log"):
        log = tmp_path / name
        if log.is_file():
            why += f"\n--- {name}\n" + log.read_text(errors="replace")[-2500:]
    assert result["error"] is None, why
    assert result["steps"] == [
        "servers", "registered",
        "a_to_b_ringing", "a_to_b_media", "a_to_b_ended",
        "b_to_a_ringing", "b_to_a_media", "b_to_a_ended",
    ], why
    assert result["a_to_b_ringing"]["callee_from"] == "sip:alice@example.com", why
    assert result["b_to_a_ringing"]["callee_from"] == "sip:bob@example.com", why
    for label in ("a_to_b", "b_to_a"):
        media = result[f"{label}_media"]
        for user in ("alice", "bob"):
            assert media["later"][user] > media["first"][user] > 0, why
    # each call's INVITE entered the caller's node and was relayed by the callee's node
    # onto the WebSocket it holds (in-dialog requests follow Record-Route instead)
    assert result["node_routed"] == {"a": 1, "b": 1}, why
    # the callee hung up the first call, the caller the second
    assert result["a_to_b_ended"]["caller"] == {"state": "ended", "cause": "Terminated", "originator": "remote"}, why
    assert result["a_to_b_ended"]["callee"] == {"state": "ended", "cause": "Terminated", "originator": "local"}, why
    assert result["b_to_a_ended"]["caller"] == {"state": "ended", "cause": "Terminated", "originator": "remote"}, why
    assert result["b_to_a_ended"]["callee"] == {"state": "ended", "cause": "Terminated", "originator": "local"}, why
