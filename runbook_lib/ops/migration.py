"""Moving the data from legacy to the new cluster: logical replication, cutover, validation.

The logical strategy fills the new cluster before the write pause (schema first, HNSW
indexes built on the new side, then the initial copy and streaming); the pause is only
the cutover. Every function checks its own effect first, so a resumed run does not do
anything twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from runbook_lib.clients import postgres
from runbook_lib.config.endpoints import PgBouncerSpec, PgSpec
from runbook_lib.config.params import Params, Swarm
from runbook_lib.errors import RunbookError
from runbook_lib.ops import tools as tools_mod
from runbook_lib.ops.tools import Tools


@dataclass(frozen=True)
class Route:
    """Both sides of the move and the pool between them: what phase 2 and the rollback act on."""

    source: PgSpec  # the legacy database
    target: PgSpec  # the new cluster's write endpoint
    pooler: PgBouncerSpec
    pooler_database: str  # the PgBouncer [databases] entry the applications use
    new_backend: tuple[str, int]  # where PgBouncer points after the cutover
    app_role: str
    swarm: Swarm | None
    apply_timeout: float

    @property
    def legacy_backend(self) -> tuple[str, int]:
        return self.source.host, self.source.port


def route(params: Params) -> Route:
    """The migration section resolved into specs; an error names what the parameters lack."""
    m, t = params.migration, params.target
    missing = [name for name, value in (("migration", m), ("target.app", t.app), ("target.pgbouncer", t.pgbouncer))
               if value is None]
    if missing:
        raise MigrationError(f"{', '.join(missing)} not set in the parameters: nothing says what legacy, the new "
                             "cluster and the pool between them are")
    assert m is not None and t.app is not None
    endpoints = params.endpoints
    return Route(source=endpoints.db(m.source), target=endpoints.db(m.target), pooler=endpoints.admin(),
                 pooler_database=m.pooler_database, new_backend=(m.new_backend.host, m.new_backend.port),
                 app_role=t.app.role, swarm=t.swarm, apply_timeout=m.apply_timeout)


def route_of(run: Any) -> Route:
    """The route of a run (resolved once, kept as the run's resource)."""
    return run.resource("route", lambda: route(run.params))




class MigrationError(RunbookError):
    pass


def _conn(spec: PgSpec) -> psycopg.Connection[dict[str, Any]]:
    return postgres.connect(spec)


# ---------------------------------------------------------------- preflight


def unreplicable_tables(source: PgSpec) -> list[dict[str, str]]:
    """Tables logical replication cannot carry, by name and reason, found before anything changes."""
    with _conn(source) as conn:
        return postgres.query(conn, """
            SELECT format('%I.%I', n.nspname, c.relname) AS "table",
                   CASE WHEN c.relpersistence = 'u' THEN 'unlogged table (not in WAL)'
                        ELSE 'no primary key and no replica identity (UPDATE/DELETE cannot replicate)' END AS reason
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
              AND (c.relpersistence = 'u' OR (c.relreplident = 'd' AND NOT EXISTS (
                    SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                   OR c.relreplident = 'n')
            UNION ALL
            SELECT format('%I.%I', n.nspname, c.relname), 'partition without a primary key'
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND c.relispartition AND c.relreplident = 'd'
              AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
            ORDER BY 1""")


# ---------------------------------------------------------------- schema and subscription


def user_tables(endpoint: PgSpec) -> list[str]:
    with _conn(endpoint) as conn:
        return [r["t"] for r in postgres.query(conn, """SELECT format('%I.%I', schemaname, tablename) AS t
                FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1""")]


def copy_schema(tools: Tools, source: PgSpec, target: PgSpec) -> str:
    """pg_dump --schema-only | psql, unless the target already has every source table."""
    missing = set(user_tables(source)) - set(user_tables(target))
    if not missing:
        return "schema already present on the target"
    if set(user_tables(target)):
        raise MigrationError(f"the target has part of the schema only (missing {sorted(missing)[:5]}...): "
                             "drop it or finish it by hand before copying")
    tools.pipe(["pg_dump", "--schema-only", "--no-publications", "--no-subscriptions", "-d", tools_mod.dsn(source)],
               ["psql", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-q", "-d", tools_mod.dsn(target)],
               endpoints=[source, target])
    return f"schema copied: {len(user_tables(target))} tables"


def dump_restore(tools: Tools, source: PgSpec, target: PgSpec) -> None:
    """The whole database, custom format, straight into the target (the dump-restore strategy)."""
    tools.pipe(["pg_dump", "-Fc", "--no-publications", "--no-subscriptions", "-d", tools_mod.dsn(source)],
               ["pg_restore", "--exit-on-error", "-d", tools_mod.dsn(target)], endpoints=[source, target])


def subscription_conninfo(publisher: PgSpec) -> str:
    """How the subscriber's server reaches the publisher (its password included: it lives in the catalog).

    The CA file is a path on the operator's machine, not on the subscriber's server, so verify-ca
    and verify-full are asked as `require` (encrypted, unverified) from there.
    """
    kwargs: dict[str, Any] = {"host": publisher.host, "port": publisher.port, "dbname": publisher.dbname,
                              "user": publisher.user,
                              "sslmode": "require" if publisher.sslmode in ("verify-ca", "verify-full")
                              else publisher.sslmode}
    if publisher.password:
        kwargs["password"] = publisher.password.resolve().reveal()
    return make_conninfo(**kwargs)


def ensure_publication(endpoint: PgSpec, name: str) -> bool:
    with _conn(endpoint) as conn:
        if postgres.query(conn, "SELECT 1 FROM pg_publication WHERE pubname = %s", [name]):
            return False
        postgres.query(conn, sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(name)))
        return True


def ensure_subscription(subscriber: PgSpec, publisher: PgSpec, name: str, publication: str,
                        copy_data: bool, failover: bool = False) -> bool:
    """Create the subscription unless it exists; True when created.

    failover = true (PostgreSQL 17) marks its slot on the publisher for slot sync, so the standbys of
    a publishing cluster keep a copy; an existing subscription without it is switched over (disable,
    set, enable: the only way PostgreSQL allows).
    """
    with _conn(subscriber) as conn:
        found = postgres.query(conn, "SELECT subfailover FROM pg_subscription WHERE subname = %s", [name])
        ident = sql.Identifier(name)
        if found:
            if failover and not found[0]["subfailover"]:
                postgres.query(conn, sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
                postgres.query(conn, sql.SQL("ALTER SUBSCRIPTION {} SET (failover = true)").format(ident))
                postgres.query(conn, sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(ident))
            return False
        options = sql.SQL("copy_data = {}").format(sql.Literal(copy_data))
        if failover:
            options = sql.SQL("{}, failover = true").format(options)
        postgres.query(conn, sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH ({})")
                       .format(ident, sql.Literal(subscription_conninfo(publisher)), sql.Identifier(publication),
                               options))
        return True


def copy_progress(subscriber: PgSpec, name: str) -> dict[str, int]:
    with _conn(subscriber) as conn:
        rows = postgres.query(conn, """SELECT srsubstate AS state, count(*) AS n FROM pg_subscription_rel r
                                       JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s
                                       GROUP BY 1""", [name])
    return {r["state"]: r["n"] for r in rows}


@dataclass
class CopyResult:
    states: dict[str, int]
    interruptions: int  # polls that found the subscriber unreachable (a failover of the new cluster)


UNREACHABLE_MAX = 120.0  # seconds in a row the subscriber may not answer: a failover takes far less
_PERMANENT = ("password authentication failed", "does not exist", "no pg_hba.conf entry")


def wait_initial_copy(subscriber: PgSpec, name: str, timeout: float,
                      on_progress: Callable[[int, int], None] | None = None) -> CopyResult:
    """Wait until every table of the subscription is copied and streaming ('r').

    The subscriber's write endpoint may fail over meanwhile: the subscription lives in the cluster's
    catalog, so the new leader's workers carry on (a table whose copy was cut short starts again);
    this wait rides out the moments when the endpoint does not answer, but not a refusal that no
    failover explains (authentication, a missing database) nor a silence longer than UNREACHABLE_MAX.
    """
    deadline = time.monotonic() + timeout
    interruptions = 0
    silent_since: float | None = None
    while True:
        try:
            states = copy_progress(subscriber, name)
            silent_since = None
        except psycopg.OperationalError as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if any(p in message for p in _PERMANENT):
                raise MigrationError(f"the new cluster refuses the connection during the copy: {message}") from exc
            interruptions += 1
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since > UNREACHABLE_MAX:
                raise MigrationError(f"the new cluster has not answered for {UNREACHABLE_MAX:g} s during the "
                                     f"copy ({message}); the subscription stays and a re-run resumes it") from exc
            states = None
        if states is not None:
            total = sum(states.values())
            done = states.get("r", 0)
            if on_progress:
                on_progress(done, total)
            if total and done == total:
                return CopyResult(states, interruptions)
        if time.monotonic() > deadline:
            raise MigrationError(f"initial copy not finished after {timeout:g} s: "
                                 f"{states if states is not None else 'the new cluster does not answer'}")
        time.sleep(0.5)


# ---------------------------------------------------------------- cutover pieces


def current_lsn(endpoint: PgSpec) -> str:
    with _conn(endpoint) as conn:
        return postgres.scalar(conn, "SELECT pg_current_wal_lsn()::text")


def wait_applied(publisher: PgSpec, subscription: str, lsn: str, timeout: float) -> float:
    """Seconds until the subscription's walsender reports `lsn` replayed on the subscriber."""
    started = time.monotonic()
    with _conn(publisher) as conn:
        while True:
            behind = postgres.scalar(conn, """SELECT min(pg_wal_lsn_diff(%s::pg_lsn, replay_lsn))
                                              FROM pg_stat_replication WHERE application_name = %s""",
                                     [lsn, subscription])
            if behind is not None and behind <= 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise MigrationError(f"the new cluster did not apply {lsn} within {timeout:g} s "
                                     f"({behind} bytes behind)")
            time.sleep(0.05)


def catch_up(publisher: PgSpec, subscription: str, timeout: float) -> tuple[str, float]:
    """The publisher's current LSN and the seconds until the subscriber had applied it."""
    lsn = current_lsn(publisher)
    return lsn, wait_applied(publisher, subscription, lsn, timeout)


def copy_sequences(source: PgSpec, target: PgSpec) -> int:
    with _conn(source) as conn:
        seqs = postgres.query(conn, "SELECT schemaname, sequencename, last_value FROM pg_sequences "
                                    "WHERE last_value IS NOT NULL")
    with _conn(target) as conn:
        for s in seqs:
            postgres.query(conn, "SELECT setval(%s::regclass, %s, true)",
                           [sql.Identifier(s["schemaname"], s["sequencename"]).as_string(conn), s["last_value"]])
    return len(seqs)


def advance_sequences(endpoint: PgSpec) -> int:
    """Move every column-owned sequence past the highest value its column holds.

    Why: when the new cluster is lost, its sequence values cannot be copied, and rows that reverse
    replication delivered carry ids the local sequences have not reached yet.
    """
    with _conn(endpoint) as conn:
        owned = postgres.query(conn, """SELECT sn.nspname AS seq_schema, s.relname AS seq, tn.nspname AS tbl_schema,
                   t.relname AS tbl, a.attname AS col
            FROM pg_class s JOIN pg_namespace sn ON sn.oid = s.relnamespace
            JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
            JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
            WHERE s.relkind = 'S'""")
        for o in owned:
            seq = sql.Identifier(o["seq_schema"], o["seq"])
            postgres.query(conn, sql.SQL("SELECT setval({name}::regclass, greatest((SELECT max({col}) FROM {tbl}), "
                                         "(SELECT last_value FROM {seq}))::bigint, true)").format(
                name=sql.Literal(seq.as_string(conn)), col=sql.Identifier(o["col"]),
                tbl=sql.Identifier(o["tbl_schema"], o["tbl"]), seq=seq))
    return len(owned)


@dataclass
class TableCheck:
    table: str
    source_rows: int
    target_rows: int
    source_checksum: str
    target_checksum: str

    @property
    def equal(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum


def _table_digest(conn: psycopg.Connection[Any], table: str) -> tuple[int, str]:
    row = postgres.query(conn, sql.SQL(
        "SELECT count(*) AS n, coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint::numeric), 0)"
        "::text AS digest FROM {} AS t").format(_ident(table)))[0]
    return int(row["n"]), row["digest"]


def _table_count(conn: psycopg.Connection[Any], table: str) -> tuple[int, str]:
    return int(postgres.scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(_ident(table)))), ""


def _ident(table: str) -> sql.Identifier:
    schema, name = table.split(".", 1)
    return sql.Identifier(schema.strip('"'), name.strip('"'))


Measure = Callable[[psycopg.Connection[Any], str], tuple[int, str]]


def _measure_all(conn: psycopg.Connection[Any], tables: list[str], measure: Measure) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for table in tables:
        present = postgres.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", [_ident(table).as_string(conn)])
        out[table] = measure(conn, table) if present else (-1, "missing")
    return out


def compare(src: psycopg.Connection[Any], dst: psycopg.Connection[Any], tables: list[str],
            measure: Measure = _table_digest) -> list[TableCheck]:
    """Measure every table on both sides at once (one thread per side: each side is its own server)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        left = pool.submit(_measure_all, src, tables, measure)
        right = pool.submit(_measure_all, dst, tables, measure)
        source, target = left.result(), right.result()
    return [TableCheck(t, source[t][0], target[t][0], source[t][1], target[t][1]) for t in tables]


def validate(source: PgSpec, target: PgSpec, counts_only: bool = False) -> list[TableCheck]:
    """Row count and an order-independent checksum of every row (vector columns included) on both sides.

    Both sides must be still (writes off, the new side caught up) for the result to mean anything;
    counts_only is the cheap recheck at cutover after a checksum comparison at a consistent cut.
    """
    tables = user_tables(source)
    with _conn(source) as src, _conn(target) as dst:
        return compare(src, dst, tables, _table_count if counts_only else _table_digest)


@contextmanager
def snapshot(endpoint: PgSpec) -> Iterator[psycopg.Connection[Any]]:
    """A connection inside a read-only REPEATABLE READ transaction whose snapshot is already taken."""
    with _conn(endpoint) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SELECT 1")  # the snapshot is fixed at the first statement
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


def drop_subscription(subscriber: PgSpec, name: str, keep_slot: bool = False) -> bool:
    """Drop a subscription; keep_slot when its publisher is unreachable (the slot is left there, named `name`)."""
    with _conn(subscriber) as conn:
        if not postgres.query(conn, "SELECT 1 FROM pg_subscription WHERE subname = %s", [name]):
            return False
        postgres.query(conn, sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(name)))
        if keep_slot:
            postgres.query(conn, sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(sql.Identifier(name)))
        postgres.query(conn, sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(name)))
        return True


def retire_database(endpoint: PgSpec) -> int:
    """Legacy retired: every new transaction in its database read-only, the sessions there ended."""
    with _conn(endpoint) as conn:
        postgres.query(conn, sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on")
                       .format(sql.Identifier(endpoint.dbname)))
        ended = postgres.query(conn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                                     "current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
    return len(ended)


def set_read_only(endpoint: PgSpec, role: str, read_only: bool) -> int:
    """Writes off (or on) for the application role on a server; its open sessions are ended when turning off."""
    with _conn(endpoint) as conn:
        if read_only:
            postgres.query(conn, sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on")
                           .format(sql.Identifier(role)))
            ended = postgres.query(conn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE usename = %s AND pid <> pg_backend_pid()", [role])
            return len(ended)
        postgres.query(conn, sql.SQL("ALTER ROLE {} RESET default_transaction_read_only")
                       .format(sql.Identifier(role)))
        return 0
