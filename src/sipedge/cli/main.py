"""``sipedge`` command line: serve, init, and the subcommands of each role.

Errors a user can fix print one line saying how and exit 2; there are no tracebacks for
them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..config import default_toml, load_config
from ..errors import ConfigError, Error

# Subcommand modules of the roles; each exposes register(subparsers).
_ROLE_COMMANDS = ("user", "turn", "probe", "media", "ctl", "cdr")


def _cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"sipedge: {path} exists; pass --force to overwrite it", file=sys.stderr)  # noqa: T201
        return 2
    path.write_text(default_toml(), encoding="utf-8")
    print(f"wrote {path}; start with: sipedge serve --config {path}")  # noqa: T201
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from ..server import app

    return app.run(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipedge", description="SIP edge for WebRTC and NAT traversal")
    parser.add_argument("--version", action="version", version=f"sipedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("serve", help="run the server (SIP proxy/registrar and enabled roles)")
    p.add_argument("--config", "-c", help="TOML config file (default: embedded defaults)")
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("init", help="write a commented config file with every option")
    p.add_argument("path", nargs="?", default="sipedge.toml")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_cmd_init)
    for name in _ROLE_COMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ImportError:
            continue  # that role is not built yet
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result: int = func(args)
    except ConfigError as exc:
        print(f"sipedge: config error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except Error as exc:
        print(f"sipedge: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
