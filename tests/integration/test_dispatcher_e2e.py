"""The dispatcher end to end: ``sipedge serve`` in front of two SIPp UAS "gateways" on
127.0.0.2 and 127.0.0.3, calls from a UA for numbers nobody registered, routed by
tests/helpers/pbx_routing.py (the example of docs/routing.md, "Dispatcher").

Round robin and hashes land calls where they should; a gateway killed mid-test makes the
call sent to it fail over to the other in the same transaction (Timer B), the OPTIONS
prober marks it down and new calls skip it; it comes back and is marked up; a gateway
answering 503 is failed over, and with ``failover_codes = ["486", "6xx"]`` one answering
486 is and one answering 480 or 503 is not. ``sipedge ctl ds list``, /api/ds.list and /metrics show it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.sipp_runner import sipp_bin, start_sipp, stop_process
from tests.helpers.metrics import metrics
from tests.helpers.ports import free_port
from tests.helpers.sipserver import Server, cli, running_server
from tests.helpers.ua import UA, in_dialog

from sipedge.proxy.dispatcher import stable_hash

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(sipp_bin() is None or shutil.which("sipp") is None, reason="sipp (sip-tester) not installed"),
]

ROUTING = Path(__file__).resolve().parents[1] / "helpers" / "pbx_routing.py"
GW_HOSTS = ("127.0.0.2", "127.0.0.3")


def gateway(tmp: Path, host: str, port: int, scenario: str = "uas_answer.xml") -> subprocess.Popen[bytes]:
    """A SIPp UAS on ``host:port`` that also answers OPTIONS (``-aa``)."""
    return start_sipp(scenario, workdir=tmp / f"gw-{host}-{time.monotonic_ns()}", local_ip=host, local_port=port,
                      timeout=300, recv_timeout_ms=None, extra=["-aa"])


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: the gateway stops answering at once, nothing is sent on the way out."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def config(ports: dict[str, int], algorithm: str, dispatcher: str = "") -> str:
    dests = ", ".join(f'"sip:{h}:{p}"' for h, p in ports.items())
    return f"""
[auth]
invite = false

[routing]
module = "{ROUTING}"

[dispatcher]
probe_interval = 0.5
probe_timeout = 0.4
failure_threshold = 2
success_threshold = 1
{dispatcher}
[[dispatcher.sets]]
id = 1
algorithm = "{algorithm}"
destinations = [{dests}]
"""


@pytest.fixture
def ports() -> dict[str, int]:
    return {h: free_port(h) for h in GW_HOSTS}


def ds_list(server: Server) -> dict[str, dict[str, object]]:
    out = cli(["ctl", "--config", str(server.config), "--json", "ds", "list"]).stdout
    return {str(d["uri"]): d for d in json.loads(out)}


def wait_state(server: Server, uri: str, state: str, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        d = ds_list(server)[uri]
        if d["state"] == state and (state != "up" or d["last_status"] == 200):
            return d
        if time.monotonic() > deadline:
            raise AssertionError(f"{uri} not {state} within {timeout} s: {d}")
        time.sleep(0.1)


def call(server: Server, ua: UA, number: str = "+15551234", call_id: str | None = None,
         timeout: float = 15.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One call to ``number``: the final status and the host of the gateway that answered
    (its Contact); an answered call is ACKed and hung up."""
    ua.call_id = call_id or uuid.uuid4().hex
    ua.tag = uuid.uuid4().hex[:10]
    inv = ua.build("INVITE", f"sip:{number}@{server.host}:{server.udp}", headers=headers)
    ua.send(inv)
    final = ua.expect_final(timeout)
    if final.status != 200:
        return final.status, ""
    routes = list(reversed(final.get_all("record-route")))
    ua.send(in_dialog(ua, "ACK", final, routes, cseq=final.cseq.number))
    ua.send(in_dialog(ua, "BYE", final, routes))
    bye_ok = ua.wait(lambda x: getattr(x, "status", 0) >= 200 and x.cseq.method == "BYE", 5)
    assert bye_ok.status == 200  # type: ignore[union-attr]
    contacts = final.contacts
    assert isinstance(contacts, list)
    return 200, contacts[0].uri.host


@pytest.fixture
def ua_for() -> Iterator[object]:
    made: list[UA] = []

    def make(server: Server, host: str = "127.0.0.1") -> UA:
        ua = UA("udp", (server.host, server.udp), "alice", server.host, host=host)
        made.append(ua)
        return ua

    yield make
    for ua in made:
        ua.close()


