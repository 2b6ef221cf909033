"""A routing module for tests: the default routing, with the relay's own RTCP on for
every relayed call (ng ``generate-RTCP=on``, ``Flags.generate_rtcp``): the relay then
reports to the plain phone as well as to the browser."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from sipedge.media.relay import Flags
from sipedge.proxy import default_routing
from sipedge.proxy.context import RequestContext

reply_route = default_routing.reply_route


class _WithRtcp:
    """The request's context, except that the relay's flags say generate-RTCP=on."""

    def __init__(self, ctx: RequestContext) -> None:
        object.__setattr__(self, "_ctx", ctx)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._ctx, name, value)

    def rtpengine_manage(self, flags: Flags | None = None) -> bool:
        return bool(self._ctx.rtpengine_manage(replace(flags or Flags(), generate_rtcp="on")))


def request_route(ctx: RequestContext) -> None:
    default_routing.request_route(cast(RequestContext, _WithRtcp(ctx)))
