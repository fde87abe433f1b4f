"""One runbook run again and again on a schedule (the 72-hour validation): every run is a full
papermill run with its own archive folder, so the schedule leaves an audit trail by itself."""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runbook_lib.config.params import Params
from runbook_lib.run import runinfo, runner
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


# ---------------------------------------------------------------- entries for systemd timers or cron

@dataclass(frozen=True)
class Entry:
    """One scheduled runbook run (or a manual task) at fixed times: what a timer or a cron line starts."""

    name: str  # unit name, e.g. runbook-week1-day3-failover
    times: tuple[datetime, ...]
    argv: tuple[str, ...]  # empty: a manual task, printed, not scheduled
    note: str = ""


# what each day of the policy's week-one calendar runs: (runbook, extra overrides, note)
WEEK_ONE = {
    "baseline_established": ("load_test", (), "the baseline the week is measured against"),
    "load_test_plus_50_percent": ("load_test", ("concurrency+50%",), "the load test at 1.5 x the concurrency"),
    "failover": ("failover_drill", (), "automatic failover and manual switchover, announced as planned"),
    "backup_restore": ("", (), "backup and restore test: run phase 1's backup, verify and restore test steps "
                               "(`runbook run phase1_pre_migration --plan` shows them); no runbook runs it alone"),
    "security_audit": ("readiness", (), "the readiness checklist as the security audit"),
    "performance_review": ("validation", (), "a validation checkpoint: every success criterion so far"),
    "incident_response": ("", (), "an incident-response exercise with the on-call team (people, not a runbook)"),
}


def week_one(params: Params, params_path: str, campaign: str, start: datetime, runbook: str) -> list[Entry]:
    """The policy's week-one calendar as one entry per day, day 1 at `start`."""
    entries = []
    for day in params.policy.week_one_drills:
        book, extra, note = WEEK_ONE.get(day.drill, ("", (), f"{day.drill}: no runbook is mapped to it"))
        at = start + timedelta(days=day.day - 1)
        overrides: list[str] = []
        if "concurrency+50%" in extra:
            if params.target.workload is None:
                note += " (target.workload is not set: the load test will refuse)"
            else:
                overrides += ["-p", f"target.workload.concurrency={math.ceil(params.target.workload.concurrency * 1.5)}"]
        argv = (runbook, "run", book, "--params", str(Path(params_path).resolve()), "--campaign", campaign,
                "--notify-on-failure", *overrides) if book else ()
        entries.append(Entry(f"runbook-week1-day{day.day}-{day.drill.replace('_', '-')}", (at,), argv,
                             f"day {day.day}: {note}"))
    return entries


def every(name: str, params_path: str, campaign: str, start: datetime, interval: float, until: float,
          runbook: str) -> Entry:
    """`runbook run NAME` every `interval` seconds for `until` seconds from `start` (its last slot included)."""
    count = math.floor(until / interval) + 1
    times = tuple(start + timedelta(seconds=interval * i) for i in range(count))
    return Entry(f"runbook-{name}-every", times, (runbook, "run", name, "--params", str(Path(params_path).resolve()),
                                                 "--campaign", campaign, "--notify-on-failure"), f"{name} {count} times")


def systemd_units(entry: Entry) -> dict[str, str]:
    """A oneshot service and its timer (one OnCalendar line per time, Persistent so a missed one runs late)."""
    calendar = "\n".join(f"OnCalendar={t.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" for t in entry.times)
    service = (f"[Unit]\nDescription={entry.note}\n\n[Service]\nType=oneshot\n"
               f"WorkingDirectory={runinfo.project_root()}\nExecStart={shlex.join(entry.argv)}\n")
    timer = (f"[Unit]\nDescription=timer of {entry.name}: {entry.note}\n\n[Timer]\n{calendar}\nPersistent=true\n"
             f"\n[Install]\nWantedBy=timers.target\n")
    return {f"{entry.name}.service": service, f"{entry.name}.timer": timer}


def cron_lines(entry: Entry) -> list[str]:
    """One crontab line per time; cron has no year, so each line checks it."""
    out = [f"# {entry.name}: {entry.note}"]
    for t in entry.times:
        t = t.astimezone(UTC)
        out.append(f"{t.minute} {t.hour} {t.day} {t.month} * [ \"$(date -u +\\%Y)\" = {t.year} ] && "
                   f"cd {shlex.quote(str(runinfo.project_root()))} && {shlex.join(entry.argv)}")
    return out
