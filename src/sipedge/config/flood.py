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
    max_auth_failures: int = option(
        10,
        "failed digest responses (wrong password, unknown user) one source IP may send per "
        "auth_window; one more and it is banned (fail2ban's job; 0 = no limit)",
        non_negative,
    )
    max_user_auth_failures: int = option(
        20,
        "failed digest responses for one username from all sources per auth_window; past "
        "it, every source that fails for that user is banned at once (a guess spread over "
        "many addresses), while right passwords still work (0 = no limit)",
        non_negative,
    )
    auth_window: float = option(60.0, "seconds the auth failure counts cover", positive)
    scanners: list[str] = option(
        ["friendly-scanner", "sipvicious", "sipcli", "sip-scan", "iwar", "pplsip", "vaxsipuseragent",
         "sundayddr"],
        "User-Agent substrings (case-insensitive) of SIP scanners: their requests are dropped "
        "unanswered and the source banned",
    )

