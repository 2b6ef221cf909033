"""Browsers across two nodes, run by ``netns.run_scenario`` in a loopback-only namespace.

    cluster_worker.py SCENARIO OUTDIR

starts a real redis-server and two ``sipedge serve`` nodes sharing it (A on 127.0.0.1, B on
127.0.0.2, one ``nonce.key``, domain ``example.com``: docs/cluster.md), then Chromium
through Playwright. alice's page registers over WSS at A, bob's at B; each node keeps
the other's flows reachable only through itself (node Path entries), so every call
crosses both nodes.

Scenario ``calls``: alice calls bob (A → B → bob's WebSocket), bob answers, both peer
connections receive RTP, bob hangs up (his BYE goes back through B and A); then bob
calls alice the other way, alice answers and hangs up. The result also holds each
node's ``sip_node_routed`` counter (requests it relayed onto a flow it holds for
another node).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from worker import CHROMIUM, CHROMIUM_ARGS, MD5_ONLY, USERS, Phone, Recorder, lo_up, media_flows  # noqa: E402

from helpers.metrics import metrics  # noqa: E402
from helpers.redisserver import RedisServer  # noqa: E402
from helpers.sipserver import Server, add_users, running_server  # noqa: E402

DOMAIN = "example.com"
NONCE_KEY = bytes(range(32))  # DATA_DIR/nonce.key, the same on both nodes


@contextmanager
def node(outdir: Path, name: str, host: str, redis_url: str) -> Iterator[Server]:
    tmp = outdir / name
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    key = tmp / "data" / "nonce.key"
    key.write_bytes(NONCE_KEY)
    key.chmod(0o600)
    extra = f'{MD5_ONLY}\n[redis]\nurl = "{redis_url}"\n'
    with running_server(tmp, host, extra=extra, sip=f'domains = ["{DOMAIN}"]', log_level="info") as server:
        add_users(server.config, DOMAIN, USERS)  # subscribers stay in each node's SQLite file
        yield server


def call(rec: Recorder, caller: Phone, callee: Phone, hangup_by: Phone, label: str) -> None:
    caller.page.fill("#target", callee.user)
    caller.page.click("#dial")
    callee.wait_state("call-state", "incoming")
    caller.wait_state("call-state", "ringing")
    rec.step(f"{label}_ringing", callee_from=callee.page.text_content("#incoming-from"))
    callee.page.click("#answer")
    caller.wait_state("call-state", "confirmed")
    callee.wait_state("call-state", "confirmed")
    media_flows(rec, [caller, callee])
    rec.result[f"{label}_media"] = rec.result.pop("media")
    rec.result["steps"][-1] = f"{label}_media"
    hangup_by.page.click("#hangup")
    caller.wait_state("call-state", "ended")
    callee.wait_state("call-state", "ended")
    rec.step(f"{label}_ended", caller=caller.call_state(), callee=callee.call_state())


def scenario_calls(rec: Recorder, browser: Any, a: Server, b: Server, outdir: Path) -> None:
    alice = Phone(browser, a, "alice", outdir)
    bob = Phone(browser, b, "bob", outdir)
    try:
        alice.register(f"wss://{a.host}:{a.wss}", DOMAIN)
        bob.register(f"wss://{b.host}:{b.wss}", DOMAIN)
        alice.wait_state("reg-state", "registered")
        bob.wait_state("reg-state", "registered")
        rec.step("registered")
        call(rec, alice, bob, hangup_by=bob, label="a_to_b")
        time.sleep(0.5)  # both pages back to idle
        call(rec, bob, alice, hangup_by=alice, label="b_to_a")
    finally:
        alice.close()
        bob.close()


def main() -> int:
    scenario, outdir = sys.argv[1], Path(sys.argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    rec = Recorder(outdir)
    try:
        if scenario != "calls":
            raise ValueError(f"no scenario {scenario!r}")
        lo_up()
        from playwright.sync_api import sync_playwright

        with ExitStack() as stack:
            redis = RedisServer(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sipedge-redis-"))))
            redis.start()
            stack.callback(redis.stop)
            a = stack.enter_context(node(outdir, "a", "127.0.0.1", redis.url))
            b = stack.enter_context(node(outdir, "b", "127.0.0.2", redis.url))
            rec.step("servers", a_wss=a.wss, b_wss=b.wss)
            pw = stack.enter_context(sync_playwright())
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=15000)
            stack.callback(browser.close)
            scenario_calls(rec, browser, a, b, outdir)
            # each node relayed the other's calls onto the flow it holds
            rec.result["node_routed"] = {n: metrics(s).get("sip_node_routed", 0) for n, s in (("a", a), ("b", b))}
    except BaseException as e:
        return rec.failed(e)
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
