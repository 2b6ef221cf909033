"""Allocation quotas through the :class:`~sipedge.turn.quota.AllocationQuota` interface:
two TURN cores sharing one quota count each other's allocations (the Redis one is run
through :func:`allocate_on_two_cores` in tests/unit/store/test_store_redis.py), a refused
allocation gives its slot back, and a quota store that fails is a 500, never a crash."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from sipedge._common.clock import FakeClock
from sipedge.errors import StorageError
from sipedge.stun import attributes as at
from sipedge.stun.message import Class, Method
from sipedge.turn.quota import AllocationQuota, LocalQuota
from sipedge.turn.server import Flow


def _server_tests() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_turn_server_tests", Path(__file__).with_name("test_turn_server.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


T = _server_tests()


def flow(port: int) -> Flow:
    return Flow("udp", ("192.0.2.1", 3478), ("203.0.113.5", port))


def allocate_on_two_cores(make_quota: Callable[[str], AllocationQuota]) -> None:
    """Two cores (two nodes), each with its own handle on one shared quota of 2 per user."""
    clock = FakeClock()
    a = T.make_server(clock, max_allocations_per_user=2)
    b = T.make_server(clock, max_allocations_per_user=2)
    a._quota, b._quota = make_quota("a"), make_quota("b")
    first = T.Client(a, clock, flow=flow(1))
    assert first.allocate().cls is Class.SUCCESS
    assert T.Client(b, clock, flow=flow(1)).allocate().cls is Class.SUCCESS
    assert T.Client(a, clock, flow=flow(2)).allocate().error_code == 486
    assert T.Client(b, clock, flow=flow(3)).allocate().error_code == 486
    assert T.Client(b, clock, "bob", "hunter2", flow(4)).allocate().cls is Class.SUCCESS  # per user
    assert first.request(Method.REFRESH, [at.Lifetime(600)]).cls is Class.SUCCESS
    assert first.request(Method.REFRESH, [at.Lifetime(0)]).cls is Class.SUCCESS  # freed on every node
    assert T.Client(b, clock, flow=flow(5)).allocate().cls is Class.SUCCESS
    assert a.stats()["turn_quota_rejections"] == 1 and b.stats()["turn_quota_rejections"] == 1


def test_two_cores_sharing_one_quota() -> None:
    shared = LocalQuota()
    allocate_on_two_cores(lambda _node: shared)


def test_a_refused_allocation_gives_its_slot_back() -> None:
    clock = FakeClock()
    quota = LocalQuota()
    server = T.make_server(clock, max_allocations_per_user=5, max_allocations=1)
    server._quota = quota
    assert T.Client(server, clock, flow=flow(1)).allocate().cls is Class.SUCCESS
    assert T.Client(server, clock, flow=flow(2)).allocate().error_code == 486  # capacity, not quota
    bad_family = T.Client(server, clock, flow=flow(3))
    assert bad_family.allocate(at.RequestedAddressFamily(at.Family.IPV6)).error_code in (440, 486)
    assert quota.in_use("alice") == 1


class Broken:
    def acquire(self, account: str, allocation: str, limit: int, lifetime: float) -> bool:
        raise StorageError("redis down")

    def refresh(self, account: str, allocation: str, lifetime: float) -> None:
        raise StorageError("redis down")

    def release(self, account: str, allocation: str) -> None:
        raise StorageError("redis down")


def test_a_failing_quota_store_is_a_500_and_counted() -> None:
    clock = FakeClock()
    server = T.make_server(clock)
    server._quota = Broken()
    r = T.Client(server, clock, flow=flow(1)).allocate()
    assert r.error_code == 500
    assert server.stats()["turn_quota_errors"] == 1
    server._quota = LocalQuota()
    c = T.Client(server, clock, flow=flow(2))
    assert c.allocate().cls is Class.SUCCESS
    server._quota = Broken()  # refresh and release failures do not stop the allocation's life
    assert c.request(Method.REFRESH, [at.Lifetime(600)]).cls is Class.SUCCESS
    assert c.request(Method.REFRESH, [at.Lifetime(0)]).cls is Class.SUCCESS
    assert server.stats()["turn_quota_errors"] == 3
