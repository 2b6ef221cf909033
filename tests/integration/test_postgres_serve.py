"""``sipedge serve`` on a real PostgreSQL (``[database] url = "postgresql://…"``): users
added by ``sipedge user add``, register and call, bindings that survive a restart, two
nodes sharing one database, and the database stopped and started again under load."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import psycopg

from helpers.pgserver import PgServer, started_pg
from helpers.ports import free_port
from helpers.sipserver import SIPEDGE, Server, cli, restarted, running_server, write_config
from helpers.ua import UA, in_dialog
from sipedge.proxy.location import subscriber_hashes
from sipedge.sip import message as m

DOMAIN = "example.com"
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
       b"c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
       b"a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=rtpmap:111 opus/48000/2\r\n")


def pg_extra(url: str) -> str:
    return f'\n[database]\nurl = "{url}"\nconnect_timeout = 2.0\n'


def add_user(url: str, user: str) -> None:
    out = cli(["user", "add", f"{user}@{DOMAIN}", "--password", f"{user}-pw", "--db", url])
    assert out.stdout.strip() == f"added {user}@{DOMAIN}"


def ua(server: Server, user: str) -> UA:
    return UA("udp", (server.host, server.udp), user, DOMAIN, f"{user}-pw", host=server.host)


def call(via: Server, caller: UA, callee: UA) -> None:
    """A whole call from ``caller`` through ``via`` to ``callee``: INVITE (answering the
    407), 180, 200, ACK, BYE (the callee answers to ``via``, whichever node it registered on)."""
    caller.server = callee.server = (via.host, via.udp)
    inv = caller.build("INVITE", callee.aor, body=SDP, headers={"Content-Type": "application/sdp"})
    caller.send(inv)
    caller.send(caller.authorize(inv, caller.expect(407)))
    seen = callee.wait("INVITE")
    assert isinstance(seen, m.Request)
    callee.answer(seen, 180)
    callee.answer(seen, 200, body=SDP)
    ok = caller.expect(200)
    routes = list(reversed(ok.get_all("record-route")))
    caller.send(in_dialog(caller, "ACK", ok, routes, cseq=ok.cseq.number))
    assert callee.wait("ACK").method == "ACK"
    caller.send(in_dialog(caller, "BYE", ok, routes))
    bye = callee.wait("BYE")
    assert isinstance(bye, m.Request)
    callee.answer(bye, 200)
    assert caller.expect(200).cseq.method == "BYE"


def stored(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {bytes(aor).decode() for (aor,) in conn.execute("SELECT aor FROM location")}


def test_register_call_and_restart_on_postgresql(tmp_path: Path, pg_server: PgServer) -> None:
    url = pg_server.create_database()
    with running_server(tmp_path, extra=pg_extra(url), sip=f'domains = ["{DOMAIN}"]') as s:
        add_user(url, "alice")  # into the database the running server reads
        add_user(url, "bob")
        assert "postgresql" in s.log_text() and "schema version 2" in s.log_text()
        alice, bob = ua(s, "alice"), ua(s, "bob")
        try:
            assert bob.register().status == 200
            call(s, alice, bob)
            with restarted(s, tmp_path / "second.log"):
                call(s, alice, bob)  # bob's binding is in the database, not in a process
        finally:
            alice.close()
            bob.close()
    assert stored(url) == {f"sip:bob@{DOMAIN}"}
    assert "alice@example.com" in cli(["user", "list", "--db", url]).stdout


def test_two_nodes_on_one_database_see_each_others_registrations(tmp_path: Path, pg_server: PgServer) -> None:
    url = pg_server.create_database()
    add_user(url, "alice")
    add_user(url, "bob")
    sip = f'domains = ["{DOMAIN}"]'
    with running_server(tmp_path / "a", "127.0.0.1", extra=pg_extra(url), sip=sip) as node_a, \
            running_server(tmp_path / "b", "127.0.0.2", extra=pg_extra(url), sip=sip) as node_b:
        alice, bob = ua(node_a, "alice"), ua(node_b, "bob")
        try:
            assert alice.register().status == 200  # on node A
            assert bob.register().status == 200  # on node B
            call(node_b, bob, alice)  # B finds the binding A saved
            call(node_a, alice, bob)  # and A the one B saved
        finally:
            alice.close()
            bob.close()


def test_the_database_stopped_under_load_and_back(tmp_path: Path) -> None:
    """PostgreSQL crashes (immediate stop) while phones register and comes back: the
    server answers 500 meanwhile, never crashes, logs the outage once, and serves again by
    itself; every binding it answered 200 for is in the database."""
    users = [f"u{i}" for i in range(40)]
    with started_pg() as pg:
        url = pg.create_database()
        add_user(url, "u0")
        with psycopg.connect(url, autocommit=True) as conn:  # the rest at once (the CLI is tested above)
            for user in users[1:]:
                h = subscriber_hashes(user, DOMAIN, f"{user}-pw")
                conn.execute("INSERT INTO subscriber VALUES (%s, %s, %s, %s, 0)", (user, DOMAIN, h["MD5"], h["SHA-256"]))
        answered: dict[str, int] = {}
        with running_server(tmp_path, extra=pg_extra(url), sip=f'domains = ["{DOMAIN}"]', log_level="info") as s:

            def crash() -> None:
                while sum(v == 200 for v in answered.values()) < 10:
                    time.sleep(0.01)
                pg.stop("immediate")
                time.sleep(1.5)
                pg.start()

            crasher = threading.Thread(target=crash)
            crasher.start()
            try:
                for user in users:
                    phone = ua(s, user)
                    try:
                        answered[user] = phone.register().status
                    finally:
                        phone.close()
                    time.sleep(0.05)
            finally:
                crasher.join(30)
            assert 500 in answered.values(), answered  # some fell in the outage
            # service came back by itself: the failed ones register now
            deadline = time.monotonic() + 20
            for user in [u for u, st in answered.items() if st != 200]:
                while True:
                    phone = ua(s, user)
                    try:
                        answered[user] = phone.register().status
                    finally:
                        phone.close()
                    if answered[user] == 200:
                        break
                    assert time.monotonic() < deadline, "the server did not recover"
                    time.sleep(0.2)
            assert s.proc.poll() is None
            log = s.log_text()
        assert stored(url) == {f"sip:{u}@{DOMAIN}" for u in users}
        assert log.count("unavailable (") == 1 and "is back after" in log


def test_an_unreachable_database_at_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"postgresql://sipedge:secret@127.0.0.1:{free_port()}/none"  # nothing listens there
    cfg = write_config(tmp_path, extra=pg_extra(url))[0]
    r = subprocess.run([SIPEDGE, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "sipedge: cannot connect to database postgresql://sipedge:***@127.0.0.1" in r.stderr
    assert "secret" not in r.stderr + r.stdout and "Traceback" not in r.stderr


def test_with_migrate_manual_serve_refuses_an_empty_database_until_sipedge_db_migrate(
        tmp_path: Path, pg_server: PgServer) -> None:
    """``[database] migrate = "manual"``: an operator who migrates by hand gets a server
    that will not start on an out-of-date schema, with the command to run, and starts
    once ``sipedge db migrate`` has run."""
    url = pg_server.create_database("manual")
    cfg = write_config(tmp_path, extra=pg_extra(url) + 'migrate = "manual"\n')[0]
    r = subprocess.run([SIPEDGE, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "run `sipedge db migrate`" in r.stderr
    cli(["db", "migrate", "--config", str(cfg)])
    with running_server(tmp_path, extra=pg_extra(url) + 'migrate = "manual"\n') as s:
        alice = ua(s, "alice")
        add_user(url, "alice")
        assert alice.register().status == 200
        alice.close()
