"""What the phase 2 tests share: a signed campaign, the sandbox put back to legacy after each test, helpers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.config.params import Params
from runbook_lib.ops import fallback, migration
from runbook_lib.run import runner
from tests import campaign

LEGACY = ("127.0.0.1", 25432)


@pytest.fixture(scope="module")
def signed(sandbox_params_file: Path, ready_campaign: Path) -> Path:
    return campaign.signed(sandbox_params_file, ready_campaign)


@pytest.fixture
def restore_legacy(sandbox_params: Params):  # noqa: ANN201
    """Whatever a test did, the sandbox goes back to legacy serving and an empty new cluster."""
    yield
    fallback.to_legacy(migration.route(sandbox_params), accept_loss=True)
    fallback.clear_new(migration.route(sandbox_params))
    assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY


def manifest_steps(run_dir: Path) -> dict[str, dict]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {s["name"]: s for s in manifest["steps"]}


def step_evidence(run_dir: Path, name: str) -> list[dict]:
    """A step's evidence rows as the journal recorded them (the manifest keeps summaries only)."""
    for line in (run_dir / "journal.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "step" and event.get("name") == name:
            return event.get("evidence") or []
    raise AssertionError(f"no step {name} in the journal")


def write_through_pool(params: Params, marker: str) -> None:
    with postgres.connect(params.endpoints.db("app-pool")) as conn:
        postgres.query(conn, "INSERT INTO rollout_write_probe (run_id) VALUES (%s)", [marker])


def count_marker(params: Params, endpoint: str, marker: str) -> int:
    with postgres.connect(params.endpoints.db(endpoint)) as conn:
        return postgres.scalar(conn, "SELECT count(*) FROM rollout_write_probe WHERE run_id = %s", [marker])


def wait_until(what: str, check, timeout: float = 30) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def rollback_run(params_file: Path, signed: Path, *overrides: str) -> runner.RunReport:
    return runner.run("rollback", str(params_file), outputs_dir=signed.parent, echo=False, campaign=signed.name,
                      overrides=list(overrides))


