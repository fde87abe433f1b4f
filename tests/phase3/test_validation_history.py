"""The 72-hour validation's verdict on a real 72 hours of series: PASS on a healthy history, FAIL naming the
one criterion each unhealthy history breaks (tests/history.py writes them and serves them from a scratch
Prometheus). The verdict's time over 72 h of data and the notebook's size are benchmarked in
tests/bench/bench_validation_history.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runbook_lib.campaign import records
from runbook_lib.run import runner
from tests.history import History, Spell, scratch_prometheus

pytestmark = pytest.mark.sandbox

STATED = ["validation.security_incidents=0", "validation.cost_projected=100", "validation.cost_actual=104"]


def campaign_with_drills_tested(folder: Path) -> Path:
    """A campaign whose failover drills and restore test passed (the DR criterion reads these records)."""
    campaign = folder / "validated"
    records.save(campaign, "failover_drill", {"drills": [{"kind": "automatic", "passed": True},
                                                         {"kind": "manual", "passed": True}]})
    records.save(campaign, "phase1", {"restore_test": {"passed": True}})
    return campaign


def validate(sandbox, params_file: Path, history: History, tmp_path: Path) -> tuple[runner.RunReport, dict]:  # noqa: ANN001
    campaign = campaign_with_drills_tested(tmp_path)
    with scratch_prometheus(sandbox, history, tmp_path / "prometheus") as (url, end):
        started = datetime.fromtimestamp(end, UTC) - timedelta(hours=72, minutes=1)
        report = runner.run("validation", str(params_file), outputs_dir=tmp_path, campaign=campaign.name,
                            echo=False, overrides=[f"target.prometheus.url={url}", "target.prometheus.access=null",
                                                   f"validation.started={started.isoformat()}", *STATED])
    verdict = records.latest(campaign, "validation")
    assert verdict is not None, report.message
    return report, verdict["data"]


@pytest.mark.parametrize(("history", "breaks"), [
    (History(), None),
    (History(error_spike=(Spell(30, 1.0), 0.02)), "error_rate"),
    (History(slow=Spell(20, 1.0)), "latency_p95"),
    (History(lag_excursion=(Spell(40, 10 / 60), 2.0)), "replication_lag"),
    (History(gap=Spell(50, 2.5)), "monitoring_active_and_alerting"),
    (History(promotion_at_h=45), "unplanned_failovers"),
], ids=["healthy", "error-spike-1h", "slow-1h", "lag-excursion", "monitoring-gap-2.5h", "unplanned-failover"])
def test_the_verdict_on_72_hours_of_history(sandbox, sandbox_params_file: Path, tmp_path: Path,  # noqa: ANN001
                                            history: History, breaks: str | None) -> None:
    report, data = validate(sandbox, sandbox_params_file, history, tmp_path)
    statuses = {c["name"]: c["status"] for c in data["criteria"]}
    failing = {name for name, status in statuses.items() if status == "fail"}
    assert "missing" not in statuses.values(), data["criteria"]
    if breaks is None:
        assert data["verdict"] == "PASS" and report.exit_code == 0, data
        assert failing == set()
    else:
        assert data["verdict"] == "FAIL" and report.exit_code == 1, data
        assert failing == {breaks}, data["criteria"]
        assert breaks in data["why"]
    steps = {s["name"]: s for s in json.loads((report.run_dir / "manifest.json").read_text())["steps"]}
    assert steps["checkpoint"]["metrics"]["verdict"] == data["verdict"]
