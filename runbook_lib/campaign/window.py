"""The maintenance window: locked by phase 1 into the campaign, enforced by the migration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_lib.campaign import records


def lock(campaign_dir: Path, start: datetime, end: datetime, run_id: str | None) -> dict[str, Any]:
    return records.save(campaign_dir, "window", {"start": start.isoformat(), "end": end.isoformat()}, run_id)


def locked(campaign_dir: Path) -> tuple[datetime, datetime] | None:
    record = records.latest(campaign_dir, "window")
    if record is None:
        return None
    return datetime.fromisoformat(record["data"]["start"]), datetime.fromisoformat(record["data"]["end"])


def outside(campaign_dir: Path, at: datetime | None = None) -> str | None:
    """None inside the locked window, else why not (no window, too early, too late)."""
    window = locked(campaign_dir)
    at = at or datetime.now(UTC)
    if window is None:
        return "no maintenance window is locked in this campaign (phase 1 locks it)"
    start, end = window
    if at < start:
        return f"the window opens at {start.isoformat()} ({(start - at).total_seconds() / 60:.0f} min from now)"
    if at > end:
        return f"the window closed at {end.isoformat()}"
    return None
