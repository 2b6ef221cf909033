"""``sipedge ctl`` and ``/api/`` against a running ``sipedge serve``: registrations, bans,
media calls, TURN allocations, the log level and reload, with real SIP, ng and TURN
clients doing what the commands then show or change; and every kind of bad request."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.ports import free_port
from helpers.sipserver import Server, cli, running_server
from helpers.turnserver import running_turn_server
from helpers.ua import UA
from sipedge.media import bencode
from sipedge.server import tls
from sipedge.turn.auth import rest_password, rest_username

aioice_turn = pytest.importorskip("aioice.turn")

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
TURN_SECRET = "ctl-test-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ng = free_port()
    extra = f'\n[media]\nng_listen = "127.0.0.1:{ng}"\n'
    turn = f'secrets = ["{TURN_SECRET}"]\nallow_peers = ["127.0.0.0/8"]'
    with running_turn_server(tmp_path_factory.mktemp("ctl"), turn, ("udp",), extra=extra, users=USERS) as s:
        s.ng_port = ng  # type: ignore[attr-defined]
        yield s


def ctl(server: Server, *args: str, check: bool = True) -> Any:
    """``sipedge ctl --json ...``: the parsed reply (or the finished process if not check)."""
    proc = cli(["ctl", "--config", str(server.config), "--json", *args], check=False)
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def table(server: Server, *args: str) -> str:
    proc = cli(["ctl", "--config", str(server.config), *args])
    return proc.stdout


def api(server: Server, path: str, token: str | None, body: bytes | None = None,
        method: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    req = urllib.request.Request(f"http://127.0.0.1:{server.http}{path}", data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        data = exc.read()
        try:
            return exc.code, json.loads(data) if data else None
        except ValueError:
            return exc.code, data.decode(errors="replace")


def token_of(server: Server) -> str:
    return (server.data_dir / "admin.token").read_text().strip()


def options(ua: UA, server: Server, timeout: float = 1.0) -> int | None:
    ua.send(ua.build("OPTIONS", f"sip:{server.host}:{server.udp}"))
    try:
        return ua.expect_final(timeout).status
    except (AssertionError, TimeoutError):
        return None


# -- the socket and its commands ----------------------------------------------------------
def test_socket_is_private_and_help_lists_every_command(server: Server) -> None:
    sock = server.data_dir / "control.sock"
    mode = sock.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    names = {c["name"] for c in ctl(server, "help")}
    assert {"stats", "ul.dump", "ul.show", "ul.rm", "media.list", "media.query", "turn.allocations",
            "ban.list", "ban.add", "ban.rm", "log.level", "reload"} <= names
    stats = ctl(server, "stats", "sip_")
    assert stats and all(k.startswith("sip_") for k in stats)


def test_ul_dump_show_rm_follow_real_registrations(server: Server) -> None:
    udp = UA("udp", (server.host, server.udp), "alice", server.host, USERS["alice"])
    tcp = UA("tcp", (server.host, server.tcp), "alice", server.host, USERS["alice"])
    try:
        assert udp.register().status == 200 and tcp.register().status == 200
        dump = [b for b in ctl(server, "ul", "dump") if b["aor"] == f"sip:alice@{server.host}"]
        contacts = {b["contact"] for b in dump}
        assert contacts == {udp.contact.strip("<>"), tcp.contact.strip("<>")}
        assert all(0 < b["expires"] <= 300 for b in dump)
        assert {b["socket"].split(":")[0] for b in dump} == {"udp", "tcp"}
        assert "alice" in table(server, "ul", "dump") and "EXPIRES" in table(server, "ul", "dump")

        shown = ctl(server, "ul", "show", f"alice@{server.host}")
        assert {b["contact"] for b in shown} == contacts

        gone = ctl(server, "ul", "rm", f"alice@{server.host}", udp.contact.strip("<>"))
        assert gone["removed"] == [udp.contact.strip("<>")]
        assert {b["contact"] for b in ctl(server, "ul", "show", f"alice@{server.host}")} == {tcp.contact.strip("<>")}

        ctl(server, "ul", "rm", f"alice@{server.host}")
        proc = ctl(server, "ul", "show", f"alice@{server.host}", check=False)
        assert proc.returncode == 2 and "has no registered contact" in proc.stderr

        # and the proxy agrees: a call for alice finds nobody
        bob = UA("udp", (server.host, server.udp), "bob", server.host, USERS["bob"])
        try:
            invite = bob.build("INVITE", f"sip:alice@{server.host}")
            bob.send(invite)
            first = bob.expect_final()
            if first.status == 407:
                bob.send(bob.authorize(invite, first))
                first = bob.expect_final()
            assert first.status == 480
        finally:
            bob.close()
        proc = ctl(server, "ul", "show", "not an aor@", check=False)
        assert proc.returncode == 2 and "not user@domain" in proc.stderr
    finally:
        udp.close()
        tcp.close()


def test_ban_add_drops_a_source_and_ban_rm_lets_it_back(server: Server) -> None:
    ua = UA("udp", (server.host, server.udp), "carol", server.host, host="127.0.0.5")
    try:
        assert options(ua, server) == 200
        added = ctl(server, "ban", "add", "127.0.0.5", "120")
        assert added == {"source": "127.0.0.5", "seconds": 120.0}
        assert options(ua, server) is None  # dropped before it is parsed
        bans = {b["source"]: b for b in ctl(server, "ban", "list")}
        assert bans["127.0.0.5"]["dropped"] >= 1 and 100 < bans["127.0.0.5"]["seconds_left"] <= 120
        assert "127.0.0.5" in table(server, "ban", "list")
        ctl(server, "ban", "rm", "127.0.0.5")
        assert options(ua, server) == 200
        assert "127.0.0.5" not in {b["source"] for b in ctl(server, "ban", "list")}
        for bad in (("ban", "add", "not-an-ip"), ("ban", "add", "127.0.0.9", "-3"), ("ban", "rm", "127.0.0.9")):
            proc = ctl(server, *bad, check=False)
            assert proc.returncode == 2 and proc.stderr.startswith("sipedge: ban."), proc.stderr
    finally:
        ua.close()
    assert "control: source 127.0.0.5 banned for 120 s" in server.log_text()


def _ng(server: Server, command: dict[str, Any]) -> dict[bytes, Any]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"c%d " % time.monotonic_ns() + bencode.encode(command), ("127.0.0.1", server.ng_port))  # type: ignore[attr-defined]
        reply = bencode.decode(s.recv(65535).partition(b" ")[2])
        assert isinstance(reply, dict) and reply[b"result"] == b"ok", reply
        return reply


def test_media_list_and_query_show_a_relayed_call(server: Server) -> None:
    sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
    _ng(server, {"command": "offer", "call-id": "ctl-call-1", "from-tag": "ft", "sdp": sdp})
    _ng(server, {"command": "answer", "call-id": "ctl-call-1", "from-tag": "ft", "to-tag": "tt", "sdp": sdp})
    try:
        calls = {c["call_id"]: c for c in ctl(server, "media", "list")}
        assert set(calls["ctl-call-1"]["tags"]) == {"ft", "tt"}
        query = ctl(server, "media", "query", "ctl-call-1")
        assert query["call_id"] == "ctl-call-1" and set(query["tags"]) == {"ft", "tt"}
        assert query["tags"]["ft"]["medias"][0]["protocol"] == "RTP/AVP"
        proc = ctl(server, "media", "query", "no-such-call", check=False)
        assert proc.returncode == 2 and "no call 'no-such-call'" in proc.stderr
    finally:
        _ng(server, {"command": "delete", "call-id": "ctl-call-1", "from-tag": "ft"})
    assert "ctl-call-1" not in {c["call_id"] for c in ctl(server, "media", "list")}


class _Sink(asyncio.DatagramProtocol):
    pass


async def test_turn_allocations_list_a_live_allocation(server: Server) -> None:
    username = rest_username(int(time.time()) + 600, "ctl-user")
    turn, _ = await asyncio.wait_for(aioice_turn.create_turn_endpoint(
        _Sink, server_addr=("127.0.0.1", server.turn_port),  # type: ignore[attr-defined]
        username=username, password=rest_password(TURN_SECRET, username), transport="udp"), 5)
    try:
        turn.sendto(b"x", ("127.0.0.1", 9))  # a permission for 127.0.0.1
        await asyncio.sleep(0.3)
        proc = await asyncio.to_thread(ctl, server, "turn", "allocations")
        mine = [a for a in proc if a["username"] == username]
        assert len(mine) == 1
        assert mine[0]["relayed"][0].startswith("127.0.0.1:") and mine[0]["expires"] > 0
        assert "127.0.0.1" in mine[0]["permissions"]
    finally:
        turn.close()


def test_log_level_shown_and_set(server: Server) -> None:
    assert ctl(server, "log", "level") == {"level": "debug"}
    try:
        assert ctl(server, "log", "level", "warning") == {"level": "warning"}
        assert "level  warning" in table(server, "log", "level")
        proc = ctl(server, "log", "level", "chatty", check=False)
        assert proc.returncode == 2 and "must be one of debug, info, warning, error" in proc.stderr
    finally:
        ctl(server, "log", "level", "debug")


def test_bad_requests_on_the_socket_get_errors_and_the_server_keeps_serving(server: Server) -> None:
    def ask(line: bytes) -> dict[str, Any] | None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(str(server.data_dir / "control.sock"))
            s.sendall(line + b"\n")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data) if data else None

    def code(line: bytes) -> int:
        reply = ask(line)
        assert reply is not None and "error" in reply, reply
        return int(reply["error"]["code"])

    assert code(b"\xff\xfe garbage") == -32700
    assert code(b"[1, 2]") == -32600
    assert code(b'{"jsonrpc": "2.0", "id": 1, "method": 7}') == -32600
    assert code(b'{"jsonrpc": "2.0", "id": 1, "method": "no.such"}') == -32601
    assert code(b'{"jsonrpc": "2.0", "id": 1, "method": "ul.dump", "params": {"x": 1}}') == -32602
    assert code(b'{"jsonrpc": "2.0", "id": 1, "method": "ul.show", "params": [1]}') == -32602
    assert code(b'{"jsonrpc": "2.0", "id": 1, "method": "ul.show", "params": {"aor": 5}}') == -32602
    assert ask(b'{"jsonrpc": "2.0", "method": "stats"}') is None  # a notification: no reply
    assert code(b'{"jsonrpc": "2.0", "id": 1, "method": "help", "params": {"' + b"x" * 70000 + b'": 1}}') == -32600
    assert ctl(server, "help")  # still serving
    assert "Traceback" not in server.log_text()


def test_ctl_without_a_server_says_how_to_fix_it(tmp_path: Path) -> None:
    proc = cli(["ctl", "--socket", str(tmp_path / "none.sock"), "stats"], check=False)
    assert proc.returncode == 2 and "is `sipedge serve` running" in proc.stderr


# -- the HTTP side ------------------------------------------------------------------------
def test_api_needs_the_admin_token(server: Server) -> None:
    token = token_of(server)
    assert stat.S_IMODE((server.data_dir / "admin.token").stat().st_mode) == 0o600
    before = ctl(server, "stats", "web_api_refused").get("web_api_refused", 0)
    for given in (None, "wrong", token[:-1]):
        status, body = api(server, "/api/stats", given)
        assert status == 401 and body == {"error": "unauthorized"}
        status, body = api(server, "/api/", given, b'{"jsonrpc":"2.0","id":1,"method":"ban.list"}')
        assert status == 401 and body == {"error": "unauthorized"}
    assert ctl(server, "stats", "web_api_refused")["web_api_refused"] == before + 6

    status, body = api(server, "/api/stats?prefix=turn_", token)
    assert status == 200 and body["result"] and all(k.startswith("turn_") for k in body["result"])
    status, body = api(server, "/api/ul.dump", token)
    assert status == 200 and isinstance(body["result"], list)


def test_api_commands_reads_by_get_changes_by_post(server: Server) -> None:
    token = token_of(server)
    status, body = api(server, "/api/ban.add?source=127.0.0.8", token)
    assert status == 400 and "send it with POST" in body["error"]["message"]
    status, body = api(server, "/api/ban.add", token, json.dumps({"source": "127.0.0.8", "seconds": 30}).encode())
    assert status == 200 and body["result"]["source"] == "127.0.0.8"
    status, body = api(server, "/api/", token, b'{"jsonrpc":"2.0","id":9,"method":"ban.list"}')
    assert status == 200 and body["id"] == 9 and "127.0.0.8" in {b["source"] for b in body["result"]}
    status, body = api(server, "/api/ban/rm", token, b'{"source": "127.0.0.8"}')
    assert status == 200 and body["result"]["lifted"] is True
    status, body = api(server, "/api/ban.rm", token, b'{"source": "127.0.0.8"}')
    assert status == 404
    status, body = api(server, "/api/ban.add", token, b"{not json")
    assert status == 400
    status, body = api(server, "/api/no.such", token)
    assert status == 400 and body["error"]["code"] == -32601
    status, body = api(server, "/api/", token, b"x" * 70000)
    assert status == 413


# -- reload, and a server with neither socket nor API ---------------------------------------
ROUTING = '''
def request_route(ctx):
    ctx.reply({status}, "Routing {status}")
'''


def _peer_fingerprint(host: str, port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    import hashlib

    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def test_reload_rereads_routing_and_certificate_and_keeps_the_old_on_error(tmp_path: Path) -> None:
    routing = tmp_path / "routing.py"
    routing.write_text(ROUTING.format(status=486))
    sock = tmp_path / "ctl.sock"
    with running_server(tmp_path / "srv", extra=f'\n[routing]\nmodule = "{routing}"\n',
                        general=f'control_socket = "{sock}"', web='admin_token = "a-token-from-the-config-0123456789"') as s:
        ua = UA("udp", (s.host, s.udp), "alice", s.host)
        try:
            assert options(ua, s) == 486
            old_fp = _peer_fingerprint(s.host, s.tls)

            routing.write_text(ROUTING.format(status=603))
            fresh = tls.ensure_certificate(tmp_path / "new-cert.pem", tmp_path / "new-key.pem")
            (s.data_dir / "tls" / "cert.pem").write_bytes(fresh.cert.read_bytes())
            (s.data_dir / "tls" / "key.pem").write_bytes(fresh.key.read_bytes())
            proc = cli(["ctl", "--socket", str(sock), "--json", "reload"])
            done = json.loads(proc.stdout)
            assert done["routing"] == str(routing) and done["tls_fingerprint"] == fresh.fingerprint
            assert options(ua, s) == 603
            assert _peer_fingerprint(s.host, s.tls) == fresh.fingerprint != old_fp

            routing.write_text("def request_route(ctx):\n    return (\n")
            proc = cli(["ctl", "--socket", str(sock), "reload"], check=False)
            assert proc.returncode == 2 and "nothing reloaded" in proc.stderr
            assert options(ua, s) == 603  # the module that worked still routes
        finally:
            ua.close()
        status, _ = api(s, "/api/stats", "a-token-from-the-config-0123456789")
        assert status == 200
        assert not (s.data_dir / "admin.token").exists()


def test_control_socket_off_and_api_off(tmp_path: Path) -> None:
    with running_server(tmp_path, general='control_socket = "off"', web="api = false") as s:
        assert not (s.data_dir / "control.sock").exists()
        proc = cli(["ctl", "--config", str(s.config), "stats"], check=False)
        assert proc.returncode == 2 and 'control_socket is "off"' in proc.stderr
        status, _ = api(s, "/api/stats", "anything")
        assert status == 404


def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    sock = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens: what a killed server leaves
    with running_server(tmp_path / "one", general=f'control_socket = "{sock}"') as s:
        assert cli(["ctl", "--socket", str(sock), "--json", "log", "level"]).returncode == 0
        with pytest.raises(RuntimeError, match="another sipedge serves it"), \
                running_server(tmp_path / "two", general=f'control_socket = "{sock}"'):
            pass
        assert cli(["ctl", "--socket", str(sock), "--json", "log", "level"]).returncode == 0
        assert s.proc.poll() is None
