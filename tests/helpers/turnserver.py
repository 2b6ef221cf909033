"""``sipedge serve`` with ``[turn] enabled = true`` on free loopback ports, for a test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .ports import free_port
from .sipserver import Server, running_server


@contextlib.contextmanager
def running_turn_server(
    tmp: Path, turn: str = "", transports: tuple[str, ...] = ("udp",), extra: str = "",
    users: dict[str, str] | None = None, web: str = "",
) -> Iterator[Server]:
    """The server's ``turn_port`` attribute is the TURN port (the same on every transport
    in ``transports``); ``turn`` adds lines to the ``[turn]`` table, ``extra`` more TOML
    after it, ``users`` are SIP subscribers at 127.0.0.1, ``web`` lines of ``[web]``. Relay ports: 21 free ones."""
    turn_port = free_port()
    low = free_port() & ~1
    listen = ", ".join(f'"{t}:127.0.0.1:{turn_port}"' for t in transports)
    section = (
        f"\n[turn]\nenabled = true\nlisten = [{listen}]\nport_min = {low}\nport_max = {low + 20}\n{turn}\n{extra}"
    )
    with running_server(tmp, extra=section, users=users, web=web) as s:
        s.turn_port = turn_port  # type: ignore[attr-defined]
        yield s
