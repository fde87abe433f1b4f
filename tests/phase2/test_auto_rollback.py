"""Automatic rollback from measurement alone: after a logical cutover the application is made to fail on purpose,
the policy's error-rate trigger fires in Prometheus, Alertmanager sends it to `runbook autorollback`, and the
rollback runbook runs by itself, recorded with the alert that caused it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from runbook_lib import autorollback
from runbook_lib.campaign import records
from runbook_lib.clients import pgbouncer, prometheus
from runbook_lib.config.params import Params, load_params
from runbook_lib.promql import rules
from runbook_lib.promql.expressions import expression
from runbook_lib.run import runner
from runbook_lib.sandbox import health, stacks
from tests.phase2.conftest import LEGACY, manifest_steps
from tests.sandboxes import app_fault

pytestmark = pytest.mark.sandbox
FOR = "20s"  # the trigger's sustain time, tightened from the policy's 5m so the test takes a minute


def automatic_params(sandbox_params_file: Path, sandbox) -> Path:  # noqa: ANN001
    """The sandbox's parameters with rollback.automatic on for the error-rate trigger (earlier tests' failovers
    may hold the unplanned-failover trigger), its `for` tightened.

    Written beside the sandbox's state (its relative paths resolve the same from there)."""
    raw = yaml.safe_load(sandbox_params_file.read_text())
    raw.setdefault("rollback", {}).update(automatic=True, automatic_only=["error_rate"])
    raw.setdefault("policy", {})["rollback_triggers"] = [{"metric": "error_rate", "op": ">", "threshold": 0.05,
                                                          "for": FOR}]
    path = sandbox.state_dir / "automatic-rollback.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_measured_trigger_rolls_back_by_itself(sandbox, sandbox_params_file: Path, sandbox_params: Params,
                                                 signed: Path, restore_legacy: None) -> None:
    params_file = automatic_params(sandbox_params_file, sandbox)
    params = load_params(params_file)
    policy = [c for c in params.policy_changes if not c.key.startswith("readiness.")]  # the sandbox's own are recorded
    assert policy and not any(c.looser for c in policy)  # a tightening of the policy needs no record
    cutover = runner.run("phase2_migration", str(params_file), outputs_dir=signed.parent, echo=False,
                         campaign=signed.name)
    assert cutover.exit_code == 0, cutover.message
    prom = params.target.prometheus.url
    rule_file = stacks.rules_dir(sandbox) / "automatic-rollback-test.yml"
    rule_file.write_text(rules.render(params.policy))  # Prometheus alerts on the tightened trigger
    health.reload_prometheus(sandbox)
    receiver = autorollback.Receiver(str(params_file), signed.name, signed.parent)
    server = autorollback.serve(receiver, "127.0.0.1", params.sandbox.ports.auto_rollback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with app_fault(sandbox, error_rate=0.5, kind="injected"):
            deadline = time.monotonic() + 240
            while not receiver.threads:
                assert time.monotonic() < deadline, (
                    "no action=rollback alert reached the receiver: error rate now "
                    f"{prometheus.scalar(prom, expression('error_rate'))}")
                time.sleep(1)
        receiver.threads[0].join(timeout=600)
    finally:
        server.shutdown()
        server.server_close()
        rule_file.unlink(missing_ok=True)
        health.reload_prometheus(sandbox)
    history = [r["data"] for r in records.history(signed, autorollback.RECORD)]
    started = [d for d in history if d["act"] and d["run_id"]]
    assert all(d["alert"] == "RollbackTriggerErrorRate" for d in history if d["act"]), history
    assert started, history
    decision = started[-1]
    assert decision["alert"] == "RollbackTriggerErrorRate" and decision["outcome"].startswith("succeeded"), decision
    steps = manifest_steps(signed / decision["run_id"])
    assert "error_rate" in steps["rollback_decision"]["summary"], steps["rollback_decision"]["summary"]
    assert steps["consistency_check"]["metrics"]["tables_differing"] == 0
    assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY
    # the campaign is rolled back: a trigger now is inhibited, it starts nothing more
    again = receiver.receive({"alerts": [{"status": "firing", "labels": {"alertname": "RollbackTriggerErrorRate",
                                                                         "action": "rollback"}}]})
    assert [d.act for d in again] == [False] and "rolled back" in again[0].why, again
