"""Model test: the SQLite location store behaves exactly like the memory one, before and
after a restart, over random operation sequences."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.proxy.location import Binding, MemoryLocationStore
from sipedge.store.sqlite import SqliteDatabase, SqliteLocationStore

NOW = 1_700_000_000.0
AORS = ["sip:a@x.org", "sip:b@x.org"]
CONTACTS = [f"sip:u@192.0.2.{i}" for i in range(1, 5)]

binding = st.builds(
    Binding,
    aor=st.sampled_from(AORS),
    contact=st.sampled_from(CONTACTS),
    expires_at=st.sampled_from([NOW - 1, NOW + 10, NOW + 100]),
    q=st.sampled_from([0.1, 0.5, 1.0]),
    instance=st.sampled_from(["", "<urn:uuid:1>", "<urn:uuid:2>"]),
    reg_id=st.integers(0, 2),
    path=st.lists(st.sampled_from(["<sip:p1;lr>", "<sip:p2;lr>"]), max_size=2).map(tuple),
)
op = st.one_of(
    st.tuples(st.just("put"), binding),
    st.tuples(st.just("remove"), st.sampled_from(AORS), st.sampled_from(CONTACTS)),
    st.tuples(st.just("remove_aor"), st.sampled_from(AORS)),
    st.tuples(st.just("purge"), st.sampled_from([NOW, NOW + 50])),
)


def snapshot(store: MemoryLocationStore | SqliteLocationStore) -> object:
    return (
        [store.lookup(a, t) for a in AORS for t in (NOW, NOW + 50)],
        [store.count(a, NOW) for a in AORS],
        store.bindings(NOW),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(op, max_size=25))
def test_sqlite_matches_memory(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "loc.db"
        mem = MemoryLocationStore()
        with SqliteDatabase(path) as db:
            sql = SqliteLocationStore(db)
            for o in ops:
                name = o[0]
                for store in (mem, sql):
                    if name == "put":
                        store.put(o[1])  # type: ignore[arg-type]
                    elif name == "remove":
                        store.remove(o[1], o[2])  # type: ignore[arg-type]
                    elif name == "remove_aor":
                        store.remove_aor(o[1])  # type: ignore[arg-type]
                    else:
                        assert mem.purge_expired(o[1]) == sql.purge_expired(o[1])  # type: ignore[arg-type]
                        break
                assert snapshot(mem) == snapshot(sql)
        with SqliteDatabase(path) as db:
            assert snapshot(SqliteLocationStore(db)) == snapshot(mem)
