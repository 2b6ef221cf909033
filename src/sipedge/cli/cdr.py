"""``sipedge cdr list|export``: the call detail records in the database of a config
(docs/operations.md, "Accounting (CDRs)"). Read-only; safe while the server runs (WAL).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import Error
from ..store.dialogs import CDR_FIELDS, read_cdrs
from ..store.sqlite import SqliteDatabase
from .ctl import table

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class CdrCommandError(Error):
    """A mistake the user can fix; printed as one line, exit status 2."""


def parse_since(text: str, now: float) -> float:
    """``--since``: ``30m``/``2h``/``7d`` ago, epoch seconds, or an ISO 8601 date/time."""
    m = re.fullmatch(r"(\d{1,7})([smhd])", text.strip())
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise CdrCommandError(f"--since {text!r}: give 30m, 2h, 7d, epoch seconds or an ISO date "
                              "like 2026-12-07T10:00") from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cdr = subparsers.add_parser("cdr", help="call detail records (accounting)")
    sub = cdr.add_subparsers(dest="cdr_command", metavar="ACTION", required=True)
    for name, help_text in (("list", "recent records, newest first"), ("export", "records as CSV or JSON")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", "-c", metavar="FILE", help="the server's TOML config (to find its database)")
        p.add_argument("--db", metavar="FILE", help="the SQLite file (default: from the config)")
        p.add_argument("--since", metavar="WHEN", help="from then on: 30m, 2h, 7d, epoch seconds or ISO date")
        p.add_argument("--user", metavar="USER", help="of this caller (authenticated user, or part of a URI)")
        p.add_argument("--limit", type=int, default=50 if name == "list" else None, help="at most this many")
        if name == "list":
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        else:
            p.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
            p.add_argument("--output", "-o", metavar="FILE", help="write there (default: standard output)")
        p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    path = Path(args.db) if args.db else load_config(args.config).database_path
    if not path.exists():
        raise CdrCommandError(f"no database at {path}: give the server's --config (or --db)")
    if args.limit is not None and args.limit < 1:
        raise CdrCommandError("--limit must be 1 or more")
    since = parse_since(args.since, time.time()) if args.since else None
    with SqliteDatabase(path) as db:
        records = read_cdrs(db, since=since, user=args.user, limit=args.limit)
    if args.cdr_command == "list":
        text = json.dumps(records, indent=2) if args.json else render(records)
    else:
        text = export(records, args.format)
    if getattr(args, "output", None):
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _when(t: float | None) -> str:
    return "" if not t else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def render(records: list[dict[str, Any]]) -> str:
    if not records:
        return "(none)"
    columns = ("start", "caller", "callee", "status", "reason", "duration", "ended_by", "call_id")
    rows = [[_when(r["start"]) if c == "start" else str(r[c]) for c in columns] for r in records]
    return table(columns, rows)


def export(records: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(records, indent=2)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CDR_FIELDS)
    for r in records:
        writer.writerow([json.dumps(r[f], sort_keys=True) if f == "media" else ("" if r[f] is None else r[f])
                         for f in CDR_FIELDS])
    return out.getvalue()
