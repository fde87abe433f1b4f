"""Hostile or broken parameters files: each refused with exit 2 and one line naming the key, no traceback,
no hang, no secret echoed. `runbook params check` runs in-process (an exception would fail the test)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runbook_lib import cli
from runbook_lib.config import redact
from runbook_lib.config.params import load_params
from runbook_lib.run import archive

BASE = {"target": {"name": "t1", "environment": "sandbox", "databases": {
    "main": {"host": "127.0.0.1", "user": "postgres", "password": "env:PGPW"}}}}
CANARY = "Canary-7f3e9a1c-Secret"


def check(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    code = cli.main(["params", "check", str(path), *extra])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def alias_bomb() -> str:
    text = 'a0: &a0 ["x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, 9):
        text += f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


@pytest.mark.parametrize(("content", "named", "why"), [
    (b'campaign: "\xff\xfe"\n', "<top>", "not UTF-8"),
    (("a: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "<top>", "nested more than"),
    (alias_bomb().encode(), "<top>", "aliases are expanded"),
    (b"evidence:\n" + b"".join(b"  k%d: '%s'\n" % (i, b"x" * 100) for i in range(4000)), "<top>", "larger than"),
    (b"a: &x [*x]\n", "<top>", "an alias refers to a value that contains it"),
    (b"a: &x {b: [1, *x]}\n", "<top>", "an alias refers to a value that contains it"),
    (b"campaign: a\ncampaign: b\n", "campaign", "duplicate key (line 2; first given on line 1)"),
    (b"campaign: a\ntarget: {name: t, name: u}\n", "name", "duplicate key"),
], ids=["non-utf8", "deep-nesting", "alias-bomb", "oversized", "self-alias", "self-alias-nested", "duplicate-top",
        "duplicate-nested"])
def test_an_unreadable_or_oversized_file_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  content: bytes, named: str, why: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    code, lines = check(path, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert f": {named}: " in lines[0] and why in lines[0], lines


def test_a_folder_given_as_the_parameters_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(tmp_path, capsys)
    assert code == 2 and len(lines) == 1 and "is a directory" in lines[0], lines


@pytest.mark.parametrize("value", [-5, 0, ".nan", ".inf", "-1s", "0s"])
def test_a_duration_must_be_positive_and_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                value: object) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(BASE) + f"drills: {{rto_max: {value}}}\n")
    code, lines = check(path, capsys)
    assert code == 2 and len(lines) == 1 and "drills.rto_max" in lines[0], lines


def test_a_figure_that_is_not_a_number_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(BASE) + "backup: {source: main, location: b, space_multiple: .inf}\n")
    code, lines = check(path, capsys)
    assert code == 2 and "backup.space_multiple" in lines[0], lines


@pytest.mark.parametrize(("readiness", "key"), [
    ({"allowed_cidrs": ["0.0.0.0/0"]}, "readiness.allowed_cidrs"),
    ({"admin_cidrs": ["::/0"]}, "readiness.admin_cidrs"),
    ({"default_passwords": []}, "readiness.default_passwords"),
    ({"cert_min_days": -100000}, "readiness.cert_min_days"),
    ({"swappiness_max": 100}, "readiness.swappiness_max"),
    ({"secret_rotation": "3650d"}, "readiness.secret_rotation"),
    ({"latency_targets_ms": {"p50": 50, "p95": 200, "p99": 5000}}, "readiness.latency_targets_ms.p99"),
    ({"latency_targets_ms": {"p50": 50, "p95": 200}}, "readiness.latency_targets_ms.p99"),  # a target dropped
    ({"vector": {"min_version": {"ruvector": "1.0.0"}}}, "readiness.vector.min_version.ruvector"),
])
def test_a_loosened_readiness_figure_needs_a_record(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    readiness: dict, key: str) -> None:
    code, lines = check(write(tmp_path, {**BASE, "readiness": readiness}), capsys)
    assert code == 2 and len(lines) == 1 and lines[0].split(": ")[1] == key, lines
    assert "readiness_loosening" in lines[0]
    field = key.removeprefix("readiness.")
    recorded = {**BASE, "readiness": readiness, "readiness_loosening": [
        {"key": field, "reason": "a test of the record itself", "approved_by": "tester"}]}
    assert check(write(tmp_path, recorded), capsys)[0] == 0
    # a tightening needs nothing, and a record that names no loosened figure is refused
    tight = {**BASE, "readiness": {"cert_min_days": 60, "allowed_cidrs": ["10.1.0.0/16"]}}
    assert check(write(tmp_path, tight), capsys)[0] == 0
    # a record of a figure tightened since (by -p, say) is merely unused; one that names no figure is refused
    stale = {**tight, "readiness_loosening": [{"key": "cert_min_days", "reason": "no longer loose", "approved_by": "a tester"}]}
    assert check(write(tmp_path, stale), capsys)[0] == 0
    typo = {**tight, "readiness_loosening": [{"key": "cert_min_dayz", "reason": "a misspelt key", "approved_by": "a tester"}]}
    code, lines = check(write(tmp_path, typo), capsys)
    assert code == 2 and "readiness_loosening[0].key" in lines[0] and "names no readiness figure" in lines[0], lines


@pytest.mark.parametrize(("ref", "why"), [
    ("file:../../../../etc/shadow", "outside the parameters' folder"),
    ("file:/proc/self/environ", "pseudo-filesystem"),
    ("file:/etc/hostname", "outside the parameters' folder"),
    ("docker-secret:../../etc/shadow", "a Docker secret's name"),
    ("env:A;rm -rf /", "an environment variable's name"),
])
def test_a_secret_reference_cannot_reach_any_file_of_the_host(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              ref: str, why: str) -> None:
    data = {**BASE, "target": {**BASE["target"], "databases": {"main": {**BASE["target"]["databases"]["main"],
                                                                         "password": ref}}}}
    code, lines = check(write(tmp_path, data), capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "target.databases.main.password" in lines[0] and why in lines[0], lines


def test_secret_files_in_a_listed_folder_are_read_and_a_system_folder_cannot_be_listed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "vault").mkdir()
    (tmp_path / "vault" / "pw").write_text(CANARY)
    sub = tmp_path / "params"
    sub.mkdir()
    data = {**BASE, "target": {**BASE["target"], "databases": {"main": {**BASE["target"]["databases"]["main"],
                                                                         "password": "file:../vault/pw"}}}}
    assert check(write(sub, data), capsys)[0] == 2  # outside, not listed
    assert check(write(sub, {**data, "secret_dirs": ["../vault"]}), capsys, "--resolve")[0] == 0
    for folder in ("/etc", "//etc", "/etc/../etc", "/proc/self", "/dev"):
        code, lines = check(write(sub, {**data, "secret_dirs": [folder]}), capsys)
        assert code == 2 and "secret_dirs[0]" in lines[0], (folder, lines)


@pytest.mark.parametrize(("override", "key"), [
    ("migration={strategy: logical, source: main, target: main, pooler_database: 'app; rm -rf /', "
     "new_backend: {host: h, port: 1}}", "migration.pooler_database"),
    ("target.pgbouncer={host: h, admin_user: a, admin_password: 'env:P', config_path: '/x/$(reboot)'}",
     "target.pgbouncer.config_path"),
])
def test_a_value_meant_for_a_task_carries_no_shell_syntax(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          override: str, key: str) -> None:
    code, lines = check(write(tmp_path, BASE), capsys, "-p", override)
    assert code == 2 and key in "\n".join(lines), lines


def test_credentials_in_free_text_are_masked_in_the_full_listing(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = {**BASE, "evidence": {"SEC-01": f"https://ops:{CANARY}@vault.example.test/x",
                                 "SEC-02": f"rotated; token={CANARY} kept", "SEC-03": f"Authorization: Bearer {CANARY}"}}
    assert cli.main(["params", "check", str(write(tmp_path, data)), "--full"]) == 0
    out = capsys.readouterr().out
    assert CANARY not in out and out.count(redact.MASK) >= 3
    assert load_params(write(tmp_path, data)).redacted()["evidence"]["SEC-01"].startswith("https://ops:***@")


def test_a_refusal_takes_no_traceback_in_a_fresh_process(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(alias_bomb())
    done = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "params", "check", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("encode", [
    lambda v: v, lambda v: v.encode().hex(), lambda v: v.encode().hex().upper(),
    lambda v: base64.b64encode(v.encode()).decode(), lambda v: base64.b64encode(b"u:" + v.encode()).decode(),
    lambda v: base64.b64encode(b"us:" + v.encode() + b"!").decode(),
    lambda v: base64.urlsafe_b64encode(b"x" + v.encode()).decode(),
    lambda v: __import__("urllib.parse").parse.quote(v + "/&", safe=""),
    lambda v: __import__("json").dumps({"pw": v}), lambda v: __import__("html").escape(v),
], ids=["raw", "hex", "HEX", "base64", "basic-header", "base64-offset-2", "urlsafe-offset-1", "url-encoded", "json",
        "html"])
def test_the_archive_scan_catches_each_encoding_of_a_secret(tmp_path: Path, encode) -> None:  # noqa: ANN001
    secret = CANARY + "/&"
    (tmp_path / "out.txt").write_text(f"before {encode(secret)} after")
    hits = archive.scan_and_mask(tmp_path, {secret})
    assert hits == ["out.txt"], encode(secret)
    masked = (tmp_path / "out.txt").read_text()
    assert "before" in masked and not any(form in masked for form in archive.secret_forms({secret})), masked


def test_a_webhook_token_quoted_without_its_url_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "_values", set(redact._values))  # what this test registers goes with it
    token = "XyZ0123456789abcdefGHIJ"
    redact.register(f"https://hooks.chat.example.test/services/T000/B000/{token}")
    assert token not in redact.text(f"delivery failed for services/T000/B000/{token}: 404")


def test_a_failed_webhook_delivery_records_no_part_of_the_secret_url(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook_lib.config.params import Notifications
    from runbook_lib.ops import notify

    monkeypatch.setattr(redact, "_values", set(redact._values))
    token = "Zq9TokenPart0123456789xyz"
    monkeypatch.setenv("RB_HOOK", f"http://127.0.0.1:1/services/T0ABC/B0DEF/{token}")  # nothing listens on 1
    deliveries = notify.send(Notifications(webhook_url="env:RB_HOOK"), tmp_path, tmp_path / "c", "s", "b")
    failed = [d for d in deliveries if d.channel == "webhook"][0]
    assert not failed.ok and "ConnectionError" in failed.detail, failed.detail
    assert token not in failed.detail and "T0ABC" not in failed.detail.replace("env:RB_HOOK", "")


def test_credential_text_is_masked_whole_and_prose_is_left_alone() -> None:
    assert redact.text("password=ab&cdefgh123 rest") == "password=*** rest"
    assert redact.text("Authorization: Basic dXNlcjpwYXNzd29yZA==") == "Authorization: Basic ***"
    assert redact.text("Basic information about the rollout") == "Basic information about the rollout"
