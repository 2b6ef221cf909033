"""``sipedge serve`` plus NAT keepalives, until ``server/app.py`` builds them itself.

``python -m sipedge.server.nat_app --config sipedge.toml`` reads the same TOML as
``sipedge serve``, with a ``[nat]`` section (:class:`~sipedge.config.nat.NatConfig`),
starts the :class:`~sipedge.server.app.App`, then attaches a
:class:`~sipedge.server.keepalive.KeepaliveService` (state in the App's SQLite file) and
the per-listener advertised addresses of ``nat.advertise``. :func:`attach` is the wiring
that ``App.start`` takes over (docs/nat.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Config, parse_config
from ..config._schema import build
from ..config.nat import NatConfig
from ..errors import ConfigError, Error
from ..proxy import nat
from ..proxy.identity import Identity
from ..store.keepalive import SqliteEndpointStore
from .app import App
from .keepalive import KeepaliveService
from .logsetup import setup_logging

log = logging.getLogger("sipedge")


def load(path: str | Path) -> tuple[Config, NatConfig]:
    """The Config and the ``[nat]`` section of one TOML file."""
    p = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    known = {f.name for f in dataclasses.fields(Config)}
    table = data.get("nat", {})
    if "nat" not in known:
        data.pop("nat", None)
    config = parse_config(data)
    nat_cfg = getattr(config, "nat", None)
    if not isinstance(nat_cfg, NatConfig):
        nat_cfg = build(NatConfig, table, "nat")
    return config, nat_cfg


def attach(app: App, nat_cfg: NatConfig) -> KeepaliveService:
    """Advertised listeners and keepalives on a started App."""
    sip, db = app.sip, app.db
    if sip is None or sip.core is None or sip.transports is None or db is None:
        raise RuntimeError("attach() needs a started App")
    core = sip.core
    if nat_cfg.advertise:
        try:
            listeners = nat.advertised_listeners(core.identity.listeners, nat_cfg.advertise)
        except Error as exc:
            raise ConfigError(f"nat.advertise: {exc}") from exc
        core.identity = Identity(listeners, sorted(core.identity.domains))
    service = KeepaliveService(nat_cfg, sip.location, core, sip.transports, sip.clock, SqliteEndpointStore(db))
    service.start()
    return service


async def _serve(config: Config, nat_cfg: NatConfig) -> int:
    app = App(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
        service = attach(app, nat_cfg)
    except OSError as exc:
        await app.stop()
        raise ConfigError(f"sip.listen: cannot bind ({exc.strerror or exc})") from exc
    except BaseException:
        await app.stop()
        raise
    log.info("sipedge ready with NAT keepalives (pid %d)", os.getpid())
    await stop.wait()
    log.info("shutting down; keepalive %s", service.stats())
    service.stop()
    await app.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sipedge.server.nat_app")
    parser.add_argument("--config", required=True, help="sipedge TOML file (with a [nat] section)")
    args = parser.parse_args(argv)
    try:
        config, nat_cfg = load(args.config)
        setup_logging(config.general.log_level, config.general.log_format)
        return asyncio.run(_serve(config, nat_cfg))
    except ConfigError as exc:
        sys.stderr.write(f"sipedge: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
