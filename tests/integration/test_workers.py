"""``general.workers = 2`` through a real ``sipedge serve`` (docs/workers.md): SIPp
registrations and calls from many source ports, answers and CANCELs read by the worker
that does not own their call, a worker killed mid-load, SIGTERM stopping them all."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.metrics import metrics
from helpers.sippcallee import SippFlows, SippResult, registered_uas, sipp_marks
from helpers.sipserver import SIPEDGE, Server, cli, running_server, wait_workers, write_config
from helpers.ua import UA
from sipedge.server.handoff import owner_of

pytestmark = sipp_marks(120)

USERS = {"alice": "alice-pw", "bob": "bob-pw", **{f"u{i}": f"u{i}-pw" for i in range(6)}}
DOMAIN = "127.0.0.1"


def _ok(r: SippResult) -> None:
    assert r.ok, r.explain()


def settled_metrics(server: Server) -> dict[str, float]:
    """After the workers have pushed their latest counters to worker 0 (every second)."""
    time.sleep(2.5)
    return metrics(server)


def worker_pids(server: Server) -> dict[int, int]:
    """The current pid of each worker, from the supervisor's log."""
    pids: dict[int, int] = {}
    for m in re.finditer(r"worker (\d+) started \(pid (\d+)\)", server.log_text()):
        pids[int(m.group(1))] = int(m.group(2))
    return pids




def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (the supervisor has not reaped it yet) is gone too
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("workers"), users=USERS, general="workers = 2",
                        log_level="info") as s:
        yield wait_workers(s)


@pytest.fixture
def flows(server: Server, tmp_path: Path) -> Iterator[SippFlows]:
    with SippFlows(f"{server.host}:{server.udp}", DOMAIN, tmp_path) as f:
        yield f


@pytest.fixture
def bob(flows: SippFlows) -> Iterator[str]:
    with registered_uas(flows, "bob", USERS["bob"]) as contact:
        yield contact


def test_both_workers_serve_and_metrics_label_them(server: Server) -> None:
    m = settled_metrics(server)
    assert m["workers_reporting"] == 2
    assert 'sip_requests_received{worker="0"}' in m and 'sip_requests_received{worker="1"}' in m
    assert m["sip_requests_received"] == m['sip_requests_received{worker="0"}'] + m['sip_requests_received{worker="1"}']
    pids = worker_pids(server)
    assert sorted(pids) == [0, 1] and all(alive(p) for p in pids.values())


def test_registrations_and_calls_from_many_source_ports(server: Server, flows: SippFlows, bob: str) -> None:
    """Every SIPp run has a source port of its own; the callee's answers come from yet
    another. Whichever worker reads a message, the call's owner handles it: all succeed,
    and answers were handed from one worker to the other."""
    before = settled_metrics(server)
    for i in range(6):
        _ok(flows.register(f"u{i}", USERS[f"u{i}"], f"127.0.0.1:{6000 + i}"))
    # one after another (the SIPp UAS takes a retransmitted INVITE after its 200 for an
    # error, and sip.timers.t1 is 0.1 s here: parallel runs on 2 cores would trip it)
    for _ in range(3):
        r = flows.call("alice", USERS["alice"], "bob", calls=15, rate=15)
        _ok(r)
        assert r.successful == 15
    after = settled_metrics(server)
    assert after["sip_handoff_responses"] > before.get("sip_handoff_responses", 0)
    assert after["sip_handoff_acks"] > before.get("sip_handoff_acks", 0)
    assert after["sip_handoff_dropped"] == 0 and after["sip_handoff_bad"] == 0
    for w in ("0", "1"):  # both did calls
        assert after[f'sip_handoff_received{{worker="{w}"}}'] > 0


def test_cancels_reach_the_worker_of_their_invite(server: Server, flows: SippFlows, bob: str) -> None:
    before = settled_metrics(server)
    for _ in range(12):  # each from a source port of its own
        r = flows.cancel("alice", USERS["alice"], "bob")
        _ok(r)
    after = settled_metrics(server)
    assert after["sip_handoff_cancels"] > before.get("sip_handoff_cancels", 0)


