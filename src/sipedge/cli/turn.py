"""``sipedge turn serve|user|credentials``: run the STUN/TURN role alone, manage its users.

- ``sipedge turn serve [--config F]`` runs only the STUN/TURN server from ``[turn]``.
- ``sipedge turn user add|del|list`` manages long-term users (the database keeps
  MD5(user:realm:password) and the SHA-256 variant, never the password).
- ``sipedge turn credentials [--user U]`` prints time-limited TURN REST credentials from
  the first ``[turn] secrets`` entry, as the iceServers endpoint hands out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Callable

from ..config import Config, load_config
from ..errors import Error
from ..store.backend import open_database
from ..store.turn_users import TurnUserStore
from ..turn.auth import ice_servers

log = logging.getLogger("sipedge")


class TurnCommandError(Error):
    """A mistake the user can fix; printed as one line, exit status 2."""


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "turn_config", None) or getattr(args, "config", None))


def open_users(config: Config, url: str | None = None) -> TurnUserStore:
    """The TURN users of ``url``, else ``[turn] users_db``, else the main database."""
    return TurnUserStore(open_database(config, url or config.turn.users_db or None), owns=True)


def _store(args: argparse.Namespace) -> tuple[TurnUserStore, Config]:
    cfg = _config(args)
    return open_users(cfg, getattr(args, "db", None)), cfg


def _realm(args: argparse.Namespace, cfg: Config) -> str:
    return str(args.realm or cfg.turn.realm)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    from .user import read_password

    store, cfg = _store(args)
    try:
        password = read_password(args.password)
        store.add(args.username, _realm(args, cfg), password)
    finally:
        store.close()
    _out(f"added TURN user {args.username} (realm {_realm(args, cfg)})")
    return 0


def cmd_user_del(args: argparse.Namespace) -> int:
    store, cfg = _store(args)
    try:
        if not store.delete(args.username, _realm(args, cfg)):
            raise TurnCommandError(
                f"no TURN user {args.username} in realm {_realm(args, cfg)}; see `sipedge turn user list`"
            )
    finally:
        store.close()
    _out(f"deleted TURN user {args.username}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    try:
        for user, realm in store.list(args.realm):
            _out(f"{user}\t{realm}")
    finally:
        store.close()
    return 0


def cmd_credentials(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if not cfg.turn.secrets:
        raise TurnCommandError("no [turn] secrets configured; add secrets = [\"...\"] to use REST credentials")
    ttl = args.ttl or cfg.turn.rest_ttl
    doc = ice_servers(_urls(cfg), cfg.turn.secrets[0], args.user, ttl, time.time())
    _out(json.dumps(doc, indent=2))
    return 0


def _urls(cfg: Config) -> list[str]:
    from ..server.turn_http import default_urls

    return cfg.turn.ice_urls or default_urls(cfg.turn, "")


async def _serve(cfg: Config, http: str = "") -> int:
    from ..server import turn_http
    from ..server.stun_turn import start_from_config
    from ..web.server import WebServer

    store = open_users(cfg)
    try:
        svc = await start_from_config(cfg, users=store)
    except BaseException:
        store.close()
        raise
    web_server: WebServer | None = None
    if http:
        # the same /metrics and /turn/ice-servers that `sipedge serve` has
        web_cfg = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, listen=http))
        web_server = WebServer(web_cfg, svc.stats)
        turn_http.add_routes(web_server.app, cfg.turn, counters=web_server.counters)
        try:
            await web_server.start()
        except OSError as exc:
            await svc.stop()
            store.close()
            raise Error(f"--http {http}: cannot listen ({exc.strerror})") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    bound = ", ".join(f"{t}:{h}:{p}" for t, h, p in svc.bound)
    log.info("sipedge TURN ready on %s", bound)
    _out(f"sipedge TURN listening on {bound}")
    if web_server is not None:
        _out(f"sipedge TURN HTTP on port {web_server.port} (/metrics, /turn/ice-servers)")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        if web_server is not None:
            await web_server.stop()
        await svc.stop()
        store.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server.logsetup import setup_logging

    cfg = _config(args)
    setup_logging(cfg.general.log_level, cfg.general.log_format)
    try:
        import uvloop

        return int(uvloop.run(_serve(cfg, args.http)))
    except ImportError:
        return asyncio.run(_serve(cfg, args.http))


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except Error as exc:
            sys.stderr.write(f"sipedge: {exc}\n")
            return 2
        except KeyboardInterrupt:
            return 130

    run.__name__ = func.__name__
    return run


def _common(p: argparse.ArgumentParser, db: bool = False) -> None:
    p.add_argument("--config", "-c", dest="turn_config", help="TOML config file (default: embedded defaults)")
    if db:
        p.add_argument("--db", help="SQLite file or postgresql:// URL of TURN users (overrides the config)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("turn", help="STUN/TURN server: serve, users, REST credentials")
    sub = parser.add_subparsers(dest="turn_command", metavar="ACTION", required=True)

    p = sub.add_parser("serve", help="run only the STUN/TURN server from [turn]")
    p.add_argument("--http", default="", metavar="HOST:PORT",
                   help="also serve /metrics and /turn/ice-servers there (port 0: any free port)")
    _common(p)
    p.set_defaults(func=_guard(cmd_serve))

    p = sub.add_parser("credentials", help="print time-limited REST credentials (iceServers JSON)")
    p.add_argument("--user", "-u", default="", help="user id to embed in the username")
    p.add_argument("--ttl", type=int, default=0, help="lifetime in seconds (default [turn] rest_ttl)")
    _common(p)
    p.set_defaults(func=_guard(cmd_credentials))

    up = sub.add_parser("user", help="manage long-term TURN users (add, del, list)")
    usub = up.add_subparsers(dest="turn_user_command", metavar="ACTION", required=True)
    p = usub.add_parser("add", help="add or replace a user")
    p.add_argument("username")
    p.add_argument("--password", "-p", help="password (default: ask, or read a line from stdin)")
    p.add_argument("--realm", "-r", help="realm (default [turn] realm)")
    _common(p, db=True)
    p.set_defaults(func=_guard(cmd_user_add))
    p = usub.add_parser("del", aliases=["delete", "rm"], help="delete a user")
    p.add_argument("username")
    p.add_argument("--realm", "-r", help="realm (default [turn] realm)")
    _common(p, db=True)
    p.set_defaults(func=_guard(cmd_user_del))
    p = usub.add_parser("list", aliases=["ls"], help="list users")
    p.add_argument("--realm", "-r", help="only this realm")
    _common(p, db=True)
    p.set_defaults(func=_guard(cmd_user_list))


__all__ = ["TurnCommandError", "open_users", "register"]
