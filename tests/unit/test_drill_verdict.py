"""A failover drill is judged by its bounds: writes back within drills.rto_max, the old leader streaming again."""

from __future__ import annotations

from dataclasses import replace

from runbook_lib.config.params import Drills
from runbook_lib.ops.drills import DrillResult, verdict


def result(back: float | None, rejoined: bool = True, lost: int | None = 0) -> DrillResult:
    return DrillResult("automatic", rejoined, "pg1", "pg2", 3.1, back, rejoined, writes_acknowledged=250,
                       writes_lost=lost)


def test_a_drill_within_its_bounds_passes() -> None:
    judged = verdict(result(7.5), Drills().rto_max)
    assert judged.passed and judged.note == ""


def test_writes_back_too_late_or_never_fail_the_drill_naming_the_bound() -> None:
    late = verdict(result(75.0), 60.0)
    assert not late.passed and late.note == "writes back after 75.0 s, over drills.rto_max 60 s"
    assert not verdict(result(None), 60.0).passed


def test_a_member_that_does_not_rejoin_fails_the_drill() -> None:
    stuck = verdict(result(5.0, rejoined=False), 60.0)
    assert not stuck.passed and "did not stream again" in stuck.note and "rto_max" not in stuck.note


def test_acknowledged_writes_lost_past_the_bound_fail_the_drill() -> None:
    assert verdict(result(5.0, lost=2), 60.0, rpo_max_rows=2).passed
    lossy = verdict(result(5.0, lost=3), 60.0, rpo_max_rows=2)
    assert not lossy.passed and lossy.note == "3 acknowledged write(s) lost, over drills.rpo_max_rows 2"


def test_a_loss_that_was_not_measured_fails_the_drill_and_says_why() -> None:
    unmeasured = verdict(replace(result(5.0, lost=None), note="no table for the drill's writes in postgres: denied"),
                         60.0)
    assert not unmeasured.passed and unmeasured.note == ("the writes lost were not measured (no table for the "
                                                         "drill's writes in postgres: denied)")
