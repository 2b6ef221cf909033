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
from typing import TYPE_CHECKING, Any

from ..config import Config, parse_config
from ..errors import ConfigError
from ..media.model import CallDeleted
from ..media.relay import RelayError
from ..proxy import keepalive, topology
from ..sip.flow import Flow
from ..store.schema import Database
from ..store.shared import SharedSqliteLocationStore
from ..store.sqlite import SqliteDatabase, SqliteLocationStore
from .app import App
from .control import Control, ControlError, Params, media_row
from .handoff import IN, MAX_PAYLOAD, OUT, QUERY, REPLY, Handoff, call_id_of, conn_ids, owner_of
from .logsetup import setup_logging
from .sip_service import SipService

if TYPE_CHECKING:
    from ..store.postgres import PgLocationStore

log = logging.getLogger("sipedge")

ENV = "SIPEDGE_WORKER"
STATS_INTERVAL = 1.0
KEEPALIVE_PREFIX = keepalive.CALL_ID_PREFIX.encode()  # the proxy's SIP pings: worker 0 sends them
MASKED_PREFIX = topology.CALL_ID_PREFIX.encode()  # sip.topology_mask_callid


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
        addresses = frozenset(lst.address for lst in self.transports.listeners)
        any_host = frozenset(lst.port for lst in self.transports.listeners if lst.host in ("0.0.0.0", "::"))
        self.handoff.is_listener = lambda local: local in addresses or local[1] in any_host

    def flow_alive(self, flow: Flow) -> bool:
        """Another worker's connection: alive unless it said it closed or its holder
        died (sends on it are handed over)."""
        if self.handoff.flow_owner(flow) == self.handoff.worker:
            return super().flow_alive(flow)
        return self.handoff.remote_alive(flow)

    def _on_message(self, data: bytes, flow: Flow) -> None:
        handoff = self.handoff
        call_id = call_id_of(data)
        owner = handoff.worker if call_id is None else self.owner(call_id)  # (none: answered here, 400)
        if owner == handoff.worker or not handoff.send(owner, IN, flow.token, data):
            super()._on_message(data, flow)  # (a full channel: better served here than lost)

    def owner(self, call_id: bytes) -> int:
        """The worker of every message of this Call-ID."""
        if call_id.startswith(KEEPALIVE_PREFIX):
            return 0
        if call_id.startswith(MASKED_PREFIX) and self.core is not None and self.config.sip.topology_mask_callid:
            # the callee's side knows the call by its masked Call-ID: the call's own decides
            original = topology.unmask_call_id(self.core.topology, call_id.decode("utf-8", "surrogateescape"))
            if original is not None:
                call_id = original.encode("utf-8", "surrogateescape")
        return owner_of(call_id, self.handoff.workers)

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


# ``sipedge ctl`` with workers: what each worker keeps of its own (its calls, traces,
# bans, routing module, log level) is asked of the worker that has it
ROUTED = frozenset(("dlg.show", "dlg.end", "trace.show"))  # one call's: its Call-ID's owner answers
GATHERED = frozenset(("dlg.list", "trace.list", "ban.list"))  # every worker's, put together
EVERYWHERE = frozenset(("ban.add", "ban.rm", "log.level", "reload"))  # done by every worker
ASK_TIMEOUT = 5.0  # seconds a worker has to answer worker 0's query
MEDIA_LISTED = 1000  # calls media.list shows of the supervisor's relay (an ng reply is one datagram)
TRACE_BITS = 40  # trace.list's ``seq`` with workers: each worker's sequence in 40 bits of it


