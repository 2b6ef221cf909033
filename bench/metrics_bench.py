"""CPU cost of rendering /metrics: prometheus-client (today's ``web.server.render_metrics``)
against the hand-written renderer it replaced (kept here, verbatim, as the baseline).

The stats dict has the size of a running ``sipedge serve`` with SIP, media and TURN on
(about 250 stats, ``--stats``), plus the five histograms it exports (SIP response time
for REGISTER/INVITE/other, DTLS and ICE setup time). Prints µs per scrape of each and
the ratio new/old; a scrape comes every 15-60 s, so the absolute figure is what decides.

Run: ``.venv/bin/python -m bench.metrics_bench [--stats N] [--iterations N]``.
"""

from __future__ import annotations

import argparse
import random
import time

from sipedge._common.histogram import SETUP_BUCKETS, SIP_RESPONSE_BUCKETS, Histogram, Observed
from sipedge.web.server import GAUGES, render_metrics


def old_render(stats: dict[str, int | float], prefix: str = "sipedge_") -> str:
    """The renderer before prometheus-client: untyped samples, names sanitized."""
    lines = []
    for name in sorted(stats):
        value = stats[name]
        metric = prefix + "".join(c if c.isalnum() or c == "_" else "_" for c in name)
        lines.append(f"{metric} {value}")
    return "\n".join(lines) + "\n"


def server_like_stats(n: int) -> dict[str, int | float]:
    rng = random.Random(7)
    stats: dict[str, int | float] = {name: rng.randrange(1000) for name in sorted(GAUGES)}
    roles = ("sip_tx", "sip_udp", "media", "turn", "dns", "registrar", "dialogs", "keepalive")
    i = 0
    while len(stats) < n:
        stats[f"{roles[i % len(roles)]}_counter_{i}"] = rng.randrange(10**9)
        i += 1
    return stats


def server_like_histograms() -> Observed:
    rng = random.Random(8)
    out: Observed = []
    for method in ("REGISTER", "INVITE", "other"):
        h = Histogram(SIP_RESPONSE_BUCKETS)
        for _ in range(1000):
            h.observe(rng.expovariate(200))
        out.append(("sip_response_seconds", {"method": method}, h))
    for name in ("media_dtls_setup_seconds", "media_ice_connect_seconds"):
        h = Histogram(SETUP_BUCKETS)
        for _ in range(100):
            h.observe(rng.expovariate(5))
        out.append((name, {}, h))
    return out


def per_call_us(fn: object, iterations: int) -> float:
    assert callable(fn)
    start = time.process_time()
    for _ in range(iterations):
        fn()
    return (time.process_time() - start) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", type=int, default=250, help="stats in the dict (a running server has ~250)")
    parser.add_argument("--iterations", type=int, default=2000, help="scrapes rendered per renderer")
    args = parser.parse_args()
    stats, hists = server_like_stats(args.stats), server_like_histograms()
    old = per_call_us(lambda: old_render(stats), args.iterations)
    new_stats_only = per_call_us(lambda: render_metrics(lambda: stats), args.iterations)
    new = per_call_us(lambda: render_metrics(lambda: stats, lambda: hists), args.iterations)
    size_old, size_new = len(old_render(stats).encode()), len(render_metrics(lambda: stats, lambda: hists))
    print(f"stats: {len(stats)}, histograms: {len(hists)}, iterations: {args.iterations}")
    print(f"old renderer (untyped lines):          {old:8.1f} µs per scrape, {size_old} bytes")
    print(f"prometheus-client, stats only:         {new_stats_only:8.1f} µs per scrape")
    print(f"prometheus-client, stats + histograms: {new:8.1f} µs per scrape, {size_new} bytes")
    print(f"ratio new/old: {new_stats_only / old:.1f}x (stats only), {new / old:.1f}x (with histograms)")


if __name__ == "__main__":
    main()
