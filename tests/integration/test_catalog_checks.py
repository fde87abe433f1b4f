"""Smoke tests and the workload on a schema the project never seeded, derived from its catalog or declared in the
parameters, against a real PostgreSQL (the host's server binaries)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from runbook_lib.clients import postgres
from runbook_lib.config.params import Params, SmokeCheck, Workload, validate
from runbook_lib.config.readiness_settings import VectorExtension
from runbook_lib.ops import smoke, workload
from runbook_lib.sandbox.localpg import LocalPostgres

SCHEMA = """
CREATE SCHEMA billing;
CREATE TABLE billing."Invoice" (invoice_no bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, total numeric NOT NULL);
CREATE TABLE billing.line (invoice_no bigint REFERENCES billing."Invoice", pos int, amount numeric,
                           PRIMARY KEY (invoice_no, pos));
CREATE TABLE public.audit (at timestamptz DEFAULT now(), note text);
CREATE TABLE public.empty_one (id int PRIMARY KEY);
INSERT INTO billing."Invoice" (total) SELECT g FROM generate_series(1, 300) g;
INSERT INTO billing.line SELECT i, p, i * p FROM generate_series(1, 300) i, generate_series(1, 3) p;
INSERT INTO public.audit (note) VALUES ('x');
"""


@pytest.fixture
def params(local_pg: LocalPostgres, tmp_path: Path) -> Params:
    db = f"cat{int(time.time() * 1000) % 10**8}"
    with local_pg.connect() as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    spec = {"host": "127.0.0.1", "port": local_pg.port, "dbname": db, "user": "postgres",
            "password": f"file:{local_pg.password_file}", "role": "pooler"}
    params = validate({"target": {"name": "cat", "environment": "sandbox", "databases": {"app": spec},
                                  "workload": {"endpoint": "app", "concurrency": 2, "duration": "2s"}}})
    with postgres.connect(params.endpoints.db("app")) as conn:
        postgres.query(conn, SCHEMA)
    return params


def test_derived_smoke_reads_every_keyed_table_and_declared_checks_roll_back(params: Params) -> None:
    endpoint = params.endpoints.db("app")
    checks = [SmokeCheck(name="an invoice is written", sql='INSERT INTO billing."Invoice" (total) VALUES (1) '
                                                           "RETURNING invoice_no", rows=1, writes=True),
              SmokeCheck(name="big invoices", sql='SELECT * FROM billing."Invoice" WHERE total > 250', min_rows=50)]
    outcome = smoke.smoke(endpoint, "r1", checks, derived=True, vector=VectorExtension())
    assert not outcome.failed, outcome.summary
    done = {r["check"]: r for r in outcome.evidence}
    assert done["an invoice is written"]["detail"] == "written and rolled back"
    assert {"billing.Invoice", "billing.line", "public.empty_one"} <= set(done)  # found in the catalog
    assert "public.audit" not in done  # no key: nothing to read it back by
    assert done["public.empty_one"]["detail"] == "empty table"
    with postgres.connect(endpoint) as conn:
        assert postgres.scalar(conn, 'SELECT count(*) FROM billing."Invoice"') == 300  # the write was rolled back
    wrong = smoke.smoke(endpoint, "r2", [SmokeCheck(name="no such thing", sql="SELECT 1 WHERE false", rows=1)],
                        derived=False, vector=VectorExtension())
    assert wrong.failed and "no such thing (declared: expected 1 rows)" in wrong.summary


def test_workload_derives_its_mix_from_the_catalog(params: Params) -> None:
    with postgres.connect(params.endpoints.db("app")) as conn:
        ops = workload.prepare(conn, None, VectorExtension())
    assert sorted(op.name for op in ops) == ["read:billing.Invoice"]  # single-column keys with rows only
    outcome = workload.load_test(params.target.workload, params.endpoints, _no_progress, VectorExtension())
    assert not outcome.failed and outcome.metrics["errors"] == 0 and outcome.metrics["requests"] > 10, outcome.summary


def test_a_declared_mix_with_an_empty_sample_is_refused(params: Params) -> None:
    spec = Workload.model_validate({**params.target.workload.model_dump(), "mix": [
        {"name": "lines", "sql": "SELECT * FROM billing.line WHERE invoice_no = %(n)s", "sample":
         "SELECT invoice_no AS n FROM billing.line WHERE false"}]})
    with pytest.raises(workload.WorkloadError, match=r"mix\[lines\]\.sample returned no rows"):
        workload.load_test(spec, params.endpoints, _no_progress, VectorExtension())


class _Bar:
    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float) -> None:
        return None


def _no_progress(*args: object, **kwargs: object) -> _Bar:
    return _Bar()


def test_db18_measures_index_bloat_from_the_statistics(params: Params) -> None:
    """A freshly built index is near its estimated size; after 90 % of its rows are deleted and vacuumed,
    the btree keeps its pages: DB-18 names it, with its share of empty space (a real state, no override)."""
    from runbook_lib.readiness import engine

    spec = params.target.databases["app"].model_dump()
    checked = validate({"target": {"name": "cat", "environment": "sandbox",
                                   "databases": {"app": {**spec, "role": "primary"}}},
                        "readiness": {"app_database": "app", "unused_index_min_mb": 1}})
    with postgres.connect(checked.endpoints.db("app")) as conn:
        postgres.query(conn, "CREATE TABLE public.swelling (id int PRIMARY KEY, note text)")
        postgres.query(conn, "INSERT INTO public.swelling SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
        postgres.query(conn, "ANALYZE public.swelling")

    def db18() -> engine.ItemResult:
        return next(iter(engine.run(checked, only=["DB-18"])))

    fresh = db18()
    assert fresh.observed["btree_estimated"] >= 1 and fresh.observed["bloated_above_limit"] == {}, fresh.observed
    with postgres.connect(checked.endpoints.db("app")) as conn:
        postgres.query(conn, "DELETE FROM public.swelling WHERE id % 10 <> 0")
        postgres.query(conn, "VACUUM ANALYZE public.swelling")
    swollen = db18()
    assert swollen.outcome == "warn", swollen
    assert set(swollen.observed["bloated_above_limit"]) == {"swelling_pkey"}, swollen.observed
    assert swollen.observed["bloated_above_limit"]["swelling_pkey"] > 0.8


def test_a_client_whose_connection_fails_tries_again_unless_its_login_is_refused(params: Params) -> None:
    """A timed-out or refused connection is retried (a loaded machine's handshake storm must not cap the
    clients the load test reaches); a refused login is not (retrying would only hammer the server)."""
    endpoint = params.endpoints.db("app")
    with postgres.connect(endpoint) as conn:
        ops = workload.prepare(conn, None, VectorExtension())
    attempts: dict[int, int] = {}

    def flaky() -> psycopg.Connection:  # each client's first attempt reaches a port nothing listens on
        me = threading.get_ident()
        attempts[me] = attempts.get(me, 0) + 1
        if attempts[me] == 1:
            return psycopg.connect(host="127.0.0.1", port=1, connect_timeout=2)
        return postgres.connect(endpoint)

    result = workload.run(flaky, ops, concurrency=3, duration_s=5)
    assert (result.peak_clients, result.connect_errors, result.errors) == (3, 3, 0), result.summary()
    assert result.requests > 3

    def refused() -> psycopg.Connection:
        return psycopg.connect(**{**endpoint.connect_kwargs(), "password": "not-the-password"})

    result = workload.run(refused, ops, concurrency=3, duration_s=5)
    assert (result.peak_clients, result.connect_errors) == (0, 3), result.summary()
