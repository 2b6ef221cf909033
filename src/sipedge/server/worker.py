"""One SIP worker of several (``general.workers`` > 1; docs/workers.md).

Started by the supervisor (server/supervisor.py) as ``python -m sipedge.server.worker``
with its configuration, its number and the file descriptors of the listeners and of the
worker channel (server/handoff.py) in the environment. It is the single-process
:class:`~sipedge.server.app.App` with four differences:

- it serves the supervisor's listener sockets (every worker reads the same ones);
- a message whose Call-ID another worker owns is handed to that worker, and a send on a
  connection another worker holds goes to that worker;
- the location store is :class:`~sipedge.store.shared.SharedSqliteLocationStore`;
- only worker 0 runs the web server, TURN, NAT keepalives and the ``sipedge ctl`` socket;
  its ``/metrics`` adds up every worker's counters and labels them ``{worker="N"}``.

SIGTERM stops it; SIGHUP reloads the routing module and the TLS certificate in place
(:meth:`~sipedge.server.app.App.reload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

from ..config import Config, parse_config
from ..errors import ConfigError
from ..sip.flow import Flow
from ..store.shared import SharedSqliteLocationStore
from .app import App, SipService
from .handoff import IN, OUT, Handoff, call_id_of, conn_ids, owner_of
from .logsetup import setup_logging

log = logging.getLogger("sipedge")

ENV = "SIPEDGE_WORKER"
STATS_INTERVAL = 1.0
KEEPALIVE_PREFIX = b"sipedge-ka-"  # proxy/keepalive.py's SIP pings (lowered): worker 0 sends them


class WorkerSipService(SipService):
    """SipService that hands what another worker owns to it."""

    handoff: Handoff

    def attach(self, handoff: Handoff) -> None:
        self.handoff = handoff
        handoff.on_in = self._owned
        handoff.on_out = self._send_here
        handoff.on_closed = super()._on_flow_closed
        self.conn_ids = conn_ids(handoff.worker, handoff.workers, handoff.generations[handoff.worker])

    async def start(self, server_ctx: Any, client_ctx: Any) -> None:
        await super().start(server_ctx, client_ctx)
        assert self.core is not None and self.transports is not None
        self.transports.on_flow_opened = self.handoff.broadcast_opened
        here, there = self.transports.is_alive, self.handoff.remote_alive
        me = self.handoff.worker
        # another worker's connection: alive unless it said it closed or its holder died;
        # sends on it are handed over
        self.core.flow_alive = lambda flow: here(flow) if self.handoff.flow_owner(flow) == me else there(flow)

    def _on_message(self, data: bytes, flow: Flow) -> None:
        handoff = self.handoff
        call_id = call_id_of(data)
        if call_id is None:
            owner = handoff.worker  # answered here (400)
        elif call_id.startswith(KEEPALIVE_PREFIX):
            owner = 0
        else:
            owner = owner_of(call_id, handoff.workers)
        if owner == handoff.worker or not handoff.send(owner, IN, flow.token, data):
            super()._on_message(data, flow)  # (a full channel: better served here than lost)

    def _owned(self, data: bytes, flow: Flow) -> None:
        super()._on_message(data, flow)

    def _on_flow_closed(self, flow: Flow) -> None:
        super()._on_flow_closed(flow)
        self.handoff.broadcast_closed(flow)

    def send(self, data: bytes, flow: Flow) -> bool:
        """Send on a flow, whichever worker holds it (the NAT keepalives' sender)."""
        owner = self.handoff.flow_owner(flow)
        if owner != self.handoff.worker:
            return self.handoff.send(owner, OUT, flow.token, data)
        return self._send_here(data, flow)

    def _send_here(self, data: bytes, flow: Flow) -> bool:
        return self.transports is not None and self.transports.send(data, flow)

    def _send(self, item: Any) -> None:
        flow, target = item.flow, item.target
        if flow is None and target is not None and target.reliable and self.transports is not None \
                and not self.transports.has_connection(target):
            flow = self.handoff.remote_flow(target)  # (a browser's WebSocket another worker holds)
        if flow is not None and flow.reliable and (owner := self.handoff.flow_owner(flow)) != self.handoff.worker:
            if not self.handoff.send(owner, OUT, flow.token, item.data):
                self._failed(getattr(item, "key", None))
            return
        super()._send(item)

    def stats(self) -> dict[str, int | float]:
        out = super().stats()
        out.update(self.handoff.stats())
        return out


class WorkerApp(App):
    sip_service = WorkerSipService
    location_store = SharedSqliteLocationStore

    def __init__(self, config: Config, handoff: Handoff, inherited: dict[str, socket.socket]) -> None:
        super().__init__(config)
        self.handoff = handoff
        self.inherited = inherited
        self.peers: dict[str, dict[str, int | float]] = {}
        handoff.on_stats = self.peers.__setitem__
        self._stats_task: asyncio.Task[None] | None = None

    async def start_sip(self, server_ctx: Any, client_ctx: Any) -> None:
        sip = self.sip
        assert isinstance(sip, WorkerSipService)
        sip.attach(self.handoff)
        sip.inherited = self.inherited
        self.handoff.start()
        await sip.start(server_ctx, client_ctx)

    async def start(self) -> None:
        await super().start()
        if self.keepalive is not None and isinstance(self.sip, WorkerSipService):
            self.keepalive.transports = self.sip
        self._stats_task = asyncio.create_task(self._stats_loop())

    async def stop(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        self.handoff.stop()
        await super().stop()

    def stats(self) -> dict[str, int | float]:
        own = super().stats()
        if self.handoff.worker != 0:
            return own
        return merge_stats({"0": own, **self.peers})

    async def _stats_loop(self) -> None:
        parent = os.getppid()
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            if os.getppid() != parent:  # the supervisor is gone: so are we
                log.warning("x worker %d: supervisor gone, stopping", self.handoff.worker)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if self.handoff.worker != 0:
                try:
                    self.handoff.push_stats(super().stats())
                except Exception:
                    log.exception("x worker stats")


def merge_stats(per_worker: dict[str, dict[str, int | float]]) -> dict[str, int | float]:
    """Every counter summed over the workers (and the supervisor's media relay), and
    each one's own, labelled."""
    out: dict[str, int | float] = {"workers_reporting": sum(1 for w in per_worker if w.isdigit())}
    for worker, stats in sorted(per_worker.items()):
        for name, value in stats.items():
            if not isinstance(value, int | float) or "{" in name:
                continue
            out[name] = out.get(name, 0) + value
            out[f'{name}{{worker="{worker}"}}'] = value
    return out


def worker_config(config: Config, worker: int, media_remote: str) -> Config:
    """What worker ``worker`` runs: the roles of one place only stay in worker 0, and
    every worker drives the supervisor's media relay process over ng."""
    general = config.general
    nat = config.nat
    media = config.media
    if worker != 0:
        general = dataclasses.replace(general, control_socket="off")
        nat = dataclasses.replace(nat, keepalive_interval=0.0)
    if media_remote:
        media = dataclasses.replace(media, remote=media_remote, ng_listen="")
    return dataclasses.replace(
        config,
        general=general,
        nat=nat,
        media=media,
        turn=config.turn if worker == 0 else dataclasses.replace(config.turn, enabled=False),
        web=config.web if worker == 0 else dataclasses.replace(config.web, enabled=False),
    )


async def _serve(app: WorkerApp) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        try:
            app.reload()
        except ConfigError as exc:
            log.warning("x reload refused: %s", exc)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await app.start()
    except BaseException:
        await app.stop()
        raise
    log.info("sipedge ready (worker %d, pid %d)", app.handoff.worker, os.getpid())
    await stop.wait()
    await app.stop()
    return 0


def main() -> int:
    spec = json.loads(os.environ.pop(ENV))
    config = parse_config(spec["config"])
    setup_logging(config.general.log_level, config.general.log_format)
    worker: int = spec["worker"]
    rx = socket.socket(fileno=spec["rx"])
    tx = [socket.socket(fileno=fd) for fd in spec["tx"]]
    inherited = {entry: socket.socket(fileno=fd) for entry, fd in spec["listeners"].items()}
    app = WorkerApp(config, Handoff(worker, rx, tx, spec["generations"]), inherited)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return int(runner(_serve(app)))
    except ConfigError as exc:
        log.error("x worker %d: %s", worker, exc)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
