"""`runbook run` end to end against a real PostgreSQL: archive, tamper, secrets, kernel death, resume, lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from runbook_lib.run import archive, runner
from runbook_lib.run.journal import read_events
from runbook_lib.sandbox.localpg import LocalPostgres
from tests.integration.conftest import DRILL


def only_run(outputs: Path, campaign: str = "test") -> Path:
    runs = [p for p in (outputs / campaign).iterdir() if (p / "journal.jsonl").exists()]  # not the outbox
    assert len(runs) == 1, runs
    return runs[0]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runbook_lib.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_status_run_archives_and_verifies(params_file: Path, outputs: Path, local_pg: LocalPostgres) -> None:
    result = cli("run", "status", "--params", str(params_file), "--outputs", str(outputs), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    run_dir = Path(report["run_dir"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["sealed"] is True
    assert {s["name"] for s in manifest["steps"]} == {"reachability", "settings", "database_sizes",
                                                      "connections", "verdict"}
    assert manifest["target"] == "localtest" and manifest["operator"] and manifest["git_revision"]
    assert set(manifest["files"]) >= {"status.ipynb", "status.html", "journal.jsonl", "params.json"}
    assert manifest["secret_scan"]["values_checked"] >= 1 and manifest["secret_scan"]["hits"] == []
    nb = json.loads((run_dir / "status.ipynb").read_text())
    panel = nb["cells"][0]  # the executed notebook (and its HTML) opens with how the run ended
    assert panel["metadata"]["tags"] == ["outcome-panel"] and "SUCCEEDED" in panel["source"]
    assert report["run_id"] in panel["source"] and "resume" not in panel["source"]
    text = json.dumps(nb)
    with local_pg.connect() as conn:  # the reachability table shows the version the server itself reports
        version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
    assert f'"version": "{version}"' in json.dumps(nb["cells"]) or f">{version}<" in text, version
    assert "application/vnd.plotly.v1+json" in text
    assert cli("archive", "verify", "test", "--outputs", str(outputs)).returncode == 0
    assert cli("archive", "index", "test", "--outputs", str(outputs)).returncode == 0
    index = (outputs / "test" / "index.html").read_text()
    assert report["run_id"] in index and "succeeded" in index

    # One flipped byte of the archived notebook is found, naming the file.
    nb_path = run_dir / "status.ipynb"
    data = bytearray(nb_path.read_bytes())
    data[100] ^= 0x01
    nb_path.write_bytes(bytes(data))
    verify = cli("archive", "verify", "test", "--outputs", str(outputs))
    assert verify.returncode == 1 and "status.ipynb: changed since it was sealed" in verify.stderr


def test_chain_links_runs_and_detects_missing_file(params_file: Path, outputs: Path, drill: Path) -> None:
    first = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False)
    second = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False)
    assert (first.exit_code, second.exit_code) == (0, 0), (first.message, second.message)
    entries = archive.chain_entries(outputs / "test")
    assert [e["run_id"] for e in entries] == [first.run_id, second.run_id]
    assert entries[1]["prev"] == entries[0]["manifest_sha256"]
    assert archive.verify(outputs / "test") == []
    (first.run_dir / "journal.jsonl").unlink()
    problems = archive.verify(outputs / "test")
    assert any("journal.jsonl: missing" in p for p in problems), problems


def test_secret_printed_by_notebook_fails_the_scan(params_file: Path, outputs: Path, drill: Path,
                                                   local_pg) -> None:
    (drill / "leak").touch()
    report = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False)
    assert report.exit_code == 1 and report.outcome == "secret-leak", report
    password = local_pg.password_file.read_text()
    for path in report.run_dir.rglob("*"):
        if path.is_file():
            assert password not in path.read_text(errors="replace"), f"{path.name} still holds the secret"
    manifest = json.loads((report.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "secret-leak" and "drill.ipynb" in manifest["secret_scan"]["hits"]


def test_failed_step_exit_1_then_resume_skips_completed(params_file: Path, outputs: Path, drill: Path) -> None:
    (drill / "fail").touch()
    failed = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False)
    assert failed.exit_code == 1 and "told to fail" in failed.message
    assert (drill / "one.count").read_text() == "1" and (drill / "mutate.count").read_text() == "1"
    panel = json.loads((failed.run_dir / f"{DRILL.stem}.ipynb").read_text())["cells"][0]["source"]
    assert "FAILED" in panel and "failed step: <b>maybe_fail</b>" in panel, panel
    assert f"--resume {failed.run_id}" in panel and "told to fail" in panel
    assert "FAILED" in (failed.run_dir / f"{DRILL.stem}.html").read_text()
    (drill / "fail").unlink()
    resumed = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, resume=failed.run_id, echo=False)
    assert resumed.exit_code == 0, resumed.message
    # completed steps were not run again; the failed one was
    assert (drill / "one.count").read_text() == "1" and (drill / "mutate.count").read_text() == "1"
    assert (drill / "maybe_fail.count").read_text() == "1"
    steps = {s["name"]: s for s in json.loads((resumed.run_dir / "manifest.json").read_text())["steps"]}
    assert steps["count_one"]["status"] == "skipped" and steps["count_one"]["recorded_in"] == failed.run_id
    assert steps["count_one"]["summary"].startswith("already completed: server")
    assert steps["maybe_fail"]["status"] == "ok"
    # state recorded by a skipped step is restored for later steps
    assert steps["pause"]["summary"].startswith("state carried: 15") or "state carried: 1" in steps["pause"]["summary"]
    # the campaign's history in the terminal: both runs, why the first failed, its steps
    listed = cli("runs", "list", failed.run_dir.parent.name, "--outputs", str(outputs), "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["run_id"]: r for r in json.loads(listed.stdout)}
    assert list(rows) == [failed.run_id, resumed.run_id]
    assert rows[failed.run_id]["status"] == "failed" and "told to fail" in rows[failed.run_id]["figures"]
    assert rows[resumed.run_id]["status"] == "succeeded"
    shown = cli("runs", "show", failed.run_id, "--outputs", str(outputs), "-o", "json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert {s["name"]: s["status"] for s in detail["steps"]}["maybe_fail"] == "failed"
    assert cli("runs", "show", "no-such-run", "--outputs", str(outputs)).returncode == 2
    assert cli("runs", "list", "no-such-campaign", "--outputs", str(outputs)).returncode == 2


def test_plan_mode_changes_nothing(params_file: Path, outputs: Path, drill: Path) -> None:
    report = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, plan=True, echo=False)
    assert report.exit_code == 0 and report.outcome == "planned", report.message
    assert not (drill / "mutate.count").exists()
    steps = {s["name"]: s for s in json.loads((report.run_dir / "manifest.json").read_text())["steps"]}
    assert steps["mutate"]["status"] == "planned" and steps["mutate"]["summary"].startswith("would bump")
    assert steps["count_one"]["status"] == "ok"


def test_guard_refuses_with_reason(params_file: Path, outputs: Path, drill: Path) -> None:
    (drill / "go").unlink()
    report = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False)
    assert report.exit_code == 1
    assert "refused: go file present: no go file" in report.message


def test_bad_input_exit_2_before_anything(params_file: Path, outputs: Path, drill: Path) -> None:
    report = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, overrides=["target.databases.main.port=x"],
                        echo=False)
    assert report.exit_code == 2 and "target.databases.main.port" in report.message
    assert not (outputs / "test").exists() and not (drill / "one.count").exists()
    result = cli("run", "nosuchbook", "--params", str(params_file), "--outputs", str(outputs))
    assert result.returncode == 2 and "nosuchbook" in result.stderr
    # a secret that does not resolve is found before a kernel starts, naming the field and the variable
    unset = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False,
                       overrides=["target.databases.main.password=env:RUNBOOK_TEST_UNSET_PASSWORD"])
    assert unset.exit_code == 2 and unset.run_id is None, unset
    assert "target.databases.main.password: env:RUNBOOK_TEST_UNSET_PASSWORD: environment variable " \
           "RUNBOOK_TEST_UNSET_PASSWORD is not set" in unset.message
    assert not (outputs / "test").exists() and not (drill / "one.count").exists()


def _wait_for(path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_killed_kernel_exit_3_keeps_partial_notebook(params_file: Path, outputs: Path, drill: Path) -> None:
    (drill / "pause").touch()
    proc = subprocess.Popen([sys.executable, "-m", "runbook_lib.cli", "run", str(DRILL), "--params",
                             str(params_file), "--outputs", str(outputs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(drill / "paused")
    os.kill(int((drill / "paused").read_text()), signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    run_dir = only_run(outputs)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "kernel-died" and "kernel died" in manifest["message"]
    assert [s["name"] for s in manifest["steps"]] == ["count_one", "mutate"]
    nb = json.loads((run_dir / "drill.ipynb").read_text())
    outputs_text = json.dumps([c.get("outputs") for c in nb["cells"]])
    assert "server" in outputs_text  # the completed cells' outputs survived
    assert archive.verify(outputs / "test") == []
    # a changing run whose kernel died is told to the channels (here only the outbox), with its resume command
    notice = next((outputs / "test" / "outbox").glob("*-notice.txt")).read_text()
    assert "kernel-died" in notice and f"--resume {run_dir.name}" in notice, notice


def test_second_mutating_run_is_refused_naming_holder(params_file: Path, outputs: Path, drill: Path) -> None:
    (drill / "pause").touch()
    holder: dict = {}
    thread = threading.Thread(target=lambda: holder.update(
        report=runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False)))
    thread.start()
    try:
        _wait_for(drill / "paused")
        second = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False)
        assert second.exit_code == 2
        assert "locked by another mutating run" in second.message and "run_id" in second.message
        first_id = next(p.name for p in (outputs / "test").iterdir() if p.is_dir())
        assert first_id in second.message
    finally:
        (drill / "release").touch()
        thread.join(120)
    assert holder["report"].exit_code == 0
    # once released, the target can be taken again
    (drill / "pause").unlink()
    assert runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False).exit_code == 0


def test_journal_records_operator_revision_and_target(params_file: Path, outputs: Path, drill: Path) -> None:
    report = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False,
                        overrides=["operator=alice"])
    assert report.exit_code == 0, report.message
    start = next(e for e in read_events(report.run_dir / "journal.jsonl") if e["event"] == "run_start")
    assert start["operator"] == "alice" and start["target"] == "localtest" and start["git_revision"]


def test_cell_timeout_stops_kernel_exit_3(params_file: Path, outputs: Path, drill: Path) -> None:
    (drill / "pause").touch()
    report = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, overrides=["run.cell_timeout=10"],
                        echo=False)
    assert report.exit_code == 3 and "timed out" in report.message, report
    manifest = json.loads((report.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "kernel-died" and [s["name"] for s in manifest["steps"]] == ["count_one", "mutate"]


def test_a_gate_refusal_before_any_change_exits_2(params_file: Path, outputs: Path) -> None:
    refused = runner.run("phase2_migration", str(params_file), outputs_dir=outputs, echo=False, campaign="unsigned")
    assert refused.exit_code == 2 and refused.message.startswith("refused before any change:"), refused.message
    steps = json.loads((refused.run_dir / "manifest.json").read_text())["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [("signoff_gate", "failed")]
    assert runner.refused_before_any_change(refused.run_dir)


def test_a_failed_scheduled_run_notifies_the_channels(params_file: Path, outputs: Path, drill: Path) -> None:
    from tests import receivers

    (drill / "fail").touch()
    with receivers.webhook() as (url, posted):
        os.environ["RB_TEST_FAILURE_HOOK"] = url
        try:
            failed = cli("run", str(DRILL), "--params", str(params_file), "--outputs", str(outputs),
                         "--notify-on-failure", "-p", "notifications.webhook_url=env:RB_TEST_FAILURE_HOOK")
            ok_run = cli("run", "status", "--params", str(params_file), "--outputs", str(outputs),
                         "--notify-on-failure", "-p", "notifications.webhook_url=env:RB_TEST_FAILURE_HOOK")
        finally:
            del os.environ["RB_TEST_FAILURE_HOOK"]
    assert failed.returncode == 1 and "failure notice sent to 2 of 2 channels" in failed.stderr, failed.stderr[-2000:]
    assert ok_run.returncode == 0, ok_run.stderr[-2000:]
    assert len(posted) == 1, posted  # the run that succeeded told nobody
    text = posted[0]["text"]
    assert "failed on localtest (exit 1)" in text and "told to fail" in text and "--resume" in text, text
    notices = list((outputs / "test" / "outbox").glob("*-notice.txt"))
    assert len(notices) == 1 and "told to fail" in notices[0].read_text()
