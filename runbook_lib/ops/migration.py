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
from dataclasses import dataclass, field
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from runbook_lib.clients import postgres
from runbook_lib.config.endpoints import PgBouncerSpec, PgSpec
from runbook_lib.config.params import Params, Swarm
from runbook_lib.errors import RunbookError, first_line
from runbook_lib.ops import catalog
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
    exclude: frozenset[str] = frozenset()  # schema.table left behind on purpose (migration.exclude)
    critical_section_max: float = 2.0  # the bound on a switch's write pause (migration.critical_section_max)

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
                 app_role=t.app.role, swarm=t.swarm, apply_timeout=m.apply_timeout,
                 exclude=frozenset(e.table for e in m.exclude), critical_section_max=m.critical_section_max)


def route_of(run: Any) -> Route:
    """The route of a run (resolved once, kept as the run's resource)."""
    return run.resource("route", lambda: route(run.params))




class MigrationError(RunbookError):
    pass


def _conn(spec: PgSpec) -> psycopg.Connection[dict[str, Any]]:
    return postgres.connect(spec)


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

    The subscriber verifies the publisher with the CA file at `server_sslrootcert`, a path on the database
    servers; the operator's `sslrootcert` means nothing there, so without it verify-ca and verify-full are asked
    as `require` (encrypted, unverified).
    """
    verify = publisher.sslmode in ("verify-ca", "verify-full")
    kwargs: dict[str, Any] = {"host": publisher.host, "port": publisher.port, "dbname": publisher.dbname,
                              "user": publisher.user,
                              "sslmode": publisher.sslmode if not verify or publisher.server_sslrootcert
                              else "require"}
    if verify and publisher.server_sslrootcert:
        kwargs["sslrootcert"] = publisher.server_sslrootcert
    if publisher.password:
        kwargs["password"] = publisher.password.resolve().reveal()
    return make_conninfo(**kwargs)


def ensure_publication(endpoint: PgSpec, name: str, exclude: frozenset[str] = frozenset()) -> bool:
    """FOR ALL TABLES, or, with exclusions, every other top-level table (a partitioned table brings its partitions)."""
    with _conn(endpoint) as conn:
        if postgres.query(conn, "SELECT 1 FROM pg_publication WHERE pubname = %s", [name]):
            return False
        if not exclude:
            postgres.query(conn, sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(name)))
            return True
        tables = [t.ident for t in catalog.tables(conn) if not t.partition and t.qualified not in exclude]
        if not tables:
            raise MigrationError("every table is excluded (migration.exclude): nothing to publish")
        postgres.query(conn, sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(name), sql.SQL(", ").join(tables)))
        return True


def moved_tables(r: Route) -> list[str]:
    """The tables the move carries (and the checks compare): legacy's, less the excluded ones."""
    return [t for t in user_tables(r.source) if ".".join(p.strip('"') for p in t.split(".", 1)) not in r.exclude]


def ensure_subscription(subscriber: PgSpec, publisher: PgSpec, name: str, publication: str,
                        copy_data: bool, failover: bool = False, local_only: bool = False) -> bool:
    """Create the subscription unless it exists; True when created.

    With failover, its slot on the publisher (PostgreSQL 17) is a failover slot that the publisher's
    standbys keep a copy of. The slot is made here, on the publisher, and the subscription uses it
    (create_slot = false), so a subscriber of any version gets one; an existing subscription's slot
    without the flag is reported by the way back's checks (only a subscriber on 17 could switch it).
    With local_only (and both sides on 16 or later) the publisher sends only the changes made on it, none
    that a subscription of its own applied there (origin = none): the way back never carries legacy's own
    writes back to it, wherever its slot stands.
    """
    with _conn(subscriber) as conn:
        if subscribed_on(conn, name):
            return False
        options = sql.SQL("copy_data = {}").format(sql.Literal(copy_data))
        if failover:
            ensure_failover_slot(publisher, name)
            options = sql.SQL("{}, create_slot = false, slot_name = {}").format(options, sql.Literal(name))
        if local_only and conn.info.server_version >= 160000 and server_version(publisher) >= 160000:
            options = sql.SQL("{}, origin = none").format(options)
        postgres.query(conn, sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH ({})")
                       .format(sql.Identifier(name), sql.Literal(subscription_conninfo(publisher)),
                               sql.Identifier(publication), options))
        return True


