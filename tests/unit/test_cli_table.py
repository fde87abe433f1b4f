"""The CLI's bad invocations and their exit codes, one table: 0 ok, 1 failed, 2 refused before any change.
None of these reaches a server: each is refused while reading its arguments or parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook_lib import cli

SANDBOX = str(Path(__file__).resolve().parents[2] / "parameters" / "sandbox.yaml")


def exit_code(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse: --version, --help, usage errors
        return int(exc.code or 0)


@pytest.mark.parametrize(("argv", "code"), [
    (["--version"], 0),
    (["params", "check", SANDBOX, "-p", "campaign", "other"], 0),  # papermill's -p KEY VALUE taken as KEY=VALUE
    (["run", "status", "--param", SANDBOX], 2),  # an abbreviation is not taken for --params
    (["run", "status"], 2),  # no parameters file
    (["run", "no_such_runbook", "-f", SANDBOX], 2),
    (["run", "status", "-f", SANDBOX, "-p", "target.no_such_key", "1"], 2),  # papermill's -p KEY VALUE, bad key
    (["run", "status", "-f", "/nonexistent/params.yaml"], 2),
    (["run", "status", "-f", SANDBOX, "--every", "0s", "--until", "1h"], 2),
    (["params", "check", "/nonexistent/params.yaml"], 2),
    (["params", "check", SANDBOX, "-p", "policy.verification_watch.duration", "1s"], 2),  # loosened, unrecorded
    (["rehearse", "-f", SANDBOX, "-p", "target.no_such_key=1"], 2),
    (["rehearse", "-f", SANDBOX, "--strategy", "copy"], 2),
    (["signoff", "-f", SANDBOX, "--campaign", "c", "--role", "Nobody", "--name", "x"], 2),
    (["signoff", "-f", SANDBOX, "--campaign", "c"], 2),  # neither a sign-off nor --status
    (["no-such-command"], 2),
    (["describe", "no_such_runbook"], 2),
    (["describe", "status", "-o", "json"], 0),
])
def test_bad_invocations_exit_with_the_tables_code(argv: list[str], code: int, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path))
    assert exit_code(argv) == code


@pytest.mark.parametrize("command", ["verify", "index"])
def test_a_missing_campaign_is_refused_alike_by_every_archive_command(command: str, tmp_path: Path) -> None:
    assert exit_code(["archive", command, "nothing-here", "--outputs", str(tmp_path)]) == 2


def test_papermill_spellings() -> None:
    assert cli.papermill_habits(["run", "x", "-p", "a.b", "1 2", "-p", "c=3"]) == ["run", "x", "-p", "a.b=1 2",
                                                                                   "-p", "c=3"]
    assert cli.papermill_habits(["lab", "--", "-p", "a", "b"]) == ["lab", "--", "-p", "a", "b"]
    assert cli.papermill_habits(["run", "x", "-p", "a", "--plan"]) == ["run", "x", "-p", "a", "--plan"]


def test_params_check_summarises_and_full_prints_everything_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["params", "check", SANDBOX]) == 0
    short = capsys.readouterr().out
    assert len(short.splitlines()) < 15 and "target      sandbox (sandbox)" in short
    assert exit_code(["params", "check", SANDBOX, "--full"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["target"]["name"] == "sandbox" and "policy" in full


def test_params_check_resolve_names_a_reference_that_does_not_resolve(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    missing = (Path(SANDBOX).parent / "../.sandbox/secrets/nothing-here").resolve()
    assert exit_code(["params", "check", SANDBOX, "--resolve", "-p",
                      f"target.databases.legacy.password=file:{missing}"]) == 2
    err = capsys.readouterr().err
    assert f"target.databases.legacy.password: file:{missing}: cannot read" in err


def test_describe_names_the_sections_a_runbook_reads_and_what_each_step_changes() -> None:
    from runbook_lib import books
    from runbook_lib.run.book import describe

    phase2 = describe(books.load("phase2_migration"))
    assert phase2["mutating"] and {"migration", "backup", "target.patroni"} <= set(phase2["parameters"])
    steps = {s["name"]: s for s in phase2["steps"]}
    assert steps["cutover"]["changes"] and "parameters name the migration" in steps["cutover"]["needs"]
    assert steps["signoff_gate"]["gate"] and not steps["signoff_gate"]["changes"]
    status = describe(books.load("status"))
    assert not status["mutating"] and not any(s["changes"] for s in status["steps"])


@pytest.mark.parametrize(("steps", "refused"), [
    ([("signoff_gate", False, "failed", True)], True),  # a gate said no: nothing ran
    ([("gate", False, "ok", False), ("change", True, "failed", True)], True),  # a guard refused the first change
    ([("change", True, "ok", False), ("later", False, "failed", True)], False),  # something changed before
    ([("change", True, "skipped", False), ("gate", False, "failed", True)], False),  # ... in the resumed run
    ([("check", False, "failed", False)], False),  # a finding, not a refusal
])
def test_refused_means_a_gate_or_guard_said_no_before_any_change(steps: list[tuple[str, bool, str, bool]],
                                                                  refused: bool, tmp_path: Path) -> None:
    from runbook_lib.run import runner

    (tmp_path / "journal.jsonl").write_text("".join(
        json.dumps({"event": "step", "name": n, "mutating": m, "status": s, "refusal": r}) + "\n"
        for n, m, s, r in steps))
    assert runner.refused_before_any_change(tmp_path) is refused


def test_a_refusal_after_a_resumed_run_began_a_change_is_not_refused_before_any_change(tmp_path: Path) -> None:
    from runbook_lib.run import runner

    earlier, now = tmp_path / "earlier", tmp_path / "now"
    earlier.mkdir()
    now.mkdir()
    (earlier / "journal.jsonl").write_text(json.dumps({"event": "step_start", "name": "cutover", "mutating": True,
                                                        "plan": False}) + "\n")  # its kernel died inside
    (now / "journal.jsonl").write_text(json.dumps({"event": "step", "name": "window_check", "mutating": False,
                                                    "status": "failed", "refusal": True}) + "\n")
    assert runner.refused_before_any_change(now)
    assert not runner.refused_before_any_change(now, earlier)


def test_params_check_for_a_runbook_names_a_needed_section_that_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    local = str(Path(SANDBOX).parent / "local.yaml")
    assert exit_code(["params", "check", local, "--for", "phase2_migration"]) == 2
    err = capsys.readouterr().err
    assert "migration" in err and "MISSING: steps preflight" in err
    assert exit_code(["params", "check", SANDBOX, "--for", "readiness"]) == 0
    err = capsys.readouterr().err
    assert "sections readiness reads" in err and "MISSING" not in err
    assert exit_code(["params", "check", SANDBOX, "--for", "no_such_book"]) == 2


def test_the_production_example_holds_every_section_each_runbook_needs(capsys: pytest.CaptureFixture[str]) -> None:
    from runbook_lib import books

    example = str(Path(SANDBOX).parent / "production.example.yaml")
    window = ["-p", "window.start=2026-12-12T22:00:00Z", "-p", "window.end=2026-12-13T02:00:00Z"]
    for name in books.BOOKS:
        assert exit_code(["params", "check", example, "--for", name, *window]) == 0, capsys.readouterr().err
    assert exit_code(["params", "check", example, "--for", "phase1_pre_migration"]) == 2  # the window is per campaign
    assert "window" in capsys.readouterr().err
