"""`runbook monitoring export`: the rule file and the Grafana dashboard come from the same metric definitions,
and the dashboard the sandbox's MON-02 reads is that export (no server: promtool runs in the sandbox tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from runbook_lib.config.params import load_params
from runbook_lib.config.policy import default_policy
from runbook_lib.promql import dashboard, export, rules, triggers
from runbook_lib.promql.expressions import expression
from runbook_lib.promql.triggers import RAISED_BY_OPERATOR, measure

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "parameters" / "sandbox.yaml"


def panels(board: dict) -> dict[str, dict]:
    return {p["title"]: p for p in board["panels"] if p["type"] != "row"}


def steps(panel: dict) -> list[float]:
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"] if s["value"] is not None]


def run_export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runbook_lib.cli", "monitoring", "export", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_export_writes_the_rules_and_a_dashboard_of_the_same_queries(tmp_path: Path) -> None:
    done = run_export(str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    policy = default_policy()
    written_rules = yaml.safe_load((tmp_path / "out" / export.RULES_FILE).read_text())
    assert written_rules == rules.rule_groups(policy)
    board = json.loads((tmp_path / "out" / export.DASHBOARD_FILE).read_text())
    shown = panels(board)
    assert len(shown) >= 15  # MON-02's floor
    for row in policy.monitoring_matrix:  # the panel plots what the alert evaluates, lines at target and alert
        panel = shown[row.metric]
        assert [t["expr"] for t in panel["targets"]] == [expression(row.metric)]
        assert steps(panel) == sorted([row.target.value, row.alert.value])
    measured = [t for t in policy.rollback_triggers if t.metric not in RAISED_BY_OPERATOR]
    alerts = {r["labels"]["metric"]: r["expr"] for r in triggers.alert_rules(policy.rollback_triggers)}
    for trigger in measured:
        panel = shown[f"trigger {trigger.metric}"]
        assert [t["expr"] for t in panel["targets"]] == [measure(trigger)]
        assert alerts[trigger.metric].startswith(f"({measure(trigger)})")
        assert steps(panel) == [float(trigger.threshold)]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and board["uid"] == dashboard.UID


def with_alert(folder: Path, alert: str) -> Path:
    """The sandbox's parameters, copied into `folder`, with the error rate's alert threshold changed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sandbox.yaml"
    path.write_text(SANDBOX.read_text() + "\npolicy:\n  monitoring_matrix:\n    - {metric: error_rate, "
                    f'target: "< 0.1%", alert: "{alert}", every: 1m}}\n')
    return path


def test_export_follows_the_parameters_policy_and_refuses_bad_input(tmp_path: Path) -> None:
    tightened, bad = with_alert(tmp_path / "tight", "> 0.5%"), with_alert(tmp_path / "bad", "lots")
    done = run_export(str(tmp_path / "out"), "-f", str(tightened))
    assert done.returncode == 0, done.stderr
    board = json.loads((tmp_path / "out" / export.DASHBOARD_FILE).read_text())
    assert steps(panels(board)["error_rate"])[-1] == 0.005
    refused = run_export(str(tmp_path / "refused"), "-f", str(bad))
    assert refused.returncode == 2 and "policy.monitoring_matrix" in refused.stdout + refused.stderr
    assert not (tmp_path / "refused").exists()  # nothing written for a refused policy


def test_the_sandbox_files_are_the_export_of_its_policy(tmp_path: Path) -> None:
    """MON-02 reads the committed dashboard; a policy change without a new export would leave it stale."""
    params = load_params(SANDBOX)
    assert params.readiness.dashboard_json
    assert params.path(params.readiness.dashboard_json) == SANDBOX.parent / export.DASHBOARD_FILE
    fresh = export.export(params.policy, tmp_path)
    for path in fresh:
        committed = SANDBOX.parent / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), \
            f"{committed} is stale: run `runbook monitoring export parameters -f parameters/sandbox.yaml`"
