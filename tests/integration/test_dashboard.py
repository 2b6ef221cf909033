"""The per-call SIP trace (``sipedge ctl trace``, ``/api/trace.*``) and the dashboard's
authentication, against a real ``sipedge serve`` with real SIPp calls and registrations.
The dashboard in a browser is test_dashboard_browser.py."""

from __future__ import annotations

import http.client as httpc
import json
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.sipserver import Server, cli, running_server
from helpers.ua import UA

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.sipp_runner import SippFlows, SippResult, sipp_bin, stop_process  # noqa: E402

pytestmark = [pytest.mark.timeout(120)]
needs_sipp = pytest.mark.skipif(sipp_bin() is None, reason="sipp not installed (sip-tester)")

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
ROUTING = Path(__file__).resolve().parents[1] / "helpers" / "relay_all_routing.py"
LADDER = ["INVITE", "100", "180", "200", "ACK", "BYE", "200"]


def label(first_line: str) -> str:
    parts = first_line.split(" ")
    return parts[1] if first_line.startswith("SIP/") else parts[0]


def in_order(labels: list[str], wanted: list[str]) -> bool:
    """``wanted`` is a subsequence of ``labels``."""
    it = iter(labels)
    return all(any(x == w for x in it) for w in wanted)


def _ok(r: SippResult) -> None:
    assert r.ok, r.explain()