def subscribed_on(conn: psycopg.Connection[Any], name: str) -> bool:
    return bool(postgres.query(conn, "SELECT 1 FROM pg_subscription WHERE subname = %s", [name]))


def subscription_exists(subscriber: PgSpec, name: str) -> bool:
    with _conn(subscriber) as conn:
        return subscribed_on(conn, name)


def server_version(spec: PgSpec) -> int:
    with _conn(spec) as conn:
        return conn.info.server_version


def settle_slot(publisher: PgSpec, slot: str, at: str | None, required: bool = True) -> str:
    """A slot moved by pg_replication_slot_advance made durable where it was put, before a subscriber uses it.

    The advance keeps the new position in memory until the next checkpoint: a crash would bring it back
    before `at`, and the subscriber would be sent again what came before the cut. So a slot found behind
    `at` (after a crash, or a failover to a standby whose synced copy was older) is moved there again, then
    CHECKPOINT writes it down. Unless `required` (the subscriber filters by origin, so a slot left behind sends nothing
    twice), a role not allowed to CHECKPOINT is told in the answer instead. Returns the slot's confirmed
    position and how it was made durable.
    """
    with _conn(publisher) as conn:
        flushed = postgres.scalar(conn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                        "WHERE slot_name = %s", [slot])
        if flushed is None:
            raise MigrationError(f"replication slot {slot} is missing on {publisher.name}: reverse replication "
                                 "cannot start from the cut")
        if at is not None and postgres.scalar(conn, "SELECT %s::pg_lsn > %s::pg_lsn", [at, flushed]):
            flushed = advance_slot_on(conn, slot, at)
        try:
            postgres.query(conn, "CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege as exc:
            if required:
                raise MigrationError(f"CHECKPOINT on {publisher.name} refused ({first_line(exc)}): grant "
                                     "pg_checkpoint to the migration role, so the reverse slot's position at the "
                                     "cut is durable before reverse replication starts") from exc
            return f"{flushed}, not checkpointed (no pg_checkpoint; origin = none filters what it would resend)"
        return f"{flushed}, checkpointed"


def invalidated(slot: dict[str, Any]) -> str | None:
    """Why a row of pg_replication_slots can no longer be decoded from (None: it can), on 13 to 17."""
    if slot.get("invalidation_reason"):  # 17
        return str(slot["invalidation_reason"])
    if slot.get("conflicting"):  # 16
        return "conflicting with recovery"
    if slot.get("wal_status") == "lost":
        return "the WAL it needs was removed"
    return None


def ensure_failover_slot(publisher: PgSpec, name: str, replace_invalid: bool = False) -> str | None:
    """A logical slot (pgoutput) marked for failover on the publisher. Returns what was done, None when a
    usable one was there already.

    A slot there already may be invalidated: a standby's synced copy that conflicted with recovery and was
    then promoted (a failover of the publisher), or one whose WAL was removed. Decoding from it fails, so
    with `replace_invalid` (only while nothing written on the publisher has to be sent from it: before a
    cutover's pause) it is dropped and made again; otherwise the error names it.
    """
    with _conn(publisher) as conn:
        rows = postgres.query(conn, "SELECT to_jsonb(s) AS slot FROM pg_replication_slots s WHERE slot_name = %s",
                              [name])
        why = invalidated(rows[0]["slot"]) if rows else None
        if rows and why is None:
            return None
        if rows:
            if not replace_invalid:
                raise MigrationError(f"replication slot {name} on {publisher.name} is invalidated ({why}): what was "
                                     "written there since it was made cannot be sent from it")
            if pid := rows[0]["slot"].get("active_pid"):
                raise MigrationError(f"replication slot {name} on {publisher.name} is invalidated ({why}) and in use "
                                     f"(pid {pid}): a subscription reads from it; drop that subscription first")
            postgres.query(conn, "SELECT pg_drop_replication_slot(%s)", [name])
        postgres.query(conn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput', false, false, true)", [name])
        return f"made again (the one there was invalidated: {why})" if rows else "created"


def copy_progress(subscriber: PgSpec, name: str) -> dict[str, int]:
    with _conn(subscriber) as conn:
        rows = postgres.query(conn, """SELECT srsubstate AS state, count(*) AS n FROM pg_subscription_rel r
                                       JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s
                                       GROUP BY 1""", [name])
    return {r["state"]: r["n"] for r in rows}


def sync_errors(subscriber: PgSpec, name: str) -> tuple[int, int]:
    """(table-sync errors, apply errors) the subscription has counted (pg_stat_subscription_stats)."""
    with _conn(subscriber) as conn:
        row = postgres.query(conn, """SELECT sync_error_count AS sync, apply_error_count AS apply
                                      FROM pg_stat_subscription_stats WHERE subname = %s""", [name])
    return (int(row[0]["sync"]), int(row[0]["apply"])) if row else (0, 0)


def not_ready(subscriber: PgSpec, name: str) -> list[str]:
    """Tables of the subscription not yet copied and streaming, with their state."""
    with _conn(subscriber) as conn:
        rows = postgres.query(conn, """SELECT format('%%s (state %%s)', r.srrelid::regclass, r.srsubstate) AS t
                                       FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
                                       WHERE s.subname = %s AND r.srsubstate <> 'r' ORDER BY 1""", [name])
    return [r["t"] for r in rows]


ERRORS_MAX = 3  # table-sync or apply errors in a row before the wait gives up (a worker retries every 5 s)
RESTARTS_MAX = 2  # copies started again from scratch (a table-sync slot lost) before the wait gives up
ORPHAN_CHECK_EVERY = 10.0  # seconds between looks for lost table-sync slots while a table is in state 'f'
WORKERS_STOP_MAX = 60.0  # seconds a disabled subscription's workers may take to exit


@dataclass
class CopyResult:
    states: dict[str, int]
    interruptions: int  # polls that found the subscriber unreachable (a failover of the new cluster)
    restarts: int = 0  # times the copy started again from scratch
    lost: list[str] = field(default_factory=list)  # the tables whose lost sync slot made it start again


_FINISHED_COPY = """SELECT s.oid::text AS sub, c.oid::text AS rel, format('%%I.%%I', n.nspname, c.relname) AS t
                     FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
                     JOIN pg_class c ON c.oid = r.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE s.subname = %s AND r.srsubstate = 'f'"""


def orphaned_syncs(subscriber: PgSpec, publisher: PgSpec, name: str) -> list[str]:
    """Tables whose copy finished ('f') and whose table-sync slot is not on the publisher now.

    Why: a table-sync worker in state 'f' resumes from its own slot; when that slot is gone (a failover of
    the subscriber promoted a member that missed the slot's drop, or the slot was lost on the publisher) the
    worker fails on every retry, outside the subscription's error counts, and the table never streams.
    One look is not proof: a worker drops its slot just before it commits the table synced (LostSyncSlots
    asks twice).
    """
    with _conn(subscriber) as conn:
        rows = postgres.query(conn, _FINISHED_COPY, [name])
    if not rows:
        return []
    with _conn(publisher) as conn:
        slots = {r["slot_name"] for r in postgres.query(conn, "SELECT slot_name FROM pg_replication_slots "
                                                               "WHERE slot_name LIKE 'pg\\_%%\\_sync\\_%%'")}
    # PostgreSQL names a table-sync slot pg_<subscription oid>_sync_<relation oid>_<system identifier>
    return sorted(r["t"] for r in rows if not any(s.startswith(f"pg_{r['sub']}_sync_{r['rel']}_") for s in slots))


@dataclass
class LostSyncSlots:
    """Called while a table sits in state 'f': a table seen without its sync slot at two looks in a row (a
    worker that just finished has committed 's' by the second) makes the copy start again from scratch.
    Returns the tables that did; past RESTARTS_MAX restarts a lost slot is an error naming them."""

    subscriber: PgSpec
    publisher: PgSpec
    name: str
    publication: str
    suspects: set[str] = field(default_factory=set)
    restarts: int = 0

    def __call__(self) -> list[str]:
        lost = set(orphaned_syncs(self.subscriber, self.publisher, self.name))
        confirmed, self.suspects = sorted(lost & self.suspects), lost
        if not confirmed:
            return []
        if self.restarts >= RESTARTS_MAX:
            raise MigrationError(f"the table-sync slot of {', '.join(confirmed)} was lost again after "
                                 f"{self.restarts} copies from scratch; the subscription stays (find what drops "
                                 "slots on the publisher, then re-run)")
        restart_copy(self.subscriber, self.publisher, self.name, self.publication)
        self.restarts += 1
        self.suspects = set()
        return confirmed


def restart_copy(subscriber: PgSpec, publisher: PgSpec, name: str, publication: str) -> list[str]:
    """The initial copy from scratch: the subscription disabled and its workers gone, every table it fills
    emptied on the subscriber (a partition through its root), the subscription dropped (its slots with it) and
    made again. Only for a subscriber that nothing but this subscription writes to (the new cluster before the
    cutover). Should the tables not be emptied, the subscription is enabled again as it was. Returns the tables
    emptied."""
    subscription = sql.Identifier(name)
    with _conn(subscriber) as conn:
        tables = [(r["schema"], r["table"]) for r in postgres.query(
            conn, """SELECT DISTINCT n.nspname AS schema, c.relname AS table FROM pg_subscription_rel r
                     JOIN pg_subscription s ON s.oid = r.srsubid
                     JOIN pg_class c ON c.oid = coalesce(pg_partition_root(r.srrelid), r.srrelid)
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE s.subname = %s ORDER BY 1, 2""", [name])]
        postgres.query(conn, sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(subscription))
        try:
            # DISABLE does not wait: a worker inside a transaction would apply it after the TRUNCATE
            deadline = time.monotonic() + WORKERS_STOP_MAX
            while postgres.scalar(conn, """SELECT count(*) FROM pg_stat_subscription st JOIN pg_subscription s
                                           ON s.oid = st.subid WHERE s.subname = %s AND st.pid IS NOT NULL""", [name]):
                if time.monotonic() > deadline:
                    raise MigrationError(f"the workers of subscription {name} did not exit within "
                                         f"{WORKERS_STOP_MAX:g} s of DISABLE")
                time.sleep(0.5)
            if tables:
                postgres.query(conn, "SET lock_timeout = '30s'")
                postgres.query(conn, sql.SQL("TRUNCATE {}").format(
                    sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables)))
        except (psycopg.Error, MigrationError) as exc:
            postgres.query(conn, sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(subscription))
            raise MigrationError(f"the copy must start again (a table-sync slot was lost) but its tables could not "
                                 f"be emptied on {subscriber.name}: {first_line(exc)}; the subscription is left as "
                                 "it was") from exc
    drop_subscription(subscriber, name)  # tables emptied: a re-run from here makes it again and copies all
    ensure_subscription(subscriber, publisher, name, publication, copy_data=True)
    return [f"{s}.{t}" for s, t in tables]


UNREACHABLE_MAX = 120.0  # seconds in a row the subscriber may not answer: a failover takes far less
_PERMANENT = ("password authentication failed", "does not exist", "no pg_hba.conf entry")


def wait_initial_copy(subscriber: PgSpec, name: str, timeout: float,
                      on_progress: Callable[[int, int], None] | None = None,
                      restart: Callable[[], list[str]] | None = None) -> CopyResult:
    """Wait until every table of the subscription is copied and streaming ('r').

    The subscriber's write endpoint may fail over meanwhile: the subscription lives in the cluster's
    catalog, so the new leader's workers carry on (a table whose copy was cut short starts again);
    this wait rides out the moments when the endpoint does not answer, but not a refusal that no
    failover explains (authentication, a missing database) nor a silence longer than UNREACHABLE_MAX.
    While a table waits in state 'f', `restart()` (a LostSyncSlots) is asked every ORPHAN_CHECK_EVERY
    seconds whether the copy must start again; it answers the tables that made it, and the wait's
    bound starts again with the copy.
    """
    deadline = time.monotonic() + timeout
    interruptions = 0
    result = CopyResult({}, 0)
    looked = time.monotonic()
    silent_since: float | None = None
    baseline = sync_errors(subscriber, name)
    while True:
        try:
            states = copy_progress(subscriber, name)
            errors = sync_errors(subscriber, name)
            silent_since = None
            new = (errors[0] - baseline[0], errors[1] - baseline[1])
            # a lost table-sync slot fails its worker outside the error counts: look for one while a table is 'f'
            if states.get("f") and restart is not None and time.monotonic() - looked >= ORPHAN_CHECK_EVERY:
                looked = time.monotonic()
                lost = restart()
                if lost:
                    result.restarts += 1
                    result.lost.extend(lost)
                    baseline = sync_errors(subscriber, name)
                    deadline = time.monotonic() + timeout
                    continue
            if new[0] >= ERRORS_MAX or new[1] >= ERRORS_MAX:
                raise MigrationError(
                    f"the copy is failing: {new[0]} table-sync and {new[1]} apply errors since it started; tables not "
                    f"copied: {', '.join(not_ready(subscriber, name)) or 'none'}. The new cluster's server log names "
                    "the error; the subscription stays (fix the cause, then re-run: it resumes)")
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
                result.states, result.interruptions = states, interruptions
                return result
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
    with _conn(publisher) as conn:
        return wait_applied_on(conn, subscription, lsn, time.monotonic() + timeout)


def wait_applied_on(conn: psycopg.Connection[Any], subscription: str, lsn: str, deadline: float) -> float:
    """wait_applied on an open connection to the publisher, until a monotonic deadline."""
    started = time.monotonic()
    while True:
        behind = postgres.scalar(conn, """SELECT min(pg_wal_lsn_diff(%s::pg_lsn, replay_lsn))
                                          FROM pg_stat_replication WHERE application_name = %s""",
                                 [lsn, subscription])
        if behind is not None and behind <= 0:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise MigrationError(f"the new cluster did not apply {lsn} within {time.monotonic() - started:.2f} s "
                                 f"({behind} bytes behind)")
        time.sleep(0.005 if deadline - time.monotonic() < 5 else 0.05)


def catch_up(publisher: PgSpec, subscription: str, timeout: float) -> tuple[str, float]:
    """The publisher's current LSN and the seconds until the subscriber had applied it."""
    lsn = current_lsn(publisher)
    return lsn, wait_applied(publisher, subscription, lsn, timeout)


def flushed_lsn_on(conn: psycopg.Connection[Any], flush: bool = True) -> tuple[str, str]:
    """Where the server's WAL ends with every commit in it flushed, and the next xid it will assign.

    The application's last commits may be asynchronous (synchronous_commit off): in the WAL but not yet
    flushed, so beyond pg_current_wal_lsn() and not yet sent to any subscriber. A transaction that writes
    WAL (a logical message no subscriber asks for) commits synchronously here, which flushes the WAL up to
    and past all of them; the flush position after it is the LSN a subscriber must apply. The snapshot's
    xmax (one past the last transaction with an xid that ended) lets writes_since tell later whether one
    ended since. With flush=False both are only read, nothing is written.
    """
    if flush:
        postgres.query(conn, "SELECT set_config('synchronous_commit', 'on', false), "
                             "pg_logical_emit_message(true, 'runbook_cut', '')")
    row = postgres.query(conn, "SELECT pg_current_wal_flush_lsn()::text AS lsn, "
                               "pg_snapshot_xmax(pg_current_snapshot())::text AS xmax")[0]
    return row["lsn"], row["xmax"]


def advance_slot(publisher: PgSpec, slot: str) -> str:
    """A logical slot moved to the publisher's current LSN (what it skips is no subscriber's business)."""
    with _conn(publisher) as conn:
        return advance_slot_on(conn, slot)


def advance_slot_on(conn: psycopg.Connection[Any], slot: str, to: str | None = None) -> str:
    """Move a logical slot to `to` (default: the server's current LSN); returns where it now stands."""
    return str(postgres.scalar(conn, "SELECT end_lsn::text FROM pg_replication_slot_advance(%s, "
                                     "coalesce(%s::pg_lsn, pg_current_wal_lsn()))", [slot, to]))


def sequence_values(conn: psycopg.Connection[Any]) -> tuple[list[str], list[int]]:
    """Every sequence that was used, as quoted schema.name (quoted by the server), and its last value."""
    rows = postgres.query(conn, "SELECT format('%I.%I', schemaname, sequencename) AS name, last_value "
                                "FROM pg_sequences WHERE last_value IS NOT NULL")
    return [r["name"] for r in rows], [r["last_value"] for r in rows]


def set_sequences(conn: psycopg.Connection[Any], values: tuple[list[str], list[int]]) -> int:
    """Set every sequence in one statement (inside a write pause each round trip counts)."""
    if not values[0]:
        return 0
    return int(postgres.scalar(conn, "SELECT count(setval(n::regclass, v, true)) "
                                     "FROM unnest(%s::text[], %s::bigint[]) AS t(n, v)", list(values)))


def copy_sequences(source: PgSpec, target: PgSpec) -> int:
    with _conn(source) as conn:
        values = sequence_values(conn)
    with _conn(target) as conn:
        return set_sequences(conn, values)


def advance_sequences(endpoint: PgSpec) -> int:
    """Move every sequence a column uses past the highest value any such column holds.

    Why: when the new cluster is lost, its sequence values cannot be copied, and rows that reverse
    replication delivered carry ids the local sequences have not reached yet. A sequence counts when a
    column owns it (serial, identity) or a column's default calls it (nextval() without OWNED BY, a
    sequence several tables share); a shared one moves past the highest value of them all.
    """
    with _conn(endpoint) as conn:
        used = postgres.query(conn, """
            SELECT sn.nspname AS seq_schema, s.relname AS seq, tn.nspname AS tbl_schema, t.relname AS tbl,
                   a.attname AS col
            FROM pg_class s JOIN pg_namespace sn ON sn.oid = s.relnamespace
            JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
            JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
            WHERE s.relkind = 'S'
            UNION
            SELECT sn.nspname, s.relname, tn.nspname, t.relname, a.attname
            FROM pg_class s JOIN pg_namespace sn ON sn.oid = s.relnamespace
            JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = s.oid
             AND d.classid = 'pg_attrdef'::regclass
            JOIN pg_attrdef ad ON ad.oid = d.objid
            JOIN pg_class t ON t.oid = ad.adrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
            JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
            WHERE s.relkind = 'S'""")
        by_sequence: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in used:
            by_sequence.setdefault((row["seq_schema"], row["seq"]), []).append(row)
        for (schema, name), columns in by_sequence.items():
            seq = sql.Identifier(schema, name)
            highest = sql.SQL(", ").join(sql.SQL("(SELECT max({})::bigint FROM {})").format(
                sql.Identifier(c["col"]), sql.Identifier(c["tbl_schema"], c["tbl"])) for c in columns)
            postgres.query(conn, sql.SQL("SELECT setval({s}::regclass, greatest({h}, (SELECT last_value FROM {q})), "
                                         "true)").format(s=sql.Literal(seq.as_string(conn)), h=highest, q=seq))
    return len(by_sequence)


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


def _ident(table: str) -> sql.Identifier:
    schema, name = table.split(".", 1)
    return sql.Identifier(schema.strip('"'), name.strip('"'))


def _measure_all(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for table in tables:
        present = postgres.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", [_ident(table).as_string(conn)])
        out[table] = _table_digest(conn, table) if present else (-1, "missing")
    return out


def compare(src: psycopg.Connection[Any], dst: psycopg.Connection[Any], tables: list[str]) -> list[TableCheck]:
    """Measure every table on both sides at once (one thread per side: each side is its own server)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        left = pool.submit(_measure_all, src, tables)
        right = pool.submit(_measure_all, dst, tables)
        source, target = left.result(), right.result()
    return [TableCheck(t, source[t][0], target[t][0], source[t][1], target[t][1]) for t in tables]


def validate(source: PgSpec, target: PgSpec, tables: list[str] | None = None) -> list[TableCheck]:
    """Row count and an order-independent checksum of every row (vector columns included) on both sides
    (`tables`, default every table of the source).

    Both sides must be still (writes off, the new side caught up) for the result to mean anything.
    """
    with _conn(source) as src, _conn(target) as dst:
        return compare(src, dst, tables if tables is not None else user_tables(source))


@contextmanager
def snapshot(endpoint: PgSpec) -> Iterator[psycopg.Connection[Any]]:
    """A connection inside a read-only REPEATABLE READ transaction whose snapshot is already taken."""
    with _conn(endpoint) as conn:
        begin_snapshot(conn)
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


def begin_snapshot(conn: psycopg.Connection[Any]) -> None:
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    conn.execute("SELECT 1")  # the snapshot is fixed at the first statement


def drop_subscription(subscriber: PgSpec, name: str, keep_slot: bool = False) -> bool:
    """Drop a subscription; keep_slot when its publisher is unreachable (the slot is left there, named `name`)."""
    with _conn(subscriber) as conn:
        if not subscribed_on(conn, name):
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


def drain(endpoint: PgSpec) -> int:
    """End every non-admin session on the endpoint's database (the policy's drain): only superusers' sessions,
    replication and the server's own processes stay."""
    with _conn(endpoint) as conn:
        return drain_on(conn)


def drain_on(conn: psycopg.Connection[Any]) -> int:
    """drain on an open connection; the runbook's own sessions (its role's) stay, so a snapshot held for a
    check inside a write pause survives a migration role that is not a superuser."""
    return _terminate(conn, """SELECT a.pid FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
                               WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                                 AND a.backend_type = 'client backend' AND NOT r.rolsuper
                                 AND a.usename <> current_user""")


TERMINATE_WAIT_MS = 1000  # how long pg_terminate_backend waits for a session to be gone (PostgreSQL 14+)


def _terminate(conn: psycopg.Connection[Any], pids: LiteralString, params: list[Any] | None = None) -> int:
    """pg_terminate_backend on the sessions the query `pids` selects, waiting (bounded) until each has gone,
    so no transaction of theirs can still commit after this returns."""
    wait = sql.SQL(", {}").format(sql.Literal(TERMINATE_WAIT_MS)) if conn.info.server_version >= 140000 else sql.SQL("")
    return int(postgres.scalar(conn, sql.SQL("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid{})) FROM ({}) s")
                               .format(wait, sql.SQL(pids)), params))


def writers_on(conn: psycopg.Connection[Any], idle_too: bool = True) -> list[str]:
    """Other sessions of the database that have written in their open transaction (an xid) or (idle_too)
    sit idle in one: after the write stop, such a session is a writer that stop does not cover (a superuser,
    a role other than the application's). A running statement without an xid (a monitoring query) is not."""
    rows = postgres.query(conn, """SELECT format('%%s (pid %%s, application %%L, %%s)', usename, pid,
                                                 application_name, state) AS w
                                   FROM pg_stat_activity WHERE datname = current_database()
                                     AND pid <> pg_backend_pid() AND backend_type = 'client backend'
                                     AND (backend_xid IS NOT NULL OR (%s AND state LIKE 'idle in transaction%%'))""",
                          [idle_too])
    return [r["w"] for r in rows]


def writes_since(conn: psycopg.Connection[Any], xmax: str) -> list[str]:
    """What wrote on the server since flushed_lsn_on gave `xmax`: a session now holding an xid, or a
    transaction with an xid that ended meanwhile (the snapshot's xmax moved)."""
    found = writers_on(conn, idle_too=False)
    now = flushed_lsn_on(conn, flush=False)[1]
    return found + ([f"transactions that ended meanwhile (xmax {xmax} -> {now})"] if now != xmax else [])


def set_read_only(endpoint: PgSpec, role: str, read_only: bool) -> int:
    """Writes off (or on) for the application role on a server; its open sessions are ended when turning off,
    and those opened while it was off are ended when turning on (see set_read_only_on)."""
    with _conn(endpoint) as conn:
        return set_read_only_on(conn, role, read_only)


_MARKED = """SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
             WHERE r.rolname = %s AND s.setdatabase = 0 AND 'default_transaction_read_only=on' = ANY(s.setconfig)"""
_SESSIONS = ("SELECT pid FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid() "
             "AND backend_type = 'client backend'")


def read_only_for(endpoint: PgSpec, role: str) -> bool:
    """Whether the role's sessions start read-only on this server (set_read_only's mark)."""
    with _conn(endpoint) as conn:
        return bool(postgres.query(conn, _MARKED, [role]))


def set_read_only_on(conn: psycopg.Connection[Any], role: str, read_only: bool) -> int:
    """The mark on (the role's sessions ended: each new one starts read-only) or off. Turning it off also ends
    the sessions that began under it: the setting is read at a session's start, so they would refuse writes
    for as long as they live (a pooler's server connections opened meanwhile, say). Returns sessions ended."""
    if read_only:
        postgres.query(conn, sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on")
                       .format(sql.Identifier(role)))
        return _terminate(conn, _SESSIONS, [role])
    marked = bool(postgres.query(conn, _MARKED, [role]))
    postgres.query(conn, sql.SQL("ALTER ROLE {} RESET default_transaction_read_only").format(sql.Identifier(role)))
    return _terminate(conn, _SESSIONS, [role]) if marked else 0  # all began after the mark ended the others


# ---------------------------------------------------------------- what logical replication does not carry


def copy_large_objects(source: PgSpec, target: PgSpec) -> int:
    """Every large object of legacy onto the new cluster, same oid and owner (the target's are replaced)."""
    with _conn(source) as src, _conn(target) as dst:
        return copy_large_objects_on(src, dst)


def copy_large_objects_on(src: psycopg.Connection[Any], dst: psycopg.Connection[Any]) -> int:
    oids = [r["oid"] for r in postgres.query(src, "SELECT oid FROM pg_largeobject_metadata ORDER BY oid")]
    postgres.query(dst, "SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
    for oid in oids:
        row = postgres.query(src, """SELECT lo_get(m.oid) AS data, r.rolname AS owner FROM pg_largeobject_metadata m
                                     JOIN pg_roles r ON r.oid = m.lomowner WHERE m.oid = %s""", [oid])[0]
        postgres.query(dst, "SELECT lo_from_bytea(%s, %s)", [oid, row["data"]])
        postgres.query(dst, sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(sql.Literal(oid),
                                                                                sql.Identifier(row["owner"])))
    return len(oids)


LO_DIGEST = """SELECT count(*) AS n, coalesce(md5(string_agg(oid::text || ':' || md5(lo_get(oid)), ',' ORDER BY oid)),
                      '') AS digest FROM pg_largeobject_metadata"""


def large_object_check(src: psycopg.Connection[Any], dst: psycopg.Connection[Any]) -> TableCheck:
    """Large objects compared as one more 'table': count and a digest of every object's oid and content."""
    a, b = postgres.query(src, LO_DIGEST)[0], postgres.query(dst, LO_DIGEST)[0]
    return TableCheck("(large objects)", int(a["n"]), int(b["n"]), a["digest"], b["digest"])


def refresh_materialized_views(target: PgSpec) -> list[str]:
    """Materialized views arrive empty with the schema: filled on the new cluster (in creation order)."""
    with _conn(target) as conn:
        views = postgres.query(conn, """SELECT c.oid::regclass::text AS v FROM pg_class c
                                        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'm'
                                        AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY c.oid""")
        for v in views:
            postgres.query(conn, sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.SQL(v["v"])))
    return [v["v"] for v in views]


FREEZE = "rollout_ddl_freeze"


def freeze_ddl(source: PgSpec, campaign: str) -> bool:
    """No schema change on legacy from the copy to the cutover: an event trigger refuses every DDL command
    (a table created or altered meanwhile would not reach the new cluster). False when already frozen."""
    with _conn(source) as conn:
        if postgres.query(conn, "SELECT 1 FROM pg_event_trigger WHERE evtname = %s", [FREEZE]):
            return False
        message = (f"schema changes are frozen on this database for the migration (campaign {campaign}): they "
                   "would not reach the new cluster. Wait for the cutover, or roll the migration back")
        postgres.query(conn, "CREATE SCHEMA IF NOT EXISTS rollout")
        postgres.query(conn, sql.SQL("""CREATE OR REPLACE FUNCTION rollout.{f}() RETURNS event_trigger
            LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION {m} USING ERRCODE = 'object_not_in_prerequisite_state';
            END$$""").format(f=sql.Identifier(FREEZE), m=sql.Literal(message)))
        postgres.query(conn, sql.SQL("CREATE EVENT TRIGGER {t} ON ddl_command_start EXECUTE FUNCTION rollout.{t}()")
                       .format(t=sql.Identifier(FREEZE)))
    return True


def thaw_ddl(source: PgSpec) -> bool:
    """Lift the DDL freeze (the trigger first: dropping it is not DDL an event trigger sees). False when none."""
    with _conn(source) as conn:
        if not postgres.query(conn, "SELECT 1 FROM pg_event_trigger WHERE evtname = %s", [FREEZE]):
            return False
        postgres.query(conn, sql.SQL("DROP EVENT TRIGGER {}").format(sql.Identifier(FREEZE)))
        postgres.query(conn, sql.SQL("DROP FUNCTION IF EXISTS rollout.{}()").format(sql.Identifier(FREEZE)))
        postgres.query(conn, "DROP SCHEMA IF EXISTS rollout")
    return True
