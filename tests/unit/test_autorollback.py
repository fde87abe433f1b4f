"""When an action=rollback alert may start the rollback by itself: pure decisions on campaign records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from runbook_lib import autorollback
from runbook_lib.campaign import records
from runbook_lib.config.params import validate

BASE = {"target": {"name": "t", "environment": "staging",
                   "databases": {"db": {"host": "127.0.0.1", "user": "u", "role": "primary"}}}}


def params(automatic: bool):  # noqa: ANN201
    return validate({**BASE, "rollback": {"automatic": automatic}})


def test_off_by_default_and_refused_without_a_cutover(tmp_path: Path) -> None:
    assert "rollback.automatic is off" in autorollback.window_reason(validate(BASE), tmp_path)
    assert "no cutover is recorded" in autorollback.window_reason(params(True), tmp_path)


def test_acts_inside_the_window_only(tmp_path: Path) -> None:
    records.save(tmp_path, "cutover", {"at": datetime.now(UTC).isoformat(), "strategy": "logical"}, "r1")
    assert autorollback.window_reason(params(True), tmp_path) is None
    later = datetime.now(UTC) + timedelta(hours=73)
    assert "window ended" in autorollback.window_reason(params(True), tmp_path, now=later)


def test_not_after_a_rollback_or_the_finalize(tmp_path: Path) -> None:
    records.save(tmp_path, "cutover", {"at": datetime.now(UTC).isoformat(), "strategy": "logical"}, "r1")
    records.save(tmp_path, "rollback", {"why": "drill"}, "r2")
    assert "rolled back (run r2)" in autorollback.window_reason(params(True), tmp_path)
    records.save(tmp_path, "cutover", {"at": datetime.now(UTC).isoformat(), "strategy": "logical"}, "r3")
    assert autorollback.window_reason(params(True), tmp_path) is None  # a new cutover after the rollback
    records.save(tmp_path, "finalized", {"basis": "PASS"}, "r4")
    assert "finalized (run r4)" in autorollback.window_reason(params(True), tmp_path)


def test_receiver_inhibits_outside_the_window_and_records_it(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    import yaml

    path.write_text(yaml.safe_dump({**BASE, "rollback": {"automatic": True}}))
    receiver = autorollback.Receiver(str(path), "c", tmp_path)
    decisions = receiver.receive({"alerts": [
        {"status": "firing", "labels": {"alertname": "RollbackTriggerErrorRate", "action": "rollback"}},
        {"status": "firing", "labels": {"alertname": "CpuUsageCritical"}},  # not a rollback trigger: ignored
        {"status": "resolved", "labels": {"alertname": "RollbackTriggerLatencyP95", "action": "rollback"}}]})
    assert [(d.alert, d.act) for d in decisions] == [("RollbackTriggerErrorRate", False)]
    assert "inhibited: no cutover" in decisions[0].why
    assert not receiver.threads
    assert records.latest(tmp_path / "c", autorollback.RECORD)["data"]["alert"] == "RollbackTriggerErrorRate"


def test_only_the_named_triggers_act(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**BASE, "rollback": {"automatic": True, "automatic_only": ["error_rate"]}}))
    records.save(tmp_path / "c", "cutover", {"at": datetime.now(UTC).isoformat(), "strategy": "logical"}, "r1")
    receiver = autorollback.Receiver(str(path), "c", tmp_path)
    decisions = receiver.receive({"alerts": [{"status": "firing", "labels": {
        "alertname": "RollbackTriggerUnplannedFailovers", "action": "rollback", "metric": "unplanned_failovers"}}]})
    assert [d.act for d in decisions] == [False] and "not among rollback.automatic_only" in decisions[0].why
