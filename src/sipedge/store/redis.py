"""Redis backends for the state several sipedge nodes share (docs/redis.md).

:class:`RedisLink` is the one connection pool of a process, with short timeouts and a
back-off: after a failure, commands fail at once (:class:`~sipedge.errors.StorageError`,
so the request gets a 500) until the next try is due, instead of each waiting for its
timeout on the event loop; the first command that works again ends the outage. Both
changes are logged once.

On top of it, all synchronous (the sans-I/O cores call them inline):

- :class:`RedisLocationStore`, a :class:`~sipedge.proxy.location.LocationStore`: a hash
  per AoR (contact -> binding), a sorted set of every binding by expiry (purge, listing),
  a set per flow token (a closed connection's bindings). A put is a WATCH/MULTI
  transaction on the AoR's hash, so two nodes registering the same AoR never interleave.
- :class:`RedisBanStore`, a :class:`~sipedge.proxy.pike.BanStore`: one sorted set of
  source -> end of ban in Redis's own clock (``TIME``), trimmed to ``max_sources``.
- :class:`RedisAllocationQuota`, a :class:`~sipedge.turn.quota.AllocationQuota`: a sorted
  set per TURN account of its allocations on every node, each with the end of its life.
- :class:`RedisPipeCounter`, a :class:`~sipedge.proxy.ratelimit.PipeCounter`: a counter
  per rate-limit pipe and fixed window of Redis's own clock (``INCR``, expiring a second
  after its window).
- :func:`shared_secret`: the digest-nonce key, created once with ``SET NX`` so that every
  node signs and verifies nonces with the same one.

Text from the wire (a Latin-1 User-Agent kept as surrogate escapes) goes in and out as
its original bytes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis
import redis.exceptions

from ..config.redis import RedisConfig
from ..errors import StorageError
from ..proxy.location import Binding, order_bindings

log = logging.getLogger("sipedge.redis")

T = TypeVar("T")

_ENC = "utf-8"
_ERRORS = "surrogateescape"
_WATCH_RETRIES = 20


def _text(v: bytes | str) -> str:
    return v.decode(_ENC, _ERRORS) if isinstance(v, bytes) else v


class RedisLink:
    """A pool of connections to one Redis, failing fast while it is unreachable."""

    def __init__(self, config: RedisConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not config.url:
            raise StorageError("redis.url is empty")
        self.config = config
        self.prefix = config.prefix
        self._clock = clock
        try:
            pool = redis.ConnectionPool.from_url(
                config.url,
                max_connections=config.pool_size,
                socket_timeout=config.timeout,
                socket_connect_timeout=config.connect_timeout,
                encoding=_ENC,
                encoding_errors=_ERRORS,
                decode_responses=False,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise StorageError(f"redis.url = {config.url!r}: {exc}") from exc
        self.client = redis.Redis(connection_pool=pool)
        self.where = _describe(config.url)
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_error = ""
        self.counters: dict[str, int] = {
            "redis_commands": 0,
            "redis_errors": 0,
            "redis_refused_while_down": 0,
            "redis_outages": 0,
        }

    @property
    def up(self) -> bool:
        return self._backoff == 0.0

    def call(self, what: str, fn: Callable[[redis.Redis], T]) -> T:
        """``fn(client)``; any Redis failure becomes StorageError naming ``what``."""
        now = self._clock()
        if self._backoff and now < self._retry_at:
            self.counters["redis_refused_while_down"] += 1
            raise StorageError(f"redis {self.where} unavailable ({self._last_error}); {what} not done")
        self.counters["redis_commands"] += 1
        try:
            result = fn(self.client)
        except redis.exceptions.WatchError:
            raise
        except (redis.exceptions.RedisError, OSError) as exc:
            self._failed(exc, now)
            raise StorageError(f"redis {self.where}: {what} failed: {self._last_error}") from exc
        if self._backoff:
            log.warning("- redis %s reachable again: shared state back in service", self.where)
            self._backoff = 0.0
        return result

    def _failed(self, exc: BaseException, now: float) -> None:
        self.counters["redis_errors"] += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        cfg = self.config
        if not self._backoff:
            self.counters["redis_outages"] += 1
            self._backoff = cfg.retry_min
            log.error(
                "x redis %s failed (%s): requests that need it get 500 until it answers again; "
                "retrying every %g-%g s",
                self.where, self._last_error, cfg.retry_min, cfg.retry_max,
            )
        else:
            self._backoff = min(cfg.retry_max, self._backoff * 2)
        self._retry_at = now + self._backoff

    def ping(self) -> None:
        self.call("PING", lambda r: r.ping())

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def stats(self) -> dict[str, int | float]:
        return {**self.counters, "redis_up": int(self.up)}

    def close(self) -> None:
        self.client.close()
        self.client.connection_pool.disconnect()


def _describe(url: str) -> str:
    """The URL without its password, for log lines."""
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    return f"{scheme}://{rest}"


# -- location ------------------------------------------------------------------------


def _encode(seq: int, b: Binding) -> str:
    fields = {
        "expires_at": b.expires_at, "q": b.q, "call_id": b.call_id, "cseq": b.cseq,
        "received": b.received, "path": list(b.path), "instance": b.instance, "reg_id": b.reg_id,
        "flow": b.flow, "user_agent": b.user_agent, "socket": b.socket,
    }
    return f"{seq} {json.dumps(fields, separators=(',', ':'))}"


def _decode(aor: str, contact: str, raw: bytes | str) -> tuple[int, Binding] | None:
    """A stored binding, or None if the value is not one of ours (never an exception)."""
    try:
        seq_text, _, body = _text(raw).partition(" ")
        f = json.loads(body)
        return int(seq_text), Binding(
            aor=aor, contact=contact, expires_at=float(f["expires_at"]), q=float(f["q"]),
            call_id=str(f["call_id"]), cseq=int(f["cseq"]), received=str(f["received"]),
            path=tuple(str(p) for p in f["path"]), instance=str(f["instance"]),
            reg_id=int(f["reg_id"]), flow=str(f["flow"]), user_agent=str(f["user_agent"]),
            socket=str(f["socket"]),
        )
    except (ValueError, TypeError, KeyError):
        return None


def _member(aor: str, contact: str) -> str:
    return f"{aor}\n{contact}"


# Deletes the members of the expiry set due by ARGV[1] and their bindings; returns how
# many. Run in Redis, so a binding another node refreshed meanwhile (a later score) stays.
_PURGE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do
  local nl = string.find(m, '\\n', 1, true)
  redis.call('HDEL', ARGV[2] .. string.sub(m, 1, nl - 1), string.sub(m, nl + 1))
  redis.call('ZREM', KEYS[1], m)
end
return #due
"""

