"""Campaign records: facts one runbook leaves for another (readiness, baseline, load test, drills, sign-offs).

outputs/<campaign>/records/<kind>.json holds the latest record of a kind, with the
run that wrote it and a content hash; earlier versions stay beside it, numbered.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runbook_lib import redact
from runbook_lib.steps import json_safe


def content_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(json_safe(data), sort_keys=True).encode()).hexdigest()


def save(campaign_dir: Path, kind: str, data: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    folder = campaign_dir / "records"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "recorded_at": datetime.now(timezone.utc).isoformat(), "run_id": run_id,
              "data": redact.obj(json_safe(data))}
    record["sha256"] = content_hash(record["data"])
    path = folder / f"{kind}.json"
    if path.exists():
        n = len(list(folder.glob(f"{kind}.*.json"))) + 1
        path.rename(folder / f"{kind}.{n}.json")
    path.write_text(json.dumps(record, indent=2, sort_keys=True))
    return record


def latest(campaign_dir: Path | None, kind: str) -> dict[str, Any] | None:
    if campaign_dir is None:
        return None
    path = campaign_dir / "records" / f"{kind}.json"
    return json.loads(path.read_text()) if path.exists() else None


def age_seconds(record: dict[str, Any]) -> float:
    return (datetime.now(timezone.utc) - datetime.fromisoformat(record["recorded_at"])).total_seconds()
