"""The asyncio adapter of :class:`~sipedge.proxy.keepalive.KeepaliveCore`: one loop
timer, pings written to the SIP service on the client's own flow; the routing decisions
and the answers to SIP pings come from the proxy core, which is given this service at
construction (``ProxyServices.route_observers`` and ``local_responses``).

Wiring (``server/app.py``)::

    ka = KeepaliveService(config.nat, location, clock, SqliteEndpointStore(db))
    sip = SipService(..., observers=(ka,), local_responses=(ka.local_response, ...))
    await sip.start(...)
    ka.start(sip.core.identity, sip)   # ... ka.stats() into App.stats(), ka.stop() before sip.stop()
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .._common.clock import Clock
from ..config.nat import NatConfig
from ..errors import StorageError
from ..proxy.identity import Identity
from ..proxy.keepalive import EndpointStore, KeepaliveCore, KeepaliveHooks
from ..proxy.location import LocationStore
from ..sip.flow import Flow

log = logging.getLogger(__name__)


def slices_for(interval: float) -> int:
    """How many slots the pings of one interval are spread over: about one timer per
    second, at most 20, so thousands of clients never get their pings in one burst."""
    return max(1, min(20, int(interval)))


class Sender(Protocol):
    def send(self, data: bytes, flow: Flow) -> bool: ...


class KeepaliveService(KeepaliveHooks):
    """Keepalives of NAT bindings for one SIP service; ``start()``, ``stop()``,
    ``stats()``. Built before the proxy core, which is given it as a route observer and
    a local-response consumer (:class:`~sipedge.proxy.keepalive.KeepaliveHooks`); must
    be started from the running event loop."""

    def __init__(
        self,
        config: NatConfig,
        location: LocationStore,
        clock: Clock,
        store: EndpointStore | None = None,
    ) -> None:
        super().__init__(clock)
        self.config = config
        self.location = location
        self.store = store
        self.transports: Sender | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, identity: Identity, transports: Sender) -> None:
        """Start pinging for the proxy of ``identity``, writing pings with ``transports``."""
        self.transports = transports
        self.keepalive = KeepaliveCore(self.config, self.location, identity, self.store, now=self.clock.wall(),
                                       slices=slices_for(self.config.keepalive_interval))
        self._arm()
        if self.config.keepalive_interval > 0:
            log.info(
                "NAT keepalives every %.1f s (%s%s)", self.config.keepalive_interval,
                self.config.keepalive_method, ", NATed contacts only" if self.config.ping_nated_only else "",
            )

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stats(self) -> dict[str, int | float]:
        return self.keepalive.stats() if self.keepalive is not None else {}

    # -- the four steps (the answers to SIP pings: KeepaliveHooks.local_response) ----
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
        if ka is None or self.transports is None:
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