class WorkerControl(Control):
    """Worker 0's ``sipedge ctl`` and ``/api/``: commands on state every worker keeps of
    its own run where that state is (:data:`ROUTED`, :data:`GATHERED`,
    :data:`EVERYWHERE`), over the worker channel; every other command is answered here
    (registrations are in the shared store, counters are summed, TURN is here). A worker
    that does not answer makes the command fail (503) rather than answer in part."""

    app: WorkerApp

    def __init__(self, app: WorkerApp) -> None:
        super().__init__(app)
        self.handoff = app.handoff
        self._asked: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._number = 0
        self._running: set[asyncio.Task[None]] = set()
        self.handoff.on_query = self._query
        self.handoff.on_reply = self._reply

    async def call(self, method: str, params: Params) -> Any:
        if self.handoff.workers == 1 or method not in ROUTED | GATHERED | EVERYWHERE:
            return await super().call(method, params)
        if method in ROUTED:
            call_id = params.get("call_id")
            if not isinstance(call_id, str) or not call_id.strip():
                return await super().call(method, params)  # (its parameter error)
            sip = self.app.sip
            name = call_id.strip().encode("utf-8", "surrogateescape")
            owner = sip.owner(name) if isinstance(sip, WorkerSipService) else owner_of(name, self.handoff.workers)
            return await (super().call(method, params) if owner == self.handoff.worker
                          else self._ask(owner, method, params))
        per_worker = params
        if method == "trace.list":
            since = params.get("since", 0)
            if isinstance(since, str) and since.isdigit():
                since = int(since)
            if isinstance(since, bool) or not isinstance(since, int) or since < 0:
                return await super().call(method, params)  # (its parameter error)
        answers: list[Any] = []
        for w in range(self.handoff.workers):
            if method == "trace.list":
                per_worker = {**params, "since": (since >> (TRACE_BITS * w)) & ((1 << TRACE_BITS) - 1)}
            try:
                answers.append(await (super().call(method, per_worker) if w == self.handoff.worker
                                      else self._ask(w, method, per_worker)))
            except ControlError as exc:
                if exc.code != 404 or method != "ban.rm":
                    raise
                answers.append(exc)
        return merge_answers(method, answers)

    async def _ask(self, worker: int, method: str, params: Params) -> Any:
        loop = asyncio.get_running_loop()
        self._number += 1
        number = self._number
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._asked[number] = fut
        try:
            payload = json.dumps({"method": method, "params": dict(params)}).encode()
            if not self.handoff.send(worker, QUERY, str(number), payload):
                raise ControlError(503, f"worker {worker}'s channel is full or the request too big; try again")
            try:
                reply = await asyncio.wait_for(fut, ASK_TIMEOUT)
            except TimeoutError:
                raise ControlError(503, f"worker {worker} did not answer within {ASK_TIMEOUT:g} s "
                                        "(restarting?); try again") from None
        finally:
            self._asked.pop(number, None)
        error = reply.get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            raise ControlError(code if isinstance(code, int) else -32603, f"worker {worker}: {message}")
        return reply.get("result")

    def _reply(self, number: int, reply: dict[str, Any]) -> None:
        fut = self._asked.get(number)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def _query(self, number: int, query: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(number, query))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, number: int, query: dict[str, Any]) -> None:
        """Run worker 0's query on this worker's own state and send the answer back."""
        method, params = query.get("method"), query.get("params")
        reply: dict[str, Any]
        try:
            if not isinstance(method, str) or not isinstance(params, dict):
                raise ControlError(-32600, "not a query")
            reply = {"result": await Control.call(self, method, params)}
        except ControlError as exc:
            reply = {"error": {"code": exc.code, "message": exc.message}}
        except Exception:
            log.exception("x control query %r from worker 0 failed", method)
            reply = {"error": {"code": -32603, "message": "internal error (see the log)"}}
        data = json.dumps(reply, default=str).encode()
        if len(data) > MAX_PAYLOAD:
            data = json.dumps({"error": {"code": 503, "message": f"its answer ({len(data)} bytes) is more than "
                                                                 "the worker channel carries; ask for less"}}).encode()
        self.handoff.send(0, REPLY, str(number), data)

    async def _media_list(self, params: Params) -> list[dict[str, Any]]:
        remote = self.app.media_remote
        if self.app.media is not None or remote is None:
            return await super()._media_list(params)
        out = []  # the supervisor's relay (general.workers > 1), over ng
        try:
            for call_id in await remote.list(MEDIA_LISTED):
                summary = await remote.query(call_id)
                if summary.get("result") == "ok":
                    out.append(media_row(call_id, summary))
        except RelayError as exc:
            raise ControlError(503, f"the media relay in the supervisor did not answer: {exc}") from None
        return out


