"""The SQLite dialog and CDR tables (store/dialogs.py) and ``sipedge cdr`` over them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from sipedge.cli import cdr as cdr_cli
from sipedge.cli.main import main
from sipedge.config import parse_config
from sipedge.proxy import dialog as dlgs
from sipedge.sip import message as m
from sipedge.store.dialogs import SqliteDialogStore, read_cdrs
from sipedge.store.sqlite import SqliteDatabase

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:6000;branch=z9hG4bKs1\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: store-1\r\n"
    b"CSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.1:6000>\r\nContent-Length: 0\r\n\r\n"
)


def cdr(call_id: str, user: str = "alice@example.com", start: float = 1000.0, status: int = 200) -> dlgs.Cdr:
    return dlgs.Cdr(call_id, "sip:alice@example.com", "sip:bob@example.com", user, "192.0.2.1", start,
                    start + 1 if status == 200 else None, start + 11, 10.0 if status == 200 else 0.0, status,
                    "OK", "caller")


def test_dialogs_survive_a_reopen_and_go_when_deleted(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with SqliteDatabase(path) as db:
        store = SqliteDialogStore(db)
        table = dlgs.DialogTable(parse_config({}).dialog, store)
        req = m.parse(INVITE)
        assert isinstance(req, m.Request)
        table.start(req, "flow:udp~1", "alice@example.com", "192.0.2.1", 1000.0)
    with SqliteDatabase(path) as db:
        again = dlgs.DialogTable(parse_config({}).dialog, SqliteDialogStore(db))
        (dlg,) = again.active()
        assert (dlg.call_id, dlg.user, dlg.caller_leg.dest) == ("store-1", "alice@example.com", "flow:udp~1")
        again.end("store-1", "test", 1005.0)
        assert not SqliteDialogStore(db).load_dialogs()
        (row,) = read_cdrs(db)
        assert (row["call_id"], row["status"], row["ended_by"]) == ("store-1", 408, "test")


def test_a_damaged_dialog_row_is_skipped(tmp_path: Path) -> None:
    with SqliteDatabase(tmp_path / "db.sqlite") as db:
        store = SqliteDialogStore(db)
        with db.transaction() as c:
            c.execute("INSERT INTO dialog VALUES ('x', '{not json', 0)")
        assert store.load_dialogs() == []


def test_media_totals_before_or_after_the_cdr_and_jsonl(tmp_path: Path) -> None:
    jsonl = tmp_path / "cdr.jsonl"
    acc = parse_config({"accounting": {"jsonl": str(jsonl)}}).accounting
    with SqliteDatabase(tmp_path / "db.sqlite") as db:
        store = SqliteDialogStore(db, acc)
        store.media_totals("early", {"packets": 5})  # a BYE's media delete, before its 200
        store.add_cdr(cdr("early"))
        store.add_cdr(cdr("late"))
        store.media_totals("late", {"packets": 7})  # a call the server ended
        rows = {r["call_id"]: r for r in read_cdrs(db)}
        assert rows["early"]["media"] == {"packets": 5} and rows["late"]["media"] == {"packets": 7}
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(r["call_id"], r["media"]) for r in lines] == [("early", {"packets": 5}), ("late", {})]


def test_read_filters(tmp_path: Path) -> None:
    with SqliteDatabase(tmp_path / "db.sqlite") as db:
        store = SqliteDialogStore(db)
        store.add_cdr(cdr("old", start=100.0))
        store.add_cdr(cdr("new", start=2000.0, status=486))
        store.add_cdr(cdr("carol", user="carol@example.com", start=3000.0))
        assert [r["call_id"] for r in read_cdrs(db)] == ["carol", "new", "old"]
        assert [r["call_id"] for r in read_cdrs(db, since=1500.0)] == ["carol", "new"]
        assert [r["call_id"] for r in read_cdrs(db, user="carol@example.com")] == ["carol"]
        assert [r["call_id"] for r in read_cdrs(db, limit=1)] == ["carol"]


def test_cli_list_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "db.sqlite"
    with SqliteDatabase(path) as db:
        SqliteDialogStore(db).add_cdr(cdr("c1", status=486))
    assert main(["cdr", "list", "--db", str(path)]) == 0
    assert "486" in capsys.readouterr().out
    assert main(["cdr", "export", "--db", str(path), "--format", "csv"]) == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (row["call_id"], row["status"], row["answer"]) == ("c1", "486", "")
    assert main(["cdr", "export", "--db", str(path), "--format", "json", "--since", "1h"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # start=1000: long ago
    assert main(["cdr", "list", "--db", str(path), "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err
    assert main(["cdr", "list", "--db", str(tmp_path / "none.db")]) == 2


def test_parse_since() -> None:
    assert cdr_cli.parse_since("2h", 10_000.0) == 10_000.0 - 7200
    assert cdr_cli.parse_since("1700000000", 0.0) == 1_700_000_000.0
    assert cdr_cli.parse_since("2026-12-07T10:00", 0.0) > 1_700_000_000


def test_per_party_totals_join_the_relay_totals(tmp_path: Path) -> None:
    with SqliteDatabase(tmp_path / "db.sqlite") as db:
        store = SqliteDialogStore(db)
        store.media_directions("d", {"a1": {"packets": 3}, "b1": {"packets": 4}})
        store.media_totals("d", {"packets": 7})
        store.add_cdr(cdr("d"))
        (row,) = read_cdrs(db)
        assert row["media"] == {"packets": 7, "directions": {"a1": {"packets": 3}, "b1": {"packets": 4}}}


def test_write_back_commits_in_one_flush_and_late_totals_join_the_waiting_cdr(tmp_path: Path) -> None:
    jsonl = tmp_path / "cdr.jsonl"
    acc = parse_config({"accounting": {"jsonl": str(jsonl)}}).accounting
    with SqliteDatabase(tmp_path / "db.sqlite") as db:
        store = SqliteDialogStore(db, acc, write_back=True)
        table = dlgs.DialogTable(parse_config({}).dialog, store)
        req = m.parse(INVITE)
        assert isinstance(req, m.Request)
        table.start(req, "flow:x", "alice", "192.0.2.1", 1000.0)
        assert SqliteDialogStore(db).load_dialogs() == []  # not yet
        assert store.flush() == 1
        assert [d.call_id for d in SqliteDialogStore(db).load_dialogs()] == ["store-1"]
        table.end("store-1", "test", 1001.0)
        store.media_totals("store-1", {"packets": 9})  # after the record, before the flush
        assert read_cdrs(db) == [] and store.flush() == 2
        (row,) = read_cdrs(db)
        assert row["media"] == {"packets": 9} and SqliteDialogStore(db).load_dialogs() == []
    (line,) = jsonl.read_text().splitlines()
    assert json.loads(line)["media"] == {"packets": 9}
