"""The logical data movement between two real PostgreSQL servers: preflight, schema, copy, streaming,
sequences, validation (and a mismatch it must catch), then reverse replication."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import pytest
from psycopg import sql as psql

from runbook_lib.clients import postgres
from runbook_lib.config import names
from runbook_lib.config.params import Migration, Params, validate
from runbook_lib.ops import migration, survey, tools
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


def migration_settings(**extra: object) -> Migration:
    return Migration.model_validate({"source": "legacy", "target": "new", "pooler_database": "app",
                                     "new_backend": {"host": "127.0.0.1", "port": 1}, **extra})


def survey_of(params: Params, **extra: object) -> dict[str, survey.Item]:
    found = survey.survey(params.endpoints.db("legacy"), params.endpoints.db("new"), migration_settings(**extra))
    return {i.object: i for i in found}


def test_preflight_names_tables_that_cannot_replicate(params: Params) -> None:
    sql(params, "legacy", "CREATE TABLE audit_log (at timestamptz, what text); CREATE UNLOGGED TABLE scratch "
                          "(id int PRIMARY KEY); CREATE TABLE fine (id int PRIMARY KEY); "
                          "CREATE TABLE keyless_full (note text); ALTER TABLE keyless_full REPLICA IDENTITY FULL")
    found = {k: v for k, v in survey_of(params).items() if v.refused}
    assert set(found) == {"public.audit_log", "public.scratch"}
    assert "no primary key" in found["public.audit_log"].how and "unlogged" in found["public.scratch"].how
    # excluded with a recorded reason: carried (left behind), no longer refused
    excluded = survey_of(params, exclude=[{"table": "public.audit_log", "reason": "append-only log, archived apart",
                                           "approved_by": "DB lead"}])
    assert not excluded["public.audit_log"].refused and "archived apart" in excluded["public.audit_log"].how
    assert survey_of(params, strategy="dump-restore")["public.scratch"].verdict == "carried"
    assert survey_of(params, exclude=[{"table": "public.nope", "reason": "a table that is not there",
                                       "approved_by": "x y"}])["public.nope"].refused


def test_preflight_refuses_what_logical_replication_does_not_carry(params: Params) -> None:
    sql(params, "legacy", "CREATE ROLE rollout_test_reader; CREATE TABLE docs (id int PRIMARY KEY, blob oid); "
                          "GRANT SELECT ON docs TO rollout_test_reader; "
                          "INSERT INTO docs VALUES (1, lo_from_bytea(0, 'hello large object'));"
                          "CREATE MATERIALIZED VIEW doc_count AS SELECT count(*) AS n FROM docs")
    sql(params, "new", "CREATE TABLE docs (id int PRIMARY KEY, blob oid); INSERT INTO docs VALUES (7, 0)")
    try:
        found = survey_of(params)
        assert found["1 large objects"].refused and "migration.large_objects: copy" in found["1 large objects"].how
        assert not survey_of(params, large_objects="copy")["1 large objects"].refused
        assert found["rollout_test_reader"].refused and "does not exist on the new cluster" in found[
            "rollout_test_reader"].how
        assert found["public.docs"].refused and found["public.docs"].kind == "rows on the new cluster"
        assert found["public.doc_count"].verdict == "carried" and "refreshed" in found["public.doc_count"].how
    finally:
        sql(params, "legacy", "DROP MATERIALIZED VIEW doc_count; DROP TABLE docs; SELECT lo_unlink(oid) FROM "
                              "pg_largeobject_metadata; DROP ROLE rollout_test_reader")


def test_large_objects_copied_and_compared_and_ddl_frozen(params: Params) -> None:
    legacy, new = params.endpoints.db("legacy"), params.endpoints.db("new")
    sql(params, "legacy", "SELECT lo_from_bytea(0, convert_to(repeat('x', 1000 + g), 'UTF8')) FROM generate_series(1, 5) g")
    assert migration.copy_large_objects(legacy, new) == 5
    with postgres.connect(legacy) as a, postgres.connect(new) as b:
        assert migration.large_object_check(a, b).equal
        oid = postgres.scalar(b, "SELECT min(oid) FROM pg_largeobject_metadata")
        postgres.query(b, "SELECT lo_put(%s, 0, '\\x00')", [oid])  # one byte changed on the new side
        assert not migration.large_object_check(a, b).equal
    assert migration.freeze_ddl(legacy, "test") is True and migration.freeze_ddl(legacy, "test") is False
    with pytest.raises(Exception, match="schema changes are frozen"):
        sql(params, "legacy", "CREATE TABLE during_the_freeze (id int)")
    assert migration.thaw_ddl(legacy) is True and migration.thaw_ddl(legacy) is False
    sql(params, "legacy", "CREATE TABLE after_the_freeze (id int); DROP TABLE after_the_freeze")


def test_a_failing_copy_surfaces_at_once(params: Params) -> None:
    """The new side already holds a row the copy brings: the table sync fails again and again; the wait
    names the table within seconds instead of waiting out its timeout."""
    sql(params, "legacy", "CREATE TABLE clash (id int PRIMARY KEY); INSERT INTO clash SELECT generate_series(1, 50)")
    sql(params, "new", "CREATE TABLE clash (id int PRIMARY KEY); INSERT INTO clash VALUES (7)")
    migration.ensure_publication(params.endpoints.db("legacy"), names.PUBLICATION)
    migration.ensure_subscription(params.endpoints.db("new"), params.endpoints.db("legacy"), names.SUBSCRIPTION,
                                  names.PUBLICATION, copy_data=True)
    started = time.monotonic()
    try:
        with pytest.raises(migration.MigrationError, match=r"the copy is failing: .*clash"):
            migration.wait_initial_copy(params.endpoints.db("new"), names.SUBSCRIPTION, 600)
        assert time.monotonic() - started < 120
    finally:
        migration.drop_subscription(params.endpoints.db("new"), names.SUBSCRIPTION)
        sql(params, "legacy", f"DROP PUBLICATION {names.PUBLICATION}")


def test_logical_copy_stream_validate_and_reverse(params: Params) -> None:
    sql(params, "legacy", SCHEMA)
    assert not [i for i in survey_of(params).values() if i.refused]
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


def test_a_slot_behind_the_cut_is_moved_there_and_outlives_a_crash(params: Params, second_pg: LocalPostgres) -> None:
    new = params.endpoints.db("new")
    slot = f"settle_{new.dbname}"

    def on_new(statement: str | psql.Composable, *args: object) -> list[dict]:
        with postgres.connect(new) as conn:
            return postgres.query(conn, statement, list(args))

    on_new("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", slot)
    try:
        on_new("CREATE TABLE before_cut (id int PRIMARY KEY); INSERT INTO before_cut VALUES (1)")
        cut = on_new("SELECT pg_current_wal_lsn()::text AS lsn")[0]["lsn"]
        assert migration.settle_slot(new, slot, cut) == f"{cut}, checkpointed"  # it was behind: moved to the cut
        assert migration.settle_slot(new, slot, None) == f"{cut}, checkpointed"  # nothing said where: left there
        on_new(psql.SQL("CREATE ROLE settle_nocheckpoint LOGIN REPLICATION PASSWORD {}")  # may advance, not CHECKPOINT
               .format(psql.Literal(second_pg.password_file.read_text())))
        limited = dataclasses.replace(new, user="settle_nocheckpoint")  # the same password reference
        with pytest.raises(migration.MigrationError, match="grant pg_checkpoint"):
            migration.settle_slot(limited, slot, cut)
        assert migration.settle_slot(limited, slot, cut, required=False).endswith(
            "not checkpointed (no pg_checkpoint; origin = none filters what it would resend)")
        second_pg.stop(mode="immediate")  # a crash: only a checkpoint kept the slot's new position
        second_pg.start()
        assert on_new("SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = %s",
                      slot) == [{"lsn": cut}]
        on_new("INSERT INTO before_cut VALUES (2)")  # WAL past the cut: the plain advance goes to the server's end
        moved = migration.advance_slot(new, slot)
        assert on_new("SELECT %s::pg_lsn > %s::pg_lsn AS past", moved, cut) == [{"past": True}]
    finally:
        on_new("SELECT pg_drop_replication_slot(%s)", slot)
        on_new("DROP ROLE IF EXISTS settle_nocheckpoint")
    with pytest.raises(migration.MigrationError, match=f"replication slot {slot} is missing on new"):
        migration.settle_slot(new, slot, cut)


def test_sequences_move_past_every_column_that_uses_them(params: Params) -> None:
    """Owned (serial, identity), a bare nextval() default, and a sequence two tables share."""
    legacy = params.endpoints.db("legacy")
    sql(params, "legacy", "CREATE TABLE owned (id serial PRIMARY KEY); CREATE TABLE ident (id int GENERATED BY DEFAULT "
                          "AS IDENTITY PRIMARY KEY); CREATE SEQUENCE shared_seq; "
                          "CREATE TABLE a (id bigint PRIMARY KEY DEFAULT nextval('shared_seq')); "
                          "CREATE TABLE b (id bigint PRIMARY KEY DEFAULT nextval('shared_seq')); "
                          "INSERT INTO owned VALUES (500); INSERT INTO ident VALUES (600); "
                          "INSERT INTO a VALUES (700); INSERT INTO b VALUES (900)")  # rows another side delivered
    assert migration.advance_sequences(legacy) >= 3
    sql(params, "legacy", "INSERT INTO owned DEFAULT VALUES; INSERT INTO ident DEFAULT VALUES; "
                          "INSERT INTO a DEFAULT VALUES; INSERT INTO b DEFAULT VALUES")  # no duplicate key
    assert sql(params, "legacy", "SELECT max(id) AS m FROM a")[0]["m"] > 900
