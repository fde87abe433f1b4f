"""Sign-offs bound to record hashes, the migration's sign-off gate, and notices to real local receivers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from runbook_lib import notify, phase2, records, session, signoffs
from runbook_lib.params import load_params
from runbook_lib.steps import StepFailed
from tests.conftest import free_port

ROLES = ["Database Team Lead", "Infrastructure Lead", "Security Reviewer", "Product Manager", "Operations Manager"]


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
                                                                       outputs: Path) -> None:
    params = load_params(params_file)
    rb = session.start(str(params_file), runbook="phase2_migration", outputs_dir=str(outputs))
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


def test_window_check_refuses_outside(params_file: Path, campaign: Path, outputs: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from runbook_lib import window

    rb = session.start(str(params_file), runbook="phase2_migration", outputs_dir=str(outputs))
    with pytest.raises(StepFailed, match="no maintenance window"):
        rb.run(phase2.window_check)
    now = datetime.now(timezone.utc)
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


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001, ANN201
        self.messages.append(envelope.content)
        return "250 OK"


def test_notice_reaches_webhook_smtp_and_outbox(tmp_path: Path, local_pg, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import write_params

    http = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    mailbox = _Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    monkeypatch.setenv("RB_TEST_WEBHOOK", f"http://127.0.0.1:{http.server_port}/hook")
    try:
        params = load_params(write_params(tmp_path / "p.yaml", local_pg, notifications={
            "webhook_url": "env:RB_TEST_WEBHOOK",
            "smtp": {"host": "127.0.0.1", "port": smtp.port, "sender": "rollout@example.test",
                     "recipients": ["owners@example.test", "oncall@example.test"]}}))
        deliveries = notify.send(params, tmp_path / "campaign", "Window notice", "Writes pause at cutover.")
    finally:
        http.shutdown()
        smtp.stop()
    assert [(d.channel, d.ok) for d in deliveries] == [("webhook", True), ("smtp", True), ("outbox", True)]
    assert _Hook.received[-1]["text"].startswith("*Window notice*")
    assert b"Writes pause at cutover." in mailbox.messages[-1]
    assert "Writes pause" in Path(deliveries[-1].detail).read_text()
    assert "RB_TEST_WEBHOOK" in deliveries[0].detail and str(http.server_port) not in deliveries[0].detail


def test_failed_channels_are_recorded_not_hidden(tmp_path: Path, local_pg, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import write_params

    monkeypatch.setenv("RB_TEST_WEBHOOK", f"http://127.0.0.1:{free_port()}/hook")
    params = load_params(write_params(tmp_path / "p.yaml", local_pg, notifications={
        "webhook_url": "env:RB_TEST_WEBHOOK",
        "smtp": {"host": "127.0.0.1", "port": free_port(), "sender": "a@example.test", "recipients": ["b@x.test"]}}))
    deliveries = notify.send(params, tmp_path / "campaign", "s", "b")
    assert [(d.channel, d.ok) for d in deliveries] == [("webhook", False), ("smtp", False), ("outbox", True)]
    assert "ConnectionError" in deliveries[0].detail or "Connection" in deliveries[0].detail
    assert "ConnectionRefusedError" in deliveries[1].detail