def test_a_killed_worker_comes_back_and_the_other_keeps_serving(server: Server, flows: SippFlows, bob: str) -> None:
    """SIGKILL worker 1 under load: calls keep completing, the UDP registration made before
    survives (it is in the database), and the supervisor starts worker 1 again."""
    old = worker_pids(server)[1]
    results: list[SippResult] = []
    load = threading.Thread(target=lambda: results.append(flows.call("alice", USERS["alice"], "bob", calls=60,
                                                                     rate=20)))
    load.start()
    time.sleep(1.0)
    os.kill(old, signal.SIGKILL)
    load.join(90)
    assert results, "SIPp did not finish"
    r = results[0]
    # calls owned by worker 0 never noticed; worker 1's are retransmitted to the new one
    assert r.successful >= 30, r.explain()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and worker_pids(server)[1] == old:
        time.sleep(0.1)
    new = worker_pids(server)[1]
    assert new != old and alive(new)
    assert f"x worker 1 (pid {old}) exited with -9" in server.log_text()
    while time.monotonic() < deadline and server.log_text().count("sipedge ready (worker 1,") < 2:
        time.sleep(0.1)
    # bob did not register again: calls still find him, on both workers
    r = flows.call("alice", USERS["alice"], "bob", calls=10, rate=20)
    _ok(r)
    assert r.successful == 10
    assert settled_metrics(server)["workers_reporting"] == 2


ROUTING = '''
from sipedge.proxy import default_routing

reply_route = default_routing.reply_route


def request_route(ctx):
    if ctx.method == "OPTIONS":
        ctx.reply({status}, "Routing {status}")
        return
    default_routing.request_route(ctx)
'''


