"""Socket options the TURN adapter sets on relay sockets, read back from the kernel."""

from __future__ import annotations

import socket

import pytest

from sipedge.server.stun_turn import (
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DO,
    IPV6_DONTFRAG,
    set_dont_fragment,
)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_dont_fragment_on_relay_sockets_of_both_families(family: int) -> None:
    """DONT-FRAGMENT (RFC 8656 §14.8): the DF bit on IPv4, no source fragmentation on IPv6."""
    try:
        s = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        pytest.skip("no IPv6 here")

    def on() -> bool:
        if family == socket.AF_INET6:
            return s.getsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG) == 1
        return s.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) == IP_PMTUDISC_DO

    with s:
        set_dont_fragment(s, True)
        assert on()
        set_dont_fragment(s, False)
        assert not on()
