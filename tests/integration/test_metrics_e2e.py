"""/metrics of a real ``sipedge serve``: the SIP response-time
histogram per method class after REGISTERs and an OPTIONS from a UA, every sample
parseable by prometheus-client's own parser, and the old sample names still there."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from helpers.metrics import metrics
from helpers.sipserver import running_server
from helpers.ua import UA


def test_sip_response_seconds_counts_registers_and_options_by_method(tmp_path: Path) -> None:
    with running_server(tmp_path, users={"alice": "secret"}) as s:
        ua = UA("udp", (s.host, s.udp), "alice", s.host, password="secret")
        try:
            for _ in range(3):
                assert ua.register().status == 200  # each: a 401 challenge, then the 200
            ua.send(ua.build("OPTIONS", f"sip:{s.host}"))
            assert ua.expect_final().status < 500
        finally:
            ua.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{s.http}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            page = r.read().decode()
        old = metrics(s)  # the plain name/value lines the tests and dashboards read
    families = {f.name: f for f in text_string_to_metric_families(page)}
    hist = families["sipedge_sip_response_seconds"]
    assert hist.type == "histogram"
    by = {(x.name, x.labels.get("method"), x.labels.get("le")): x.value for x in hist.samples}
    assert by[("sipedge_sip_response_seconds_count", "REGISTER", None)] == 6
    assert by[("sipedge_sip_response_seconds_bucket", "REGISTER", "+Inf")] == 6
    assert by[("sipedge_sip_response_seconds_bucket", "REGISTER", "30.0")] == 6
    assert 0 <= by[("sipedge_sip_response_seconds_sum", "REGISTER", None)] < 6 * 5
    assert by[("sipedge_sip_response_seconds_count", "other", None)] >= 2  # ours, running_server's ready probe
    assert by[("sipedge_sip_response_seconds_count", "INVITE", None)] == 0
    buckets = [v for (name, method, le), v in by.items() if name.endswith("_bucket") and method == "REGISTER"]
    assert buckets == sorted(buckets) and len(buckets) == 15  # cumulative, 14 bounds and +Inf
    assert families["sipedge_sip_tx_live"].type == "gauge"
    assert old["registrar_ok"] == 3 and old["sip_auth_challenges"] == 3 and old["sip_requests_received"] >= 7
    assert "sip_response_seconds_count" not in old  # labelled samples are not plain lines
