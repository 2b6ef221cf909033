"""A proxy on two interfaces (UDP on 127.0.0.1 and on 127.0.0.2, like a private and a
public side): every request reaches a phone from the address that phone talks to. A
call's INVITE leaves from the socket the callee registered on, and in-dialog requests
leave from the socket of the Record-Route entry facing their next hop, as Kamailio does.
A NAT in front of a phone drops packets from any other address."""

from __future__ import annotations

from pathlib import Path

from helpers.ports import free_port
from helpers.sipserver import running_server
from helpers.ua import UA
from sipedge.sip import message as m

USERS = {"alice": "alice-pw", "bob": "bob-pw"}


def source_of(ua: UA, msg: m.Request | m.Response) -> tuple[str, int]:
    return next(addr for got, addr in ua.arrivals if got is msg)


def test_each_side_of_a_call_hears_the_proxy_on_its_own_interface(tmp_path: Path) -> None:
    second = free_port("127.0.0.2")
    with running_server(tmp_path, users=USERS, more_listen=(f"udp:127.0.0.2:{second}",)) as s:
        first = (s.host, s.udp)
        alice = UA("udp", first, "alice", s.host, USERS["alice"])
        bob = UA("udp", ("127.0.0.2", second), "bob", s.host, USERS["bob"], host="127.0.0.2")
        try:
            assert alice.register().status == 200 and bob.register().status == 200
            inv = alice.build("INVITE", bob.aor)
            alice.send(inv)
            alice.send(alice.authorize(inv, alice.expect(407)))
            seen = bob.wait("INVITE")
            assert isinstance(seen, m.Request)
            assert source_of(bob, seen) == ("127.0.0.2", second)  # where bob registered
            assert len(seen.get_all("record-route")) == 2  # one entry per interface
            bob.answer(seen, 200)
            ok = alice.expect(200)
            assert source_of(alice, ok) == first

            # bob hangs up: the BYE reaches alice from her side's socket
            contacts = seen.contacts
            assert isinstance(contacts, list)
            bye = bob.build("BYE", str(contacts[0].uri), to=str(seen.from_.uri), to_tag=seen.from_.tag)
            bye.set("Call-ID", seen.call_id)
            for rr in seen.get_all("record-route"):  # the callee's route set, in order
                bye.add("Route", rr)
            bob.send(bye)
            got = alice.wait("BYE")
            assert isinstance(got, m.Request)
            assert source_of(alice, got) == first
            alice.answer(got, 200)
            assert source_of(bob, bob.expect(200)) == ("127.0.0.2", second)
        finally:
            alice.close()
            bob.close()
