"""``sipedge user add|del|list|passwd``: manage subscribers in the database (SQLite or
PostgreSQL, ``[database] url`` or ``--db``).

Passwords are never stored: the database keeps HA1 hashes for MD5 and SHA-256 with the
domain as the digest realm. Without ``--password`` the password is asked for on a
terminal (twice), or read as one line from standard input when it is a pipe.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from contextlib import closing
from typing import TextIO

from ..config import load_config
from ..errors import Error, ParseError
from ..proxy.location import DuplicateSubscriber, parse_user_address
from ..store.backend import open_database
from ..store.schema import Database
from ..store.sqlite import SqliteSubscriberStore


class UserCommandError(Error):
    """A mistake the user can fix; printed as one line, exit status 2."""


def _address(text: str) -> tuple[str, str]:
    try:
        return parse_user_address(text)
    except ParseError:
        raise UserCommandError(f"{text!r} is not USER@DOMAIN (for example alice@example.com)") from None


def read_password(
    given: str | None,
    stdin: TextIO | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
) -> str:
    """The password from ``--password``, a terminal prompt (asked twice), or one line of
    a piped stdin."""
    if given is not None:
        password = given
    else:
        stream = stdin if stdin is not None else sys.stdin
        if stream.isatty():
            password = prompt("Password: ")
            if prompt("Repeat password: ") != password:
                raise UserCommandError("the two passwords differ; try again")
        else:
            line = stream.readline()
            if not line:
                raise UserCommandError("no password given: pass --password P or pipe one line on stdin")
            password = line.rstrip("\r\n")
    if not password:
        raise UserCommandError("empty password; choose a non-empty one")
    return password


def _open(args: argparse.Namespace) -> tuple[Database, SqliteSubscriberStore]:
    db = open_database(load_config(getattr(args, "config", None)), getattr(args, "db", None))
    return db, SqliteSubscriberStore(db)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_add(args: argparse.Namespace) -> int:
    user, domain = _address(args.address)
    password = read_password(args.password)
    db, subs = _open(args)
    with closing(db):
        try:
            subs.add(user, domain, password)
        except DuplicateSubscriber:
            raise UserCommandError(
                f"user {user}@{domain} already exists; change its password with "
                f"`sipedge user passwd {user}@{domain}`"
            ) from None
    _out(f"added {user}@{domain}")
    return 0


def cmd_del(args: argparse.Namespace) -> int:
    user, domain = _address(args.address)
    db, subs = _open(args)
    with closing(db):
        if not subs.delete(user, domain):
            raise UserCommandError(f"no user {user}@{domain}; see `sipedge user list`")
    _out(f"deleted {user}@{domain}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    user, domain = _address(args.address)
    db, subs = _open(args)
    with closing(db):
        if not subs.exists(user, domain):
            raise UserCommandError(f"no user {user}@{domain}; add it with `sipedge user add {user}@{domain}`")
        password = read_password(args.password)
        if not subs.set_password(user, domain, password):
            raise UserCommandError(f"no user {user}@{domain}; see `sipedge user list`")
    _out(f"password changed for {user}@{domain}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    db, subs = _open(args)
    with closing(db):
        users = subs.list(args.domain)
    for user, domain in users:
        _out(f"{user}@{domain}")
    return 0


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a user error as one line and return 2 (also when called outside main())."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except Error as exc:
            sys.stderr.write(f"sipedge: {exc}\n")
            return 2
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            return 130

    run.__name__ = func.__name__
    return run


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="TOML config file that names the database (default: embedded defaults)")
    p.add_argument("--db", help="SQLite file or postgresql:// URL (overrides the config)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("user", help="manage subscribers (add, del, list, passwd)")
    sub = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    p = sub.add_parser("add", help="add a subscriber")
    p.add_argument("address", metavar="USER@DOMAIN")
    p.add_argument("--password", "-p", help="password (default: ask, or read a line from stdin)")
    _common(p)
    p.set_defaults(func=_guard(cmd_add))

    p = sub.add_parser("del", aliases=["delete", "rm"], help="delete a subscriber")
    p.add_argument("address", metavar="USER@DOMAIN")
    _common(p)
    p.set_defaults(func=_guard(cmd_del))

    p = sub.add_parser("passwd", help="change a subscriber's password")
    p.add_argument("address", metavar="USER@DOMAIN")
    p.add_argument("--password", "-p", help="new password (default: ask, or read a line from stdin)")
    _common(p)
    p.set_defaults(func=_guard(cmd_passwd))

    p = sub.add_parser("list", aliases=["ls"], help="list subscribers")
    p.add_argument("domain", nargs="?", help="only this domain")
    _common(p)
    p.set_defaults(func=_guard(cmd_list))


__all__ = ["UserCommandError", "read_password", "register"]
