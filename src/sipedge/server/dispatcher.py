"""The asyncio driver of the dispatcher's OPTIONS probes
(:class:`~sipedge.proxy.dispatcher.Dispatcher`): one loop timer, probes sent by the SIP
service's one send path (``SipService.send_to_target``: UDP from the SIP socket, TCP/TLS
and names through the transports and the resolver), answers taken from the proxy core as
one of its local-response consumers (``ProxyServices.local_responses``), state changes
logged.

Wiring (``server/app.py``)::

    ds = DispatcherService()
    sip = SipService(..., local_responses=(..., ds.local_response))
    await sip.start(...)
    ds.start(sip.core.dispatcher, sip)   # ... ds.stop() before sip.stop()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Protocol

from ..proxy.dispatcher import DOWN, Dispatcher, Probe
from ..sip.flow import Flow, Target
from ..sip.message import Response

log = logging.getLogger("sipedge.dispatcher")


class TargetSender(Protocol):
    """The SIP service's one send path (``SipService.send_to_target``)."""

    def send_to_target(self, data: bytes, target: Target, failed: Callable[[], None],
                       sent: Callable[[Target], None] | None = None) -> None: ...


class DispatcherService:
    """Probes the destinations of the proxy core's dispatcher (nothing to do without one).
    Built before the core, which is given :meth:`local_response` as a consumer of its
    local responses; :meth:`start` once the core is there."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.dispatcher: Dispatcher | None = None
        self.sender: TargetSender | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, dispatcher: Dispatcher | None, sender: TargetSender) -> None:
        self.dispatcher, self.sender = dispatcher, sender
        ds = dispatcher
        if ds is None:
            return
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

    def local_response(self, resp: Response, flow: Flow, now: float) -> bool:
        """An answer to one of the probes (True: it was one)."""
        ds = self.dispatcher
        if ds is not None and ds.response_received(resp, flow.remote, now):
            self._log_events()
            return True
        return False

    # -- the four steps (the answers: local_response) ---------------------------------
    def _on_timer(self) -> None:
        self._timer = None
        ds = self.dispatcher
        if ds is None or self.sender is None:
            return
        try:
            ds.handle_timer(self.loop.time())
            for probe in ds.outgoing():
                self.sender.send_to_target(probe.data, probe.target, partial(self._failed, probe),
                                           partial(self._sent, probe))
            self._log_events()
        except Exception:  # a bug: log it, keep probing
            log.exception("dispatcher probe round failed")
        self._arm()

    def _sent(self, probe: Probe, used: Target) -> None:
        if self.dispatcher is not None:
            self.dispatcher.sent_to(probe.call_id, used)

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
