"""Config of the shared hot state in Redis (docs/redis.md): the ``[redis]`` section, read
by :mod:`sipedge.store.redis`."""

from __future__ import annotations

from dataclasses import dataclass

from ._schema import non_negative, option, positive


def redis_url(v: object) -> str | None:
    """Empty, or a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    if v == "" or (isinstance(v, str) and v.split("://", 1)[0] in ("redis", "rediss", "unix") and "://" in v):
        return None
    return 'a URL like "redis://127.0.0.1:6379/0" (or rediss://, unix://), or "" for no Redis'


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Redis for the state several sipedge nodes share: location, the digest-nonce secret,
    bans, rate-limit pipes and TURN allocation quotas (as Kamailio's db_redis, coturn's Redis database)."""

    url: str = option(
        "",
        'Redis server, e.g. "redis://127.0.0.1:6379/0" (credentials may go in the URL); '
        'empty = no Redis: every node keeps its own state',
        redis_url,
    )
    prefix: str = option(
        "sipedge:", "prefix of every key, so that several clusters can share one Redis"
    )
    location: bool = option(
        True, "keep registrations in Redis instead of the SQLite file, so every node sees them"
    )
    nonces: bool = option(
        True,
        "share the digest-nonce secret through Redis, so a nonce one node issued verifies "
        "on every other",
    )
    bans: bool = option(
        True, "share flood and fail2ban bans (and ctl ban add/rm): a source banned on one node is banned on all"
    )
    turn_quotas: bool = option(
        True, "count turn.max_allocations_per_user over all nodes instead of per node"
    )
    ratelimit: bool = option(
        True,
        "count the [sip.ratelimit] pipes over all nodes (fixed windows in Redis) instead of "
        "per node and worker",
    )
    timeout: float = option(
        0.25,
        "seconds a Redis command may take before the request needing it fails (500); kept "
        "short, as the call is made inline",
        positive,
    )
    connect_timeout: float = option(0.5, "seconds a new connection to Redis may take", positive)
    pool_size: int = option(8, "most connections to Redis kept open", positive)
    retry_min: float = option(
        0.2,
        "seconds to wait after Redis failed before trying it again; doubled after each "
        "failure up to retry_max. Meanwhile requests needing it fail at once (500)",
        positive,
    )
    retry_max: float = option(5.0, "longest wait between tries of an unreachable Redis", positive)
    sync_interval: float = option(
        1.0, "seconds between reads of the bans other nodes made (0 = never read them)", non_negative
    )
