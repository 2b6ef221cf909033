"""SQLite backends against a real file: restart survival, replace rules, expiry, errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sipedge.errors import StorageError
from sipedge.proxy.location import Binding, DuplicateSubscriber
from sipedge.sip.auth import ha1
from sipedge.store.sqlite import (
    SCHEMA_VERSION,
    SqliteDatabase,
    SqliteLocationStore,
    SqliteSubscriberStore,
)

AOR = "sip:alice@example.com"
NOW = 1_700_000_000.0


@pytest.fixture
def dbfile(tmp_path: Path) -> Path:
    return tmp_path / "data" / "sipedge.db"


def full_binding(contact: str = "sip:a@192.0.2.1:5060;ob", **kw: object) -> Binding:
    fields: dict[str, object] = dict(
        aor=AOR, contact=contact, expires_at=NOW + 3600, q=0.7, call_id="cid@h", cseq=42,
        received="sip:203.0.113.1:5070;transport=udp",
        path=("<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr;ob>"),
        instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>", reg_id=1,
        flow="udp~127.0.0.1~5060~203.0.113.1~5070~0", user_agent="Zoiper \u00e9", socket="udp:127.0.0.1:5060",
    )
    fields.update(kw)
    return Binding(**fields)  # type: ignore[arg-type]


def test_created_on_first_open_with_schema_and_wal(dbfile: Path) -> None:
    with SqliteDatabase(dbfile) as db:
        assert dbfile.exists()
        assert db.schema_version == SCHEMA_VERSION
    raw = sqlite3.connect(dbfile)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "location", "subscriber"} <= tables
    raw.close()
    # reopening does not re-run migrations
    with SqliteDatabase(dbfile) as db:
        assert db.schema_version == SCHEMA_VERSION
    raw = sqlite3.connect(dbfile)
    assert raw.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def _rows(dbfile: Path) -> set[tuple[str, str]]:
    raw = sqlite3.connect(dbfile)
    try:
        return {(a, c) for a, c in raw.execute("SELECT aor, contact FROM location")}
    finally:
        raw.close()


def test_write_back_commits_the_last_state_of_each_contact_on_flush(dbfile: Path) -> None:
    inst = "<urn:uuid:1>"
    with SqliteDatabase(dbfile) as db:
        store = SqliteLocationStore(db, write_back=True)
        store.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60, instance=inst, reg_id=1))
        store.put(Binding(AOR, "sip:a@192.0.2.9", NOW + 60))
        store.put(Binding("sip:bob@example.com", "sip:bob@192.0.2.5", NOW + 5))
        assert store.count(AOR, NOW) == 2  # seen at once
        assert _rows(dbfile) == set()  # but nothing committed yet
        assert store.flush() == 3 and store.stats()["location_db_unflushed"] == 0
        assert _rows(dbfile) == {(AOR, "sip:a@192.0.2.1"), (AOR, "sip:a@192.0.2.9"),
                                 ("sip:bob@example.com", "sip:bob@192.0.2.5")}
        # a re-registration from a new address replaces the instance's binding, one is
        # removed, one expires: the flush writes only the outcome
        store.put(Binding(AOR, "sip:a@192.0.2.2", NOW + 60, instance=inst, reg_id=1))
        store.remove(AOR, "sip:a@192.0.2.9")
        store.put(Binding(AOR, "sip:a@192.0.2.9", NOW + 60))
        store.remove(AOR, "sip:a@192.0.2.9")
        assert store.purge_expired(NOW + 10) == 1
        assert store.stats()["location_db_unflushed"] == 4
        writes = store.stats()["location_db_writes"]
        store.flush()
        assert store.stats()["location_db_writes"] == writes + 1  # one transaction
        assert _rows(dbfile) == {(AOR, "sip:a@192.0.2.2")}
        store.remove_aor(AOR)
        assert store.flush() == 1 and _rows(dbfile) == set()
        store.put(full_binding())
        store.flush()
    with SqliteDatabase(dbfile) as db:
        assert SqliteLocationStore(db, write_back=True).lookup(AOR, NOW) == [full_binding()]


def test_a_failed_write_back_is_kept_for_the_next_flush(dbfile: Path) -> None:
    with SqliteDatabase(dbfile) as db:
        store = SqliteLocationStore(db, write_back=True)
        raw = sqlite3.connect(dbfile)
        raw.execute(
            "CREATE TRIGGER no_bad BEFORE INSERT ON location WHEN NEW.contact = 'sip:bad@x' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        )
        raw.commit()
        store.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60))
        store.put(Binding(AOR, "sip:bad@x", NOW + 60))
        with pytest.raises(StorageError, match="refused by test"):
            store.flush()
        assert store.stats()["location_db_unflushed"] == 2 and store.stats()["location_db_errors"] == 1
        assert _rows(dbfile) == set()  # all or nothing
        store.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 120))  # a newer change meanwhile wins
        raw.execute("DROP TRIGGER no_bad")
        raw.commit()
        raw.close()
        assert store.flush() == 2
        assert _rows(dbfile) == {(AOR, "sip:a@192.0.2.1"), (AOR, "sip:bad@x")}
    with SqliteDatabase(dbfile) as db:
        again = SqliteLocationStore(db)
        assert {b.contact: b.expires_at for b in again.lookup(AOR, NOW)}["sip:a@192.0.2.1"] == NOW + 120


def test_restart_survival_and_order(dbfile: Path) -> None:
    db = SqliteDatabase(dbfile)
    store = SqliteLocationStore(db)
    first = full_binding()
    store.put(first)
    store.put(Binding(AOR, "sip:a@198.51.100.7", NOW + 100))
    store.put(Binding(AOR, "sip:a@198.51.100.8", NOW + 100))
    store.put(Binding("sip:bob@example.com", "sip:bob@198.51.100.9", NOW + 5))
    before = store.lookup(AOR, NOW)
    db.close()
    with SqliteDatabase(dbfile) as db2:
        again = SqliteLocationStore(db2)
        assert again.lookup(AOR, NOW) == before
        assert [b.contact for b in before] == ["sip:a@198.51.100.8", "sip:a@198.51.100.7", first.contact]
        assert again.lookup(AOR, NOW)[2] == first  # every field round-trips
        assert again.on_flow(first.flow) == [first]  # the flow index is rebuilt on load
        # new writes after restart are still "newest"
        again.put(Binding(AOR, "sip:a@198.51.100.7", NOW + 100))
        assert again.lookup(AOR, NOW)[0].contact == "sip:a@198.51.100.7"
        assert again.purge_expired(NOW + 10) == 1
        assert again.stats()["location_bindings"] == 3
        assert again.stats()["location_db_writes"] == 2
    with SqliteDatabase(dbfile) as db3:
        assert SqliteLocationStore(db3).count("sip:bob@example.com", NOW) == 0
        raw = sqlite3.connect(dbfile)
        assert raw.execute("SELECT COUNT(*) FROM location").fetchone()[0] == 3
        raw.close()


def test_second_connection_sees_data(dbfile: Path) -> None:
    with SqliteDatabase(dbfile) as a, SqliteDatabase(dbfile) as b:
        loc_a = SqliteLocationStore(a)
        loc_a.put(full_binding())
        subs_a = SqliteSubscriberStore(a)
        subs_a.add("alice", "example.com", "pw")
        # a store opened afterwards on another connection sees it
        assert SqliteLocationStore(b).lookup(AOR, NOW) == [full_binding()]
        subs_b = SqliteSubscriberStore(b)
        assert subs_b.exists("alice", "example.com")
        # subscribers are read live: a change on one connection is seen by the other at once
        subs_b.set_password("alice", "example.com", "new")
        assert subs_a.ha1("alice", "example.com", "MD5") == ha1("alice", "example.com", "new", "MD5")
        # the location cache is explicit about staleness: reload() picks up other writers
        SqliteLocationStore(b).remove_aor(AOR)
        assert loc_a.count(AOR, NOW) == 1
        loc_a.reload()
        assert loc_a.count(AOR, NOW) == 0


def test_no_password_stored(dbfile: Path) -> None:
    with SqliteDatabase(dbfile) as db:
        SqliteSubscriberStore(db).add("alice", "example.com", "VerySecretPassword")
    assert b"VerySecretPassword" not in dbfile.read_bytes()
    for extra in (dbfile.with_name(dbfile.name + "-wal"),):
        if extra.exists():
            assert b"VerySecretPassword" not in extra.read_bytes()


def test_failed_write_changes_nothing(dbfile: Path) -> None:
    with SqliteDatabase(dbfile) as db:
        store = SqliteLocationStore(db)
        inst = "<urn:uuid:1>"
        store.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60, instance=inst, reg_id=1))
        store.put(Binding(AOR, "sip:a@192.0.2.2", NOW + 60))
        # another connection installs a trigger that makes inserts of one contact fail
        raw = sqlite3.connect(dbfile)
        raw.execute(
            "CREATE TRIGGER no_bad BEFORE INSERT ON location WHEN NEW.contact = 'sip:bad@x' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        )
        raw.commit()
        raw.close()
        before = store.lookup(AOR, NOW)
        # this put would delete the instance binding, then fail on the insert
        with pytest.raises(StorageError, match="refused by test"):
            store.put(Binding(AOR, "sip:bad@x", NOW + 60, instance=inst, reg_id=1))
        assert store.lookup(AOR, NOW) == before
        assert store.stats()["location_db_errors"] == 1
        store.reload()
        assert store.lookup(AOR, NOW) == before  # the delete was rolled back too


def test_duplicate_subscriber_leaves_original(dbfile: Path) -> None:
    with SqliteDatabase(dbfile) as db:
        s = SqliteSubscriberStore(db)
        s.add("alice", "example.com", "one")
        with pytest.raises(DuplicateSubscriber):
            s.add("alice", "EXAMPLE.com", "two")
        assert s.ha1("alice", "example.com", "MD5") == ha1("alice", "example.com", "one", "MD5")
        # the connection is usable after the failed transaction
        s.add("bob", "example.com", "x")


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all, just some text" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
)
def test_garbage_file_is_clear_storage_error(dbfile: Path, content: bytes) -> None:
    dbfile.parent.mkdir(parents=True)
    dbfile.write_bytes(content)
    with pytest.raises(StorageError) as info:
        SqliteDatabase(dbfile)
    msg = str(info.value)
    assert str(dbfile) in msg and "move it away" in msg


def test_newer_schema_refused(dbfile: Path) -> None:
    SqliteDatabase(dbfile).close()
    raw = sqlite3.connect(dbfile)
    raw.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (SCHEMA_VERSION + 5,))
    raw.commit()
    raw.close()
    with pytest.raises(StorageError, match="newer than this sipedge supports"):
        SqliteDatabase(dbfile)


def test_unwritable_location_is_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot"):
        SqliteDatabase(blocker / "sub" / "sipedge.db")
    with pytest.raises(StorageError):
        SqliteDatabase(tmp_path)  # a directory, not a file


def test_bad_path_json_tolerated(dbfile: Path) -> None:
    with SqliteDatabase(dbfile) as db:
        SqliteLocationStore(db).put(full_binding())
    raw = sqlite3.connect(dbfile)
    raw.execute("UPDATE location SET path = 'not json'")
    raw.commit()
    raw.close()
    with SqliteDatabase(dbfile) as db:
        assert SqliteLocationStore(db).lookup(AOR, NOW)[0].path == ()


def test_registrar_on_sqlite_survives_restart(dbfile: Path) -> None:
    from sipedge.config.sip import RegistrarConfig
    from sipedge.proxy.registrar import register
    from sipedge.sip.message import Request, parse

    def req(cseq: int, contact: str) -> Request:
        text = (
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n"
            "From: <sip:alice@example.com>;tag=a\r\nTo: <sip:alice@example.com>\r\n"
            f"Call-ID: c1\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\n"
            "Path: <sip:edge.example.net;lr>\r\nContent-Length: 0\r\n\r\n"
        )
        m = parse(text.encode())
        assert isinstance(m, Request)
        return m

    cfg = RegistrarConfig()
    with SqliteDatabase(dbfile) as db:
        store = SqliteLocationStore(db)
        r = register(req(1, '<sip:alice@192.0.2.1;transport=tcp>;+sip.instance="<urn:uuid:9>";reg-id=1'),
                     store, cfg, NOW, flow="tcp~127.0.0.1~5060~192.0.2.1~40000~7",
                     received="sip:192.0.2.1:40000;transport=tcp", socket="tcp:127.0.0.1:5060")
        assert r.status == 200
    with SqliteDatabase(dbfile) as db:
        store = SqliteLocationStore(db)
        (b,) = store.lookup(AOR, NOW)
        assert (b.instance, b.reg_id, b.path, b.cseq) == ("<urn:uuid:9>", 1, ("<sip:edge.example.net;lr>",), 1)
        assert b.flow.endswith("~7") and b.received == "sip:192.0.2.1:40000;transport=tcp"
        # the CSeq ordering rule holds across the restart
        assert register(req(1, "<sip:alice@192.0.2.1;transport=tcp>"), store, cfg, NOW).status == 500
        assert register(req(2, "<sip:alice@192.0.2.1;transport=tcp>;expires=0"), store, cfg, NOW).status == 200
        assert store.count(AOR, NOW) == 0


@pytest.mark.parametrize("write_back", [False, True], ids=["write-through", "write-back"])
def test_bytes_that_are_not_utf8_are_stored_and_read_back_unchanged(dbfile: Path, write_back: bool) -> None:
    """The SIP parser keeps non-UTF-8 header bytes as surrogate escapes (an old phone's
    Latin-1 User-Agent); sqlite3 refuses those strings, so they are kept as their bytes."""
    latin1 = b"T\xe9l\xe9phone".decode("utf-8", "surrogateescape")
    odd = Binding(AOR, "sip:a@192.0.2.1;x=" + latin1, NOW + 60, user_agent=latin1, call_id=latin1 + "@h")
    with SqliteDatabase(dbfile) as db:
        store = SqliteLocationStore(db, write_back=write_back)
        store.put(odd)
        store.put(Binding(AOR, "sip:a@192.0.2.2", NOW + 60, user_agent="caf\u00e9"))
        store.flush()
    with SqliteDatabase(dbfile) as db:
        again = SqliteLocationStore(db, write_back=write_back)
        got = {b.contact: b for b in again.lookup(AOR, NOW)}
        assert got[odd.contact] == odd and got["sip:a@192.0.2.2"].user_agent == "caf\u00e9"
        again.remove(AOR, odd.contact)
        again.flush()
    assert _rows(dbfile) == {(AOR, "sip:a@192.0.2.2")}


def test_a_write_back_flush_that_fails_in_python_is_a_storage_error_and_keeps_the_changes(dbfile: Path) -> None:
    with SqliteDatabase(dbfile) as db:
        store = SqliteLocationStore(db, write_back=True)
        store.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60, path=(object(),)))  # type: ignore[arg-type]
        with pytest.raises(StorageError, match="write-back failed"):
            store.flush()
        assert store.stats()["location_db_unflushed"] == 1
        store.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60))
        assert store.flush() == 1 and _rows(dbfile) == {(AOR, "sip:a@192.0.2.1")}
