"""CPU cost of rendering /metrics: sipedge's own renderer (``web.server.render_metrics``)
against prometheus-client writing the same page (a custom collector over the same stats
and histograms, as an adopter of the library would write it), and against the plain
untyped renderer sipedge had before histograms.

The stats dict has the size of a running ``sipedge serve`` with SIP, media and TURN on
(about 250 stats, ``--stats``), plus the five histograms it exports (SIP response time
for REGISTER/INVITE/other, DTLS and ICE setup time). Prints µs per scrape of each and
the ratios; a scrape comes every 15-60 s, so the absolute figure is what decides.

Run: ``.venv/bin/python -m bench.metrics_bench [--stats N] [--iterations N]`` (needs the
``test`` extra, which brings prometheus-client).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable, Iterator

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import CollectorRegistry

from sipedge._common.histogram import SETUP_BUCKETS, SIP_RESPONSE_BUCKETS, Histogram, Observed
from sipedge.web.server import GAUGES, metric_name, render_metrics


def untyped_render(stats: dict[str, int | float], prefix: str = "sipedge_") -> str:
    """The renderer before histograms: untyped samples, names sanitized."""
    lines = []
    for name in sorted(stats):
        value = stats[name]
        metric = prefix + "".join(c if c.isalnum() or c == "_" else "_" for c in name)
        lines.append(f"{metric} {value}")
    return "\n".join(lines) + "\n"


class _Collector:
    """The same page through prometheus-client: gauges typed, the rest untyped, histograms."""

    def __init__(self, stats: dict[str, int | float], hists: Observed) -> None:
        self.stats, self.hists = stats, hists

    def collect(self) -> Iterator[Metric]:
        for name in sorted(self.stats):
            family = GaugeMetricFamily if name in GAUGES else UnknownMetricFamily
            yield family(metric_name(name), "", value=self.stats[name])
        families: dict[str, HistogramMetricFamily] = {}
        for name, labels, h in self.hists:
            fam = families.get(name)
            if fam is None:
                fam = families[name] = HistogramMetricFamily(metric_name(name), "", labels=list(labels))
            buckets = [("+Inf" if math.isinf(b) else repr(b), float(n)) for b, n in h.cumulative()]
            fam.add_metric(list(labels.values()), buckets, h.sum)
        yield from families.values()


def prometheus_client_render(stats: dict[str, int | float], hists: Observed) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats, hists))
    return generate_latest(registry)


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


def per_call_us(fn: Callable[[], object], iterations: int) -> float:
    start = time.process_time()
    for _ in range(iterations):
        fn()
    return (time.process_time() - start) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stats", type=int, default=250, help="stats in the dict (a running server has ~250)")
    parser.add_argument("--iterations", type=int, default=2000, help="scrapes rendered per renderer")
    args = parser.parse_args()
    stats, hists = server_like_stats(args.stats), server_like_histograms()
    ours = per_call_us(lambda: render_metrics(lambda: stats, lambda: hists), args.iterations)
    theirs = per_call_us(lambda: prometheus_client_render(stats, hists), args.iterations)
    untyped = per_call_us(lambda: untyped_render(stats), args.iterations)
    size_ours = len(render_metrics(lambda: stats, lambda: hists))
    size_theirs = len(prometheus_client_render(stats, hists))
    print(f"stats: {len(stats)}, histograms: {len(hists)}, iterations: {args.iterations}")
    print(f"sipedge renderer, stats + histograms:  {ours:8.1f} µs per scrape, {size_ours} bytes")
    print(f"prometheus-client, the same page:      {theirs:8.1f} µs per scrape, {size_theirs} bytes")
    print(f"untyped stats only (before histograms): {untyped:7.1f} µs per scrape")
    print(f"ratio prometheus-client/sipedge: {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