def http_ready(server: Server) -> Server:
    """Until the web port answers (running_server waits for SIP, which starts first)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            request(server, "GET", "/healthz")
            return server
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("dashboard")
    with running_server(tmp, users=USERS, extra=f'\n[routing]\nmodule = "{ROUTING}"\n') as s:
        yield http_ready(s)


def ctl(server: Server, *args: str) -> Any:
    proc = cli(["ctl", "--config", str(server.config), "--json", *args], check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def token_of(server: Server) -> str:
    return (server.data_dir / "admin.token").read_text().strip()


def request(server: Server, method: str, path: str, body: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, httpc.HTTPMessage, bytes]:
    """One request, redirects not followed."""
    conn = httpc.HTTPConnection(server.host, server.http, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def login(server: Server, token: str) -> tuple[int, httpc.HTTPMessage]:
    status, headers, _ = request(server, "POST", "/dashboard/login", urllib.parse.urlencode({"token": token}),
                              {"Content-Type": "application/x-www-form-urlencoded"})
    return status, headers


def cookie_of(headers: httpc.HTTPMessage) -> str:
    set_cookie = headers.get("Set-Cookie", "")
    return set_cookie.split(";", 1)[0]


@pytest.fixture(scope="module")
def sipp_call(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """bob is a SIPp UAS registered by SIPp; carol (SIPp UAC) calls him: the Call-ID."""
    if sipp_bin() is None:
        pytest.skip("sipp not installed (sip-tester)")
    flows = SippFlows(f"{server.host}:{server.udp}", server.host, tmp_path_factory.mktemp("sipp"))
    uas, contact = flows.start_uas()
    try:
        _ok(flows.register("bob", USERS["bob"], contact))
        before = {c["call_id"] for c in ctl(server, "trace", "list")["calls"]}
        _ok(flows.call("carol", USERS["carol"], "bob", talk_ms=100))
        new = [c for c in ctl(server, "trace", "list")["calls"] if c["call_id"] not in before]
        invites = [c for c in new if "carol" in (c["from"] or "") and "bob" in (c["to"] or "")]
        assert len(invites) == 1, new
        yield invites[0]["call_id"]
    finally:
        stop_process(uas)  # type: ignore[arg-type]


@needs_sipp
def test_ctl_trace_shows_a_sipp_call_in_order(server: Server, sipp_call: str) -> None:
    (summary,) = [c for c in ctl(server, "trace", "list")["calls"] if c["call_id"] == sipp_call]
    assert summary["status"] == 200 and summary["messages"] >= 14
    assert summary["first"] <= summary["last"]
    shown = ctl(server, "trace", "show", sipp_call)
    messages = shown["messages"]
    labels = [label(m["first_line"]) for m in messages]
    assert in_order(labels, LADDER), labels
    # a proxied message passes twice: in from one side, out to the other
    assert in_order([(label(m["first_line"]), m["direction"]) for m in messages],  # type: ignore[misc]
                    [("INVITE", "in"), ("INVITE", "out"), ("180", "in"), ("180", "out"), ("200", "in"),
                     ("200", "out"), ("ACK", "in"), ("ACK", "out"), ("BYE", "in"), ("BYE", "out")])
    invite = next(m for m in messages if m["first_line"].startswith("INVITE") and m["direction"] == "in")
    assert invite["transport"] == "udp" and invite["local"] == f"{server.host}:{server.udp}"
    assert f"Call-ID: {sipp_call}" in invite["message"] and "m=audio" in invite["message"]
    # the table for people
    text = cli(["ctl", "--config", str(server.config), "trace", "show", sipp_call]).stdout
    assert "FIRST_LINE" in text and "BYE sip:" in text and "SIP/2.0 180 Ringing" in text
    listing = cli(["ctl", "--config", str(server.config), "trace", "list"]).stdout
    assert sipp_call in listing and "STATUS" in listing


@needs_sipp
def test_api_serves_the_same_trace(server: Server, sipp_call: str) -> None:
    auth = {"Authorization": f"Bearer {token_of(server)}"}
    status, _, body = request(server, "GET", "/api/trace.list", headers=auth)
    assert status == 200 and sipp_call in {c["call_id"] for c in json.loads(body)["result"]["calls"]}
    q = urllib.parse.urlencode({"call_id": sipp_call})
    status, _, body = request(server, "GET", f"/api/trace.show?{q}", headers=auth)
    labels = [label(m["first_line"]) for m in json.loads(body)["result"]["messages"]]
    assert status == 200 and in_order(labels, LADDER)
    status, _, body = request(server, "GET", "/api/trace.show?call_id=nope", headers=auth)
    assert status == 404 and "trace has no call" in json.loads(body)["error"]["message"]
    status, _, _ = request(server, "GET", f"/api/trace.show?{q}")
    assert status == 401
    status, _, body = request(server, "GET", "/api/trace.list?since=-1", headers=auth)
    assert status == 400


def test_trace_of_garbage_and_huge_messages_is_bounded(server: Server) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"\r\n\r\n", b"\x00" * 100, b"hello"):
            s.sendto(junk, (server.host, server.udp))
        # a first line with a terminal escape sequence: answered 400, traced, printed escaped
        s.sendto(b"OPTIONS sip:\x1b[2Jx@y SIP/2.0\r\nCall-ID: esc-1\r\nCSeq: 1 OPTIONS\r\n\r\n",
                 (server.host, server.udp))
        ua = UA("udp", (server.host, server.udp), "alice", server.host, USERS["alice"])
        try:
            req = ua.build("OPTIONS", f"sip:{server.host}:{server.udp}", headers={"X-Pad": "x" * 30000})
            ua.send(req)
            ua.expect_final()
            messages = ctl(server, "trace", "show", ua.call_id)["messages"]
        finally:
            ua.close()
    text = cli(["ctl", "--config", str(server.config), "trace", "show", "esc-1"]).stdout
    assert "OPTIONS sip:\\x1b[2Jx@y" in text and "\x1b" not in text
    first = messages[0]
    assert first["truncated"] and first["size"] > 30000 and len(first["message"]) == 16384
    stats = ctl(server, "stats", "trace_")
    assert stats["trace_no_call_id"] >= 1 and stats["trace_truncated"] >= 1


# -- the dashboard's door -----------------------------------------------------------------
def test_dashboard_answers_nothing_without_a_session(server: Server) -> None:
    status, headers, _ = request(server, "GET", "/dashboard")
    assert status == 303 and headers["Location"] == "/dashboard/login"
    for path in ("/dashboard/api/stats", "/dashboard/api/ul.dump", "/dashboard/events",
                 "/dashboard/assets/dashboard.js"):
        status, _, body = request(server, "GET", path)
        assert status == 401, path
        assert b"sip_" not in body and b"function" not in body
    # the API's bearer token is no dashboard session, nor is a made-up cookie
    status, _, _ = request(server, "GET", "/dashboard/api/stats",
                        headers={"Authorization": f"Bearer {token_of(server)}",
                                 "Cookie": "sipedge_dashboard=forged"})
    assert status == 401
    status, headers, body = request(server, "GET", "/dashboard/login")
    assert status == 200 and b'name="token"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]


def test_wrong_token_is_refused_and_counted(server: Server) -> None:
    before = ctl(server, "stats", "web_dashboard")["web_dashboard_refused"]
    for wrong in ("", "nope", token_of(server)[:-1], token_of(server) + "x", "\u00e9" * 40):
        status, headers = login(server, wrong)
        assert status == 401 and "Set-Cookie" not in headers
    assert ctl(server, "stats", "web_dashboard")["web_dashboard_refused"] == before + 5


def test_login_opens_pages_data_and_events_until_logout(server: Server) -> None:
    status, headers = login(server, token_of(server))
    assert status == 303 and headers["Location"] == "/dashboard"
    set_cookie = headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/dashboard" in set_cookie
    cookie = {"Cookie": cookie_of(headers)}
    status, headers, body = request(server, "GET", "/dashboard", headers=cookie)
    assert status == 200 and b'id="ladder"' in body and b'id="registrations"' in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    for asset in ("dashboard.js", "dashboard.css"):
        status, _, _ = request(server, "GET", f"/dashboard/assets/{asset}", headers=cookie)
        assert status == 200
    status, _, _ = request(server, "GET", "/dashboard/assets/..%2Fserver.py", headers=cookie)
    assert status == 404
    status, _, body = request(server, "GET", "/dashboard/api/trace.list", headers=cookie)
    assert status == 200 and "calls" in json.loads(body)
    status, _, body = request(server, "GET", "/dashboard/api/stats?prefix=sip_", headers=cookie)
    assert status == 200 and all(k.startswith("sip_") for k in json.loads(body))
    # only reads: a command that changes state is not the dashboard's
    status, _, _ = request(server, "GET", "/dashboard/api/ban.add?source=192.0.2.1", headers=cookie)
    assert status == 404
    assert not ctl(server, "ban", "list")
    events = read_events(server, cookie["Cookie"])
    assert {"trace", "snapshot"} <= set(events)
    snapshot = events["snapshot"]
    assert isinstance(snapshot["registrations"], list) and isinstance(snapshot["stats"], dict)
    assert isinstance(snapshot["media"], list) and "error" in snapshot["turn"]  # no TURN here

    status, headers, _ = request(server, "POST", "/dashboard/logout", headers=cookie)
    assert status == 303 and headers["Location"] == "/dashboard/login"
    status, _, _ = request(server, "GET", "/dashboard/api/stats", headers=cookie)
    assert status == 401


def read_events(server: Server, cookie: str) -> dict[str, Any]:
    """The first event of each kind on /dashboard/events (bounded: 5 s)."""
    conn = httpc.HTTPConnection(server.host, server.http, timeout=5)
    out: dict[str, Any] = {}
    try:
        conn.request("GET", "/dashboard/events", headers={"Cookie": cookie})
        r = conn.getresponse()
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        name = None
        for _ in range(200):
            line = r.fp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name is not None:
                out.setdefault(name, json.loads(line[6:]))
            if {"trace", "snapshot"} <= set(out):
                break
    finally:
        conn.close()
    return out


def test_a_session_expires(tmp_path: Path) -> None:
    with running_server(tmp_path, web="dashboard_session = 1.0") as s:
        status, headers = login(http_ready(s), token_of(s))
        assert status == 303 and "Max-Age=1" in headers["Set-Cookie"]
        cookie = {"Cookie": cookie_of(headers)}
        assert request(s, "GET", "/dashboard/api/stats", headers=cookie)[0] == 200
        time.sleep(1.2)
        assert request(s, "GET", "/dashboard/api/stats", headers=cookie)[0] == 401
        status, headers, _ = request(s, "GET", "/dashboard", headers=cookie)
        assert status == 303 and headers["Location"] == "/dashboard/login"


def test_trace_off(tmp_path: Path) -> None:
    with running_server(tmp_path, web="trace = false") as s:
        proc = cli(["ctl", "--config", str(s.config), "trace", "list"], check=False)
        assert proc.returncode == 2 and "web.trace = false" in proc.stderr
        stats = json.loads(cli(["ctl", "--config", str(s.config), "--json", "stats", "trace_"]).stdout)
        assert stats == {}


def test_trace_bounds_from_the_config(tmp_path: Path) -> None:
    with running_server(tmp_path, web="trace_calls = 2\ntrace_messages = 3\ntrace_bytes = 200") as s:
        for _ in range(4):
            ua = UA("udp", (s.host, s.udp), "alice", s.host)
            try:
                for _ in range(3):
                    ua.send(ua.build("OPTIONS", f"sip:{s.host}:{s.udp}"))
                    ua.expect_final()
            finally:
                ua.close()
        calls = json.loads(cli(["ctl", "--config", str(s.config), "--json", "trace", "list"]).stdout)["calls"]
        assert len(calls) == 2 and all(c["kept"] == 3 and c["messages"] == 6 for c in calls)
        shown = json.loads(cli(["ctl", "--config", str(s.config), "--json", "trace", "show",
                                calls[0]["call_id"]]).stdout)["messages"]
        assert all(len(m["message"]) <= 200 for m in shown)
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(RuntimeError), running_server(bad, web="trace_calls = 0"):
        pass
    assert "trace_calls" in (bad / "sipedge.log").read_text()
