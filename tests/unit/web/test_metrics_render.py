"""/metrics as written by web/server.py render_metrics: names kept, gauges typed,
histograms exported, and the page parses with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from sipedge._common.histogram import Histogram
from sipedge.web.server import render_metrics


def test_stats_keep_their_names_gauges_are_typed_and_histograms_have_buckets_sum_and_count() -> None:
    reg, inv = Histogram((0.01, 0.1)), Histogram((0.01, 0.1))
    reg.observe(0.005)
    reg.observe(0.05)
    page = render_metrics(
        lambda: {"sip_requests_received": 3, "sip_tx_live": 2, "odd.name-x": 1},
        lambda: [("sip_response_seconds", {"method": "REGISTER"}, reg),
                 ("sip_response_seconds", {"method": "INVITE"}, inv)],
    ).decode()
    lines = page.splitlines()
    assert "sipedge_sip_requests_received 3" in lines  # the name dashboards use, no _total
    assert "sipedge_odd_name_x 1" in lines
    families = {f.name: f for f in text_string_to_metric_families(page)}
    assert families["sipedge_sip_tx_live"].type == "gauge"
    assert families["sipedge_sip_requests_received"].type == "unknown"
    hist = families["sipedge_sip_response_seconds"]
    assert hist.type == "histogram"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in hist.samples}
    assert samples[("sipedge_sip_response_seconds_bucket", (("le", "0.01"), ("method", "REGISTER")))] == 1
    assert samples[("sipedge_sip_response_seconds_bucket", (("le", "+Inf"), ("method", "REGISTER")))] == 2
    assert samples[("sipedge_sip_response_seconds_count", (("method", "REGISTER"),))] == 2
    assert samples[("sipedge_sip_response_seconds_sum", (("method", "REGISTER"),))] == 0.055
    assert samples[("sipedge_sip_response_seconds_count", (("method", "INVITE"),))] == 0


def test_without_histograms_only_the_stats_are_rendered() -> None:
    page = render_metrics(lambda: {"a": 1}).decode()
    assert [f.name for f in text_string_to_metric_families(page)] == ["sipedge_a"]


def test_label_values_are_escaped_and_unlabelled_histograms_have_no_braces() -> None:
    h = Histogram((1.0,))
    h.observe(2.0)
    page = render_metrics(lambda: {}, lambda: [("x_seconds", {"k": 'a"b\\c\nd'}, h), ("y_seconds", {}, h)]).decode()
    assert "sipedge_y_seconds_count 1" in page.splitlines()
    families = {f.name: f for f in text_string_to_metric_families(page)}
    labels = {s.labels["k"] for s in families["sipedge_x_seconds"].samples}
    assert labels == {'a"b\\c\nd'}
    inf = [s for s in families["sipedge_y_seconds"].samples if s.labels.get("le") == "+Inf"]
    assert inf[0].value == 1


def test_workers_labelled_series_stay_in_one_family_with_one_type_line() -> None:
    """With ``general.workers`` > 1 every stat also comes per worker (``name{worker="1"}``);
    a family's series must be together for Prometheus, typed once."""
    page = render_metrics(lambda: {
        "sip_tx_live": 5, 'sip_tx_live{worker="0"}': 2, 'sip_tx_live{worker="1"}': 3, "sip_tx_live_x": 1,
    }).decode()
    assert page.count("# TYPE sipedge_sip_tx_live gauge") == 1
    families = {f.name: f for f in text_string_to_metric_families(page)}
    live = families["sipedge_sip_tx_live"]
    assert live.type == "gauge"
    assert sorted((s.labels.get("worker", ""), s.value) for s in live.samples) == [("", 5), ("0", 2), ("1", 3)]
    assert families["sipedge_sip_tx_live_x"].samples[0].value == 1
