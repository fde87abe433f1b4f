"""Sign-offs bound to record hashes, the migration's sign-off gate, and notices to real local receivers."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from runbook_lib.books import phase2_migration as phase2
from runbook_lib.campaign import records, signoffs
from runbook_lib.config.params import load_params
from runbook_lib.ops import notify
from runbook_lib.run import session
from runbook_lib.run.step import StepFailed
from tests import receivers
from tests.conftest import free_port

ROLES = ["Database Team Lead", "Infrastructure Lead", "Security Reviewer", "Product Manager", "Operations Manager"]


@pytest.fixture
def open_session(params_file: Path, outputs: Path):  # noqa: ANN201
    """An interactive phase 2 session; it holds the target's lock, so it is released afterwards."""
    opened = []

    def make() -> session.Session:
        opened.append(session.start(str(params_file), runbook="phase2_migration", outputs_dir=str(outputs)))
        return opened[-1]

    yield make
    for rb in opened:
        rb.release()


@pytest.fixture
def campaign(outputs: Path) -> Path:
    path = outputs / "test"
    records.save(path, "readiness", {"verdict": {"ready": True}, "items": []})
    records.save(path, "phase1", {"backup": {"id": "b1"}})
    return path


def test_unknown_role_refused_naming_valid_roles(params_file: Path, campaign: Path) -> None:
    params = load_params(params_file)
    with pytest.raises(signoffs.SignoffError) as info:
        signoffs.record(campaign, params.policy, "Intern", "Bob")
    assert "Intern" in str(info.value) and all(role in str(info.value) for role in ROLES)


def test_signoff_needs_the_records(params_file: Path, outputs: Path) -> None:
    with pytest.raises(signoffs.SignoffError, match="no readiness record"):
        signoffs.record(outputs / "empty", load_params(params_file).policy, ROLES[0], "Ann")


def test_gate_refuses_until_all_current_then_again_after_new_readiness(params_file: Path, campaign: Path,
                                                                       open_session) -> None:  # noqa: ANN001
    params = load_params(params_file)
    rb = open_session()
    for role in ROLES[:4]:
        signoffs.record(campaign, params.policy, role, "Ann Approver")
    with pytest.raises(StepFailed, match="missing sign-offs: Operations Manager"):
        rb.run(phase2.signoff_gate)
    signoffs.record(campaign, params.policy, ROLES[4], "Otto Ops")
    assert rb.run(phase2.signoff_gate).status == "ok"
    assert signoffs.missing(campaign, params.policy) == []
    # a new readiness record: every approval of the older one stops counting
    records.save(campaign, "readiness", {"verdict": {"ready": True}, "items": [], "rechecked": True})
    assert signoffs.missing(campaign, params.policy) == ROLES
    with pytest.raises(StepFailed, match="older readiness or phase 1 record do not count"):
        rb.run(phase2.signoff_gate)


def test_window_check_refuses_outside(campaign: Path, open_session) -> None:  # noqa: ANN001
    from datetime import datetime, timedelta

    from runbook_lib.campaign import window

    rb = open_session()
    with pytest.raises(StepFailed, match="no maintenance window"):
        rb.run(phase2.window_check)
    now = datetime.now(UTC)
    window.lock(campaign, now + timedelta(hours=1), now + timedelta(hours=5), None)
    with pytest.raises(StepFailed, match="the window opens at"):
        rb.run(phase2.window_check)
    window.lock(campaign, now - timedelta(minutes=5), now + timedelta(hours=4), None)
    assert rb.run(phase2.window_check).status == "ok"


def test_signoff_cli_status(params_file: Path, campaign: Path, outputs: Path) -> None:
    import subprocess
    import sys

    base = [sys.executable, "-m", "runbook_lib.cli", "signoff", "--campaign", "test", "--outputs", str(outputs),
            "--params", str(params_file)]
    bad = subprocess.run(base + ["--role", "CEO", "--name", "X"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Database Team Lead" in bad.stderr
    ok = subprocess.run(base + ["--role", ROLES[0], "--name", "Ann"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    status = subprocess.run(base + ["--status"], capture_output=True, text=True)
    assert status.returncode == 1 and "missing" in status.stdout and "Ann" in status.stdout


def test_notice_reaches_webhook_smtp_and_outbox(tmp_path: Path, local_pg, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import write_params

    with receivers.webhook() as (url, posted), receivers.mailbox() as (smtp_port, mails):
        monkeypatch.setenv("RB_TEST_WEBHOOK", url)
        params = load_params(write_params(tmp_path / "p.yaml", local_pg, notifications={
            "webhook_url": "env:RB_TEST_WEBHOOK",
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "sender": "rollout@example.test",
                     "recipients": ["owners@example.test", "oncall@example.test"]}}))
        deliveries = notify.send(params.notifications, params.base_dir, tmp_path / "campaign", "Window notice",
                                 "Writes pause at cutover.")
    assert [(d.channel, d.ok) for d in deliveries] == [("webhook", True), ("smtp", True), ("outbox", True)]
    assert posted[-1]["text"].startswith("*Window notice*")
    assert b"Writes pause at cutover." in mails[-1]
    assert "Writes pause" in Path(deliveries[-1].detail).read_text()
    assert "RB_TEST_WEBHOOK" in deliveries[0].detail and url not in deliveries[0].detail


def test_failed_channels_are_recorded_not_hidden(tmp_path: Path, local_pg, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import write_params

    monkeypatch.setenv("RB_TEST_WEBHOOK", f"http://127.0.0.1:{free_port()}/hook")
    params = load_params(write_params(tmp_path / "p.yaml", local_pg, notifications={
        "webhook_url": "env:RB_TEST_WEBHOOK",
        "smtp": {"host": "127.0.0.1", "port": free_port(), "sender": "a@example.test", "recipients": ["b@x.test"]}}))
    deliveries = notify.send(params.notifications, params.base_dir, tmp_path / "campaign", "s", "b")
    assert [(d.channel, d.ok) for d in deliveries] == [("webhook", False), ("smtp", False), ("outbox", True)]
    assert "ConnectionError" in deliveries[0].detail or "Connection" in deliveries[0].detail
    assert "ConnectionRefusedError" in deliveries[1].detail
