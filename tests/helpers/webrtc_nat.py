"""The WebRTC bridge behind real NATs (issue 12): the namespaces of
:func:`helpers.netns.nat_topology` (a private side masqueraded by a Linux router, a public
side with ``sipedge serve``), and one process holding both parties, each with its
sockets in its own namespace. Network namespaces are per thread in Linux: a socket
belongs to the namespace its thread was in when it was made, so the process starts on the
public side and makes the NATed party's sockets (or, for a browser behind the NAT, the
rest of its life) in the private one.

    ip netns exec PUB python -c "from helpers.webrtc_nat import main; main(name, tmp, PRIVATE_NS)"
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers.sipserver import running_server
from helpers.webrtc_bundle import VideoPhone, browser_calls
from helpers.webrtc_call import USERS, sipedge_routing

SERVER = "203.0.113.2"
PRIVATE = "192.168.77.2"
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def enter(ns: str) -> None:
    """This thread's network namespace becomes the named one (``ip netns``)."""
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Sockets made in this block are in ``ns``; afterwards the thread is back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter(ns)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def main(scenario: str, tmp: str, private_ns: str) -> None:
    """``browser-behind-nat``: aiortc on the private side calls a phone on the public
    one; ``phone-behind-nat``: aiortc on the public side calls a phone on the private
    one (its SDP names its private address). Both with audio and video (BUNDLE)."""
    extra = f'\n[media]\nlisten = "{SERVER}"\n'

    async def run() -> dict[str, Any]:
        with running_server(Path(tmp), host=SERVER, users=USERS, log_level=os.environ.get("SIPEDGE_LOG", "info"),
                            web='metrics_allow = ["203.0.113.0/24"]', extra=extra) as server:
            try:
                route = sipedge_routing(server)
                if scenario == "phone-behind-nat":
                    with inside(private_ns):
                        phone = VideoPhone(server, PRIVATE)
                else:
                    phone = VideoPhone(server)
                    enter(private_ns)  # the browser's ICE, DTLS, SRTP and WebSocket from behind the NAT
                return await browser_calls(route, phone, video=True)
            finally:
                sys.stderr.write(server.log_text()[-6000:])

    print(json.dumps(asyncio.run(run())), flush=True)
