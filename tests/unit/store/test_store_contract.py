"""The store contract on every backend, against real engines (SQLite files, a real
PostgreSQL server): location, subscribers, NAT keepalive endpoints, TURN users; the
upgrade of a database written before migrations covered every table; export/import
between the engines; and PostgreSQL shared by several stores and going away."""

from __future__ import annotations

import importlib.util
import io
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from helpers.backends import open_test_database
from helpers.pgserver import PgServer, started_pg
from sipedge.cli.main import main
from sipedge.errors import StorageError
from sipedge.proxy.keepalive import Endpoint
from sipedge.proxy.location import Binding, LocationStore
from sipedge.store import transfer
from sipedge.store.backend import open_location, open_url
from sipedge.store.dialogs import read_cdrs
from sipedge.store.keepalive import SqliteEndpointStore
from sipedge.store.schema import SCHEMA_VERSION, TABLES, Database
from sipedge.store.sqlite import SqliteSubscriberStore
from sipedge.store.turn_users import TurnUserStore
from sipedge.stun import integrity

AOR = "sip:alice@example.com"
NOW = 1_700_000_000.0
V1_DUMP = Path(__file__).resolve().parents[2] / "vectors" / "storage" / "main-v1.sql"


def _contracts() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "proxy" / "test_location_memory.py"
    spec = importlib.util.spec_from_file_location("_location_contracts_all", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CONTRACTS = _contracts()


def test_location_contract(location_factory: Callable[[], LocationStore]) -> None:
    CONTRACTS.store_contract(location_factory())
    CONTRACTS.instance_contract(location_factory())


def test_location_keeps_every_byte(location_factory: Callable[[], LocationStore]) -> None:
    """Header bytes that are not UTF-8 (kept as surrogate escapes by the parser) and every
    field come back unchanged."""
    store = location_factory()
    latin1 = b"T\xe9l\xe9phone".decode("utf-8", "surrogateescape")
    odd = Binding(AOR, "sip:a@192.0.2.1;x=" + latin1, NOW + 60, q=0.25, call_id=latin1 + "@h", cseq=9,
                  received="sip:203.0.113.1:5070", path=("<sip:e1;lr>", "<sip:e2;lr>"), instance="<urn:uuid:7>",
                  reg_id=2, flow="tcp~1", user_agent=latin1, socket="tcp:127.0.0.1:5060")
    store.put(odd)
    store.put(Binding(AOR, "sip:a@192.0.2.2", NOW + 60, user_agent="caf\u00e9"))
    got = {b.contact: b for b in store.lookup(AOR, NOW)}
    assert got[odd.contact] == odd and got["sip:a@192.0.2.2"].user_agent == "caf\u00e9"
    assert store.on_flow("tcp~1") == [odd]


def test_subscriber_contract(database: Database) -> None:
    CONTRACTS.subscriber_contract(SqliteSubscriberStore(database))
    # a name no TEXT column may hold (a NUL, bytes that are not UTF-8) is no subscriber, no error
    subs = SqliteSubscriberStore(database)
    assert subs.ha1("a\x00b", "example.com", "MD5") is None
    assert subs.ha1(b"\xff".decode("utf-8", "surrogateescape"), "example.com", "MD5") is None


def test_endpoints_are_kept(database: Database) -> None:
    store = SqliteEndpointStore(database)
    store.save(Endpoint("tok1", NOW + 60, {"s": NOW + 30}, {}))
    store.save(Endpoint("tok1", NOW + 90, {}, {"d": NOW + 10}))  # replaced
    store.save(Endpoint("tok2", 0.0, {}, {}))
    got = {e.token: e for e in SqliteEndpointStore(database).load()}
    assert got["tok1"] == Endpoint("tok1", NOW + 90, {}, {"d": NOW + 10}) and set(got) == {"tok1", "tok2"}
    store.delete("tok2")
    assert [e.token for e in store.load()] == ["tok1"]


def test_turn_users(database: Database) -> None:
    users = TurnUserStore(database)
    users.add("u1", "example.com", "pw1")
    users.add("u1", "example.com", "pw2")  # replaced
    users.add("u2", "other.org", "pw")
    assert users.list() == [("u1", "example.com"), ("u2", "other.org")]
    keys = users.lookup("u1", "example.com")
    assert keys is not None and keys.md5 == integrity.long_term_key("u1", "example.com", "pw2")
    assert users.lookup("u1\x00", "example.com") is None
    assert users.lookup_userhash(integrity.userhash("u2", "other.org"), "other.org") == "u2"
    assert users.delete("u2", "other.org") and not users.delete("u2", "other.org")


def _v1_file(tmp_path: Path) -> Path:
    path = tmp_path / "old" / "sipedge.db"
    path.parent.mkdir()
    raw = sqlite3.connect(path)
    raw.executescript(V1_DUMP.read_text())
    raw.close()
    return path


def _counts(db: Database) -> dict[str, int]:
    with db.read() as c:
        return {t: int(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES}


V1_COUNTS = {"subscriber": 2, "location": 3, "dialog": 1, "cdr": 1, "nat_keepalive": 1, "turn_users": 1}


def test_upgrade_from_the_schema_before_migrations_covered_every_table(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A file written by sipedge at schema version 1 (dialogs, CDRs, keepalive and TURN
    users in tables made on first use) is migrated by ``sipedge db migrate``: no row lost."""
    path = _v1_file(tmp_path)
    assert main(["db", "status", "--db", str(path)]) == 1
    assert "schema version 1 of 2" in capsys.readouterr().out
    assert main(["db", "migrate", "--db", str(path)]) == 0
    assert "applied migration(s) 2" in capsys.readouterr().out
    assert main(["db", "migrate", "--db", str(path)]) == 0
    assert "already at schema version" in capsys.readouterr().out
    db = open_url(str(path))
    try:
        assert db.schema_version == SCHEMA_VERSION and _counts(db) == V1_COUNTS
        latin1 = b"T\xe9l\xe9phone".decode("utf-8", "surrogateescape")
        got = {b.contact: b for b in open_location(db).lookup(AOR, 1_900_000_000.0)}
        assert got["sip:alice@192.0.2.2"].user_agent == latin1 and got["sip:alice@192.0.2.1:5060;ob"].reg_id == 1
        assert SqliteSubscriberStore(db).ha1("alice", "example.com", "MD5") is not None
        (cdr,) = read_cdrs(db)
        assert cdr["media"] == {"packets": 5} and TurnUserStore(db).lookup("turnuser", "example.com") is not None
    finally:
        db.close()


def test_export_from_sqlite_import_into_postgresql_and_back(tmp_path: Path, pg_server: PgServer,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The move of an installation: every row, every byte, through ``sipedge db``."""
    old = _v1_file(tmp_path)
    dump = tmp_path / "export.jsonl"
    assert main(["db", "export", str(dump), "--db", str(old)]) == 0
    url = pg_server.create_database()
    assert main(["db", "import", str(dump), "--db", url]) == 0
    assert "imported into" in capsys.readouterr().out
    assert main(["db", "import", str(dump), "--db", url]) == 2  # never merged into data
    assert "not empty" in capsys.readouterr().err
    pg = open_url(url)
    try:
        assert _counts(pg) == V1_COUNTS
        latin1 = b"T\xe9l\xe9phone".decode("utf-8", "surrogateescape")
        loc = open_location(pg)
        got = {b.contact: b for b in loc.lookup(AOR, 1_900_000_000.0)}
        assert got["sip:alice@192.0.2.2"].user_agent == latin1
        loc.put(Binding(AOR, "sip:new@192.0.2.9", 1_900_000_000.0 + 60))  # the sequences go on after the import
        assert loc.lookup(AOR, 1_900_000_000.0)[0].contact == "sip:new@192.0.2.9"
        loc.remove(AOR, "sip:new@192.0.2.9")
        pg_export = io.StringIO()
        transfer.export_to(pg, pg_export)
    finally:
        pg.close()
    back = open_url(str(tmp_path / "back" / "sipedge.db"))
    try:
        transfer.import_from(back, pg_export.getvalue().splitlines())
        again = io.StringIO()
        transfer.export_to(back, again)
    finally:
        back.close()
    # the same rows, whichever engine held them (the header names the engine)
    assert sorted(again.getvalue().splitlines()[1:]) == sorted(dump.read_text().splitlines()[1:])


@pytest.mark.parametrize("line,error", [
    ('{"table": "nope", "row": {}}', "expected"),
    ('{"table": "subscriber", "row": {"evil\\"; DROP TABLE x; --": 1}}', "no column"),
    ('{"table": "turn_users", "row": {"username": {"$bytes": "!!"}}}', "not base64"),
    ("not json", "not JSON"),
])
def test_a_bad_import_line_is_named_and_changes_nothing(tmp_path: Path, line: str, error: str) -> None:
    db = open_test_database("sqlite", None, tmp_path)  # type: ignore[arg-type]
    try:
        header = f'{{"sipedge_export": 1, "schema_version": {SCHEMA_VERSION}, "dialect": "sqlite"}}'
        good = '{"table": "subscriber", "row": {"username": "a", "domain": "d", "ha1_md5": "x", ' \
               '"ha1_sha256": "y", "created_at": 1}}'
        with pytest.raises(StorageError, match=error):
            transfer.import_from(db, [header, good, line])
        assert _counts(db)["subscriber"] == 0
        with pytest.raises(StorageError, match="not a sipedge export"):
            transfer.import_from(db, ['{"table": "subscriber", "row": {}}'])
    finally:
        db.close()


def test_postgresql_location_is_shared_by_every_store_on_it(pg_url: str) -> None:
    """Two nodes on one database (usrloc db_mode 3): no stale per-node copy."""
    a, b = open_url(pg_url), open_url(pg_url)
    try:
        node_a, node_b = open_location(a), open_location(b)
        node_a.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60, flow="f1"))
        assert [x.contact for x in node_b.lookup(AOR, NOW)] == ["sip:a@192.0.2.1"]
        node_b.put(Binding(AOR, "sip:a@192.0.2.2", NOW + 60))  # newest first, across nodes
        assert [x.contact for x in node_a.lookup(AOR, NOW)] == ["sip:a@192.0.2.2", "sip:a@192.0.2.1"]
        node_b.remove(AOR, "sip:a@192.0.2.1")
        assert node_a.on_flow("f1") == [] and node_a.count(AOR, NOW) == 1
        with pytest.raises(Exception, match="write-back"):
            open_location(a, write_back=True)
    finally:
        a.close()
        b.close()


def test_postgresql_manual_migration_refuses_an_old_schema(pg_server: PgServer,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from sipedge.config import DatabaseConfig

    url = pg_server.create_database()
    manual = DatabaseConfig(url=url, migrate="manual")
    with pytest.raises(StorageError, match="sipedge db migrate"):
        open_url(url, manual)
    assert main(["db", "status", "--db", url]) == 1
    assert "pending 1" in capsys.readouterr().out
    assert main(["db", "migrate", "--db", url]) == 0
    open_url(url, manual).close()
    assert main(["db", "status", "--db", url]) == 0
    assert "location: 0 rows" in capsys.readouterr().out


def test_postgresql_going_away_fails_fast_and_comes_back_by_itself(caplog: pytest.LogCaptureFixture) -> None:
    """A stopped server: StorageError at once (the request gets a 500), the row half
    written is none, then service again once the server is back, without a restart."""
    with started_pg() as server:
        db = open_url(server.create_database(), None)
        try:
            loc = open_location(db)
            loc.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60))
            server.stop("immediate")
            with pytest.raises(StorageError, match="unavailable"):
                loc.put(Binding(AOR, "sip:a@192.0.2.2", NOW + 60))
            with pytest.raises(StorageError, match="unavailable"):
                loc.lookup(AOR, NOW)  # at once, not after a connect timeout
            assert db.stats()["db_down"] == 1  # type: ignore[attr-defined]
            server.start()
            import time

            deadline = time.monotonic() + 20
            while True:
                try:
                    got = [x.contact for x in loc.lookup(AOR, NOW)]
                    break
                except StorageError:
                    assert time.monotonic() < deadline, "the database did not come back"
                    time.sleep(0.1)
            assert got == ["sip:a@192.0.2.1"]  # the failed put left nothing
            assert db.stats()["db_down"] == 0 and db.stats()["db_reconnects"] == 1  # type: ignore[attr-defined]
            assert sum("unavailable" in r.message for r in caplog.records) == 1  # one line per outage
        finally:
            db.close()


