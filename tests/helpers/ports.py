"""Free loopback ports for servers started by tests."""

from __future__ import annotations

import socket

# Every port handed out in this process. The kernel may give the same ephemeral port to
# two bind(0) calls in a row once the first socket is closed, and a server given two equal
# listener ports fails to start; remembering them makes the ports of one test distinct.
_handed_out: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` at the time of the call, and never
    returned before by this process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if (host, port) in _handed_out:
            continue
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
        except OSError:
            continue
        _handed_out.add((host, port))
        return port
    raise RuntimeError("no free port")
