"""The proxy core's one services hook (proxy/services.py): given at construction, its
local-response consumers are offered a response to the server's own request in order
until one takes it, and its route observers see each routing decision."""

from __future__ import annotations

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.proxy.context import ReplyContext, RequestContext
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import load_router
from sipedge.proxy.services import LocalResponseConsumer, ProxyServices
from sipedge.sip.flow import Flow
from sipedge.sip.message import Response

ME = ("127.0.0.1", 5060)
PEER = Flow("udp", ME, ("127.0.0.1", 5080))

OUR_ANSWER = (  # a 200 to an OPTIONS this server sent: one Via, ours
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours\r\n"
    b"From: <sip:ping@127.0.0.1>;tag=p1\r\nTo: <sip:peer@127.0.0.1>;tag=x\r\nCall-ID: probe-1\r\n"
    b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
OPTIONS = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKo1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o-1\r\n"
    b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


class Observer:
    def __init__(self) -> None:
        self.requests: list[str] = []

    def request_routed(self, ctx: RequestContext) -> None:
        self.requests.append(ctx.method)

    def reply_routed(self, ctx: ReplyContext) -> None:
        raise AssertionError("no response was relayed")


def make_core(services: ProxyServices) -> tuple[ProxyCore, FakeClock]:
    clock = FakeClock()
    core = ProxyCore(parse_config({"auth": {"register": False, "invite": False}}), Identity([Listener("udp", *ME)]),
                     MemoryLocationStore(), MemorySubscriberStore(), load_router("sipedge.proxy.default_routing"),
                     clock, secret=b"s" * 32, services=services)
    return core, clock


def test_local_responses_are_offered_in_order_until_one_takes_it() -> None:
    offered: list[tuple[str, int, float]] = []

    def consumer(name: str, takes: bool) -> LocalResponseConsumer:
        def consume(resp: Response, flow: Flow, now: float) -> bool:
            offered.append((name, resp.status, now))
            return takes
        return consume

    core, clock = make_core(ProxyServices(local_responses=(consumer("a", False), consumer("b", True),
                                                           consumer("c", True))))
    core.receive(OUR_ANSWER, PEER, clock.now)
    assert offered == [("a", 200, clock.now), ("b", 200, clock.now)]
    assert list(core.outgoing()) == []  # taken: nothing relayed


def test_route_observers_see_the_routed_request() -> None:
    observer = Observer()
    core, clock = make_core(ProxyServices(route_observers=(observer,)))
    core.receive(OPTIONS, PEER, clock.now)
    assert observer.requests == ["OPTIONS"]


def test_the_services_are_the_adapters_answers() -> None:
    core, _ = make_core(ProxyServices(flow_alive=lambda flow: False, media_available=True, resolve_names=True))
    assert core.media_available and core.resolve_names and not core.flow_alive(PEER)
    plain, _ = make_core(ProxyServices())
    assert not plain.media_available and not plain.resolve_names and plain.flow_alive(PEER)
