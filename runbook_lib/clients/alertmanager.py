"""Alertmanager's HTTP API and its own metrics: what it routes where, and what it delivered.

Why: proving that an alert reaches a receiver must work for every kind of receiver (email, Slack,
PagerDuty, webhooks), most of which the runbooks cannot read back. Alertmanager itself says which
receivers an alert was routed to (GET /api/v2/alerts) and counts each integration's delivery
attempts and failures (/metrics), so a delivery is proven without reading the receiver's far end.
"""

from __future__ import annotations

import time

import yaml
from prometheus_client.parser import text_string_to_metric_families

from runbook_lib.clients import http


def receivers(url: str) -> list[str]:
    return [r["name"] for r in http.get(f"{url.rstrip('/')}/api/v2/receivers")]


def integrations(url: str) -> dict[str, list[str]]:
    """Receiver name -> the integrations it notifies through (email, webhook, slack, pagerduty, ...)."""
    config = yaml.safe_load(http.get(f"{url.rstrip('/')}/api/v2/status")["config"]["original"]) or {}
    return {r["name"]: sorted(k.removesuffix("_configs") for k in r if k.endswith("_configs") and r[k])
            for r in config.get("receivers") or []}


def send_alert(url: str, labels: dict[str, str], annotations: dict[str, str], seconds: float = 120) -> None:
    """Fire an alert that lasts `seconds` from now (0 resolves it at once)."""
    now = time.time()
    http.post(f"{url.rstrip('/')}/api/v2/alerts",
              [{"labels": labels, "annotations": annotations, "startsAt": _iso(now), "endsAt": _iso(now + seconds)}],
              expect_json=False)


def end_alert(url: str, labels: dict[str, str]) -> None:
    """Resolve an alert now: Alertmanager stops re-sending (and retrying) its firing notification."""
    send_alert(url, labels, {}, seconds=0)


def routed_to(url: str, label: str, value: str) -> list[str]:
    """The receivers Alertmanager routed the alerts carrying label=value to."""
    alerts = http.get(f"{url.rstrip('/')}/api/v2/alerts", params={"filter": f'{label}="{value}"'})
    return sorted({r["name"] for a in alerts for r in a.get("receivers", [])})


def delivery_counts(url: str) -> dict[str, dict[str, float]]:
    """Integration -> {"requests": n, "failed": n}: notification requests Alertmanager made, and failed."""
    text = http.get(f"{url.rstrip('/')}/metrics", expect_json=False).text
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        key = {"alertmanager_notification_requests": "requests",
               "alertmanager_notification_requests_failed": "failed"}.get(family.name)
        if key is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                entry = out.setdefault(sample.labels.get("integration", "?"), {"requests": 0.0, "failed": 0.0})
                entry[key] += sample.value
    return out


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