def options_status(server: Server, call_id: str) -> int | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        s.bind((server.host, 0))
        port = s.getsockname()[1]
        s.sendto(
            (f"OPTIONS sip:{server.host}:{server.udp} SIP/2.0\r\n"
             f"Via: SIP/2.0/UDP {server.host}:{port};branch=z9hG4bK{call_id}\r\n"
             f"From: <sip:probe@{server.host}>;tag=p\r\nTo: <sip:{server.host}>\r\nCall-ID: {call_id}\r\n"
             "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
            (server.host, server.udp),
        )
        try:
            return int(s.recv(65535).split(b" ", 2)[1])
        except (OSError, ValueError, IndexError):
            return None


def test_sighup_reloads_the_routing_module_in_every_worker_under_load(tmp_path: Path) -> None:
    routing = tmp_path / "routing.py"
    routing.write_text(ROUTING.format(status=486))
    extra = f'\n[routing]\nmodule = "{routing}"\n'
    with running_server(tmp_path / "srv", users=USERS, general="workers = 2", log_level="info", extra=extra) as s, \
            SippFlows(f"{s.host}:{s.udp}", DOMAIN, tmp_path / "sipp") as flows:
        wait_workers(s)
        # Call-IDs owned by either worker (crc32 % 2)
        ids = [f"hup-{i}" for i in range(16)]
        assert {options_status(s, c) for c in ids} == {486}
        with registered_uas(flows, "bob", USERS["bob"]):
            results: list[SippResult] = []
            load = threading.Thread(
                target=lambda: results.append(flows.call("alice", USERS["alice"], "bob", calls=40, rate=10)))
            load.start()
            time.sleep(1.5)
            routing.write_text(ROUTING.format(status=603))
            s.proc.send_signal(signal.SIGHUP)
            load.join(60)
            assert results, "SIPp did not finish"
            _ok(results[0])  # no call failed across the reload
            assert results[0].successful == 40
        assert s.log_text().count("- reloaded: routing") == 2
        assert {options_status(s, f"after-{c}") for c in ids} == {603}
        assert len(worker_pids(s)) == 2 and all(alive(p) for p in worker_pids(s).values())


def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    with running_server(tmp_path, users=USERS, general="workers = 2", log_level="info") as s:
        wait_workers(s)
        pids = worker_pids(s)
        assert len(pids) == 2
        s.proc.send_signal(signal.SIGTERM)
        try:
            assert s.proc.wait(15) == 0
        except subprocess.TimeoutExpired:
            pytest.fail("the supervisor did not stop on SIGTERM")
        for pid in pids.values():
            assert not alive(pid)
        assert "stopping 2 workers" in s.log_text()


@pytest.mark.parametrize(("extra", "says"), [
    ('\n[registrar]\ndb_mode = "write-back"\n', 'needs registrar.db_mode = "write-through"'),
    ('\n[routing]\nmodule = "/nonexistent/routing.py"\n', "refused the configuration"),
    ("\n[dialog]\nmax_per_user = 1\n", "dialog.max_per_user = 1 with general.workers = 2: each worker counts"),
    ("\n[dialog]\nmax_total = 100\n", "dialog.max_total = 100 with general.workers = 2"),
    ("\n[sip.fraud]\nmax_foreign_calls = 5\n", "sip.fraud.max_foreign_calls = 5 with general.workers = 2"),
])
def test_a_configuration_workers_cannot_run_stops_sipedge_serve(tmp_path: Path, extra: str, says: str) -> None:
    """Refused up front (write-back), or by the workers (a routing module that does not
    load): `sipedge serve` exits 2 saying why, and restarts nothing."""
    cfg = write_config(tmp_path, general="workers = 2", extra=extra, log_level="info")[0]
    proc = subprocess.run([SIPEDGE, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert says in proc.stderr + proc.stdout
    assert "started (pid" not in proc.stderr or proc.stderr.count("started (pid") <= 2  # no restarts


# -- sipedge ctl with workers ---------------------------------------------------------------
def call_ids_of_each_worker(workers: int = 2) -> list[str]:
    """One fresh Call-ID owned by each worker (server/handoff.py ``owner_of``)."""
    found: dict[int, str] = {}
    while len(found) < workers:
        call_id = uuid.uuid4().hex
        found.setdefault(owner_of(call_id, workers), call_id)
    return [found[w] for w in range(workers)]


def ping(ua: UA, server: Server, call_id: str, timeout: float = 1.0) -> int | None:
    ua.call_id = call_id
    ua.send(ua.build("OPTIONS", f"sip:{server.host}:{server.udp}"))
    try:
        return ua.expect_final(timeout).status
    except (AssertionError, TimeoutError):
        return None


def ctl(server: Server, *args: str) -> Any:
    proc = cli(["ctl", "--config", str(server.config), "--json", *args], check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def api_get(server: Server, path: str) -> Any:
    token = (server.data_dir / "admin.token").read_text().strip()
    req = urllib.request.Request(f"http://127.0.0.1:{server.http}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["result"]


def test_ctl_bans_log_level_and_traces_reach_every_worker(server: Server) -> None:
    """Worker 0 answers ``sipedge ctl``; what each worker keeps of its own is asked of it
    (docs/workers.md, "sipedge ctl and the dashboard"): a ban holds in both workers, the
    trace lists and shows the calls of both, and ``since`` follows both."""
    ua = UA("udp", (server.host, server.udp), "alice", server.host, host="127.0.0.5")
    mine = call_ids_of_each_worker()
    try:
        assert [ping(ua, server, c) for c in mine] == [200, 200]
        assert ctl(server, "ban", "add", "127.0.0.5", "120") == {"source": "127.0.0.5", "seconds": 120.0,
                                                                  "workers": 2}
        assert [ping(ua, server, c, 0.5) for c in call_ids_of_each_worker()] == [None, None]  # in both
        (ban,) = [b for b in ctl(server, "ban", "list") if b["source"] == "127.0.0.5"]
        assert ban["dropped"] >= 2 and 100 < ban["seconds_left"] <= 120
        assert ctl(server, "ban", "rm", "127.0.0.5")["workers"] == 2
        assert [ping(ua, server, c) for c in mine] == [200, 200]
        assert ctl(server, "log", "level", "info") == {"level": "info", "workers": 2}

        traced = api_get(server, "/api/trace.list")
        by_id = {c["call_id"]: c for c in traced["calls"]}
        assert by_id[mine[0]]["worker"] == 0 and by_id[mine[1]]["worker"] == 1
        for call_id in mine:  # each shown by the worker that handled it: OPTIONS in, 200 out, twice
            shown = ctl(server, "trace", "show", call_id)
            assert [m["direction"] for m in shown["messages"]] == ["in", "out", "in", "out"], shown
        assert api_get(server, f"/api/trace.list?since={traced['seq']}")["calls"] == []
        assert ping(ua, server, mine[1]) == 200  # a new message in worker 1 only
        newer = api_get(server, f"/api/trace.list?since={traced['seq']}")["calls"]
        assert [c["call_id"] for c in newer] == [mine[1]]
    finally:
        ua.close()