def merge_answers(method: str, answers: list[Any]) -> Any:
    """One answer from every worker's, in worker order (see :class:`WorkerControl`)."""
    if method == "dlg.list":
        return [{**d, "worker": w} for w, listed in enumerate(answers) for d in listed]
    if method == "trace.list":
        calls = [{**c, "worker": w} for w, t in enumerate(answers) for c in t["calls"]]
        calls.sort(key=lambda c: c.get("last") or 0, reverse=True)
        seq = sum(int(t["seq"]) << (TRACE_BITS * w) for w, t in enumerate(answers))
        return {"seq": seq, "calls": calls}
    if method == "ban.list":
        bans: dict[str, dict[str, Any]] = {}
        for listed in answers:
            for b in listed:
                seen = bans.setdefault(b["source"], {**b, "dropped": 0})
                seen["seconds_left"] = max(seen["seconds_left"], b["seconds_left"])
                seen["dropped"] += b["dropped"]
        return sorted(bans.values(), key=lambda b: b["source"])
    if method == "ban.rm":
        lifted = [a for a in answers if not isinstance(a, ControlError)]
        if not lifted:
            raise answers[0]
        return {**lifted[0], "workers": len(lifted)}
    first = answers[0]  # ban.add, log.level, reload: the same done by every worker
    return {**first, "workers": len(answers)} if isinstance(first, dict) else first


class WorkerApp(App):
    sip_service = WorkerSipService

    def open_location(self, db: Database, write_back: bool) -> SqliteLocationStore | PgLocationStore:
        """SQLite's store caches the file for one process: the workers' reads refresh it.
        PostgreSQL's reads the table on every lookup already."""
        if isinstance(db, SqliteDatabase):
            return SharedSqliteLocationStore(db)
        return super().open_location(db, write_back)

    def __init__(self, config: Config, handoff: Handoff, inherited: dict[str, socket.socket]) -> None:
        super().__init__(config)
        self.handoff = handoff
        self.inherited = inherited
        self.peers: dict[str, dict[str, int | float]] = {}
        handoff.on_stats = self.peers.__setitem__
        handoff.on_media = self._media_event
        self.control = WorkerControl(self)
        self._stats_task: asyncio.Task[None] | None = None

    def _media_event(self, event: dict[str, Any]) -> None:
        """A call's media session ended in the supervisor's relay: as the in-process
        relay's ``CallDeleted`` (its totals to the CDR; a media timeout ends the call)."""
        call_id, reason, totals = event.get("call_id"), event.get("reason"), event.get("totals")
        if not (isinstance(call_id, str) and isinstance(reason, str) and isinstance(totals, dict)):
            self.handoff.counters["sip_handoff_bad"] += 1
            return
        if self.sip is not None:
            self.sip.on_media_event(CallDeleted(call_id, reason, totals))

    async def start_sip(self, server_ctx: Any, client_ctx: Any) -> None:
        sip = self.sip
        assert isinstance(sip, WorkerSipService)
        sip.attach(self.handoff)
        sip.inherited = self.inherited
        if self.dialog_store is not None:  # the calls of the Call-IDs this worker owns
            me, n = self.handoff.worker, self.handoff.workers
            self.dialog_store.owns = lambda call_id: owner_of(call_id, n) == me
        self.handoff.start()
        await sip.start(server_ctx, client_ctx)

    async def start(self) -> None:
        await super().start()
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