def test_database_url_forms(tmp_path: Path) -> None:
    from sipedge.config import parse_config
    from sipedge.errors import ConfigError
    from sipedge.store.backend import open_database

    for bad in ("mysql://u@h/db", "sqlite://relative.db"):
        with pytest.raises(ConfigError, match=r"database\.url"):
            parse_config({"database": {"url": bad}})
    for url in (str(tmp_path / "plain.db"), f"sqlite://{tmp_path / 'url.db'}", ""):
        cfg = parse_config({"general": {"data_dir": str(tmp_path / "data")}, "database": {"url": url}})
        db = open_database(cfg)
        try:
            assert db.dialect == "sqlite" and db.schema_version == SCHEMA_VERSION
        finally:
            db.close()
    assert (tmp_path / "plain.db").exists() and (tmp_path / "url.db").exists()
    assert (tmp_path / "data" / "sipedge.db").exists()
    with pytest.raises(StorageError, match=re.escape("cannot connect to database postgresql://u:***@127.0.0.1:1/x")):
        open_url("postgresql://u:secret@127.0.0.1:1/x", parse_config({"database": {"connect_timeout": 0.5}}).database)


def test_postgresql_statement_timeout_and_pool_size(pg_url: str) -> None:
    """``statement_timeout`` cancels a statement that runs too long (a StorageError for that
    request, the database is not taken for down); ``pool_size`` bounds the connections."""
    from sipedge.config import DatabaseConfig

    db = open_url(pg_url, DatabaseConfig(url=pg_url, statement_timeout=0.2, pool_size=2))
    try:
        with pytest.raises(StorageError, match="statement timeout"), db.read() as c:
            c.execute("SELECT pg_sleep(2)")
        assert db.stats()["db_down"] == 0 and db.stats()["db_errors"] == 1  # type: ignore[attr-defined]
        assert db._pool.max_size == 2  # type: ignore[attr-defined]
        with db.read() as c:
            assert c.execute("SELECT current_setting('statement_timeout')").fetchone()[0] == "200ms"
    finally:
        db.close()
