"""Monitoring items (MON-01 .. MON-10): Prometheus, Alertmanager, dashboards, records, contacts."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from runbook_lib.clients import alertmanager, http, prometheus
from runbook_lib.config.params import HttpService
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
    configured = alertmanager.integrations(am.url)
    named = am.receivers if am.receivers is not None else sorted(configured)
    deadline = time.monotonic() + min(p.settings.item_timeout_s - 2, 25)
    markers: dict[str, str] = {}
    outcome = {}
    for receiver in named:  # one at a time, so a delivery counted per integration is this receiver's
        markers[receiver] = f"readiness-{uuid.uuid4().hex[:10]}"
        outcome[receiver] = _deliver_test_alert(am, receiver, configured.get(receiver), markers[receiver], deadline)
    how = f"POST {am.url}/api/v2/alerts; its routing (GET /api/v2/alerts) and delivery counters (/metrics)"
    if am.webhook_url:  # a receiver the runbooks can read: the alert must also be seen at its far end
        since = time.time() - 60
        seen = False
        while not seen:
            seen = any(m in json.dumps(http.get(am.webhook_url, params={"since": since})) for m in markers.values())
            if seen or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        outcome["read back at the webhook"] = "seen" if seen else "not seen"
        how += f"; GET {am.webhook_url}"
    failed = {k: v for k, v in outcome.items() if v not in ("delivered", "seen")}
    return Finding.check(not failed and bool(named), {**outcome, "test_ids": markers},
                         "the test alert delivered to every receiver target.alertmanager.receivers names", how,
                         reason="; ".join(f"{k}: {v}" for k, v in failed.items()) if failed else
                         ("" if named else "no receiver configured"))


def _deliver_test_alert(am: HttpService, receiver: str, kinds: list[str] | None, marker: str,
                        deadline: float) -> str:
    """Send one test alert meant for `receiver`; "delivered" once each of its integrations succeeded."""
    if kinds is None:
        return "named, but Alertmanager has no such receiver"
    if not kinds:
        return "has no integration (it notifies nobody)"
    before = alertmanager.delivery_counts(am.url)
    labels = {"alertname": "ReadinessTestAlert", "severity": "info", "test_id": marker, "test_receiver": receiver,
              **am.test_labels.get(receiver, {})}
    alertmanager.send_alert(am.url, labels, {"summary": f"MON-04 end-to-end test alert for {receiver}; safe to ignore"})
    try:
        return _delivery(am, receiver, kinds, marker, before, deadline)
    finally:  # a test alert left firing is retried for minutes: its late delivery would count for the next check
        alertmanager.end_alert(am.url, labels)


def _delivery(am: HttpService, receiver: str, kinds: list[str], marker: str, before: dict[str, dict[str, float]],
              deadline: float) -> str:
    while True:
        routed = alertmanager.routed_to(am.url, "test_id", marker)
        if routed and receiver not in routed:
            return (f"routed to {', '.join(routed)} instead: route test_receiver=\"{receiver}\" to it, or set "
                    f"target.alertmanager.test_labels.{receiver}")
        after = alertmanager.delivery_counts(am.url)
        delta = {k: {n: after.get(k, {}).get(n, 0.0) - before.get(k, {}).get(n, 0.0) for n in ("requests", "failed")}
                 for k in kinds}
        if routed and all(d["requests"] - d["failed"] >= 1 for d in delta.values()):
            return "delivered"
        if time.monotonic() > deadline:
            failing = [f"{k} ({d['failed']:g} failed)" for k, d in delta.items() if d["failed"]]
            return ("delivery failed via " + ", ".join(failing)) if failing else \
                ("not routed yet" if not routed else f"no delivery via {', '.join(kinds)} seen")
        time.sleep(0.5)


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
    roles = p.settings.contact_roles
    contacts = p.settings.contacts
    missing = [r for r in roles if r not in contacts]
    return Finding.check(not missing, {"roles_with_contacts": sorted(contacts), "missing": missing},
                         f"primary, backup and on-call route for every escalation role ({', '.join(roles)})",
                         "parameters.readiness.contacts",
                         otherwise="warn")
