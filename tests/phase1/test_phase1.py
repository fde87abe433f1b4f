"""Phase 1 on the sandbox: papermill end to end, then each way it must stop."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from runbook_lib.books import phase1_pre_migration as phase1
from runbook_lib.campaign import records
from runbook_lib.clients import postgres
from runbook_lib.config.params import load_params
from runbook_lib.ops import backup
from runbook_lib.run import archive, runner, session
from runbook_lib.run.step import StepFailed
from tests import receivers
from tests.campaign import wait_until, window_overrides

pytestmark = pytest.mark.sandbox


def test_phase1_end_to_end(sandbox_params_file: Path, ready_campaign: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    # the order an operator follows: measure and drill (the campaign fixture), check readiness, then phase 1
    outputs = ready_campaign.parent
    done = runner.run("readiness", str(sandbox_params_file), outputs_dir=outputs, echo=False, campaign="ready")
    assert done.exit_code == 0, done.message
    with receivers.webhook() as (url, posted), receivers.mailbox() as (smtp_port, mails):
        monkeypatch.setenv("RB_PHASE1_WEBHOOK", url)
        report = runner.run("phase1_pre_migration", str(sandbox_params_file), outputs_dir=outputs, echo=False,
                            campaign="ready", overrides=window_overrides(sandbox_params_file) + [
                                "notifications.webhook_url=env:RB_PHASE1_WEBHOOK",
                                f"notifications.smtp={{host: 127.0.0.1, port: {smtp_port}, "
                                "sender: rollout@example.test, recipients: [owners@example.test]}"])
    assert report.exit_code == 0, report.message
    manifest = json.loads((report.run_dir / "manifest.json").read_text())
    steps = {s["name"]: s for s in manifest["steps"]}
    assert all(s["status"] == "ok" for s in steps.values()), steps
    assert steps["verify_backup"]["metrics"]["verified"] is True
    assert steps["restore_test"]["metrics"]["passed"] is True and steps["restore_test"]["metrics"]["hnsw_used"]
    assert steps["notify_stakeholders"]["metrics"]["failed_channels"] == 0
    assert posted and "migration window" in posted[-1]["text"]
    assert mails and b"maintenance window" in mails[-1]
    # the Swarm snapshot holds names, never secret data
    snapshot = (report.run_dir / "swarm-snapshot.json").read_text()
    params = load_params(sandbox_params_file)
    values, _ = archive.secret_values([str(r) for r in params.secret_refs()])
    assert values and not any(v in snapshot for v in values)
    assert '"secrets"' in snapshot and "postgres_password" in snapshot
    campaign = ready_campaign
    assert records.latest(campaign, "phase1") and records.latest(campaign, "window")
    # this run's backup is complete; a partial one (of an earlier, failed run) is always marked failed
    assert (backup.plan(params).location / steps["snapshot_and_backup"]["metrics"]["id"] / "data").is_dir()
    assert all((p / "FAILED").exists() for p in Path(backup.plan(params).location).glob("*.partial"))
    assert archive.verify(campaign) == []


@pytest.fixture
def open_phase1(sandbox_params_file: Path, tmp_path: Path):  # noqa: ANN201
    """Interactive phase 1 sessions (they hold the target's lock), released afterwards."""
    opened = []

    def make(**kwargs: object) -> session.Session:
        opened.append(session.start(str(sandbox_params_file), runbook="phase1_pre_migration",
                                    outputs_dir=str(tmp_path), **kwargs))
        return opened[-1]

    yield make
    for rb in opened:
        rb.release()


def test_corrupted_backup_fails_verify_and_stops(open_phase1) -> None:  # noqa: ANN001
    rb = open_phase1()
    rb.run(phase1.snapshot_and_backup)
    data = Path(rb.state["backup"]["path"]) / "data"
    victim = next(p for p in sorted((data / "base").rglob("*")) if p.is_file() and p.stat().st_size > 8192)
    blob = bytearray(victim.read_bytes())
    blob[4096] ^= 0xFF
    victim.write_bytes(bytes(blob))
    with pytest.raises(StepFailed, match="verify_backup failed"):
        rb.run(phase1.verify_backup)
    assert rb.results[-1].status == "failed" and "checksum" in rb.results[-1].summary.lower()


def test_not_enough_space_stops_before_the_backup(sandbox_params_file: Path, open_phase1) -> None:  # noqa: ANN001
    params = load_params(sandbox_params_file)
    before = set(backup.plan(params).location.glob("*")) if backup.plan(params).location.exists() else set()
    rb = open_phase1(overrides=["backup.space_multiple=1000000000"])
    with pytest.raises(StepFailed, match="not enough space"):
        rb.run(phase1.snapshot_and_backup)
    assert set(backup.plan(params).location.glob("*")) == before  # nothing was started


def test_a_backup_location_that_fills_up_stops_clean_and_the_step_runs_again(
        sandbox_params_file: Path, open_phase1, tmp_path: Path) -> None:  # noqa: ANN001
    """A real small filesystem: the pre-check passes (the data fits), the WAL streamed beside it does not. The
    step fails naming the location, frees what it wrote, leaves legacy as it was, and runs again once there
    is room."""
    source = backup.plan(load_params(sandbox_params_file)).source
    data = backup.data_bytes(source)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={data + 4 * 2**20},mode=0777", "tmpfs", str(small)],
                   check=True, timeout=30)
    try:
        rb = open_phase1(overrides=[f"backup.location={small}", "backup.space_multiple=1"])
        with pytest.raises(StepFailed, match=f"the backup location {small} filled up during the backup"):
            rb.run(phase1.snapshot_and_backup)
        [partial] = small.glob("*.partial")
        assert "No space left on device" in (partial / "FAILED").read_text()
        assert [f.name for f in small.rglob("*") if f.is_file()] == ["FAILED"]  # its files removed
        assert shutil.disk_usage(small).free >= data  # the space is back for the next try
        with postgres.connect(source) as conn:  # legacy was only read: no backup stream or slot left on it
            wait_until("pg_basebackup's stream to end on legacy", lambda: postgres.scalar(conn, """
                SELECT (SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pg_basebackup')
                     + (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pg_basebackup%')""") == 0,
                       timeout=60)
        subprocess.run(["mount", "-o", f"remount,size={3 * data + 64 * 2**20}", str(small)], check=True, timeout=30)
        assert rb.run(phase1.snapshot_and_backup).status == "ok"
        assert (small / rb.state["backup"]["id"] / "data" / "backup_manifest").is_file()
    finally:
        subprocess.run(["umount", "--lazy", str(small)], check=False, timeout=30)


