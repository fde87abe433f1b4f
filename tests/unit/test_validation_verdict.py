"""The 72-hour verdict rule and the schedule's stopping rule, without a server."""

from __future__ import annotations

import time

from runbook_lib.books.validation import Criterion, verdict
from runbook_lib.run import runner, schedule

H = 3600.0


def crit(name: str, ok: bool | None) -> Criterion:
    return Criterion(name, 1.0 if ok is not None else None, "<= 1", ok, "test")


def test_no_final_verdict_before_the_window_is_complete() -> None:
    state, why = verdict([crit("error_rate", True), crit("latency_p95", False)], 10 * H, 72 * H)
    assert state == "IN PROGRESS" and "10.0 h of 72 h" in why and "breached so far: latency_p95" in why
    assert verdict([crit("error_rate", True)], 71.9 * H, 72 * H)[0] == "IN PROGRESS"


def test_a_complete_window_passes_only_when_every_criterion_held_and_none_is_missing() -> None:
    assert verdict([crit("a", True), crit("b", True)], 72 * H, 72 * H)[0] == "PASS"
    state, why = verdict([crit("a", True), crit("b", False), crit("c", None)], 80 * H, 72 * H)
    assert state == "FAIL" and why.endswith("failing: b")
    state, why = verdict([crit("a", True), crit("cost_within_projection", None)], 72 * H, 72 * H)
    assert state == "INCOMPLETE" and "cost_within_projection" in why


def test_the_schedule_stops_at_a_refusal_and_rejects_a_bad_interval(tmp_path) -> None:  # noqa: ANN001
    started = time.monotonic()
    reports = schedule.repeat("no_such_runbook", "parameters/sandbox.yaml", every=30, until=3600,
                              outputs_dir=tmp_path, echo=False)
    assert [r.exit_code for r in reports] == [runner.EXIT_BAD_INPUT] and time.monotonic() - started < 25
    try:
        schedule.repeat("status", "parameters/sandbox.yaml", every=0, until=10)
    except ValueError as exc:
        assert "--every must be positive" in str(exc)
    else:
        raise AssertionError("a zero interval was accepted")


def test_the_cli_refuses_a_half_or_bad_schedule_before_anything_runs(tmp_path, capsys) -> None:  # noqa: ANN001
    from runbook_lib import cli

    base = ["run", "status", "--params", "parameters/sandbox.yaml", "--outputs", str(tmp_path)]
    for extra, says in ((["--every", "6h"], "go together"), (["--every", "6h", "--until", "72h", "--resume", "x"],
                                                             "not with --resume"),
                        (["--every", "soon", "--until", "72h"], "expected a duration")):
        assert cli.main(base + extra) == runner.EXIT_BAD_INPUT
        assert says in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was archived


def _starts(monkeypatch, run_s: float, every: float, until: float) -> list[float]:  # noqa: ANN001
    """When each run of a schedule started, with runs that take run_s (runner.run stands in for papermill)."""
    starts: list[float] = []
    first = time.monotonic()

    def fake_run(*_: object, **__: object) -> runner.RunReport:
        starts.append(round(time.monotonic() - first, 2))
        time.sleep(run_s)
        return runner.RunReport(0)

    monkeypatch.setattr(runner, "run", fake_run)
    schedule.repeat("validation", "p.yaml", every=every, until=until)
    return starts


def test_the_schedule_keeps_its_slots_skips_overrun_ones_and_always_runs_the_last(monkeypatch) -> None:  # noqa: ANN001
    on_time = _starts(monkeypatch, 0.01, every=0.2, until=0.65)
    assert len(on_time) == 4 and all(abs(t - 0.2 * i) < 0.1 for i, t in enumerate(on_time)), on_time
    overrun = _starts(monkeypatch, 0.5, every=0.2, until=0.65)  # slots 0.2 and 0.4 overrun: skipped, no burst
    assert len(overrun) == 2 and abs(overrun[1] - 0.6) < 0.1, overrun
    last_overrun = _starts(monkeypatch, 1.0, every=0.2, until=0.65)  # every slot overrun: the last runs at once
    assert len(last_overrun) == 2 and abs(last_overrun[1] - 1.0) < 0.15, last_overrun


def test_the_policy_limits_are_strict_the_limit_itself_fails() -> None:
    from runbook_lib.books.validation import within

    assert within(0.0049, 0.005, strict=True) and not within(0.005, 0.005, strict=True)  # "< 0.5 %"
    assert within(0, 0) and not within(1, 0)  # "0 unplanned failovers": a count, the limit is allowed
    assert within(0.99, 0.99, most=False) and not within(0.98, 0.99, most=False)  # ">= 99 % monitored"


def test_the_sliding_windows_are_valid_promql_durations() -> None:
    """PromQL takes no fractional durations: a 12-minute window's twelfth is rounded, not 60.58s."""
    import re

    from runbook_lib.promql.expressions import worst_error_rate, worst_p95

    for span in (727.4, 60, 3600, 5000.7):
        for expr in (worst_p95("b", span, "72h"), worst_error_rate("e", "r", span, "72h")):
            durations = re.findall(r"\[([^\]]+)\]", expr)
            assert durations and all(re.fullmatch(r"(\d+[smhd])+(:(\d+[smhd])+)?", d) for d in durations), expr
