"""The 72-hour verdict rule and the schedule's stopping rule, without a server."""

from __future__ import annotations

import time

from runbook_lib import runner, schedule
from runbook_lib.validation import Criterion, verdict

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
