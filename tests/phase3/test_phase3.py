"""Phase 3 on the sandbox: passes on a healthy cluster, fails naming the check when a replica is stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runbook_lib import rehearse
from runbook_lib.books import phase3_verification as phase3
from runbook_lib.clients import patroni, swarm
from runbook_lib.config.params import load_params
from runbook_lib.run import runner, session
from runbook_lib.run.step import StepFailed
from tests.campaign import application_settled

pytestmark = pytest.mark.sandbox

REHEARSAL = rehearse.SANDBOX_PHASE3  # the sandbox's recorded loosenings of the watch


def test_phase3_passes_on_a_healthy_cluster(sandbox_params_file: Path, tmp_path: Path) -> None:
    application_settled(load_params(sandbox_params_file))  # earlier tests failed members over under the app
    report = runner.run("phase3_verification", str(sandbox_params_file), outputs_dir=tmp_path, echo=False,
                        overrides=REHEARSAL)
    assert report.exit_code == 0, report.message
    manifest = json.loads((report.run_dir / "manifest.json").read_text())
    steps = {s["name"]: s for s in manifest["steps"]}
    assert steps["smoke_tests"]["metrics"]["knn_uses_hnsw"] is True
    assert steps["health_checks"]["metrics"]["failing"] == 0
    assert "verification_watch.duration" in {x["key"] for x in manifest["policy_loosening"]}
    assert (tmp_path / manifest["campaign"] / "records" / "baseline.json").exists()


def test_health_checks_fail_naming_the_check_with_a_replica_stopped(sandbox_params_file: Path,
                                                                    tmp_path: Path) -> None:
    params = load_params(sandbox_params_file)
    leader = patroni.leader(params.target.patroni)
    member = next(m for m in params.target.patroni.members if m.name != leader)
    rb = session.start(str(sandbox_params_file), runbook="phase3_verification", outputs_dir=str(tmp_path))
    swarm.scale(params.target.swarm, member.service, 0)
    try:
        deadline = time.monotonic() + 60
        while sum(m.get("state") == "streaming" for m in patroni.members(params.target.patroni)) > 1:
            assert time.monotonic() < deadline
            time.sleep(1)
        with pytest.raises(StepFailed, match=r"Patroni: one leader, replicas streaming \(HA-01: fail\)"):
            rb.run(phase3.health_checks)
    finally:
        swarm.scale(params.target.swarm, member.service, 1)
        deadline = time.monotonic() + 180
        while sum(m.get("state") == "streaming" for m in patroni.members(params.target.patroni)) < 2:
            assert time.monotonic() < deadline, "the replica did not come back"
            time.sleep(2)


def test_the_watch_fails_on_a_real_breach_of_errors_and_latency(sandbox, sandbox_params_file: Path,  # noqa: ANN001
                                                                  tmp_path: Path) -> None:
    """The application made to fail on purpose (a fifth of its requests erroring, each 800 ms slow): the
    metrics watch, loosened only where the sandbox records it (duration, CPU, memory trend), fails naming
    the error rate and the latency it measured, not a changed threshold."""
    from runbook_lib.clients import prometheus
    from runbook_lib.promql.expressions import expression
    from tests.sandboxes import app_fault

    params = load_params(sandbox_params_file)
    url = params.target.prometheus.url
    with app_fault(sandbox, error_rate=0.2, latency_ms=800, kind="injected"):
        deadline = time.monotonic() + 180
        while (prometheus.scalar(url, expression("error_rate")) or 0) < 0.05:
            assert time.monotonic() < deadline, "Prometheus did not see the injected errors"
            time.sleep(2)
        report = runner.run("phase3_verification", str(sandbox_params_file), outputs_dir=tmp_path, echo=False,
                            overrides=REHEARSAL)
    application_settled(params)
    assert report.exit_code == 1, report.message
    steps = {s["name"]: s for s in json.loads((report.run_dir / "manifest.json").read_text())["steps"]}
    watch = steps["watch_metrics"]
    assert watch["status"] == "failed", watch
    assert "error_rate" in watch["summary"] and "latency_p95" in watch["summary"], watch["summary"]
    assert watch["metrics"]["error_rate"] > params.policy.verification_watch.error_rate_max
    assert watch["metrics"]["latency_p95"] > params.policy.verification_watch.latency_p95_max