def test_round_robin_failover_on_timeout_marked_down_then_up(tmp_path: Path, ports: dict[str, int],
                                                             ua_for: object) -> None:
    a, b = GW_HOSTS
    uri_a, uri_b = (f"sip:{h}:{ports[h]}" for h in GW_HOSTS)
    gws = {h: gateway(tmp_path, h, ports[h]) for h in GW_HOSTS}
    try:
        with running_server(tmp_path / "s", extra=config(ports, "round_robin"), log_level="info") as server:
            ua = ua_for(server)  # type: ignore[operator]
            wait_state(server, uri_a, "up")
            wait_state(server, uri_b, "up")
            assert [call(server, ua)[1] for _ in range(4)] == [a, b, a, b]

            kill(gws[a])
            t0 = time.monotonic()
            assert call(server, ua) == (200, b)  # sent to a first: Timer B, then b, one transaction
            assert time.monotonic() - t0 > 3.0  # (64*T1 = 6.4 s waiting for a)
            assert wait_state(server, uri_a, "down")["last_status"] is None
            t0 = time.monotonic()
            assert [call(server, ua)[1] for _ in range(3)] == [b, b, b]  # a is skipped
            assert time.monotonic() - t0 < 3.0
            m = metrics(server)
            assert m["sip_branch_failovers"] == 1
            assert m["dispatcher_marked_down"] == 1 and m["dispatcher_destinations_down"] == 1
            assert m["dispatcher_probe_failures"] >= 2

            gws[a] = gateway(tmp_path, a, ports[a])  # back
            wait_state(server, uri_a, "up")
            assert sorted(call(server, ua)[1] for _ in range(2)) == [a, b]
            m = metrics(server)
            assert m["dispatcher_marked_up"] == 1 and m["dispatcher_destinations_up"] == 2
            assert "dispatcher: sip:127.0.0.2" in server.log_text() and "is down" in server.log_text()
            token = (server.data_dir / "admin.token").read_text().strip()
            req = urllib.request.Request(f"http://127.0.0.1:{server.http}/api/ds.list",
                                         headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                listed = json.loads(r.read())
            rows = listed["result"] if isinstance(listed, dict) and "result" in listed else listed
            assert {d["uri"]: d["state"] for d in rows} == {uri_a: "up", uri_b: "up"}
            table = cli(["ctl", "--config", str(server.config), "ds", "list"]).stdout
            assert "round_robin" in table and uri_a in table
    finally:
        for p in gws.values():
            stop_process(p)


def test_a_503_is_failed_over_and_a_gateway_cannot_dial_out(tmp_path: Path, ports: dict[str, int],
                                                            ua_for: object) -> None:
    a, b = GW_HOSTS
    gws = {a: gateway(tmp_path, a, ports[a], "uas_503.xml"), b: gateway(tmp_path, b, ports[b])}
    try:
        with running_server(tmp_path / "s", extra=config(ports, "hash_call_id"), log_level="info") as server:
            ua = ua_for(server)  # type: ignore[operator]
            wait_state(server, f"sip:{a}:{ports[a]}", "up")  # alive (OPTIONS 200), but refusing calls
            results = [call(server, ua, call_id=f"hash-{i}") for i in range(8)]
            assert results == [(200, b)] * 8
            m = metrics(server)
            # the calls whose Call-ID hashes to a (the first of the set) tried it first
            to_a = sum(1 for i in range(8) if stable_hash(f"hash-{i}") % 2 == 0)
            assert 1 <= to_a < 8 and m["sip_branch_failovers"] == to_a
            assert m["dispatcher_selections"] == 8
            # a number called from a gateway's address is not sent back out
            from_gw = ua_for(server, host=b)  # type: ignore[operator]
            assert call(server, from_gw) == (404, "")
    finally:
        for p in gws.values():
            stop_process(p)


def test_hash_over_from_user_keeps_a_caller_on_one_gateway(tmp_path: Path, ports: dict[str, int],
                                                           ua_for: object) -> None:
    gws = {h: gateway(tmp_path, h, ports[h]) for h in GW_HOSTS}
    try:
        with running_server(tmp_path / "s", extra=config(ports, "hash_from_user"), log_level="info") as server:
            seen: dict[str, set[str]] = {}
            for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
                ua = ua_for(server)  # type: ignore[operator]
                ua.user = user
                seen[user] = {call(server, ua)[1] for _ in range(3)}
            assert all(len(hosts) == 1 for hosts in seen.values()), seen
            assert set().union(*seen.values()) == set(GW_HOSTS)  # the users are spread over both
    finally:
        for p in gws.values():
            stop_process(p)


@pytest.mark.parametrize(("sets", "problem"), [
    ('[[dispatcher.sets]]\nid = 1\nalgorithm = "random"\ndestinations = ["sip:127.0.0.2"]\n',
     "dispatcher.sets[0].algorithm = 'random': expected one of"),
    ('[[dispatcher.sets]]\nid = 1\ndestinations = ["sip:127.0.0.2:99999999"]\n',
     "dispatcher.sets (id 1).destinations[0].uri = 'sip:127.0.0.2:99999999'"),
])
def test_a_bad_set_refuses_the_start_naming_it(tmp_path: Path, sets: str, problem: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[general]\ndata_dir = "{tmp_path}/d"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
                   f'[web]\nenabled = false\n{sets}')
    r = subprocess.run([str(Path(sys.executable).parent / "sipedge"), "serve", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr[-2000:]
    assert problem in r.stderr and "Traceback" not in r.stderr


def test_failover_codes_fail_over_a_listed_answer_and_pass_on_an_unlisted_one(
        tmp_path: Path, ports: dict[str, int], ua_for: object) -> None:
    """``failover_codes = ["486", "6xx"]``: a 486 from the first gateway makes the call try
    the next one in the same transaction; a 480 (not listed) and a 503 (listed by the
    default 5xx only) go back to the caller, which the default would have failed over."""
    a, b = GW_HOSTS
    gws = {a: gateway(tmp_path, a, ports[a], "uas_refuse.xml"), b: gateway(tmp_path, b, ports[b])}
    extra = config(ports, "priority", 'failover_codes = ["486", "6xx"]\n')
    try:
        with running_server(tmp_path / "s", extra=extra, log_level="info") as server:
            ua = ua_for(server)  # type: ignore[operator]
            wait_state(server, f"sip:{a}:{ports[a]}", "up")  # alive (OPTIONS 200), but refusing calls
            assert call(server, ua) == (200, b)  # a first (priority), its 486: b, in one transaction
            assert metrics(server)["sip_branch_failovers"] == 1
            assert call(server, ua, headers={"X-Refuse": "480"}) == (480, "")
            # a 503 goes back as 500 (RFC 3261 §16.7: a proxy never passes a 503 upstream)
            assert call(server, ua, headers={"X-Refuse": "503"}) == (500, "")
            assert metrics(server)["sip_branch_failovers"] == 1
    finally:
        for p in gws.values():
            stop_process(p)
