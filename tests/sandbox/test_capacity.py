"""PERF-01 at the policy's capacity figure: the load test runbook holds 1,000 clients connected at once through
PgBouncer, and the readiness item, at its default target of 1,000, passes on that record."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_lib.campaign import records
from runbook_lib.config.params import load_params
from runbook_lib.config.readiness_settings import ReadinessSettings
from runbook_lib.readiness import engine
from runbook_lib.run import runner

pytestmark = pytest.mark.sandbox

CAPACITY = ReadinessSettings().load_test_concurrency  # the policy's figure, not the sandbox's loosened one


def test_the_load_test_reaches_the_policy_capacity(sandbox_params_file: Path, sandbox_outputs: Path) -> None:
    assert CAPACITY == 1000
    done = runner.run("load_test", str(sandbox_params_file), outputs_dir=sandbox_outputs, echo=False,
                      campaign="capacity", overrides=[f"target.workload.concurrency={CAPACITY}",
                                                      "target.workload.duration=60s"])
    assert done.exit_code == 0, done.message
    campaign = sandbox_outputs / "capacity"
    record = records.latest(campaign, "load_test")
    assert record is not None
    figures = record["data"]
    assert figures["peak_clients"] == CAPACITY, figures
    assert figures["error_rate"] < 0.01, figures  # connected and served, not refused

    params = load_params(sandbox_params_file, [f"readiness.load_test_concurrency={CAPACITY}"])
    result = next(iter(engine.run(params, only=["PERF-01"], campaign_dir=campaign)))
    assert result.outcome == "pass", (result.observed, result.reason)
    params = load_params(sandbox_params_file, [f"readiness.load_test_concurrency={CAPACITY + 1}"])
    assert next(iter(engine.run(params, only=["PERF-01"], campaign_dir=campaign))).outcome == "warn"
