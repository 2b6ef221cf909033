"""``registrar.db_mode = "write-back"`` (usrloc db_mode=2): registrations answer from
memory, reach the SQLite file on the flush timer, and all of them at a clean shutdown."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

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
