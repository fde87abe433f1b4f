"""A lock holder on "another machine": a process with its own lock directory holding the cluster-wide lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HOLD = """
import sys, time
from runbook_lib.config.params import load_params
from runbook_lib.run.lock import TargetLock
p = load_params(sys.argv[1])
lock = TargetLock(p.target.name, p.lock_spec())  # kept: the lock lives as long as its connection
lock.acquire({"operator": "alice", "host": "machine-a", "run_id": "r-alice"})
print("held", flush=True)
time.sleep(600)
"""


def hold_elsewhere(params_file: Path, lock_dir: Path) -> subprocess.Popen[str]:
    """Alice, on machine-a, takes the target's lock and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(params_file)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "RUNBOOK_LOCK_DIR": str(lock_dir)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc
