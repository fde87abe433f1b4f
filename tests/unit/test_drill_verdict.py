"""A failover drill is judged by its bounds (writes back within drills.rto_max, the old leader streaming
again), and a switchover goes to a replica Patroni accepts."""

from __future__ import annotations

from dataclasses import replace

from runbook_lib.clients import patroni
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


def _member(name: str, role: str, state: str) -> dict[str, str]:
    return {"name": name, "role": role, "state": state}


def test_in_synchronous_mode_only_the_synchronous_standby_may_take_over() -> None:
    # Patroni refuses (HTTP 412) any other switchover candidate, and promotes no other on a failover
    members = [_member("pg1", "leader", "running"), _member("pg2", "replica", "streaming"),
               _member("pg3", "sync_standby", "streaming")]
    assert patroni.switchover_candidates(members, True) == ["pg3"]
    assert patroni.switchover_candidates(members, False) == ["pg2", "pg3"]


def test_in_quorum_mode_a_quorum_standby_may_take_over() -> None:
    members = [_member("a", "replica", "streaming"), _member("b", "quorum_standby", "streaming"),
               _member("c", "leader", "running")]
    assert patroni.switchover_candidates(members, "quorum") == ["b"]


def test_without_synchronous_mode_any_streaming_replica_may_take_over() -> None:
    members = [_member("pg1", "leader", "running"), _member("pg2", "replica", "starting"),
               _member("pg3", "replica", "streaming")]
    assert patroni.switchover_candidates(members) == ["pg3"]


def test_a_synchronous_cluster_whose_standby_does_not_stream_has_no_candidate() -> None:
    # a new leader has not named its synchronous standby yet, or it stopped: a replica that streams is no
    # candidate (the drills wait for one, never try it)
    members = [_member("pg1", "leader", "running"), _member("pg2", "sync_standby", "stopped"),
               _member("pg3", "replica", "streaming")]
    assert patroni.switchover_candidates(members, True) == []


def test_no_candidate_without_a_streaming_replica() -> None:
    members = [_member("pg1", "leader", "running"), _member("pg2", "replica", "stopped")]
    assert patroni.switchover_candidates(members) == []
