"""``registrar.db_mode = "write-back"`` (usrloc db_mode=2): registrations answer from
memory, reach the SQLite file on the flush timer, and all of them at a clean shutdown.
In both modes a phone whose headers are not UTF-8 registers and is stored."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from helpers.sipserver import Server, running_server
from helpers.ua import UA

USERS = {"alice": "alice-pw", "bob": "bob-pw"}


def stored_aors(server: Server) -> set[str]:
    raw = sqlite3.connect(server.data_dir / "sipedge.db")
    try:
        return {aor for (aor,) in raw.execute("SELECT aor FROM location")}
    finally:
        raw.close()


def register(server: Server, user: str) -> None:
    ua = UA("udp", (server.host, server.udp), user, server.host, USERS[user])
    try:
        assert ua.register().status == 200
    finally:
        ua.close()


def test_bindings_are_committed_on_the_flush_timer(tmp_path: Path) -> None:
    extra = '\n[registrar]\ndb_mode = "write-back"\ndb_flush_interval = 0.3\n'
    with running_server(tmp_path, users=USERS, extra=extra) as s:
        register(s, "alice")
        deadline = time.monotonic() + 5
        while "sip:alice@127.0.0.1" not in stored_aors(s):
            assert time.monotonic() < deadline, "the write-back flush never came"
            time.sleep(0.05)


def test_a_clean_shutdown_commits_what_is_still_in_memory(tmp_path: Path) -> None:
    extra = '\n[registrar]\ndb_mode = "write-back"\ndb_flush_interval = 3600\n'
    with running_server(tmp_path, users=USERS, extra=extra) as s:
        register(s, "alice")
        register(s, "bob")
        assert stored_aors(s) == set()  # an hour before the first flush
    assert s.proc.returncode == 0
    assert stored_aors(s) == {"sip:alice@127.0.0.1", "sip:bob@127.0.0.1"}


@pytest.mark.parametrize("mode", ["write-through", "write-back"])
def test_a_latin1_user_agent_registers_and_is_stored(tmp_path: Path, mode: str) -> None:
    extra = f'\n[registrar]\ndb_mode = "{mode}"\n'
    with running_server(tmp_path, users=USERS, extra=extra) as s:
        ua = UA("udp", (s.host, s.udp), "alice", s.host, USERS["alice"])
        try:
            req = ua.build("REGISTER", f"sip:{s.host}", to=ua.aor, headers={"Expires": "300", "User-Agent": "X"})
            ua.sock.sendto(req.serialize().replace(b"User-Agent: X", b"User-Agent: T\xe9l\xe9phone"), (s.host, s.udp))
            challenge = ua.expect_final()
            assert challenge.status == 401
            again = ua.authorize(req, challenge).serialize()
            ua.sock.sendto(again.replace(b"User-Agent: X", b"User-Agent: T\xe9l\xe9phone"), (s.host, s.udp))
            assert ua.expect_final().status == 200
        finally:
            ua.close()
    raw = sqlite3.connect(s.data_dir / "sipedge.db")
    try:
        (agent,) = raw.execute("SELECT user_agent FROM location").fetchone()
    finally:
        raw.close()
    assert agent == b"T\xe9l\xe9phone"  # the phone's own bytes
