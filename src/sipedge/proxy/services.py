"""What the adapter gives the proxy core at construction: its one services hook.

:class:`ProxyServices` is passed to :class:`~sipedge.proxy.core.ProxyCore` once and never
changed afterwards; nothing patches the core at run time. It holds the adapter's answers
(is a connection still open, is a media relay wired, does it resolve names, where the
rate-limit pipes are counted) and the
consumers of what the core routes and receives:

- ``route_observers`` see every request after the routing module ran and every response
  after the reply route (the NAT keepalives, ``server/keepalive.py``);
- ``local_responses`` are offered, in order, each response to a request the server sent
  itself (one Via: a keepalive or dispatcher OPTIONS); the first that returns True has
  taken it (``server/keepalive.py``, ``server/dispatcher.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..sip.flow import Flow
from ..sip.message import Response
from .ratelimit import PipeCounter

if TYPE_CHECKING:
    from .context import ReplyContext, RequestContext


class RouteObserver(Protocol):
    """Told about each routing decision; must not reply, relay or drop itself."""

    def request_routed(self, ctx: RequestContext) -> None: ...

    def reply_routed(self, ctx: ReplyContext) -> None: ...


# (response, the flow it came on, now) -> True when it was the consumer's
LocalResponseConsumer = Callable[[Response, Flow, float], bool]


def always_alive(flow: Flow) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class ProxyServices:
    """The adapter's services of one proxy core (see the module docstring)."""

    # whether a connection-oriented flow is still open (a worker asks its peers too)
    flow_alive: Callable[[Flow], bool] = always_alive
    # a media relay is wired (``ctx.rtpengine_manage()`` and the media policy act)
    media_available: bool = False
    # the adapter resolves names (ResolveJob): a branch to a name is sent to one
    # address, the others its failover list
    resolve_names: bool = False
    route_observers: tuple[RouteObserver, ...] = ()
    local_responses: tuple[LocalResponseConsumer, ...] = ()
    # the rate-limit pipes' counts shared by every node and worker (``[redis] ratelimit``)
    pipe_counter: PipeCounter | None = None
