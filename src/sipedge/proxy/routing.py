"""Loading routing modules: plain Python, the way Kamailio has a config script.

A routing module is any importable module (or ``.py`` file) that defines::

    def request_route(ctx: RequestContext) -> None: ...

and optionally::

    def reply_route(ctx: ReplyContext) -> None: ...

``request_route`` runs for every new request (and, statelessly, for ACKs of 2xx and other
requests that belong to no transaction); it must end with one of ``ctx.reply()``,
``ctx.relay()``, ``ctx.save()`` or ``ctx.drop()`` — if it returns without any, the proxy
answers 500 so that no request is silently left hanging. ``reply_route`` sees each
response before it is forwarded (it may edit it, or ``ctx.drop()`` it).
See docs/routing.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .context import ReplyContext, RequestContext


@dataclass(frozen=True, slots=True)
class Router:
    """The entry points of one routing module."""

    request_route: Callable[[RequestContext], None]
    reply_route: Callable[[ReplyContext], None] | None = None
    name: str = ""


def load_router(spec: str) -> Router:
    """Import ``spec`` (a dotted module name or a path to a ``.py`` file)."""
    module: Any
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"routing.module = {spec!r}: no such file; give a dotted module name or a .py path")
        name = f"sipedge_routing_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ConfigError(f"routing.module = {spec!r}: cannot load this file as Python")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(f"routing.module = {spec!r}: failed to import: {exc!r}") from exc
    else:
        try:
            module = importlib.import_module(spec)
        except Exception as exc:
            raise ConfigError(f"routing.module = {spec!r}: failed to import: {exc!r}") from exc
    request_route = getattr(module, "request_route", None)
    if not callable(request_route):
        raise ConfigError(f"routing.module = {spec!r}: it must define request_route(ctx)")
    reply_route = getattr(module, "reply_route", None)
    return Router(request_route, reply_route if callable(reply_route) else None, spec)
