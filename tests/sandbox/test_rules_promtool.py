"""The generated alert rules checked and unit-tested by promtool (from the sandbox image): the unplanned-failover
trigger does not fire on the promotions the drills announced and fires on unplanned ones; the way-back alert
fires when the reverse slot goes inactive or disappears after it was seen, and not before any cutover."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from runbook_lib.config.policy import default_policy
from runbook_lib.promql import export, rules, triggers

pytestmark = pytest.mark.sandbox

UNPLANNED = "RollbackTriggerUnplannedFailovers"
SLOT = 'pg_replication_slot_slot_is_active{slot_name="rollout_reverse", instance_name="pg1"}'
EXPECTED = 'runbook_way_back_expected{job="runbook_way_back"}'


def promtool(sandbox, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    return subprocess.run(["docker", "run", "--rm", "-v", f"{folder}:/t:ro", "-w", "/t", "--entrypoint", "promtool",
                           sandbox.spec.image_tag(), *args], capture_output=True, text=True, timeout=300,
                          env=sandbox.docker_env())


def write_tests(folder: Path, tests: list[dict]) -> None:
    (folder / "rules.yml").write_text(rules.render(default_policy()))
    (folder / "tests.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "15s",
                                                      "tests": tests}, sort_keys=False))


def firing(alertname: str) -> list[dict]:
    """The alert promtool must see: the generated rule's own labels and annotations."""
    rule = next(r for g in rules.rule_groups(default_policy())["groups"] for r in g["rules"] if r.get("alert") == alertname)
    return [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}]


def timeline(*steps: tuple[int, int]) -> str:
    """promtool series values: (value, samples) pairs, one sample per 15 s."""
    return " ".join(f"{v}+0x{n}" for v, n in steps)


