"""Shared fixtures: a real PostgreSQL from the host's binaries and parameters files pointing at it."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest
import yaml

from runbook_lib.localpg import LocalPostgres

ARTIFACTS = Path(__file__).parent / "artifacts"


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
