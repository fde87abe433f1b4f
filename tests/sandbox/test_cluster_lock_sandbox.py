"""Two operators, two machines, one sandbox: a mutating run (finalize) is refused while another machine holds the
cluster's lock, naming the holder, and runs once the holder's process is gone."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from runbook_lib.run import runner
from tests.locks import hold_elsewhere

pytestmark = pytest.mark.sandbox


def test_a_mutating_run_is_refused_while_another_machine_holds_the_sandbox(
        sandbox_params_file: Path, sandbox_outputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = hold_elsewhere(sandbox_params_file, tmp_path / "machine-a")
    monkeypatch.setenv("RUNBOOK_LOCK_DIR", str(tmp_path / "machine-b"))
    try:
        refused = runner.run("finalize", str(sandbox_params_file), outputs_dir=sandbox_outputs, echo=False,
                             campaign="two-operators")
    finally:
        alice.send_signal(signal.SIGKILL)
        alice.wait(timeout=30)
    assert refused.exit_code == 2 and "alice@machine-a r-alice" in refused.message, refused.message
    # alice's process died: bob's run gets the cluster and goes on to finalize's own gate (no validation PASS in
    # this campaign), which refuses before any change
    done = runner.run("finalize", str(sandbox_params_file), outputs_dir=sandbox_outputs, echo=False,
                      campaign="two-operators")
    assert done.run_dir is not None and "alice" not in done.message, done.message
    assert "validation" in done.message.lower(), done.message
