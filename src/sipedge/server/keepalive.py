"""The asyncio adapter of :class:`~sipedge.proxy.keepalive.KeepaliveCore`: one loop
timer, pings written straight to the transports on the client's own flow, answers to SIP
pings taken from ``ProxyCore.local_response_handler``.

Wiring (``server/app.py``, after ``SipService.start``)::

    ka = KeepaliveService(config.nat, sip.location, sip.core, sip.transports, sip.clock,
                          SqliteEndpointStore(db))
    ka.start()          # ... ka.stats() into App.stats(), ka.stop() before sip.stop()
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .._common.clock import Clock
from ..config.nat import NatConfig
from ..errors import StorageError
from ..proxy.core import ProxyCore
from ..proxy.keepalive import EndpointStore, KeepaliveCore, wrap_router
from ..proxy.location import LocationStore
from ..proxy.routing import Router
from ..sip.flow import Flow
from ..sip.message import Response

log = logging.getLogger(__name__)


def slices_for(interval: float) -> int:
    """How many slots the pings of one interval are spread over: about one timer per
    second, at most 20, so thousands of clients never get their pings in one burst."""
    return max(1, min(20, int(interval)))


class Sender(Protocol):
    def send(self, data: bytes, flow: Flow) -> bool: ...


class KeepaliveService:
    """Keepalives of NAT bindings for one SIP service; ``start()``, ``stop()``,
    ``stats()``. Must be started from the running event loop."""

    def __init__(
        self,
        config: NatConfig,
        location: LocationStore,
        core: ProxyCore,
        transports: Sender,
        clock: Clock,
        store: EndpointStore | None = None,
    ) -> None:
        self.config = config
        self.location = location
        self.core = core
        self.transports = transports
        self.clock = clock
        self.store = store
        self.keepalive: KeepaliveCore | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._router: Router | None = None
        self._previous_handler = core.local_response_handler

    def start(self) -> None:
        ka = KeepaliveCore(self.config, self.location, self.core.identity, self.store, now=self.clock.wall(),
                           slices=slices_for(self.config.keepalive_interval))
        self.keepalive = ka
        self._router = self.core.router
        self.core.router = wrap_router(self.core.router, ka, self.clock)
        self._previous_handler = self.core.local_response_handler
        self.core.local_response_handler = self._on_response
        self._arm()
        if self.config.keepalive_interval > 0:
            log.info(
                "NAT keepalives every %.1f s (%s%s)", self.config.keepalive_interval,
                self.config.keepalive_method, ", NATed contacts only" if self.config.ping_nated_only else "",
            )

    def set_router(self, router: Router) -> None:
        """Route with ``router`` from now on, keepalives still hooked in (a reload)."""
        self._router = router
        self.core.router = wrap_router(router, self.keepalive, self.clock) if self.keepalive is not None else router

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._router is not None:
            self.core.router = self._router
            self._router = None
        self.core.local_response_handler = self._previous_handler

    def stats(self) -> dict[str, int | float]:
        return self.keepalive.stats() if self.keepalive is not None else {}

    # -- the four steps ------------------------------------------------------------
    def _on_response(self, resp: Response, flow: Flow) -> None:
        ka = self.keepalive
        if ka is not None and ka.response_received(resp, flow, self.clock.wall()):
            return
        if self._previous_handler is not None:
            self._previous_handler(resp, flow)

    def _on_timer(self) -> None:
        self._timer = None
        ka = self.keepalive
        if ka is None:
            return
        try:
            ka.handle_timer(self.clock.wall())
            self._flush()
        except StorageError as exc:  # the database is away (logged once there): next round
            log.debug("keepalive round skipped: %s", exc)
        except Exception:  # a bug: log it, keep pinging
            log.exception("keepalive round failed")
        self._arm()

    def _flush(self) -> None:
        ka = self.keepalive
        if ka is None:
            return
        for ping in ka.outgoing():
            if not self.transports.send(ping.data, ping.flow):
                ka.send_failed(ping.flow, self.clock.wall())

    def _arm(self) -> None:
        ka = self.keepalive
        when = ka.get_timer() if ka is not None else None
        if when is None:
            return
        delay = max(0.0, when - self.clock.wall())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)
