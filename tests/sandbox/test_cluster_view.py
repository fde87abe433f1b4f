"""`runbook cluster` on the sandbox: the members as Patroni lists them, where writes land and where PgBouncer
points; a write endpoint that lands on a replica is named as a problem (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook_lib import cli
from runbook_lib.clients import patroni
from runbook_lib.config.params import load_params
from runbook_lib.ops import cluster_view

pytestmark = pytest.mark.sandbox


def test_the_cluster_view_of_a_healthy_sandbox(sandbox_params_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = load_params(sandbox_params_file)
    assert params.target.patroni is not None
    assert cli.main(["cluster", "-f", str(sandbox_params_file), "-o", "json"]) == 0, capsys.readouterr()
    view = json.loads(capsys.readouterr().out)
    assert view["problems"] == []
    assert {m["name"] for m in view["members"]} == {m.name for m in params.target.patroni.members}
    leader = patroni.leader(params.target.patroni)
    assert view["write_endpoint"]["member"] == leader and view["write_endpoint"]["in_recovery"] is False
    assert view["pgbouncer"]["points_at"] in params.target.databases
    assert all(isinstance(m["timeline"], int) for m in view["members"])


def test_a_write_endpoint_on_a_replica_is_a_named_problem(sandbox_params_file: Path) -> None:
    ro = load_params(sandbox_params_file).target.databases["dpg-ro"].port
    params = load_params(sandbox_params_file, [f"target.databases.dpg-rw.port={ro}"])
    view = cluster_view.snapshot(params)
    assert view["write_endpoint"]["in_recovery"] is True
    assert any(p.startswith("the write endpoint dpg-rw lands on") and "not the leader" in p
               for p in view["problems"]), view["problems"]
