"""Dialogs and accounting through a real ``sipedge serve`` (docs/operations.md, "Dialogs"
and "Accounting (CDRs)"): SIP UAs on loopback sockets and SIPp make the calls; ``sipedge
ctl dlg ...`` and ``sipedge cdr ...`` look at them and end them."""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.ports import free_port
from helpers.sipserver import Server, cli, restarted, running_server
from helpers.ua import UA, in_dialog
from sipedge.sip import message as m

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.sipp_runner import SippFlows, sipp_bin, stop_process  # noqa: E402

USERS = {name: f"{name}-pw" for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
                                         "ivan", "judy", "sippa", "sippb")}
# an SDP with a private address: the default routing relays its media (NAT recipe)
PRIVATE_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
PLAIN_SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"

pytestmark = pytest.mark.timeout(120)


def dialog_config(tmp: Path, workers: int = 1) -> str:
    low = free_port() & ~1
    cap = "max_per_user = 1\n" if workers == 1 else ""  # (refused with workers: test_workers.py)
    return (f'\n[dialog]\n{cap}session_expires_min = 2\n'
            f'\n[accounting]\njsonl = "{tmp / "cdr.jsonl"}"\n'
            f'\n[media]\ntimeout = 2\nport_min = {low}\nport_max = {low + 20}\nng_listen = ""\n')


@pytest.fixture(scope="module", params=[1, 2], ids=["workers1", "workers2"])
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    """One process, and a supervisor of two workers (docs/workers.md): each call's dialog
    in the worker owning its Call-ID, ``sipedge ctl dlg ...`` asked of that worker, the
    media relay in the supervisor."""
    tmp = tmp_path_factory.mktemp("dialogs")
    with running_server(tmp, users=USERS, extra=dialog_config(tmp, request.param), log_level="info",
                        general=f"workers = {request.param}") as s:
        yield s


def ua(server: Server, user: str) -> UA:
    return UA("udp", (server.host, server.udp), user, server.host, USERS[user])


