"""Config of request rate limits and the toll-fraud guard (docs/security.md, "Rate
limits" and "Toll fraud"): ``[sip.ratelimit]`` and ``[sip.fraud]``, read by
:mod:`sipedge.proxy.ratelimit`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._schema import non_negative, one_of, option, positive

ALGORITHMS = ("taildrop", "red", "network")


def parse_pipe(item: str) -> tuple[str, int]:
    """``"INVITE:200"`` → ("INVITE", 200); ``"*:500"`` is any method. ValueError if not."""
    method, sep, rate = item.rpartition(":")
    method = method.strip().upper()
    if not sep or not method or not rate.strip().isdigit() or int(rate) <= 0:
        raise ValueError(item)
    if method != "*" and not method.replace("-", "").isalpha():
        raise ValueError(item)
    return method, int(rate)


def _pipes(v: Any) -> str | None:
    for item in v:
        try:
            parse_pipe(str(item))
        except ValueError:
            return f'a list of "METHOD:RATE" such as ["INVITE:200", "REGISTER:1000", "*:2000"]; {item!r} is not'
    return None


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Requests per interval by method, in total and per source, as Kamailio's ratelimit
    module's pipes; over a limit the request gets 503 with Retry-After."""

    algorithm: str = option(
        "taildrop",
        'how a pipe over its rate drops: "taildrop" (every request past the rate in the '
        'interval), "red" (random early detection: from half the rate on, a growing share, '
        'all past it), "network" (while the host receives more packets per second than the '
        "rate, from /proc/net/snmp)",
        one_of(*ALGORITHMS),
    )
    interval: float = option(1.0, "seconds a pipe counts over (ratelimit's timer_interval)", positive)
    limits: list[str] = option(
        [], 'requests per interval of all sources together, "METHOD:RATE" ("*" any method)', _pipes
    )
    per_source: list[str] = option(
        [], 'requests per interval of each source IP, "METHOD:RATE" (sip.flood.trusted exempt)', _pipes
    )
    per_destination: int = option(
        0, "requests per interval towards any one foreign Request-URI host (0 = no limit)", non_negative
    )


@dataclass(frozen=True, slots=True)
class FraudConfig:
    """Toll-fraud guard: calls to foreign destinations per authenticated user."""

    max_foreign_calls: int = option(
        0,
        "INVITEs one authenticated user may send to destinations that are not ours per "
        "window; past it they get 403 Foreign Call Limit (0 = no limit)",
        non_negative,
    )
    window: float = option(3600.0, "seconds max_foreign_calls counts over", positive)
