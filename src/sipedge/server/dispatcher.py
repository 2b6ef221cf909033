"""The asyncio driver of the dispatcher's OPTIONS probes
(:class:`~sipedge.proxy.dispatcher.Dispatcher`): one loop timer, probes written to the
SIP transports (UDP from the SIP socket; TCP/TLS and names through ``send_to`` and the
resolver), answers taken from ``ProxyCore.local_response_handler``, state changes logged.

Wiring (``server/app.py``, after ``SipService.start``)::

    ds = DispatcherService(sip.core, sip.transports, sip.dns)
    ds.start()          # ... ds.stop() before sip.stop()
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .._common.addr import is_ip
from ..proxy.core import ProxyCore
from ..proxy.dispatcher import DOWN, Dispatcher, Probe
from ..sip.flow import Flow, Target
from ..sip.message import Response
from .dns import DnsResolver
from .transport import TransportLayer

log = logging.getLogger("sipedge.dispatcher")


class DispatcherService:
    """Probes the destinations of ``core.dispatcher`` (nothing to do without one)."""

    def __init__(self, core: ProxyCore, transports: TransportLayer, dns: DnsResolver) -> None:
        self.core = core
        self.transports = transports
        self.dns = dns
        self.loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._previous_handler = core.local_response_handler
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self.core.dispatcher

    def start(self) -> None:
        ds = self.dispatcher
        if ds is None:
            return
        self._previous_handler = self.core.local_response_handler
        self.core.local_response_handler = self._on_response
        for set_id, dests in ds.sets.items():
            log.info("dispatcher set %d (%s): %s", set_id, ds.algorithms[set_id], ", ".join(d.text for d in dests))
        if ds.probing:
            log.info("dispatcher: OPTIONS probes every %g s (down after %d failures, up after %d answers)",
                     ds.config.probe_interval, ds.config.failure_threshold, ds.config.success_threshold)
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._pending):
            task.cancel()
        if self.dispatcher is not None:
            self.core.local_response_handler = self._previous_handler

    # -- the four steps ------------------------------------------------------------
    def _on_response(self, resp: Response, flow: Flow) -> None:
        ds = self.dispatcher
        if ds is not None and ds.response_received(resp, flow.remote, self.loop.time()):
            self._log_events()
            return
        if self._previous_handler is not None:
            self._previous_handler(resp, flow)

    def _on_timer(self) -> None:
        self._timer = None
        ds = self.dispatcher
        if ds is None:
            return
        try:
            ds.handle_timer(self.loop.time())
            for probe in ds.outgoing():
                self._send(probe)
            self._log_events()
        except Exception:  # a bug: log it, keep probing
            log.exception("dispatcher probe round failed")
        self._arm()

    def _send(self, probe: Probe) -> None:
        target = probe.target
        if target.transport == "udp" and is_ip(target.host):
            try:
                local = self.transports.listener("udp", 6 if ":" in target.host else 4).address
            except OSError:
                self._failed(probe)
                return
            if not self.transports.send(probe.data, Flow("udp", local, (target.host, target.port))):
                self._failed(probe)
            return
        task = asyncio.create_task(self._send_to(probe))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_to(self, probe: Probe) -> None:
        async def send(t: Target) -> Any:
            return await self.transports.send_to(probe.data, t, tls_name=probe.target.host)

        used = await self.dns.send_failover(probe.data, probe.target, send)
        ds = self.dispatcher
        if ds is None:
            return
        if used is None:
            self._failed(probe)
        else:
            ds.sent_to(probe.call_id, used)

    def _failed(self, probe: Probe) -> None:
        ds = self.dispatcher
        if ds is not None:
            ds.send_failed(probe.call_id, self.loop.time())
            self._log_events()

    def _log_events(self) -> None:
        ds = self.dispatcher
        if ds is None:
            return
        for ev in ds.events():
            d = ev.destination
            if ev.new == DOWN:
                log.warning("x dispatcher: %s (set %d) is down: %s", d.text, d.set_id, ev.why)
            else:
                log.warning("- dispatcher: %s (set %d) is up again: %s", d.text, d.set_id, ev.why)

    def _arm(self) -> None:
        ds = self.dispatcher
        when = ds.get_timer() if ds is not None else None
        if when is None:
            return
        self._timer = self.loop.call_at(max(when, self.loop.time()), self._on_timer)