def ctl(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(["ctl", "--config", str(server.config), "--json", *args], check=False)


def cdrs(server: Server, *args: str) -> list[dict[str, Any]]:
    proc = cli(["cdr", "export", "--config", str(server.config), "--format", "json", *args])
    data: list[dict[str, Any]] = json.loads(proc.stdout)
    return data


def cdr_of(server: Server, call_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in cdrs(server) if r["call_id"] == call_id]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no CDR of {call_id}")
        time.sleep(0.1)


def ring(caller: UA, callee: UA, body: bytes = PLAIN_SDP, headers: dict[str, str] | None = None,
         ) -> tuple[m.Request, m.Request]:
    """INVITE with credentials; returns (the INVITE sent, the INVITE the callee got)."""
    hdrs = {"Content-Type": "application/sdp", **(headers or {})}
    inv = caller.build("INVITE", callee.aor, body=body, headers=hdrs)
    caller.send(inv)
    inv2 = caller.authorize(inv, caller.expect(407))
    caller.send(inv2)
    seen = callee.wait("INVITE")
    assert isinstance(seen, m.Request)
    callee.answer(seen, 180)
    caller.expect(180)
    return inv2, seen


def establish(caller: UA, callee: UA, body: bytes = PLAIN_SDP, headers: dict[str, str] | None = None,
              answer_headers: dict[str, str] | None = None) -> tuple[m.Response, list[str]]:
    _, seen = ring(caller, callee, body, headers)
    callee.answer(seen, 200, body=PLAIN_SDP, headers=answer_headers)
    ok = caller.expect(200)
    routes = list(reversed(ok.get_all("record-route")))
    caller.send(in_dialog(caller, "ACK", ok, routes, cseq=ok.cseq.number))
    callee.wait("ACK")
    return ok, routes


def both_get_bye(caller: UA, callee: UA, timeout: float = 8.0) -> tuple[m.Request, m.Request]:
    bye_a = caller.wait("BYE", timeout)
    bye_b = callee.wait("BYE", timeout)
    assert isinstance(bye_a, m.Request) and isinstance(bye_b, m.Request)
    caller.answer(bye_a, 200)
    callee.answer(bye_b, 200)
    return bye_a, bye_b


@pytest.fixture
def pair(server: Server, request: pytest.FixtureRequest) -> Iterator[tuple[UA, UA]]:
    names: tuple[str, str] = request.param
    a, b = ua(server, names[0]), ua(server, names[1])
    try:
        assert b.register().status == 200
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("pair", [("alice", "bob")], indirect=True)
def test_ctl_lists_a_live_call_and_dlg_end_sends_bye_to_both(server: Server, pair: tuple[UA, UA]) -> None:
    alice, bob = pair
    establish(alice, bob)
    listed = json.loads(ctl(server, "dlg", "list").stdout)
    (mine,) = [d for d in listed if d["call_id"] == alice.call_id]
    assert mine["state"] == "confirmed" and mine["user"] == "alice"
    shown = json.loads(ctl(server, "dlg", "show", alice.call_id).stdout)
    assert shown["callee_leg"]["uri"].startswith("sip:bob@")
    table = cli(["ctl", "--config", str(server.config), "dlg", "list"]).stdout
    assert alice.call_id in table and "confirmed" in table
    ended = ctl(server, "dlg", "end", alice.call_id)
    assert ended.returncode == 0, ended.stderr
    bye_a, bye_b = both_get_bye(alice, bob)
    # as each side expects: the callee's identity towards the caller and vice versa
    assert bye_a.from_.tag == bob.tag and bye_a.to.tag == alice.tag
    assert bye_b.from_.tag == alice.tag and bye_b.to.tag == bob.tag and bye_b.cseq.number > alice.cseq - 1
    assert "ended by control" in (bye_b.get("reason") or "")
    record = cdr_of(server, alice.call_id)
    assert (record["status"], record["ended_by"]) == (200, "ended by control")
    assert not [d for d in json.loads(ctl(server, "dlg", "list").stdout) if d["call_id"] == alice.call_id]


def test_dlg_end_of_an_unknown_call_is_404(server: Server) -> None:
    proc = ctl(server, "dlg", "end", "no-such-call")
    assert proc.returncode == 2 and "no call 'no-such-call'" in proc.stderr
    proc = ctl(server, "dlg", "show", "x" * 5000)
    assert proc.returncode == 2 and "no call" in proc.stderr
    token = (server.data_dir / "admin.token").read_text().strip()
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{server.http}/api/dlg/end", data=b'{"call_id": "nope"}',
                                 headers={"Authorization": f"Bearer {token}"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 404


@pytest.mark.parametrize("pair", [("carol", "dave")], indirect=True)
def test_a_second_concurrent_call_of_the_same_user_gets_486_with_reason(server: Server, pair: tuple[UA, UA]) -> None:
    if server.workers > 1:
        pytest.skip("dialog.max_per_user is refused with workers (test_workers.py): each counts its own calls")
    carol, dave = pair
    first, seen = ring(carol, dave)
    other = ua(server, "carol")
    try:
        inv = other.build("INVITE", dave.aor, body=PLAIN_SDP, headers={"Content-Type": "application/sdp"})
        other.send(inv)
        other.send(other.authorize(inv, other.expect(407)))
        busy = other.expect_final()
        assert busy.status == 486 and "max_per_user 1" in (busy.get("reason") or "")
        assert cdr_of(server, other.call_id)["status"] == 486
    finally:
        other.close()
    dave.answer(seen, 486)
    assert carol.expect_final().status == 486
    stats = json.loads(ctl(server, "stats", "dialogs_refused").stdout)
    assert stats["dialogs_refused_user"] >= 1


@pytest.mark.parametrize("pair", [("erin", "frank")], indirect=True)
def test_an_unrefreshed_session_timer_ends_the_call(server: Server, pair: tuple[UA, UA]) -> None:
    erin, frank = pair
    start = time.monotonic()
    establish(erin, frank, headers={"Session-Expires": "3;refresher=uac", "Supported": "timer"},
              answer_headers={"Session-Expires": "3;refresher=uac", "Require": "timer"})
    shown = json.loads(ctl(server, "dlg", "show", erin.call_id).stdout)
    assert shown["session_expires"] == 3 and shown["refresher"] == "uac"
    both_get_bye(erin, frank)
    assert time.monotonic() - start >= 2.5  # not before the interval ran out
    assert cdr_of(server, erin.call_id)["ended_by"] == "session timer expired"


@pytest.mark.parametrize("pair", [("grace", "heidi")], indirect=True)
def test_a_session_interval_below_the_minimum_gets_422(server: Server, pair: tuple[UA, UA]) -> None:
    grace, heidi = pair
    inv = grace.build("INVITE", heidi.aor, headers={"Session-Expires": "1"})
    grace.send(inv)
    grace.send(grace.authorize(inv, grace.expect(407)))
    resp = grace.expect_final()
    assert resp.status == 422 and resp.get("min-se") == "2"


@pytest.mark.parametrize("pair", [("ivan", "judy")], indirect=True)
def test_a_media_timeout_ends_the_dialog(server: Server, pair: tuple[UA, UA]) -> None:
    ivan, judy = pair
    establish(ivan, judy, body=PRIVATE_SDP)  # relayed; nobody sends RTP
    listed = json.loads(cli(["ctl", "--config", str(server.config), "--json", "media", "list"]).stdout)
    assert any(c["call_id"] == ivan.call_id for c in listed)
    both_get_bye(ivan, judy, timeout=10)
    record = cdr_of(server, ivan.call_id)
    assert record["ended_by"] == "media timeout" and "packets" in record["media"]
    lines = [json.loads(line) for line in (server.data_dir.parent / "cdr.jsonl").read_text().splitlines()]
    assert any(r["call_id"] == ivan.call_id for r in lines)


def rtp(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + b"\xff" * 160


@pytest.mark.parametrize("pair", [("alice", "heidi")], indirect=True)
def test_relayed_media_totals_per_party_reach_the_cdr(server: Server, pair: tuple[UA, UA]) -> None:
    alice, heidi = pair
    _, seen = ring(alice, heidi, body=PRIVATE_SDP)
    port_for_heidi = int(re.search(rb"m=audio (\d+)", seen.body).group(1))  # type: ignore[union-attr]
    heidi.answer(seen, 200, body=PLAIN_SDP)
    ok = alice.expect(200)
    port_for_alice = int(re.search(rb"m=audio (\d+)", ok.body).group(1))  # type: ignore[union-attr]
    routes = list(reversed(ok.get_all("record-route")))
    alice.send(in_dialog(alice, "ACK", ok, routes, cseq=ok.cseq.number))
    heidi.wait("ACK")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a_rtp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as h_rtp:
        a_rtp.bind(("127.0.0.1", 0))
        h_rtp.bind(("127.0.0.1", 0))
        for seq in range(1, 21):  # alice sends 20, heidi 10
            a_rtp.sendto(rtp(seq, 1111), ("127.0.0.1", port_for_alice))
            if seq % 2:
                h_rtp.sendto(rtp(seq // 2 + 1, 2222), ("127.0.0.1", port_for_heidi))
            time.sleep(0.02)
    alice.send(in_dialog(alice, "BYE", ok, routes))
    bye = heidi.wait("BYE")
    assert isinstance(bye, m.Request)
    heidi.answer(bye, 200)
    alice.expect(200)
    record = cdr_of(server, alice.call_id)
    if server.workers > 1:  # the supervisor's relay: totals, not per party (docs/workers.md)
        assert record["media"]["rtp_packets"] >= 30 and "directions" not in record["media"], record["media"]
        return
    directions = record["media"]["directions"]
    assert directions[alice.tag]["packets"] == 20 and directions[heidi.tag]["packets"] == 10, record["media"]
    assert "jitter_ms" in directions[alice.tag] and directions[alice.tag]["lost"] == 0
    assert record["media"]["rtp_packets"] >= 30


# -- SIPp calls and their CDRs ---------------------------------------------------------------
@pytest.mark.sipp
@pytest.mark.skipif(sipp_bin() is None, reason="sipp not installed")
def test_sipp_calls_leave_cdrs_with_their_statuses(server: Server, tmp_path: Path) -> None:
    flows = SippFlows(f"{server.host}:{server.udp}", server.host, tmp_path)
    uas, contact = flows.start_uas()
    busy = ua(server, "sippb")
    try:
        assert flows.register("sippa", USERS["sippa"], contact).ok
        assert busy.register().status == 200
        before = {r["call_id"] for r in cdrs(server)}
        r = flows.call("alice", USERS["alice"], "sippa", talk_ms=50)
        assert r.ok, r.explain()
        r = flows.cancel("alice", USERS["alice"], "sippa")
        assert r.ok, r.explain()
        r = flows.expect("alice", USERS["alice"], "nobody", 404)
        assert r.ok, r.explain()
        caller = SippFlows(f"{server.host}:{server.udp}", server.host, tmp_path / "busy")
        import threading

        def answer_busy() -> None:
            seen = busy.wait("INVITE", 15)
            assert isinstance(seen, m.Request)
            busy.answer(seen, 486)
            busy.wait("ACK", 5)

        t = threading.Thread(target=answer_busy)
        t.start()
        r = caller.expect("alice", USERS["alice"], "sippb", 486)
        t.join(20)
        assert r.ok, r.explain()
        deadline = time.monotonic() + 5  # CDRs are committed in batches (dialog.db_flush_interval)
        while len(new := [rec for rec in cdrs(server) if rec["call_id"] not in before]) < 4:
            assert time.monotonic() < deadline, new
            time.sleep(0.2)
        statuses = sorted((rec["status"], rec["ended_by"]) for rec in new)
        assert statuses == [(200, "caller"), (404, "proxy"), (486, "failed"), (487, "cancelled")], new
        answered = next(rec for rec in new if rec["status"] == 200)
        assert answered["answer"] and answered["duration"] >= 0 and answered["user"] == "alice"
        listed = cli(["cdr", "list", "--config", str(server.config), "--user", "alice", "--since", "10m"]).stdout
        assert "487" in listed and "404" in listed
        csv_text = cli(["cdr", "export", "--config", str(server.config), "--format", "csv"]).stdout
        assert csv_text.splitlines()[0].startswith("call_id,start,answer")
    finally:
        stop_process(uas)  # type: ignore[arg-type]
        busy.close()
        flows.close()


# -- a restart ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2], ids=["workers1", "workers2"])
def test_a_restart_keeps_the_dialog_and_a_bye_still_completes_its_cdr(tmp_path: Path, n: int) -> None:
    """With workers, each loads back the calls of the Call-IDs it owns (once, not in each)."""
    with running_server(tmp_path, users=USERS, extra="\n[media]\nenabled = false\n", log_level="info",
                        general=f"workers = {n}") as s:
        alice, bob = ua(s, "alice"), ua(s, "bob")
        try:
            assert bob.register().status == 200
            ok, routes = establish(alice, bob)
            with restarted(s, tmp_path / "again.log"):
                listed = json.loads(ctl(s, "dlg", "list").stdout)
                assert [d["state"] for d in listed if d["call_id"] == alice.call_id] == ["confirmed"]
                alice.send(in_dialog(alice, "BYE", ok, routes))
                bye = bob.wait("BYE")
                assert isinstance(bye, m.Request)
                bob.answer(bye, 200)
                assert alice.expect(200).cseq.method == "BYE"
                record = cdr_of(s, alice.call_id)
                assert (record["status"], record["ended_by"]) == (200, "caller") and record["answer"]
        finally:
            alice.close()
            bob.close()
