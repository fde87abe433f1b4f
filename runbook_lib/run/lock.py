"""One mutating run per target at a time.

An exclusive flock on <lock dir>/<target>.lock (~/.cache/runbook/locks), held for the run; the file
names the holder so a refused run can say who has the target. The kernel holds
nothing of its own when the runner already holds the lock for it; a crashed
holder releases the lock with its process.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from runbook_lib.errors import RunbookError


class TargetLocked(RunbookError):
    """Another mutating run holds the target."""

    def __init__(self, target: str, holder: dict[str, Any]) -> None:
        self.holder = holder
        who = ", ".join(f"{k} {v}" for k, v in holder.items()) or "unknown holder"
        super().__init__(f"target {target} is locked by another mutating run ({who}); "
                         "wait for it to finish or stop it before starting another")


def lock_dir() -> Path:
    """One place per machine, whatever archive folder a run writes to."""
    return Path(os.environ.get("RUNBOOK_LOCK_DIR", Path.home() / ".cache" / "runbook" / "locks"))


class TargetLock:
    def __init__(self, target: str) -> None:
        self.target = target
        self.path = lock_dir() / f"{target}.lock"
        self._fd: int | None = None

    def acquire(self, holder: dict[str, Any]) -> None:
        if os.environ.get("RUNBOOK_LOCK_HELD") == f"{self.target}:{holder.get('run_id')}":
            return  # the runner holds it on this run's behalf
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TargetLocked(self.target, self.holder()) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        os.fsync(fd)
        self._fd = fd

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> TargetLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
