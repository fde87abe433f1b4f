"""The rehearsal's plan and its sign-off rule, without a server: the policy's order, a window as long as the
migration's budget, a resume command that repeats the invocation, and no approval ever made for people on a
target other than the sandbox."""

from __future__ import annotations

import io
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from runbook_lib import rehearse
from runbook_lib.campaign import records, signoffs
from runbook_lib.config.params import load_params
from runbook_lib.run import archive
from tests.keys import team

SANDBOX = Path(__file__).resolve().parents[2] / "parameters" / "sandbox.yaml"
SANDBOX_SECRETS = ("../.sandbox/secrets",)


def campaign_with_records(tmp_path: Path) -> Path:
    campaign = tmp_path / "c"
    records.save(campaign, "readiness", {"verdict": "ready"}, "r1")
    records.save(campaign, "phase1", {"ok": True}, "r2")
    return campaign


def test_legs_follow_the_policys_order() -> None:
    params = load_params(SANDBOX)
    plan = rehearse.legs(params, strategy="dump-restore", with_rollback=True)
    assert [leg.runbook for leg in plan] == ["load_test", "failover_drill", "readiness", "phase1_pre_migration",
                                            None, "phase2_migration", "phase3_verification", "validation",
                                            "rollback"]
    assert "migration.strategy=dump-restore" in plan[5].overrides
    assert any(o.startswith("policy_loosening=") for o in plan[6].overrides)  # the short watch is recorded
    assert [leg.runbook for leg in rehearse.legs(params)][-1] == "validation"
    staging = load_params(SANDBOX, ["target.environment=staging"])
    assert rehearse.legs(staging)[6].overrides == []  # no sandbox loosening on another target


def test_the_window_opens_now_and_lasts_the_migrations_budget() -> None:
    params = load_params(SANDBOX)
    start = datetime(2026, 12, 6, 9, 0, 0, 123, tzinfo=UTC)
    assert rehearse.window_now(params, start) == ["window.start=2026-12-06T09:00:00+00:00",
                                                  "window.end=2026-12-06T13:00:00+00:00"]
    load_params(SANDBOX, rehearse.window_now(params))  # accepted by the schema


def test_the_resume_command_repeats_the_invocation() -> None:
    cmd = rehearse.resume_command("parameters/x y.yaml", "c1", "logical", True, ["a.b=1 2"])
    assert shlex.split(cmd) == ["runbook", "rehearse", "--params", "parameters/x y.yaml", "--campaign", "c1",
                                "--strategy", "logical", "--with-rollback", "-p", "a.b=1 2"]


def test_a_real_target_stops_at_the_signoff_gate_and_names_who_approves(tmp_path: Path) -> None:
    params = load_params(SANDBOX, ["target.environment=staging", *team(tmp_path, secret_dirs=SANDBOX_SECRETS)])
    campaign = campaign_with_records(tmp_path)
    out = io.StringIO()
    result = rehearse._signoffs(campaign, params, "p.yaml", "c", Console(file=out, width=300), "[5/9] sign-offs")
    assert result.status == "awaiting-signoff"
    assert signoffs.entries(campaign) == []  # nobody approved by the tool
    for role in params.policy.signoffs_required_before_migration:
        assert f"--role {role} --name" in out.getvalue()


def test_rehearsal_approvals_count_on_the_sandbox_only(tmp_path: Path) -> None:
    params = load_params(SANDBOX, team(tmp_path, secret_dirs=SANDBOX_SECRETS))
    campaign = campaign_with_records(tmp_path)
    roles = rehearse.approve_as_rehearsal(campaign, params)
    assert roles == params.policy.signoffs_required_before_migration
    assert signoffs.missing(campaign, params.policy, accept_rehearsal=True) == []
    assert signoffs.missing(campaign, params.policy) == roles  # a staging or production gate ignores them
    assert all(s.rehearsal for s in signoffs.status(campaign, params.policy, accept_rehearsal=True))
    page = archive.write_index(campaign).read_text()
    assert page.count("rehearsal approval (sandbox)") == len(roles)


def sealed_campaign(tmp_path: Path, runs: list[tuple[str, str]]) -> Path:
    """A campaign whose chain lists these (runbook, status) runs in order (only what done_before reads)."""
    campaign = tmp_path / "chain"
    campaign.mkdir(parents=True)
    lines = []
    for n, (runbook, status) in enumerate(runs):
        run_id = f"r{n}-{runbook}"
        (campaign / run_id).mkdir()
        (campaign / run_id / "manifest.json").write_text(json.dumps({"run_id": run_id, "runbook": runbook,
                                                                      "status": status}))
        lines.append(json.dumps({"run_id": run_id, "manifest_sha256": str(n)}))
    (campaign / "chain.jsonl").write_text("\n".join(lines) + "\n")
    return campaign


def test_a_leg_is_done_only_while_its_success_still_stands(tmp_path: Path) -> None:
    campaign = sealed_campaign(tmp_path, [
        ("load_test", "succeeded"), ("phase1_pre_migration", "succeeded"), ("phase2_migration", "succeeded"),
        ("phase3_verification", "succeeded"), ("rollback", "succeeded"), ("phase2_migration", "planned"),
        ("readiness", "failed")])
    assert rehearse.done_before(campaign, "load_test")["run_id"] == "r0-load_test"
    assert rehearse.done_before(campaign, "readiness") is None  # its latest run failed
    # a rollback after the cutover: legacy serves again, the cutover and what follows must run again
    assert rehearse.done_before(campaign, "phase2_migration") is None
    assert rehearse.done_before(campaign, "phase3_verification") is None
    assert rehearse.done_before(campaign, "rollback") is not None
    # phase 1 with no window locked and no cutover since: its window is gone, it runs again
    again = sealed_campaign(tmp_path / "b", [("phase1_pre_migration", "succeeded")])
    assert rehearse.done_before(again, "phase1_pre_migration") is None


def test_the_resume_command_keeps_the_archive_root() -> None:
    cmd = rehearse.resume_command("p.yaml", "c", None, False, [], Path("/tmp/elsewhere"))
    assert shlex.split(cmd)[-2:] == ["--outputs", "/tmp/elsewhere"]


def test_the_outcome_panels_resume_command_repeats_the_runs_overrides(tmp_path: Path) -> None:
    from runbook_lib.run import outcome

    run_dir = tmp_path / "out" / "c" / "r1"
    run_dir.mkdir(parents=True)
    panel = outcome.text(runbook="phase2_migration", run_id="r1", campaign="c", outcome="failed", message="boom",
                         seconds=1.0, params_path="p.yaml", run_dir=run_dir,
                         overrides=["migration.strategy=dump-restore"])
    assert "-p migration.strategy=dump-restore" in panel and f"--outputs {tmp_path / 'out'}" in panel
    assert "--resume r1" in panel