def test_readiness_blocker_stops_the_gate(open_phase1, tmp_path: Path) -> None:  # noqa: ANN001
    rb = open_phase1(campaign="blocked")
    records.save(tmp_path / "blocked", "readiness", {"target": "sandbox", "items": [], "verdict": {
        "score": 0.97, "failing_blockers": ["HA-01"], "ready": False}})
    with pytest.raises(StepFailed, match="STOPPED.*HA-01"):
        rb.run(phase1.readiness_gate)


def test_a_warning_not_waived_stops_the_gate_too(open_phase1, tmp_path: Path) -> None:  # noqa: ANN001
    """The policy goes on only on "ready": a verdict with warnings (exit 2) stops phase 1, unless waived."""
    rb = open_phase1(campaign="warned")
    records.save(tmp_path / "warned", "readiness", {"target": "sandbox", "items": [], "verdict": {
        "score": 0.97, "failing_blockers": [], "warnings": ["DB-11"], "ready": False, "exit_code": 2}})
    with pytest.raises(StepFailed, match="STOPPED.*warnings not waived: DB-11"):
        rb.run(phase1.readiness_gate)
    records.save(tmp_path / "warned", "readiness", {"target": "sandbox", "items": [], "verdict": {
        "score": 0.97, "failing_blockers": [], "warnings": [], "ready": True, "exit_code": 0}})
    assert rb.run(phase1.readiness_gate).status == "ok"
