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
