"""The write probe's figures from a timeline of attempts (pure logic, no server)."""

from __future__ import annotations

import pandas as pd

from runbook_lib.ops import writeprobe


def timeline(ends: list[float], failed: int = 0) -> pd.DataFrame:
    rows = [{"start": e - 0.002, "end": e, "ok": True, "error": None} for e in ends]
    rows += [{"start": 1.0, "end": 1.1, "ok": False, "error": "paused"}] * failed
    return pd.DataFrame(rows, columns=["start", "end", "ok", "error"])


def test_two_pauses_are_counted_apart_and_together() -> None:
    steady = [i * 0.05 for i in range(20)]                   # 0.00 .. 0.95
    after_cut = [1.25 + i * 0.05 for i in range(20)]          # a 0.30 s gap (the cut)
    after_cutover = [3.20 + i * 0.05 for i in range(20)]      # a 1.00 s gap (the cutover)
    figures = writeprobe.figures(timeline(steady + after_cut + after_cutover, failed=1), interval=0.05)
    assert figures["write_unavailable_s"] == 0.95             # the longest, less one interval
    assert figures["write_unavailable_total_s"] == 1.2        # 0.25 + 0.95
    assert figures["unavailable_spans"] == 2
    assert figures["attempts"] == 61 and figures["failed_writes"] == 1


def test_jitter_is_not_an_outage() -> None:
    ends = [i * 0.05 + (0.03 if i % 7 == 0 else 0) for i in range(100)]
    figures = writeprobe.figures(timeline(ends), interval=0.05)
    assert figures["unavailable_spans"] == 0 and figures["write_unavailable_total_s"] == 0


def test_no_data_is_reported_as_none() -> None:
    figures = writeprobe.figures(timeline([]))
    assert figures["write_unavailable_s"] is None and figures["unavailable_spans"] == 0


def test_the_gap_across_a_pause_is_measured_from_the_writes_on_each_side() -> None:
    ends = [i * 0.05 for i in range(20)] + [1.25 + i * 0.05 for i in range(20)]  # 0.95 .. 1.25: a 0.30 s gap
    frame = timeline(ends, failed=1)  # the failed write started at 1.0, inside the gap
    assert writeprobe.gap_across(frame, paused=1.0, resumed=1.2) == {"probe_longest_gap_s": 0.25,
                                                                      "probe_failed_writes": 1}
    assert writeprobe.gap_across(frame, paused=0.4, resumed=0.45) == {"probe_longest_gap_s": 0.0,
                                                                       "probe_failed_writes": 0}
    assert writeprobe.gap_across(frame, paused=2.5, resumed=2.6) == {}  # no write after it yet
