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


def add_users_at_once(url: str, users: list[str]) -> None:
    """Subscribers straight into the (migrated) table: many at once (the CLI is tested above)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for user in users:
            h = subscriber_hashes(user, DOMAIN, f"{user}-pw")
            conn.execute("INSERT INTO subscriber VALUES (%s, %s, %s, %s, 0)", (user, DOMAIN, h["MD5"], h["SHA-256"]))


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
        add_users_at_once(url, users[1:])
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


def test_pool_size_bounds_the_connections_under_concurrent_registers(tmp_path: Path, pg_server: PgServer) -> None:
    """``[database] pool_size = 1`` with two workers: 12 phones registering at once, three
    times each, and a call all get their answers, and the server never holds more than
    one connection per process (pg_stat_activity, sampled all along). One is enough
    because a process makes its statements one at a time on its event loop: a nested
    checkout would wait out connect_timeout and answer 500 here."""
    url = pg_server.create_database()
    users = [f"p{i}" for i in range(12)]
    extra = pg_extra(url) + "pool_size = 1\n"
    with running_server(tmp_path, extra=extra, sip=f'domains = ["{DOMAIN}"]', general="workers = 2",
                        log_level="info") as s:
        add_users_at_once(url, users)
        seen: list[int] = []
        done = threading.Event()
        count = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND application_name = 'sipedge'")

        def sample() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                while not done.is_set():
                    row = conn.execute(count).fetchone()
                    seen.append(int(row[0]) if row else -1)
                    time.sleep(0.01)

        answers: dict[str, list[int]] = {u: [] for u in users}

        def phone(user: str) -> None:
            p = ua(s, user)
            try:
                for _ in range(3):
                    answers[user].append(p.register().status)
            finally:
                p.close()

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            threads = [threading.Thread(target=phone, args=(u,)) for u in users]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            caller, callee = ua(s, users[0]), ua(s, users[1])
            try:
                assert callee.register().status == 200
                call(s, caller, callee)
            finally:
                caller.close()
                callee.close()
        finally:
            done.set()
            sampler.join(10)
        assert all(st == [200, 200, 200] for st in answers.values()), answers
        assert stored(url) == {f"sip:{u}@{DOMAIN}" for u in users}
        assert seen and max(seen) <= 2, seen  # workers * pool_size (the supervisor keeps none open)
        assert s.proc.poll() is None


def test_statement_timeout_fails_a_register_blocked_by_a_lock_then_serves_again(
        tmp_path: Path, pg_server: PgServer) -> None:
    """``[database] statement_timeout = 0.5``: while the test holds an exclusive lock on the
    location table (another session), a REGISTER waits for it only that long and gets 500;
    the database is not taken for down, and once the lock is gone REGISTERs get 200."""
    url = pg_server.create_database()
    extra = pg_extra(url) + "statement_timeout = 0.5\n"
    with running_server(tmp_path, extra=extra, sip=f'domains = ["{DOMAIN}"]', log_level="info") as s:
        add_users_at_once(url, ["alice"])
        alice = ua(s, "alice")
        try:
            assert alice.register().status == 200
            with psycopg.connect(url) as locker:
                locker.execute("LOCK TABLE location IN ACCESS EXCLUSIVE MODE")
                started = time.monotonic()
                assert alice.register().status == 500
                took = time.monotonic() - started
                assert 0.4 < took < 2.0, took
            assert alice.register().status == 200  # the lock is gone (its transaction ended)
            assert "statement timeout" in s.log_text() and "unavailable (" not in s.log_text()
            assert s.proc.poll() is None
        finally:
            alice.close()
