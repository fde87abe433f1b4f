"""Monitoring items (MON-01 .. MON-10): Prometheus, Alertmanager, dashboards, records, contacts."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from runbook_lib.clients import http, prometheus
from runbook_lib.readiness.model import Finding
from runbook_lib.readiness.probe import Probe
from runbook_lib.readiness.registry import check


def decide_targets(targets: list[dict[str, Any]], jobs: dict[str, list[str]]) -> Finding:
    observed, bad = {}, []
    for component, names in jobs.items():
        mine = [t for t in targets if t["labels"].get("job") in names]
        up = sum(1 for t in mine if t["health"] == "up")
        observed[component] = f"{up}/{len(mine)} up"
        if not mine or up < len(mine):
            bad.append(component)
    return Finding.check(not bad, observed, {c: "every target up" for c in jobs}, "GET /api/v1/targets")


def decide_rules(rules: list[dict[str, Any]], matrix_metrics: list[str]) -> Finding:
    covered = {r.get("labels", {}).get("metric") for r in rules}
    severities = {r.get("labels", {}).get("severity") for r in rules}
    missing = [m for m in matrix_metrics if m not in covered]
    lacking = [s for s in ("critical", "warning", "info") if s not in severities]
    return Finding.check(not missing and not lacking, {"rules": len(rules), "metrics_without_rule": missing,
                                                       "severities_missing": lacking},
                         "a rule per matrix metric; critical, warning and info present", "GET /api/v1/rules")


@check("MON-01")
def mon01(p: Probe) -> Finding:
    return decide_targets(prometheus.targets(p.prometheus_url()), p.settings.scrape_jobs)


@check("MON-02")
def mon02(p: Probe) -> Finding:
    minimum = p.settings.dashboard_min_panels
    if p.settings.grafana_url:
        found = http.get(f"{p.settings.grafana_url.rstrip('/')}/api/search", params={"query": "rollout"})
        if not found:
            return Finding("fail", "no rollout dashboard", f">= {minimum} panels", "Grafana /api/search")
        dashboard = http.get(f"{p.settings.grafana_url.rstrip('/')}/api/dashboards/uid/{found[0]['uid']}")["dashboard"]
        source = "Grafana API"
    elif p.settings.dashboard_json:
        dashboard = json.loads(p.params.path(p.settings.dashboard_json).read_text())
        source = p.settings.dashboard_json
    else:
        return Finding("missing", None, "readiness.grafana_url or readiness.dashboard_json", "parameters",
                       "no Grafana or dashboard file configured")
    panels = [q for panel in dashboard.get("panels", []) for q in [panel] + panel.get("panels", [])
              if q.get("type") != "row"]
    return Finding.check(len(panels) >= minimum, len(panels), f">= {minimum} panels", source, otherwise="warn")


@check("MON-03")
def mon03(p: Probe) -> Finding:
    return decide_rules(prometheus.rules(p.prometheus_url()), [r.metric for r in p.params.policy.monitoring_matrix])


@check("MON-04")
def mon04(p: Probe) -> Finding:
    am = p.need(p.params.target.alertmanager, "target.alertmanager")
    webhook = p.need(am.webhook_url, "target.alertmanager.webhook_url (a receiver the runbooks can read)")
    receivers = prometheus.alertmanager_receivers(am.url)
    marker = f"readiness-{uuid.uuid4().hex[:10]}"
    since = time.time() - 1
    prometheus.send_alert(am.url, {"alertname": "ReadinessTestAlert", "severity": "info", "test_id": marker},
                          {"summary": "MON-04 end-to-end test alert; safe to ignore"})
    deadline = time.monotonic() + min(p.settings.item_timeout_s - 2, 25)
    arrived = False
    while time.monotonic() < deadline and not arrived:
        got = http.get(webhook, params={"since": since})
        arrived = marker in json.dumps(got)
        if not arrived:
            time.sleep(0.5)
    named = am.receivers if am.receivers is not None else receivers
    unreadable = [r for r in named if r not in ("runbook-webhook", "webhook")]
    unreadable += [f"{r} (named, not configured)" for r in named if r not in receivers]
    ok = arrived and not unreadable
    return Finding.check(ok, {"receivers": receivers, "named": named, "arrived_at_webhook": arrived,
                              "unverified": unreadable},
                         "the test alert reaches every receiver target.alertmanager.receivers names", f"POST {am.url}/api/v2/alerts; GET "
                         f"{webhook}")


@check("MON-05")
def mon05(p: Probe) -> Finding:
    if p.settings.log_aggregation_url:
        response = http.call("GET", p.settings.log_aggregation_url, expect_json=False, ok_codes=(200, 503))
        return Finding.check(response.status_code == 200, response.status_code, 200, p.settings.log_aggregation_url,
                             otherwise="warn")
    ref = p.params.evidence.get("MON-05")
    return Finding("pass", ref, "evidence", "parameters.evidence") if ref else Finding(
        "missing", None, "readiness.log_aggregation_url or evidence", "parameters", "no log aggregation configured")


@check("MON-08")
def mon08(p: Probe) -> Finding:
    url = p.prometheus_url()
    observed = {}
    for role, name in p.settings.app_metrics.items():
        observed[role] = len(prometheus.query(url, name))
    missing = [r for r, n in observed.items() if n == 0]
    return Finding.check(not missing, {f"{r} series": n for r, n in observed.items()},
                         {r: f"{n} present" for r, n in p.settings.app_metrics.items()}, "Prometheus instant query")


@check("MON-09")
def mon09(p: Probe) -> Finding:
    return p.record_finding("baseline", p.settings.baseline_max_age, lambda d: Finding(
        "pass", {k: d.get(k) for k in ("tps", "p95_ms", "recorded_on")}, "a baseline", "records/baseline.json"))


@check("MON-10")
def mon10(p: Probe) -> Finding:
    roles = p.params.policy.signoffs_required_before_migration
    contacts = p.settings.contacts
    missing = [r for r in roles if r not in contacts]
    return Finding.check(not missing, {"roles_with_contacts": sorted(contacts), "missing": missing},
                         "primary, backup and on-call route for every sign-off role", "parameters.readiness.contacts",
                         otherwise="warn")
