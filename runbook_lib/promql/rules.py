"""Prometheus alert rules generated from the policy's monitoring matrix and rollback triggers.

For every metric: a warning when the target is missed and a critical alert at the
alert threshold, each labelled with the matrix metric; plus an info-level watchdog
that proves the alert path; and per rollback trigger a critical alert labelled
action=rollback. Readiness item MON-03 checks that these are loaded.
"""

from __future__ import annotations

from typing import Any

import yaml

from runbook_lib.config.policy import Bound, Policy, format_duration
from runbook_lib.promql.expressions import expression
from runbook_lib.promql.triggers import alert_rules


def _condition(expr: str, bound: Bound, *, breach: bool) -> str:
    """PromQL that is true when `bound` is breached (target missed) or met (alert threshold crossed)."""
    negate = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}
    op = negate[bound.op] if breach else bound.op
    return f"({expr}) {op} {bound.value:g}"


def rule_groups(policy: Policy) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for row in policy.monitoring_matrix:
        expr = expression(row.metric)
        name = "".join(part.title() for part in row.metric.split("_"))
        window = format_duration(max(row.every, 60.0))
        rules.append({"alert": f"{name}AboveTarget", "expr": _condition(expr, row.target, breach=True),
                      "for": window, "labels": {"severity": "warning", "metric": row.metric},
                      "annotations": {"summary": f"{row.metric} misses its target {row.target.text}"}})
        rules.append({"alert": f"{name}Critical", "expr": _condition(expr, row.alert, breach=False),
                      "for": window, "labels": {"severity": "critical", "metric": row.metric},
                      "annotations": {"summary": f"{row.metric} crossed its alert threshold {row.alert.text}"}})
    rules += alert_rules(policy.rollback_triggers)
    rules.append({"alert": "RolloutWatchdog", "expr": "vector(1)", "labels": {"severity": "info", "metric": "watchdog"},
                  "annotations": {"summary": "always firing: proves the alert path end to end"}})
    return {"groups": [{"name": "rollout-watch", "interval": "10s", "rules": rules}]}


def render(policy: Policy) -> str:
    return "# Generated from the rollout policy's monitoring matrix; do not edit by hand.\n" + yaml.safe_dump(
        rule_groups(policy), sort_keys=False)
