"""Regressions for ways the archive, the runner and the parameters could be fooled or leak."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from runbook_lib.config.params import ParamsError, load_params, validate
from runbook_lib.readiness import engine, registry
from runbook_lib.readiness.model import Finding
from runbook_lib.run import archive, runner
from tests.integration.conftest import DRILL


def test_secret_with_html_characters_is_masked_everywhere(tmp_path: Path, local_pg, drill: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import write_params

    secret = "Tr0ub&dor<x>'s\"pw"
    (tmp_path / "odd").write_text(secret)
    params = write_params(tmp_path / "p.yaml", local_pg)
    data = json.loads(json.dumps(__import__("yaml").safe_load(params.read_text())))
    data["notifications"] = {"smtp": {"host": "127.0.0.1", "sender": "a@b.test", "recipients": ["c@d.test"],
                                      "username": "u", "password": f"file:{tmp_path / 'odd'}"}}
    params.write_text(__import__("yaml").safe_dump(data))
    monkeypatch.setenv("DRILL_LEAK_VALUE", secret)
    (drill / "leak").touch()
    report = runner.run(str(DRILL), str(params), outputs_dir=tmp_path / "out", echo=False)
    assert report.exit_code == 1 and report.outcome == "secret-leak"
    escaped = {secret, json.dumps(secret)[1:-1], __import__("html").escape(secret)}
    for path in report.run_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(form in text for form in escaped), f"{path.name} holds a form of the secret"


def test_verify_catches_chain_edits_and_unchained_runs(params_file: Path, outputs: Path, drill: Path) -> None:
    runs = [runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False) for _ in range(3)]
    campaign = outputs / "test"
    assert archive.verify(campaign) == []
    # drop the middle run and re-link the chain around it: the manifests still disagree
    lines = (campaign / "chain.jsonl").read_text().splitlines()
    entries = [json.loads(x) for x in lines]
    entries[2]["prev"] = entries[0]["manifest_sha256"]
    (campaign / "chain.jsonl").write_text("\n".join(json.dumps(e) for e in (entries[0], entries[2])) + "\n")
    shutil.rmtree(runs[1].run_dir)
    problems = archive.verify(campaign)
    assert any("link to the previous manifest" in p for p in problems), problems
    # a sealed run folder copied in without a chain entry is reported
    shutil.copytree(runs[0].run_dir, campaign / "intruder")
    assert any("intruder" in p and "does not list" in p for p in archive.verify(campaign))


def test_resume_refuses_plan_runs_and_other_runbooks(params_file: Path, outputs: Path, drill: Path) -> None:
    planned = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, plan=True, echo=False)
    refused = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, resume=planned.run_id, echo=False)
    assert refused.exit_code == 2 and "--plan run" in refused.message
    other = runner.run("status", str(params_file), outputs_dir=outputs, resume=planned.run_id, echo=False)
    assert other.exit_code == 2 and "not status" in other.message


def test_unknown_kernel_is_bad_input(params_file: Path, outputs: Path) -> None:
    report = runner.run("status", str(params_file), outputs_dir=outputs, overrides=["run.kernel_name=nope"],
                        echo=False)
    assert report.exit_code == 2 and "run.kernel_name" in report.message


def test_embedded_password_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("target: {name: t, environment: sandbox, databases: {m: {host: h, user: u}}, "
                    "prometheus: {url: 'http://admin:Hunter2Secret@prom:9090'}, "
                    "patroni: {scope: s, members: [{name: a, api_url: 'http://p:S3cretPw@x:8008'}]}}\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert "target.prometheus.url" in str(info.value) and "target.patroni.members.0.api_url" in str(info.value)
    assert "Hunter2Secret" not in str(info.value) and "S3cretPw" not in str(info.value)


def test_hung_checks_do_not_hang_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.CHECKS, "DB-13", lambda p: (time.sleep(30), Finding("pass"))[1])
    monkeypatch.setitem(registry.CHECKS, "DB-14", lambda p: Finding("pass"))
    params = validate({"target": {"name": "t", "environment": "sandbox",
                                  "databases": {"m": {"host": "127.0.0.1", "user": "u"}}},
                       "readiness": {"item_timeout_s": 0.5, "concurrency": 1}})
    started = time.monotonic()
    results = {r.id: r for r in engine.run(params, only=["DB-13", "DB-14"])}
    assert time.monotonic() - started < 5
    assert results["DB-13"].outcome == "error"
    assert results["DB-14"].outcome in ("pass", "error")


def test_verify_reads_nothing_outside_the_campaign(params_file: Path, outputs: Path, drill: Path,
                                                   tmp_path: Path) -> None:
    """A manifest rewritten (and its chain hash recomputed) to list a file outside its run folder, with that
    file's true digest: verify names the entry instead of reading and accepting it."""
    import hashlib

    run = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False)
    campaign = outputs / "test"
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of any run")
    manifest_path = run.run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    escape = "../" * (len(run.run_dir.parts) - 1) + str(outside).lstrip("/")
    manifest["files"][escape] = archive.sha256_file(outside)
    manifest_path.write_text(json.dumps(manifest))
    entries = [json.loads(x) for x in (campaign / "chain.jsonl").read_text().splitlines()]
    entries[-1]["manifest_sha256"] = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    (campaign / "chain.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    problems = archive.verify(campaign)
    assert any(p.startswith(str(manifest_path)) and "not a file inside its run folder" in p for p in problems), \
        problems
    # a chain entry naming a folder outside the campaign is refused the same way
    entries[-1]["run_id"] = "../../" + run.run_dir.name
    (campaign / "chain.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert any("names no run folder inside the campaign" in p for p in archive.verify(campaign))
    (campaign / "chain.jsonl").write_text("not json\n")
    assert "not a chain of JSON lines" in archive.verify(campaign)[0]


def test_canary_secrets_of_every_reference_kind_leave_no_trace_in_the_archive(
        params_file: Path, outputs: Path, drill: Path, tmp_path: Path) -> None:
    """A failed run that notifies (its webhook unreachable, its SMTP refused): canaries in env:, file: and
    docker-secret: references, and the token of the secret webhook URL, appear in no archived byte in any
    encoding the scan knows, nor in the terminal's output."""
    import os
    import subprocess
    import sys

    token = "CanaryTok3n0123456789abcd"
    canaries = {"env": f"http://127.0.0.1:1/services/TCANARY0/BCANARY0/{token}",
                "file": "Canary-file-5b1d7e", "docker-secret": "Canary-dsec-9c2a4f"}
    (tmp_path / "smtp_pw").write_text(canaries["file"])
    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    (secrets_dir / "pgb_admin").write_text(canaries["docker-secret"])
    (drill / "fail").touch()
    env = {**os.environ, "RB_CANARY_HOOK": canaries["env"], "RUNBOOK_DOCKER_SECRETS_DIR": str(secrets_dir)}
    overrides = ["notifications={webhook_url: 'env:RB_CANARY_HOOK', smtp: {host: 127.0.0.1, port: 1, "
                 "sender: a@b.test, recipients: [c@d.test], username: u, password: 'file:smtp_pw'}}",
                 "target.pgbouncer={host: 127.0.0.1, port: 1, admin_user: a, admin_password: 'docker-secret:pgb_admin'}"]
    done = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "run", str(DRILL), "--params", str(params_file),
                           "--outputs", str(outputs), "--notify-on-failure",
                           *[x for o in overrides for x in ("-p", o)]],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1 and "failure notice sent to 1 of 3 channels" in done.stderr, done.stderr[-2000:]
    values = set(canaries.values()) | {token}
    forms = archive.secret_forms(values)
    archived = [p for p in (outputs / "test").rglob("*") if p.is_file()]
    assert any(p.parent.name == "outbox" for p in archived)
    leaks = [(p.name, f) for p in archived for f in forms if f.encode() in p.read_bytes()]
    assert leaks == [] and not any(f in done.stdout + done.stderr for f in forms), leaks
    manifest = json.loads(next((outputs / "test").glob("*/manifest.json")).read_text())
    assert manifest["secret_scan"]["values_checked"] >= 3  # each reference was resolved and scanned for