_PURGE_BATCH = 1000


class RedisLocationStore:
    """:class:`~sipedge.proxy.location.LocationStore` in Redis, shared by every node.

    Every call is a round trip (no cache: another node may have changed the AoR); a put
    is a few. ``expires_at`` is wall-clock time, as in every store. A hash also gets a
    Redis TTL a day past its last binding's expiry, so nothing outlives a cluster whose
    nodes all stopped purging.
    """

    write_back = False

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._exp = link.key("loc", "expiry")
        self._aor_prefix = link.key("loc", "aor", "")
        self._purge = link.client.register_script(_PURGE)
        self.counters = {"location_redis_conflicts": 0}

    def _aor(self, aor: str) -> str:
        return self._aor_prefix + aor

    def _flow(self, flow: str) -> str:
        return self.link.key("loc", "flow", flow)

    def _entries(self, r: Any, aor: str) -> dict[str, tuple[int, Binding]]:
        out: dict[str, tuple[int, Binding]] = {}
        for k, v in r.hgetall(self._aor(aor)).items():
            contact = _text(k)
            sb = _decode(aor, contact, v)
            if sb is not None:
                out[contact] = sb
        return out

    def _change(self, what: str, aor: str, fn: Callable[[Any, dict[str, tuple[int, Binding]]], None]) -> None:
        """Run ``fn(pipeline, entries)`` as one transaction on ``aor``'s hash, retried
        when another node changed it in between."""

        def txn(r: redis.Redis) -> None:
            with r.pipeline() as pipe:
                for _ in range(_WATCH_RETRIES):
                    try:
                        pipe.watch(self._aor(aor))  # type: ignore[no-untyped-call]
                        entries = self._entries(pipe, aor)
                        pipe.multi()
                        fn(pipe, entries)
                        pipe.execute()
                        return
                    except redis.exceptions.WatchError:
                        self.counters["location_redis_conflicts"] += 1
                        continue
            raise redis.exceptions.RedisError(f"{aor} changed {_WATCH_RETRIES} times in a row")

        self.link.call(what, txn)

    def _drop(self, pipe: Any, aor: str, contact: str, b: Binding) -> None:
        pipe.hdel(self._aor(aor), contact)
        pipe.zrem(self._exp, _member(aor, contact))
        if b.flow:
            pipe.srem(self._flow(b.flow), _member(aor, contact))

    def _expire_hash(self, pipe: Any, aor: str, latest: float) -> None:
        if latest > time.time():
            pipe.expireat(self._aor(aor), int(latest) + 86400)

    # -- LocationStore -----------------------------------------------------------------
    def lookup(self, aor: str, now: float) -> list[Binding]:
        entries = self.link.call("location lookup", lambda r: self._entries(r, aor))
        return order_bindings(sb for sb in entries.values() if sb[1].expires_at > now)

    def put(self, binding: Binding) -> None:
        aor = binding.aor

        def fn(pipe: Any, entries: dict[str, tuple[int, Binding]]) -> None:
            for contact, (_, b) in entries.items():
                if binding.replaces(b) or contact == binding.contact:
                    self._drop(pipe, aor, contact, b)
            seq = max((s for s, _ in entries.values()), default=0) + 1
            member = _member(aor, binding.contact)
            pipe.hset(self._aor(aor), binding.contact, _encode(seq, binding))
            pipe.zadd(self._exp, {member: binding.expires_at})
            if binding.flow:
                pipe.sadd(self._flow(binding.flow), member)
                pipe.expireat(self._flow(binding.flow), int(max(binding.expires_at, time.time())) + 86400)
            self._expire_hash(pipe, aor, max([binding.expires_at, *(b.expires_at for _, b in entries.values())]))

        self._change("location put", aor, fn)

    def remove(self, aor: str, contact: str) -> None:
        def fn(pipe: Any, entries: dict[str, tuple[int, Binding]]) -> None:
            gone = entries.get(contact)
            if gone is not None:
                self._drop(pipe, aor, contact, gone[1])
            else:  # not ours to decode, or not there: remove it anyway
                pipe.hdel(self._aor(aor), contact)
                pipe.zrem(self._exp, _member(aor, contact))

        self._change("location remove", aor, fn)

    def remove_aor(self, aor: str) -> None:
        def fn(pipe: Any, entries: dict[str, tuple[int, Binding]]) -> None:
            for contact, (_, b) in entries.items():
                self._drop(pipe, aor, contact, b)
            pipe.delete(self._aor(aor))

        self._change("location remove", aor, fn)

    def purge_expired(self, now: float) -> int:
        total = 0
        for _ in range(10_000):  # bounded: at most ten million bindings a purge
            n = int(self.link.call(
                "location purge", lambda r: self._purge(keys=[self._exp], args=[now, self._aor_prefix, _PURGE_BATCH])
            ))
            total += n
            if n < _PURGE_BATCH:
                break
        return total

    def _lookup_many(self, aors: Iterable[str], now: float) -> list[Binding]:
        names = sorted(set(aors))

        def read(r: redis.Redis) -> list[Any]:
            with r.pipeline(transaction=False) as pipe:
                for aor in names:
                    pipe.hgetall(self._aor(aor))
                return pipe.execute()

        out: list[Binding] = []
        for aor, raw in zip(names, self.link.call("location read", read), strict=True):
            entries = (_decode(aor, _text(k), v) for k, v in raw.items())
            out.extend(order_bindings(sb for sb in entries if sb is not None and sb[1].expires_at > now))
        return out

    def bindings(self, now: float) -> list[Binding]:
        members: list[Any] = self.link.call(
            "location list", lambda r: list(r.zrangebyscore(self._exp, f"({now!r}", "+inf"))
        )
        return self._lookup_many((_text(m).split("\n", 1)[0] for m in members), now)

    def count(self, aor: str, now: float) -> int:
        return len(self.lookup(aor, now))

    def on_flow(self, flow: str) -> list[Binding]:
        members = self.link.call("location flow", lambda r: r.smembers(self._flow(flow)))
        aors = {_text(m).split("\n", 1)[0] for m in members}
        return [b for b in self._lookup_many(aors, float("-inf")) if b.flow == flow]

    def flush(self) -> int:
        """Nothing waits to be written (every change is a transaction)."""
        return 0

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counters)
        try:
            out["location_bindings"] = int(self.link.call("location stats", lambda r: r.zcard(self._exp)))
        except StorageError:
            pass
        return out


