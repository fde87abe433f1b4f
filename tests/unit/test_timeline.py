"""The campaign page's timeline from manifests alone: a bar per run coloured by outcome, the reason on hover,
the moves of traffic marked, the readiness score as a line."""

from __future__ import annotations

import re

from runbook_lib.run import timeline


def manifest(runbook: str, status: str, start: str, end: str, message: str = "") -> dict:
    return {"runbook": runbook, "run_id": f"{start}-{runbook}", "status": status, "message": message,
            "started": f"2026-12-06T{start}+00:00", "finished": f"2026-12-06T{end}+00:00"}


RUNS = [manifest("readiness", "succeeded", "10:00:00", "10:00:05"),
        manifest("phase2_migration", "failed", "10:01:00", "10:01:20", "preflight: public.t (unlogged)"),
        manifest("phase2_migration", "succeeded", "10:02:00", "10:02:40"),
        manifest("rollback", "succeeded", "10:05:00", "10:05:04"),
        {"runbook": "status", "run_id": "broken", "status": "kernel-died"}]  # no start: not drawn


def test_each_run_is_a_bar_on_its_runbooks_row_coloured_by_outcome() -> None:
    page = timeline.svg(RUNS, ["readiness", "phase2_migration", "rollback"])
    bars = re.findall(r"<rect class='run-bar'[^>]*fill='(#[0-9a-f]+)'><title>([^<]*)</title>", page)
    assert [colour for colour, _ in bars] == ["#1a7f37", "#cf222e", "#1a7f37", "#1a7f37"]
    assert "failed: preflight: public.t (unlogged)" in bars[1][1]
    rows = re.findall(r"<text x='4' y='\d+'>([a-z0-9_]+)</text>", page)
    assert rows == ["readiness", "phase2_migration", "rollback"]


def test_the_moves_of_traffic_are_marked_where_they_ended() -> None:
    assert [label for _, label in timeline.marks(RUNS)] == ["cutover", "rollback"]  # not the failed phase 2
    page = timeline.svg(RUNS, [])
    assert page.count("class='mark-cutover'") == 1 and page.count("class='mark-rollback'") == 1
    assert timeline.svg([], []) == ""


def test_the_readiness_trend_needs_two_points() -> None:
    assert timeline.trend([("2026-12-06T10:00:00+00:00", 0.8)], "t") == ""
    line = timeline.trend([("2026-12-06T10:00:00+00:00", 0.8), ("2026-12-06T11:00:00+00:00", 1.0)], "t")
    assert line.count("<circle") == 2 and "<title>0.80</title>" in line and "<title>1.00</title>" in line


def test_the_validation_trend_shows_each_criterion_at_each_checkpoint() -> None:
    first = [{"name": "error_rate", "observed": 0.001, "status": "pass"},
             {"name": "replication_lag_s", "observed": None, "status": "missing"}]
    second = [{"name": "error_rate", "observed": 0.0712, "status": "fail"},
              {"name": "replication_lag_s", "observed": 0.4, "status": "pass"},
              {"name": "dr_procedures_tested", "observed": True, "status": "pass"}]
    grid = timeline.status_grid([("2026-12-06T10:00:00+00:00", "IN PROGRESS", first),
                                 ("2026-12-06T16:00:00+00:00", "FAIL", second)], "v")
    rows = re.findall(r"<tr><th>([a-z_]+)</th>(<td.*?)</tr>", grid)
    assert [name for name, _ in rows] == ["error_rate", "replication_lag_s", "dr_procedures_tested"]
    cells = {name: re.findall(r"<td(?: class='(\w+)')?[^>]*>([^<]*)</td>", body) for name, body in rows}
    assert cells["error_rate"] == [("pass", "0.001"), ("fail", "0.0712")]  # the breach shows where it was seen
    assert cells["replication_lag_s"] == [("missing", "missing"), ("pass", "0.4")]
    assert cells["dr_procedures_tested"] == [("", ""), ("pass", "True")]  # not yet a criterion at the first
    assert "2026-12-06 16:00<br>FAIL" in grid
    assert timeline.status_grid([], "v") == ""


def test_the_validation_trend_escapes_what_a_journal_holds() -> None:
    rows = [{"name": "<script>x</script>", "observed": None, "status": "<img src=x onerror=alert(1)>"},
            {"observed": 1}, "not a row", {"name": 7, "observed": 0.5, "status": "pass"}]
    grid = timeline.status_grid([("2026-12-06T10:00:00+00:00", "<b>FAIL</b>", rows)], "v")
    assert "<script>" not in grid and "<img" not in grid and "<b>FAIL" not in grid
    assert "&lt;script&gt;" in grid and "&lt;img" in grid and "<th>7</th>" in grid
