"""Shared fixtures: a real PostgreSQL from the host's binaries and parameters files pointing at it."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest
import yaml

from runbook_lib.sandbox.localpg import LocalPostgres
from tests.failing_states import (  # noqa: F401 - the readiness coverage plugin, registered by this conftest
    _watch_readiness,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)

ARTIFACTS = Path(__file__).parent / "artifacts"


def pytest_configure(config: pytest.Config) -> None:
    """No failure report prints a frame's arguments or locals, whatever the command line asks: a driver's
    frame holds a resolved password (psycopg.connect's conninfo), and the report lands in CI logs."""
    config.option.showlocals = False
    if config.option.tbstyle in ("auto", "long"):
        config.option.tbstyle = "short"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def local_pg() -> LocalPostgres:
    # not under pytest's 0700 tmp tree: the server runs as the postgres user and must reach its files
    pg = LocalPostgres(Path(tempfile.mkdtemp(prefix="runbook-pg-")), port=free_port())
    pg.start()
    yield pg
    pg.destroy()


def write_params(path: Path, pg: LocalPostgres, **extra: object) -> Path:
    data = {
        "campaign": "test",
        "target": {"name": "localtest", "environment": "sandbox", "databases": {
            "main": {"host": "127.0.0.1", "port": pg.port, "user": "postgres",
                     "password": f"file:{pg.password_file}", "role": "primary"}}},
        "run": {"cell_timeout": 120},
        "secret_dirs": [str(pg.password_file.parent)],
    }
    data.update(extra)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def params_file(tmp_path: Path, local_pg: LocalPostgres) -> Path:
    return write_params(tmp_path / "params.yaml", local_pg)


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    out = tmp_path / "outputs"
    out.mkdir()
    return out


# ---------------------------------------------------------------- the Swarm sandbox (shared by the session)


@pytest.fixture(scope="session")
def sandbox():  # noqa: ANN201 - runbook_lib.sandbox.context.Sandbox
    """The sandbox, started once for the session and taken down at its end (RUNBOOK_KEEP_SANDBOX=1 keeps it)."""
    from tests import sandboxes

    yield from sandboxes.session_sandbox()


@pytest.fixture(scope="session")
def sandbox_params_file(sandbox) -> Path:  # noqa: ANN001
    return Path(sandbox.params.source)


@pytest.fixture(scope="session")
def sandbox_params(sandbox_params_file: Path):  # noqa: ANN201
    from runbook_lib.config.params import load_params

    return load_params(sandbox_params_file)


@pytest.fixture(scope="session")
def sandbox_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox-outputs")


@pytest.fixture(scope="session")
def ready_campaign(sandbox_params_file: Path, sandbox_outputs: Path) -> Path:
    """A campaign holding what readiness needs from earlier runs: a load test and passing failover drills."""
    from runbook_lib.run import runner

    for book, extra in (("load_test", ["target.workload.duration=10s"]), ("failover_drill", [])):
        done = runner.run(book, str(sandbox_params_file), outputs_dir=sandbox_outputs, echo=False,
                          campaign="ready", overrides=extra)
        assert done.exit_code == 0, f"{book}: {done.message}"
    # the drill restarted members: readiness (MON-01) is judged once Prometheus has scraped them again
    from runbook_lib.config.params import load_params
    from tests.campaign import prometheus_sees_all_up

    prometheus_sees_all_up(load_params(sandbox_params_file))
    return sandbox_outputs / "ready"