def test_the_exported_rules_pass_promtool_check(sandbox, tmp_path: Path) -> None:
    written = export.export(default_policy(), tmp_path)  # what `runbook monitoring export` writes
    result = promtool(sandbox, tmp_path, "check", "rules", str(written[0].relative_to(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


RATIO_TRIGGERS = {"error_rate": "app_errors_total", "db_connection_errors": 'app_errors_total{kind="connection"}'}


@pytest.mark.parametrize("metric", sorted(RATIO_TRIGGERS))
def test_a_sustained_trigger_fires_after_its_window_of_breach_and_not_before(metric: str, sandbox,  # noqa: ANN001
                                                                             tmp_path: Path) -> None:
    """The policy's "> threshold for N min": a breach just above the threshold fires once it has held N minutes
    (not a look earlier); one just under it never fires. Changing a rule's threshold or window fails this."""
    trigger = next(t for t in default_policy().rollback_triggers if t.metric == metric)
    alertname = next(r["alert"] for r in triggers.alert_rules([trigger]))
    window_min = int(trigger.for_ / 60)
    start = 10  # minutes of clean traffic before the breach
    quiet, total = start * 4, (start + window_min + 10) * 4  # 15 s samples

    def series(share: float) -> list[dict]:
        per_sample = round(1000 * share)  # errors per 1,000 requests a sample
        return [{"series": "app_requests_total", "values": f"0+1000x{total}"},
                {"series": RATIO_TRIGGERS[metric], "values": f"0+0x{quiet} 0+{per_sample}x{total - quiet}"}]

    # the expression's 1-minute rates hold the breach's full ratio once a whole minute of it is in the window;
    # the rule's `for` counts from there
    breached_at = start * 60 + 60
    above, under = trigger.threshold * 1.2, trigger.threshold * 0.8
    write_tests(tmp_path, [
        {"interval": "15s", "input_series": series(above), "alert_rule_test": [
            {"eval_time": f"{breached_at + window_min * 60 - 30}s", "alertname": alertname, "exp_alerts": []},
            {"eval_time": f"{breached_at + window_min * 60 + 30}s", "alertname": alertname,
             "exp_alerts": firing(alertname)}]},
        {"interval": "15s", "input_series": series(under), "alert_rule_test": [
            {"eval_time": f"{breached_at + window_min * 60 + 300}s", "alertname": alertname, "exp_alerts": []}]}])
    result = promtool(sandbox, tmp_path, "test", "rules", "tests.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promotions_the_drills_announced_do_not_fire_the_trigger(sandbox, tmp_path: Path) -> None:
    quarter = 60  # 15 min of 15 s samples
    three_promotions = timeline((1, quarter), (2, 20), (3, 20), (4, quarter * 4))
    write_tests(tmp_path, [
        {"interval": "15s",  # three promotions within the hour, two of them drills: one unplanned, no alert
         "input_series": [{"series": 'patroni_postgres_timeline{instance_name="pg1"}', "values": three_promotions},
                          {"series": 'runbook_planned_promotions_total{job="runbook_drills"}',
                           "values": timeline((0, quarter), (1, 20), (2, quarter * 5))}],
         "alert_rule_test": [{"eval_time": "30m", "alertname": UNPLANNED, "exp_alerts": []}]},
        {"interval": "15s",  # the same three promotions, none announced: more than two, the trigger fires
         "input_series": [{"series": 'patroni_postgres_timeline{instance_name="pg1"}', "values": three_promotions}],
         "alert_rule_test": [{"eval_time": "30m", "alertname": UNPLANNED,
                              "exp_alerts": firing(UNPLANNED)},
                             {"eval_time": "14m", "alertname": UNPLANNED, "exp_alerts": []}]},
    ])
    result = promtool(sandbox, tmp_path, "test", "rules", "tests.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_way_back_alert(sandbox, tmp_path: Path) -> None:
    expected = {"series": EXPECTED, "values": timeline((1, 120))}
    write_tests(tmp_path, [
        {"interval": "15s",  # active, then inactive while a way back is expected: fires after its 2 minutes
         "input_series": [{"series": SLOT, "values": timeline((1, 40), (0, 40))}, expected],
         "alert_rule_test": [{"eval_time": "9m", "alertname": "WayBackBroken", "exp_alerts": []},
                             {"eval_time": "13m", "alertname": "WayBackBroken", "exp_alerts": firing("WayBackBroken")}]},
        {"interval": "15s",  # seen, then gone (the slot was lost): fires once the last sample is stale (5 m) + 2 m
         "input_series": [{"series": SLOT, "values": timeline((1, 40)) + " _x80"}, expected],
         "alert_rule_test": [{"eval_time": "25m", "alertname": "WayBackBroken", "exp_alerts": firing("WayBackBroken")}]},
        {"interval": "15s",  # gone, but no way back is expected (before a cutover, after the rollback or finalize)
         "input_series": [{"series": SLOT, "values": timeline((1, 40)) + " _x80"},
                          {"series": EXPECTED, "values": timeline((1, 40), (0, 80))}],
         "alert_rule_test": [{"eval_time": "25m", "alertname": "WayBackBroken", "exp_alerts": []}]},
        {"interval": "15s",  # no expectation pushed at all: nothing fires
         "input_series": [{"series": 'up{job="postgres"}', "values": timeline((1, 80))}],
         "alert_rule_test": [{"eval_time": "16m", "alertname": "WayBackBroken", "exp_alerts": []}]},
    ])
    result = promtool(sandbox, tmp_path, "test", "rules", "tests.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_hour_of_errors_in_72_healthy_hours_fails_the_validation(sandbox, tmp_path: Path) -> None:
    """The validation's error-rate criterion, evaluated by Prometheus's own engine: one hour at 10 % errors in
    an otherwise clean 72 hours. Averaged over the window it stays under the policy's 0.5 %; held hour by hour
    (what the validation measures) it breaches."""
    from runbook_lib.promql.expressions import worst_error_rate

    limit = default_policy().success_criteria.error_rate_max
    minutes = 72 * 60
    errors = timeline((0, 30 * 60)) + " " + " ".join(str(10 * i) for i in range(1, 61)) + f" 600+0x{minutes - 30 * 60 - 60}"
    requests = f"0+100x{minutes}"
    worst = worst_error_rate("app_errors_total", "app_requests_total", 3600, "72h")
    average = "sum(increase(app_errors_total[72h])) / clamp_min(sum(increase(app_requests_total[72h])), 1)"
    (tmp_path / "rules.yml").write_text("groups: []\n")
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [
        {"interval": "1m",
         "input_series": [{"series": "app_errors_total", "values": errors},
                          {"series": "app_requests_total", "values": requests}],
         "promql_expr_test": [{"expr": f"({worst}) >= bool {limit}", "eval_time": "72h",
                               "exp_samples": [{"labels": "{}", "value": 1}]},
                              {"expr": f"({average}) < bool {limit}", "eval_time": "72h",
                               "exp_samples": [{"labels": "{}", "value": 1}]}]}]}, sort_keys=False))
    result = promtool(sandbox, tmp_path, "test", "rules", "tests.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_hottest_node_decides_cpu_and_memory(sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    """Two nodes, one at 95 % CPU and memory, one at 5 %: averaged they read 50 %, under every bound; per node
    the hot one crosses the critical alert (> 80 % CPU, > 85 % memory)."""
    samples = 80  # 20 min of 15 s samples
    per_node = [("hot", 0.05, 5), ("cool", 0.95, 95)]  # idle CPU seconds per second, MB of 100 available
    series = [s for node, idle, available in per_node for s in (
        {"series": f'node_cpu_seconds_total{{mode="idle", cpu="0", instance="{node}"}}',
         "values": f"0+{idle * 15:g}x{samples}"},
        {"series": f'node_memory_MemAvailable_bytes{{instance="{node}"}}', "values": f"{available}e6+0x{samples}"},
        {"series": f'node_memory_MemTotal_bytes{{instance="{node}"}}', "values": f"100e6+0x{samples}"})]
    write_tests(tmp_path, [{"interval": "15s", "input_series": series, "alert_rule_test": [
        {"eval_time": "15m", "alertname": "CpuUsageCritical", "exp_alerts": firing("CpuUsageCritical")},
        {"eval_time": "15m", "alertname": "MemoryUsageCritical", "exp_alerts": firing("MemoryUsageCritical")}]}])
    result = promtool(sandbox, tmp_path, "test", "rules", "tests.yml")
    assert result.returncode == 0, result.stdout + result.stderr
