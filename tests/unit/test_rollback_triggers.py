"""The rollback triggers' decision and PromQL, without a server (Prometheus answers are in the sandbox tests)."""

from __future__ import annotations

import yaml

from runbook_lib.config.policy import Trigger, default_policy
from runbook_lib.promql import rules, triggers


def trigger(**kw: object) -> Trigger:
    return Trigger.model_validate(kw)


def test_a_windowed_trigger_must_hold_over_the_whole_window() -> None:
    above = trigger(metric="error_rate", op=">", threshold=0.05, **{"for": "5m"})
    assert triggers.promql(above).startswith("min_over_time((")  # the calmest value in the window must breach
    assert triggers.promql(above).endswith(")[5m:15s])")
    below = trigger(metric="error_rate", op="<", threshold=0.5, **{"for": "5m"})
    assert triggers.promql(below).startswith("max_over_time((")
    assert triggers.promql(trigger(metric="oom_events", op=">", threshold=0)) == \
        "sum(increase(node_vmstat_oom_kill[5m]))"


def test_fires_compares_with_the_trigger_operator_and_never_on_missing_data() -> None:
    t = trigger(metric="latency_p95", op=">", threshold="2s", **{"for": "5m"})
    assert triggers.fires(t, 2.5) and not triggers.fires(t, 2.0) and not triggers.fires(t, None)
    assert triggers.condition(t) == "> 2 for 5m"
    failovers = trigger(metric="unplanned_failovers", op=">", threshold=2, within="1h")
    assert triggers.fires(failovers, 3) and not triggers.fires(failovers, 2)
    assert triggers.condition(failovers) == "> 2 within 1h"


def test_the_security_trigger_is_raised_by_the_operator_not_measured() -> None:
    policy = default_policy()
    quiet = triggers.read(None, policy.rollback_triggers, raised=set())
    assert not any(r.fired for r in quiet)
    assert all(r.note == "target.prometheus is not set" for r in quiet if r.metric != "critical_security_issue")
    raised = triggers.read(None, policy.rollback_triggers, raised={"critical_security_issue"})
    assert [r.metric for r in raised if r.fired] == ["critical_security_issue"]


def test_an_unreachable_prometheus_is_reported_and_fires_nothing() -> None:
    readings = triggers.read("http://127.0.0.1:9", default_policy().rollback_triggers, raised=set())
    measured = [r for r in readings if r.metric != "critical_security_issue"]
    assert measured and all(r.note.startswith("unreadable") and not r.fired for r in measured)


def test_every_measured_trigger_becomes_a_critical_rollback_alert() -> None:
    policy = default_policy()
    alerts = {r["alert"]: r for g in rules.rule_groups(policy)["groups"] for r in g["rules"]
              if r["labels"].get("action") == "rollback"}
    measured = [t for t in policy.rollback_triggers if t.metric != "critical_security_issue"]
    assert len(alerts) == len(measured) == 5
    error_rate = alerts["RollbackTriggerErrorRate"]
    assert error_rate["for"] == "5m" and error_rate["expr"].endswith(") > 0.05")
    assert error_rate["labels"] == {"severity": "critical", "metric": "error_rate", "action": "rollback",
                                    "priority": "critical", "issue": "error_rate_spike", "response": "trigger_rollback",
                                    "respond_within": "5m"}
    assert "for" not in alerts["RollbackTriggerOomEvents"]
    assert yaml.safe_load(rules.render(policy))["groups"][0]["rules"]  # renders as YAML Prometheus reads


def test_the_matrix_check_interval_is_how_often_prometheus_looks_not_a_sustain_time() -> None:
    groups = {g["name"]: g for g in rules.rule_groups(default_policy())["groups"]}
    lag = next(g for g in groups.values() if any(r["alert"] == "ReplicationLagCritical" for r in g["rules"]))
    wal = next(g for g in groups.values() if any(r["alert"] == "WalFlushTimeCritical" for r in g["rules"]))
    assert lag["interval"] == "10s" and wal["interval"] == "10m"
    matrix_alerts = [r for g in groups.values() if g["name"].startswith("rollout-watch") for r in g["rules"]]
    assert len(matrix_alerts) == 16 and not any("for" in r for r in matrix_alerts)


def test_alerts_carry_the_issue_response_matrix_priority_and_route_by_it() -> None:
    policy = default_policy()
    labels = {r["alert"]: r["labels"] for g in rules.rule_groups(policy)["groups"] for r in g["rules"]}
    assert labels["ErrorRateCritical"]["priority"] == "critical" and labels["ErrorRateCritical"]["respond_within"] == "5m"
    assert labels["MemoryUsageCritical"]["priority"] == "high" and labels["MemoryUsageCritical"]["issue"] == "high_memory_usage"
    assert labels["DbConnectionsCritical"]["priority"] == "medium"
    assert all(v["priority"] == "critical" for k, v in labels.items() if k.startswith("RollbackTrigger"))
    assert all("priority" in v for v in labels.values())
    routes = {r["matchers"][0]: r for r in rules.routes(policy, "pager")}
    assert routes['priority="critical"']["repeat_interval"] == "5m" and routes['priority="high"']["repeat_interval"] == "10m"
    assert routes['priority="medium"']["repeat_interval"] == "30m" and routes['priority="low"']["repeat_interval"] == "1d"
