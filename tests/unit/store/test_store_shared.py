"""The location store of several workers: what one process writes, another reads."""

from __future__ import annotations

from pathlib import Path

from sipedge.proxy.location import Binding
from sipedge.store.shared import SharedSqliteLocationStore
from sipedge.store.sqlite import SqliteDatabase, SqliteLocationStore

AOR = "sip:alice@example.com"
NOW = 1_700_000_000.0


def test_a_binding_written_by_one_worker_is_found_by_the_other(tmp_path: Path) -> None:
    path = tmp_path / "sipedge.db"
    db1, db2 = SqliteDatabase(path), SqliteDatabase(path)
    try:
        one, two = SharedSqliteLocationStore(db1), SharedSqliteLocationStore(db2)
        assert two.lookup(AOR, NOW) == []
        one.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60, flow="udp~1~1~2~2~0"))
        assert [b.contact for b in two.lookup(AOR, NOW)] == ["sip:a@192.0.2.1"]
        assert two.count(AOR, NOW) == 1
        assert [b.contact for b in two.on_flow("udp~1~1~2~2~0")] == ["sip:a@192.0.2.1"]
        two.put(Binding(AOR, "sip:a@192.0.2.2", NOW + 60))
        assert {b.contact for b in one.lookup(AOR, NOW)} == {"sip:a@192.0.2.1", "sip:a@192.0.2.2"}
        one.remove(AOR, "sip:a@192.0.2.1")
        assert [b.contact for b in two.lookup(AOR, NOW)] == ["sip:a@192.0.2.2"]
        two.remove_aor(AOR)
        assert one.lookup(AOR, NOW) == [] and one.bindings(NOW) == []
    finally:
        db1.close()
        db2.close()


def test_the_single_process_store_would_not_see_it(tmp_path: Path) -> None:
    """Why workers need the shared store: the plain one reads the file once."""
    path = tmp_path / "sipedge.db"
    db1, db2 = SqliteDatabase(path), SqliteDatabase(path)
    try:
        one, two = SqliteLocationStore(db1), SqliteLocationStore(db2)
        one.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60))
        assert two.lookup(AOR, NOW) == []
    finally:
        db1.close()
        db2.close()
