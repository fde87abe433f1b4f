"""One operator at a time per cluster, whatever machine: the advisory lock on the target's database refuses a
second holder (another lock directory stands for another machine), names the first, and goes when the first
holder's process dies."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from runbook_lib.config.params import load_params
from runbook_lib.run import runner
from runbook_lib.run.lock import TargetLock, TargetLocked
from tests.integration.conftest import DRILL
from tests.locks import hold_elsewhere


def test_a_second_operator_elsewhere_is_refused_naming_the_first(params_file: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 outputs: Path, drill: Path) -> None:
    params = load_params(params_file)
    alice = hold_elsewhere(params_file, tmp_path / "machine-a")
    monkeypatch.setenv("RUNBOOK_LOCK_DIR", str(tmp_path / "machine-b"))  # bob's machine: its own lock files
    try:
        with pytest.raises(TargetLocked, match=r"held by runbook alice@machine-a r-alice"):
            TargetLock(params.target.name, params.lock_spec()).acquire({"operator": "bob", "host": "b", "run_id": "x"})
        refused = runner.run(str(DRILL), str(params_file), outputs_dir=outputs, echo=False)
        assert refused.exit_code == 2 and "alice@machine-a" in refused.message, refused.message
        assert not (outputs / "test").exists() or not list((outputs / "test").glob("*/drill.ipynb"))
    finally:
        alice.send_signal(signal.SIGKILL)  # the first holder dies without releasing anything
        alice.wait(timeout=30)
    deadline = time.monotonic() + 30  # its session ends, and the lock with it
    while True:
        try:
            with TargetLock(params.target.name, params.lock_spec()) as lock:
                lock.acquire({"operator": "bob", "host": "b", "run_id": "y"})
            break
        except TargetLocked:
            assert time.monotonic() < deadline, "the dead holder's lock was not released"
            time.sleep(0.5)