# -- bans --------------------------------------------------------------------------------


# Adds ARGV[1] until now+ARGV[2] (keeping a later end), then trims to ARGV[3] bans.
_BAN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local untl = now + tonumber(ARGV[2])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not old or tonumber(old) < untl then redis.call('ZADD', KEYS[1], untl, ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
return 1
"""


class RedisBanStore:
    """:class:`~sipedge.proxy.pike.BanStore` in one Redis sorted set (source -> end)."""

    def __init__(self, link: RedisLink, max_bans: int) -> None:
        self.link = link
        self.max_bans = max_bans
        self._key = link.key("bans")
        self._ban = link.client.register_script(_BAN)

    def publish(self, source: str, seconds: float) -> None:
        self.link.call("ban", lambda r: self._ban(keys=[self._key], args=[source, seconds, self.max_bans]))

    def withdraw(self, source: str) -> None:
        self.link.call("unban", lambda r: r.zrem(self._key, source))

    def active(self) -> dict[str, float]:
        def read(r: redis.Redis) -> tuple[float, list[tuple[bytes, float]]]:
            with r.pipeline(transaction=False) as pipe:
                pipe.time()
                pipe.zrange(self._key, 0, self.max_bans - 1, desc=True, withscores=True)
                (sec, usec), rows = pipe.execute()
            return float(sec) + usec / 1e6, rows

        now, rows = self.link.call("read bans", read)
        return {_text(m): until - now for m, until in rows if until > now}


# -- rate-limit pipes --------------------------------------------------------------------

# Counts one request in KEYS[1]'s window of ARGV[1] seconds (Redis's clock, so the nodes'
# clocks need not agree); the window's counter expires a second after the window ends.
_PIPE = """
local t = redis.call('TIME')
local len = tonumber(ARGV[1])
local w = math.floor((tonumber(t[1]) + tonumber(t[2]) / 1e6) / len)
local k = KEYS[1] .. ':' .. w
local n = redis.call('INCR', k)
if n == 1 then redis.call('PEXPIRE', k, math.ceil(len * 1000) + 1000) end
return n
"""


class RedisPipeCounter:
    """:class:`~sipedge.proxy.ratelimit.PipeCounter` over every node sharing the Redis."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._pipe = link.client.register_script(_PIPE)

    def incr(self, key: str, interval: float) -> int:
        name = self.link.key("rl", key)
        return int(self.link.call("rate-limit count", lambda r: self._pipe(keys=[name], args=[interval])))


# -- TURN allocation quotas ------------------------------------------------------------------

# A sorted set per account: allocation -> end of its lifetime (Redis's clock). Ended ones
# are dropped first, so a node that died frees its slots when they would have expired.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
return 1
"""

# Extends the allocation if it is still there (XX: a refresh never creates a slot).
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 1 then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < tonumber(ARGV[2]) + 60 then redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 60) end
end
return 1
"""


class RedisAllocationQuota:
    """:class:`~sipedge.turn.quota.AllocationQuota` over every node sharing the Redis;
    ``node`` (random per process) keeps two nodes' allocation names apart."""

    def __init__(self, link: RedisLink, node: str) -> None:
        self.link = link
        self.node = node
        self._acquire = link.client.register_script(_ACQUIRE)
        self._refresh = link.client.register_script(_REFRESH)

    def _key(self, account: str) -> str:
        return self.link.key("turn", "quota", account)

    def acquire(self, account: str, allocation: str, limit: int, lifetime: float) -> bool:
        member = f"{self.node}|{allocation}"
        got = self.link.call(
            "TURN quota", lambda r: self._acquire(keys=[self._key(account)], args=[member, limit, lifetime])
        )
        return int(got) == 1

    def refresh(self, account: str, allocation: str, lifetime: float) -> None:
        member = f"{self.node}|{allocation}"
        self.link.call("TURN quota refresh", lambda r: self._refresh(keys=[self._key(account)], args=[member, lifetime]))

    def release(self, account: str, allocation: str) -> None:
        self.link.call("TURN quota release", lambda r: r.zrem(self._key(account), f"{self.node}|{allocation}"))

    def in_use(self, account: str) -> int:
        """Allocations of ``account`` alive on all nodes (admin, tests)."""

        def count(r: redis.Redis) -> int:
            sec, usec = r.time()
            return int(r.zcount(self._key(account), f"({sec + usec / 1e6!r}", "+inf"))

        return self.link.call("TURN quota", count)


# -- the digest-nonce secret ---------------------------------------------------------------


def shared_secret(link: RedisLink, mine: bytes) -> bytes:
    """The cluster's digest-nonce key: the one in Redis, or ``mine`` if none is there yet
    (``SET NX``, so of nodes starting together exactly one sets it)."""
    key = link.key("nonce-key")

    def get_or_set(r: redis.Redis) -> bytes:
        r.set(key, mine, nx=True)
        value = r.get(key)
        return value if isinstance(value, bytes) else mine

    secret = link.call("read the nonce key", get_or_set)
    if len(secret) < 32:
        raise StorageError(f"redis {link.where}: key {key} holds {len(secret)} bytes, not a nonce key; delete it")
    return secret


__all__ = [
    "RedisAllocationQuota", "RedisBanStore", "RedisLink", "RedisLocationStore", "RedisPipeCounter", "shared_secret",
]
