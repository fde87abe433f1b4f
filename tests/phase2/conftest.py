"""What the phase 2 tests share: a signed campaign, the sandbox put back to legacy after each test, helpers."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest

from runbook_lib.clients import pgbouncer, postgres, swarm
from runbook_lib.config.params import Params
from runbook_lib.ops import cutover, fallback, migration, writeprobe
from runbook_lib.run import runner
from runbook_lib.sandbox import docker_cli, health
from tests import campaign

LEGACY = ("127.0.0.1", 25432)


@pytest.fixture(scope="module")
def signed(sandbox_params_file: Path, ready_campaign: Path) -> Path:
    return campaign.signed(sandbox_params_file, ready_campaign)


def pgbouncer_task(params: Params) -> str | None:
    """The container id of PgBouncer's running task once its console answers (None: not yet)."""
    r = migration.route(params)
    try:
        cutover.serving(r)
        return swarm.running_container(r.swarm, swarm.for_target(r.swarm).services.get(r.pooler.service)).id
    except Exception:  # noqa: BLE001 - no running task yet, or its console not listening yet
        return None


def pgbouncer_answers(params: Params, timeout: float = 120, replacing: str | None = None) -> str:
    """Wait (bounded) for a PgBouncer task other than `replacing` whose console answers; its container id.

    A task Swarm replaced (it exited, or failed its health check on a loaded machine) takes seconds to start.
    On timeout the error carries the service's last task error and log lines, which a CI log otherwise lacks.
    """
    found: list[str] = []

    def up() -> bool:
        task = pgbouncer_task(params)
        found.extend([task] if task and task != replacing else [])
        return bool(found)

    try:
        wait_until("PgBouncer's console to answer", up, timeout)
    except AssertionError as exc:
        service = str(migration.route(params).pooler.service)
        logs = docker_cli.run("service", "logs", "--raw", "--tail", "30", service, check=False)
        raise AssertionError(f"{exc}; {service}'s last task error: {health.last_task_error(service) or 'none'}; "
                             f"its last log lines:\n{logs.stdout}{logs.stderr}") from None
    return found[0]


@pytest.fixture
def restore_legacy(request: pytest.FixtureRequest, sandbox_params: Params):  # noqa: ANN201
    """Whatever a test did, the sandbox goes back to legacy serving and an empty new cluster.

    A PgBouncer task Swarm replaced during a test that does not restart it on purpose (marker
    restarts_pgbouncer) is reported as a warning with its last task error: the test's checks after it ran
    on the new task, which reads its deployed config (legacy), so they no longer prove a give-back."""
    task = pgbouncer_answers(sandbox_params)
    yield
    r = migration.route(sandbox_params)
    if pgbouncer_answers(sandbox_params) != task and not request.node.get_closest_marker("restarts_pgbouncer"):
        why = health.last_task_error(str(r.pooler.service)) or "no task error recorded"
        warnings.warn(f"PgBouncer's task was replaced during {request.node.name} ({why})", stacklevel=1)
    fallback.to_legacy(r, accept_loss=True)
    fallback.clear_new(r)
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
    writeprobe.mark(params.endpoints.db("app-pool"), marker)


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


