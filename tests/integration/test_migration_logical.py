"""The logical data movement between two real PostgreSQL servers: preflight, schema, copy, streaming,
sequences, validation (and a mismatch it must catch), then reverse replication."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from runbook_lib.clients import postgres
from runbook_lib.config import names
from runbook_lib.config.params import Params, validate
from runbook_lib.ops import migration, tools
from runbook_lib.sandbox.localpg import LocalPostgres
from tests.conftest import free_port


@pytest.fixture(scope="module")
def second_pg() -> LocalPostgres:
    pg = LocalPostgres(Path(tempfile.mkdtemp(prefix="runbook-pg2-")), port=free_port())
    pg.start()
    yield pg
    pg.destroy()


@pytest.fixture
def params(local_pg: LocalPostgres, second_pg: LocalPostgres) -> Params:
    db = f"mig{int(time.time() * 1000) % 10**8}"
    for pg in (local_pg, second_pg):
        with pg.connect() as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
    endpoint = lambda pg, role: {"host": "127.0.0.1", "port": pg.port, "dbname": db, "user": "postgres",  # noqa
                                 "password": f"file:{pg.password_file}", "role": role}
    return validate({"target": {"name": "migtest", "environment": "sandbox", "databases": {
        "legacy": endpoint(local_pg, "legacy"), "new": endpoint(second_pg, "primary")}},
        "tools": {"mode": "host"}})


SCHEMA = """
CREATE TABLE accounts (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, balance numeric NOT NULL DEFAULT 0);
CREATE TABLE entries (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts(id),
                      body text, embedding real[] NOT NULL);
CREATE SEQUENCE invoice_number_seq START 1000;
INSERT INTO accounts (email) SELECT 'u' || g || '@x.test' FROM generate_series(1, 200) g;
INSERT INTO entries (account_id, body, embedding)
  SELECT 1 + g % 200, repeat('x', g % 50), ARRAY[random(), random(), random()]::real[]
  FROM generate_series(1, 2000) g;
SELECT nextval('invoice_number_seq') FROM generate_series(1, 42);
"""


def sql(params: Params, endpoint: str, statement: str) -> list[dict]:
    with postgres.connect(params.endpoints.db(endpoint)) as conn:
        return postgres.query(conn, statement)


def test_preflight_names_tables_that_cannot_replicate(params: Params) -> None:
    sql(params, "legacy", "CREATE TABLE audit_log (at timestamptz, what text); CREATE UNLOGGED TABLE scratch "
                          "(id int PRIMARY KEY); CREATE TABLE fine (id int PRIMARY KEY)")
    found = {r["table"]: r["reason"] for r in migration.unreplicable_tables(params.endpoints.db("legacy"))}
    assert set(found) == {"public.audit_log", "public.scratch"}
    assert "no primary key" in found["public.audit_log"] and "unlogged" in found["public.scratch"]


def test_logical_copy_stream_validate_and_reverse(params: Params) -> None:
    sql(params, "legacy", SCHEMA)
    assert migration.unreplicable_tables(params.endpoints.db("legacy")) == []
    assert migration.copy_schema(tools.for_params(params), params.endpoints.db("legacy"), params.endpoints.db("new")).startswith("schema copied")
    assert migration.copy_schema(tools.for_params(params), params.endpoints.db("legacy"), params.endpoints.db("new")) == "schema already present on the target"
    assert migration.ensure_publication(params.endpoints.db("legacy"), names.PUBLICATION) is True
    assert migration.ensure_publication(params.endpoints.db("legacy"), names.PUBLICATION) is False
    assert migration.ensure_subscription(params.endpoints.db("new"), params.endpoints.db("legacy"), names.SUBSCRIPTION, names.PUBLICATION,
                                         copy_data=True) is True
    seen: list[tuple[int, int]] = []
    migration.wait_initial_copy(params.endpoints.db("new"), names.SUBSCRIPTION, 120, lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == 2
    # writes keep flowing while the copy streams
    sql(params, "legacy", "INSERT INTO accounts (email) VALUES ('late@x.test'); UPDATE entries SET body = 'changed' "
                          "WHERE id <= 10; DELETE FROM entries WHERE id = 11")
    lsn = migration.current_lsn(params.endpoints.db("legacy"))
    migration.wait_applied(params.endpoints.db("legacy"), names.SUBSCRIPTION, lsn, 60)
    assert migration.copy_sequences(params.endpoints.db("legacy"), params.endpoints.db("new")) >= 3
    assert sql(params, "new", "SELECT last_value FROM invoice_number_seq")[0]["last_value"] == 1041
    checks = migration.validate(params.endpoints.db("legacy"), params.endpoints.db("new"))
    assert {c.table for c in checks} == {"public.accounts", "public.entries"}
    assert all(c.equal for c in checks), [c for c in checks if not c.equal]

    # a difference on the new side is found and named
    sql(params, "new", "ALTER SUBSCRIPTION rollout_forward DISABLE")
    sql(params, "new", "UPDATE entries SET embedding = ARRAY[0, 0, 0]::real[] WHERE id = 5")
    bad = [c for c in migration.validate(params.endpoints.db("legacy"), params.endpoints.db("new")) if not c.equal]
    assert [c.table for c in bad] == ["public.entries"] and bad[0].source_rows == bad[0].target_rows

    # cutover: forward replication ends, reverse replication keeps legacy current
    assert migration.drop_subscription(params.endpoints.db("new"), names.SUBSCRIPTION) is True
    assert migration.drop_subscription(params.endpoints.db("new"), names.SUBSCRIPTION) is False
    migration.ensure_publication(params.endpoints.db("new"), names.REVERSE_PUBLICATION)
    migration.ensure_subscription(params.endpoints.db("legacy"), params.endpoints.db("new"), names.REVERSE_SUBSCRIPTION,
                                  names.REVERSE_PUBLICATION, copy_data=False)
    sql(params, "new", "INSERT INTO accounts (id, email) VALUES (100000, 'after-cutover@x.test')")
    deadline = time.monotonic() + 30
    while not sql(params, "legacy", "SELECT 1 FROM accounts WHERE email = 'after-cutover@x.test'"):
        assert time.monotonic() < deadline, "a write on the new cluster did not reach legacy"
        time.sleep(0.2)
    migration.drop_subscription(params.endpoints.db("legacy"), names.REVERSE_SUBSCRIPTION)
