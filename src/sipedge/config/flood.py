"""Config of per-source flood control (docs/security.md, "Flood control"): the
``[sip.flood]`` section, read by :class:`sipedge.proxy.pike.FloodDetector`."""

from __future__ import annotations

from dataclasses import dataclass

from ._schema import networks, non_negative, option, positive


@dataclass(frozen=True, slots=True)
class FloodConfig:
    """Per-source flood control, as Kamailio's pike module: a source sending too much is
    banned, and its packets are dropped before they are parsed."""

    window: float = option(2.0, "sampling interval in seconds (pike's sampling_time_unit)", positive)
    max_requests: int = option(
        200,
        "requests (and unparseable messages) one source IP may send per window; one more and "
        "it is banned (0 = no flood detection)",
        non_negative,
    )
    max_challenges: int = option(
        50,
        "digest challenges (401/407) one source IP may be sent per window; the next request "
        "to challenge is dropped unanswered and the source banned (0 = no limit)",
        non_negative,
    )
    ban_time: float = option(60.0, "seconds a banned source stays banned", positive)
    trusted: list[str] = option(
        ["127.0.0.1", "::1"],
        "addresses or networks never banned nor limited (trunks, peer proxies, the "
        "host itself)",
        networks,
    )
    max_sources: int = option(
        16384,
        "most source IPs counted at once; the least recently seen are forgotten first (a "
        "source not seen for a window has nothing to remember)",
        positive,
    )
