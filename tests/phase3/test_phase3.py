"""Phase 3 on the sandbox: passes on a healthy cluster, fails naming the check when a replica is stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runbook_lib.books import phase3_verification as phase3
from runbook_lib.clients import patroni, swarm
from runbook_lib.config.params import load_params
from runbook_lib.run import runner, session
from runbook_lib.run.step import StepFailed

pytestmark = pytest.mark.sandbox

# the whole sandbox and the test run share one small machine: its CPU and memory are the harness's too
REHEARSAL = ["policy.verification_watch.duration=20s", "policy.verification_watch.cpu_max=0.99",
             "policy.verification_watch.memory_trend_max=0.5", "target.workload.duration=5s",
             "policy_loosening=[{key: verification_watch.duration, reason: 'sandbox rehearsal: a short watch', "
             "approved_by: test suite}, {key: verification_watch.cpu_max, reason: 'shared two-core machine', "
             "approved_by: test suite}, {key: verification_watch.memory_trend_max, reason: 'host memory of a "
             "shared machine over a 20 s watch is noise', approved_by: test suite}]"]


def test_phase3_passes_on_a_healthy_cluster(sandbox_params_file: Path, tmp_path: Path) -> None:
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
