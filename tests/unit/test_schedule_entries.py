"""The week-one calendar and repeated runs as timer and cron entries: pure logic."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from runbook_lib.config.params import load_params
from runbook_lib.run import schedule

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "parameters" / "sandbox.yaml"
START = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def test_week_one_follows_the_policy_calendar() -> None:
    entries = schedule.week_one(load_params(PARAMS), str(PARAMS), "c", START, "runbook")
    by_day = {e.name.split("-")[2]: e for e in entries}
    assert sorted(by_day) == [f"day{d}" for d in range(1, 8)]
    assert by_day["day3"].argv[2] == "failover_drill" and by_day["day3"].times == (datetime(2026, 12, 9, 10, 0, tzinfo=UTC),)
    assert by_day["day2"].argv[-1] == "target.workload.concurrency=6"  # 1.5 x the sandbox's 4
    assert by_day["day5"].argv[2] == "readiness" and by_day["day6"].argv[2] == "validation"
    assert by_day["day4"].argv == () and by_day["day7"].argv == ()  # manual, named, not silently dropped
    assert all("--campaign" in e.argv and "c" in e.argv for e in entries if e.argv)


def test_every_includes_its_last_slot_and_renders_for_systemd_and_cron() -> None:
    entry = schedule.every("validation", str(PARAMS), "c", START, 6 * 3600, 72 * 3600, "runbook")
    assert len(entry.times) == 13 and entry.times[-1] == datetime(2026, 12, 10, 10, 0, tzinfo=UTC)
    units = schedule.systemd_units(entry)
    timer = units["runbook-validation-every.timer"]
    assert timer.count("OnCalendar=") == 13 and "OnCalendar=2026-12-10 10:00:00 UTC" in timer
    assert "ExecStart=runbook run validation --params" in units["runbook-validation-every.service"]
    lines = schedule.cron_lines(entry)
    assert len(lines) == 14 and lines[1].startswith("0 10 7 12 * ") and "= 2026 ]" in lines[1]


def test_cli_refuses_a_half_schedule_and_prints_a_whole_one() -> None:
    cli = [sys.executable, "-m", "runbook_lib.cli", "schedule"]
    bad = subprocess.run([*cli, "every", "validation", "--params", str(PARAMS), "--every", "6h"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--every and --until" in bad.stderr
    good = subprocess.run([*cli, "every", "validation", "--params", str(PARAMS), "--every", "6h", "--until", "12h",
                           "--start", "2026-12-07T10:00:00+00:00", "--format", "cron"], capture_output=True, text=True,
                          timeout=60)
    assert good.returncode == 0, good.stderr
    assert good.stdout.count("runbook run validation") == 3
