"""Prometheus, Alertmanager and the application metrics of the real sandbox."""

from __future__ import annotations

import pytest

from runbook_lib.clients import http
from runbook_lib.sandbox import health

pytestmark = pytest.mark.sandbox


def _prom(sandbox, path, **params):
    return http.get(f"{sandbox.params.target.prometheus.url}{path}", params=params)


def _targets(sandbox):
    return _prom(sandbox, "/api/v1/targets")["data"]["activeTargets"]


def test_every_prometheus_target_is_up(sandbox):
    def all_up():
        ts = _targets(sandbox)
        return ts and all(t["health"] == "up" for t in ts) and ts

    targets = health.wait_for("every Prometheus target to be up", all_up, 60, interval=2)
    jobs = {t["labels"]["job"] for t in targets}
    assert {"postgres", "patroni", "etcd", "pgbouncer", "haproxy", "app"} <= jobs
    assert sum(t["labels"]["job"] == "app" for t in targets) == sandbox.spec.app.replicas


def test_application_metrics_arrive(sandbox):
    def have(query):
        res = _prom(sandbox, "/api/v1/query", query=query)["data"]["result"]
        return res and float(res[0]["value"][1]) > 0

    assert health.wait_for("app request rate in Prometheus", lambda: have("sum(rate(app_requests_total[1m]))"), 90, 3)
    assert health.wait_for("app latency histogram", lambda: have("sum(app_request_duration_seconds_count)"), 30, 3)
    ops = {r["metric"]["op"] for r in _prom(sandbox, "/api/v1/query", query="app_requests_total")["data"]["result"]}
    assert {"point_read", "insert", "update", "knn"} <= ops
    # the error series exists for the error-rate rules once a failure happened; the metric is declared
    text = http.get(f"http://127.0.0.1:{sandbox.spec.ports.app_metrics_base + 1}/metrics", expect_json=False).text
    assert "# TYPE app_errors_total counter" in text


def test_alerts_reach_the_webhook_receiver(sandbox):
    url = sandbox.params.target.alertmanager.webhook_url

    def watchdog_received():
        body = http.get(url)
        return any(a["labels"].get("alertname") == "SandboxWatchdog"
                   for n in body["notifications"] for a in n["payload"].get("alerts", []))

    assert health.wait_for("the always-firing watchdog alert at the webhook", watchdog_received, 90, 3)


def test_alertmanager_ready(sandbox):
    assert http.status(f"{sandbox.params.target.alertmanager.url}/-/ready") == 200
