"""Prometheus alert rules generated from the policy's monitoring matrix and rollback triggers.

For every metric: a warning when the target is missed and a critical alert at the
alert threshold, each labelled with the matrix metric; plus an info-level watchdog
that proves the alert path; and per rollback trigger a critical alert labelled
action=rollback. Readiness item MON-03 checks that these are loaded.
"""

from __future__ import annotations

from typing import Any

import yaml

from runbook_lib.config.names import REVERSE_SLOT
from runbook_lib.config.policy import Bound, Policy, format_duration
from runbook_lib.promql.expressions import WAY_BACK_EXPECTED, expression
from runbook_lib.promql.triggers import alert_rules


def _condition(expr: str, bound: Bound, *, breach: bool) -> str:
    """PromQL that is true when `bound` is breached (target missed) or met (alert threshold crossed)."""
    negate = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}
    op = negate[bound.op] if breach else bound.op
    return f"({expr}) {op} {bound.value:g}"


def rule_groups(policy: Policy) -> dict[str, Any]:
    """One rule group per check interval of the matrix (the interval is how often Prometheus looks; a breach seen
    at a look alerts, as the matrix gives no sustain time), and one for the rollback triggers, whose own `for` is
    the sustain time the policy gives them."""
    by_interval: dict[float, list[dict[str, Any]]] = {}
    for row in policy.monitoring_matrix:
        expr = expression(row.metric)
        name = "".join(part.title() for part in row.metric.split("_"))
        by_interval.setdefault(row.every, []).extend([
            {"alert": f"{name}AboveTarget", "expr": _condition(expr, row.target, breach=True),
             "labels": {"severity": "warning", "metric": row.metric},
             "annotations": {"summary": f"{row.metric} misses its target {row.target.text}"}},
            {"alert": f"{name}Critical", "expr": _condition(expr, row.alert, breach=False),
             "labels": {"severity": "critical", "metric": row.metric},
             "annotations": {"summary": f"{row.metric} crossed its alert threshold {row.alert.text}"}}])
    triggers = alert_rules(policy.rollback_triggers) + [way_back_rule(), {
        "alert": "RolloutWatchdog", "expr": "vector(1)", "labels": {"severity": "info", "metric": "watchdog"},
        "annotations": {"summary": "always firing: proves the alert path end to end"}}]
    groups: list[dict[str, Any]] = [
        {"name": f"rollout-watch-every-{format_duration(every)}", "interval": format_duration(every), "rules": rules}
        for every, rules in sorted(by_interval.items())]
    groups.append({"name": "rollout-triggers", "interval": "10s", "rules": triggers})
    for rule in (r for group in groups for r in group["rules"]):
        rule["labels"].update(_priority(policy, rule["labels"]))
    return {"groups": groups}


# the issue-response matrix's issue each metric's critical alert is (the others take a priority from severity)
ISSUES = {"error_rate": "error_rate_spike", "memory_usage": "high_memory_usage", "replication_lag": "replication_lag",
          "db_connections": "connection_pool_exhaustion", "latency_p95": "slow_query_detected"}
BY_SEVERITY = {"critical": "high", "warning": "medium", "info": "low"}


def _priority(policy: Policy, labels: dict[str, str]) -> dict[str, str]:
    """priority, respond_within and response: the matrix's row for the alert's issue, so Alertmanager routes by
    it; an alert the matrix does not name takes its priority from its severity."""
    issue = ISSUES.get(labels.get("metric", "")) if labels.get("severity") == "critical" else None
    row = next((r for r in policy.issues_response_matrix if r.issue == issue), None)
    if labels.get("action") == "rollback":  # a rollback trigger is answered as the matrix answers a rollback
        row = next((r for r in policy.issues_response_matrix if r.action == "trigger_rollback"), row)
    if row is None:
        return {"priority": BY_SEVERITY.get(labels.get("severity", ""), "low")}
    return {"priority": row.severity, "issue": row.issue, "response": row.action,
            "respond_within": format_duration(row.timeout) if row.timeout else "none"}


def routes(policy: Policy, receiver: str) -> list[dict[str, Any]]:
    """Alertmanager routes by priority, re-notifying at the matrix's response time for that priority."""
    shortest: dict[str, float] = {}
    for row in policy.issues_response_matrix:
        if row.timeout:
            shortest[row.severity] = min(shortest.get(row.severity, row.timeout), row.timeout)
    waits = {"critical": "0s", "high": "10s", "medium": "30s", "low": "1m"}
    return [{"matchers": [f'priority="{p}"'], "receiver": receiver, "group_wait": waits[p],
             "repeat_interval": format_duration(shortest.get(p, 86400.0))} for p in ("critical", "high", "medium", "low")]


def way_back_rule() -> dict[str, Any]:
    """Reverse replication (the way back) broken while a campaign expects it (the runbooks push the
    expectation from the logical cutover until the rollback or the finalize): its slot inactive or gone."""
    slot = f'pg_replication_slot_slot_is_active{{slot_name="{REVERSE_SLOT}"}}'
    expr = f"((max({slot}) < 1) or absent(max({slot}))) and on() (max({WAY_BACK_EXPECTED}) == 1)"
    return {"alert": "WayBackBroken", "expr": expr, "for": "2m",
            "labels": {"severity": "critical", "metric": "way_back"},
            "annotations": {"summary": f"reverse replication to legacy is broken: slot {REVERSE_SLOT} inactive or "
                                       "gone; a rollback now would lose the writes since (phase 3 health shows why)"}}


def render(policy: Policy) -> str:
    return "# Generated from the rollout policy's monitoring matrix; do not edit by hand.\n" + yaml.safe_dump(
        rule_groups(policy), sort_keys=False)
