"""The way back stays lossless for all 72 hours: after a logical cutover, the new cluster fails over (or
switches over, or fails over twice) under the application's writes, more writes follow, and then the rollback
runbook brings everything back to legacy. Every table is then compared by an independent query on both sides,
and every write acknowledged on the new cluster, before or after a failover, is on legacy."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from runbook_lib.clients import pgbouncer, swarm
from runbook_lib.config.params import Params
from runbook_lib.ops import drills, migration, wayback
from runbook_lib.run import runner
from tests.campaign import application_settled, prometheus_sees_all_up
from tests.phase2.conftest import LEGACY, manifest_steps, rollback_run
from tests.sandboxes import wait_cluster_healthy

pytestmark = pytest.mark.sandbox
APP = "app_app"


class Writer:
    """Writes a numbered marker through the pool every 50 ms; remembers the ones the pool acknowledged."""

    def __init__(self, params: Params, tag: str) -> None:
        self.params, self.tag = params, tag
        self.acknowledged: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            marker = f"{self.tag}-{n}"
            try:
                kwargs = {**self.params.endpoints.db("app-pool").connect_kwargs(), "connect_timeout": 3}
                with psycopg.connect(**kwargs, autocommit=True) as conn:
                    conn.execute("INSERT INTO rollout_write_probe (run_id) VALUES (%s)", [marker])
                self.acknowledged.append(marker)
            except psycopg.Error:
                self.failed += 1
            n += 1
            self._stop.wait(0.05)


def table_digests(params: Params, endpoint: str) -> dict[str, tuple[int, str]]:
    """Row count and a hash over every row of every user table: written here, not taken from runbook_lib."""
    with psycopg.connect(**params.endpoints.db(endpoint).connect_kwargs(), autocommit=True) as conn:
        tables = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                              "('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
        out = {}
        for schema, table in tables:
            count, digest = conn.execute(sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), '')) "
                "FROM {} t").format(sql.Identifier(schema, table))).fetchone()
            out[f"{schema}.{table}"] = (count, digest)
    return out


def markers_on(params: Params, endpoint: str, markers: list[str]) -> set[str]:
    with psycopg.connect(**params.endpoints.db(endpoint).connect_kwargs(), autocommit=True) as conn:
        rows = conn.execute("SELECT run_id FROM rollout_write_probe WHERE run_id = ANY(%s)", [markers]).fetchall()
    return {r[0] for r in rows}


def _replicas(params: Params) -> int:
    service = swarm.for_target(params.target.swarm).services.get(APP)
    return service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"]


def _app_stopped(params: Params, timeout: float = 60) -> None:
    """Scaling to 0 returns at once; the tasks stop later. Wait until none runs (none writes any more)."""
    swarm.scale(params.target.swarm, APP, 0)
    deadline = time.monotonic() + timeout
    service = swarm.for_target(params.target.swarm).services.get(APP)
    while any(t["Status"]["State"] in ("running", "starting") for t in service.tasks()):
        assert time.monotonic() < deadline, "the application's tasks did not stop"
        time.sleep(0.5)


@pytest.mark.parametrize("moves", [("failover",), ("switchover",), ("failover", "failover")],
                         ids=["a-failover", "a-switchover", "two-failovers"])
def test_the_way_back_outlives_failovers_of_the_new_cluster(moves: tuple[str, ...], sandbox, sandbox_params_file: Path,
                                                            sandbox_params: Params, signed: Path,
                                                            restore_legacy: None) -> None:
    cutover = runner.run("phase2_migration", str(sandbox_params_file), outputs_dir=signed.parent, echo=False,
                         campaign=signed.name)
    assert cutover.exit_code == 0, cutover.message
    assert manifest_steps(cutover.run_dir)["way_back"]["status"] == "ok"
    p = sandbox_params
    members, write_endpoint = p.endpoints.by_role("member"), p.endpoints.db("dpg-rw")
    with Writer(p, f"wayback-{cutover.run_id}") as writer:  # the application's writes go on throughout
        for move in moves:
            time.sleep(2)
            if move == "failover":
                done = drills.automatic(p.target.patroni, p.target.swarm, write_endpoint)
            else:
                done = drills.manual(p.target.patroni, write_endpoint)
            assert done.passed, done
            wait_cluster_healthy(sandbox, 180)
            way, _ = wayback.settle(migration.route(p), members, timeout=90)
            assert way.ok, (move, way.problems, way.rows())
        after_moves = len(writer.acknowledged)
        deadline = time.monotonic() + 60  # more writes after the last move, however fast the moves went
        while len(writer.acknowledged) < after_moves + 20 and time.monotonic() < deadline:
            time.sleep(0.5)
    assert len(writer.acknowledged) >= after_moves + 20 and after_moves > 0, writer.failed
    replicas = _replicas(p)
    _app_stopped(p)  # the application stops, so both sides can be compared exactly
    try:
        report = rollback_run(sandbox_params_file, signed, f"rollback.reason=way back test after {'+'.join(moves)}")
        assert report.exit_code == 0, report.message
        steps = manifest_steps(report.run_dir)
        assert steps["consistency_check"]["metrics"]["tables_differing"] == 0, steps["consistency_check"]
        assert pgbouncer.backend(p.endpoints.admin(), "app") == LEGACY
        legacy, new = table_digests(p, "legacy"), table_digests(p, "dpg-rw")
        assert set(new) <= set(legacy)
        differing = {t: (legacy[t], new[t]) for t in new if legacy[t] != new[t]}
        assert not differing, differing
        lost = set(writer.acknowledged) - markers_on(p, "legacy", writer.acknowledged)
        assert not lost, f"{len(lost)} acknowledged writes are not on legacy: {sorted(lost)[:5]}"
    finally:
        swarm.scale(p.target.swarm, APP, replicas)
        prometheus_sees_all_up(p)  # later tests judge MON-01: the application's targets must be back
        application_settled(p)  # and the metrics watch its error rate
