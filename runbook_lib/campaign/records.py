"""Campaign records: facts one runbook leaves for another (readiness, baseline, load test, drills, sign-offs).

outputs/<campaign>/records/<kind>.json holds the latest record of a kind, with the
run that wrote it and a content hash; earlier versions stay beside it, numbered.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_lib.config import redact
from runbook_lib.errors import RunbookError
from runbook_lib.values import json_safe


def content_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(json_safe(data), sort_keys=True).encode()).hexdigest()


class RecordError(RunbookError):
    """A record whose content no longer matches its hash: edited after it was written."""


def save(campaign_dir: Path, kind: str, data: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    folder = campaign_dir / "records"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "recorded_at": datetime.now(UTC).isoformat(), "run_id": run_id,
              "data": redact.obj(json_safe(data))}
    record["sha256"] = content_hash(record["data"])
    path = folder / f"{kind}.json"
    with (folder / ".lock").open("a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if path.exists():  # keep the previous version beside it, never overwritten
            n = 1 + max((int(p.name.split(".")[-2]) for p in folder.glob(f"{kind}.*.json")), default=0)
            shutil.copyfile(path, folder / f"{kind}.{n}.json")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        tmp.replace(path)
    return record


def latest(campaign_dir: Path | None, kind: str) -> dict[str, Any] | None:
    """The newest record of a kind, its hash checked against its content."""
    if campaign_dir is None:
        return None
    path = campaign_dir / "records" / f"{kind}.json"
    return _checked(path) if path.exists() else None


def _checked(path: Path) -> dict[str, Any]:
    record = json.loads(path.read_text())
    if content_hash(record["data"]) != record.get("sha256"):
        raise RecordError(f"{path}: its content does not match its sha256; it was edited after it was written")
    return record


def age_seconds(record: dict[str, Any]) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(record["recorded_at"])).total_seconds()


def history(campaign_dir: Path, kind: str) -> list[dict[str, Any]]:
    """Every version of a kind, oldest first (the numbered copies, then the latest), hashes checked."""
    folder = campaign_dir / "records"
    if not folder.exists():
        return []
    numbered = sorted(folder.glob(f"{kind}.*.json"), key=lambda p: int(p.name.split(".")[-2]))
    newest = folder / f"{kind}.json"
    return [_checked(path) for path in numbered + ([newest] if newest.exists() else [])]
