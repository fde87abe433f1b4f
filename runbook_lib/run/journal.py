"""The run journal: one JSON line per event, appended as the run goes.

The journal is what resume reads and what the manifest summarises; every line
is redacted before it is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runbook_lib.config import redact
from runbook_lib.run.step import COMPLETED, StepResult
from runbook_lib.values import json_safe, now

JOURNAL = "journal.jsonl"


class Journal:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / JOURNAL

    def append(self, event: str, **fields: Any) -> None:
        manifest = self.path.parent / "manifest.json"
        if manifest.exists() and '"sealed": true' in manifest.read_text():
            raise RuntimeError(f"run {self.path.parent.name} is sealed in the archive; start a new run")
        record = redact.obj(json_safe({"ts": now().isoformat(), "event": event, **fields}))
        line = json.dumps(record, sort_keys=True)
        with self.path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def record_step(self, result: StepResult) -> None:
        self.append("step", **result.to_record())

    def events(self) -> Iterator[dict[str, Any]]:
        return read_events(self.path)


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return iter(())
    lines = path.read_text().splitlines()
    return (json.loads(line) for line in lines if line.strip())


def completed_steps(path: Path) -> dict[str, dict[str, Any]]:
    """Steps that completed in a journal (latest record wins), keyed by step name."""
    done: dict[str, dict[str, Any]] = {}
    for event in read_events(path):
        if event.get("event") != "step":
            continue
        if event["status"] in COMPLETED or event.get("recorded_in"):
            done[event["name"]] = event
        else:
            done.pop(event["name"], None)
    return done


def step_records(path: Path) -> list[dict[str, Any]]:
    """The last record of each step, in first-seen order: what the manifest lists."""
    latest: dict[str, dict[str, Any]] = {}
    for event in read_events(path):
        if event.get("event") == "step":
            latest[event["name"]] = event
    return list(latest.values())
