"""``sipedge media serve``: run the media relay alone, controlled over the ng protocol."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from ..config import load_config
from ..config.media import MediaConfig
from ..errors import ConfigError

log = logging.getLogger(__name__)


DEFAULT_NG = "127.0.0.1:22222"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    media = subparsers.add_parser("media", help="the media relay (rtpengine class)")
    sub = media.add_subparsers(dest="media_command", required=True)
    serve = sub.add_parser("serve", help="run the relay alone with its ng control socket")
    serve.add_argument("--config", "-c", metavar="FILE", help="TOML config file (default: built-in)")
    serve.add_argument("--ng-listen", metavar="IP:PORT", help="override media.ng_listen")
    serve.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"sipedge: {exc}\n")
        return 2
    media = config.media
    ng = args.ng_listen or media.ng_listen or DEFAULT_NG
    host, _, port = ng.rpartition(":")
    if not ng or not port.isdigit() or not host:
        sys.stderr.write(
            f"sipedge: ng listen address {ng!r} is not ip:port; set media.ng_listen or --ng-listen\n"
        )
        return 2
    logging.basicConfig(level=config.general.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        return asyncio.run(_serve(media, host.strip("[]"), int(port), config.general.data_dir))
    except OSError as exc:
        sys.stderr.write(f"sipedge: cannot open the ng socket {ng}: {exc.strerror}; pick a free port\n")
        return 2
    except KeyboardInterrupt:
        return 0


async def _serve(media_config: MediaConfig, host: str, port: int, data_dir: str) -> int:
    from ..server.dtls import DtlsContext
    from ..server.media import MediaServer
    from ..server.ng import NgControlServer

    server = MediaServer(media_config, dtls=DtlsContext(data_dir))
    control = NgControlServer(server, host, port)
    log.info("media relay: ng on %s:%d, ports %d-%d on %s", *control.address,
             media_config.port_min, media_config.port_max, media_config.describe_interfaces())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        control.close()
        server.close()
    return 0
