"""One runbook run again and again on a schedule (the 72-hour validation): every run is a full
papermill run with its own archive folder, so the schedule leaves an audit trail by itself."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from runbook_lib.run import runner
from runbook_lib.run.runner import RunReport


def repeat(name: str, params_path: str, every: float, until: float,
           on_report: Callable[[RunReport], None] | None = None, **run_kw: Any) -> list[RunReport]:
    """Run now, then every `every` seconds while the next start lies within `until` of the first.

    A run that overruns its slots is followed at once by one run, and the slots it overran are
    skipped (no burst), but the schedule's last slot always runs; input refused before anything ran (exit 2) ends the schedule, as every later
    run would be refused the same way.
    """
    if every <= 0 or until < 0:
        raise ValueError(f"--every must be positive and --until not negative (got {every:g} s and {until:g} s)")
    first = time.monotonic()
    reports: list[RunReport] = []
    slot = 0
    while True:
        report = runner.run(name, params_path, **run_kw)
        reports.append(report)
        if on_report:
            on_report(report)
        if report.exit_code == runner.EXIT_BAD_INPUT:
            break
        due = slot + 1
        slot = max(due, math.ceil((time.monotonic() - first) / every))
        if slot * every > until:
            if due * every > until:
                break
            slot = math.floor(until / every)  # the last slot was overrun: it still runs, once, at once
        delay = first + slot * every - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return reports
