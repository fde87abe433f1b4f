"""Back to legacy after a cutover, without losing a write made on the new cluster.

After a logical cutover, reverse replication (new -> legacy) keeps legacy current. Rolling
back is then the cutover run backwards: pause the pool, stop writes on the new cluster, wait
until legacy has applied the new cluster's last write, copy the sequences, point PgBouncer
back at legacy, make legacy writable, resume. Without reverse replication (dump-restore),
writes made on the new cluster since the cutover would be lost: that is refused unless the
caller says the loss is accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.config import names
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.errors import RunbookError, first_line
from runbook_lib.ops import migration
from runbook_lib.ops.migration import Route


class RollbackError(RunbookError):
    pass


@dataclass
class RollbackReport:
    seconds: float
    reverse_applied_lsn: str | None
    sequences: int
    steps: list[str] = field(default_factory=list)
    loss: str | None = None  # what legacy lacks, when the loss was accepted

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 2), "reverse_applied_lsn": self.reverse_applied_lsn,
                "sequences": self.sequences, "steps": self.steps, "loss": self.loss}


def reverse_replication(r: Route) -> bool:
    """Whether legacy subscribes to the new cluster (a logical cutover keeps it current that way)."""
    return migration.subscription_exists(r.source, names.REVERSE_SUBSCRIPTION)


def on_legacy(r: Route) -> bool:
    return pgbouncer.backend(r.pooler, r.pooler_database) == r.legacy_backend


NO_REVERSE = ("no reverse replication from the new cluster to legacy: writes made since the cutover would be lost. "
              "Copy them back first, or accept the loss explicitly")


def refusal(r: Route, accept_loss: bool = False) -> str | None:
    """Why a rollback would lose writes (and so is refused), or None when it loses nothing."""
    if accept_loss or reverse_replication(r) or on_legacy(r):
        return None
    return NO_REVERSE


def detach_new(r: Route, accept_loss: bool = False, timeout: float = 60.0,
               at_cut: Callable[[], None] | None = None) -> RollbackReport:
    """Stop the new cluster taking writes and bring legacy level with it; the pool stays paused.

    Pool paused, the new cluster read-only for the application, legacy has applied its last write,
    sequences copied; `at_cut` runs there, both sides still. Then reverse replication is dropped. On
    failure the new cluster is writable again and the pool as it was: the target is as it was.
    Only an unreachable new cluster, with the loss accepted, skips the draining.
    """
    role = r.app_role
    started = time.monotonic()
    report = RollbackReport(0.0, None, 0)
    if not reverse_replication(r):
        if on_legacy(r):
            report.steps.append("PgBouncer already sends the application to legacy")
        elif not accept_loss:
            raise RollbackError(NO_REVERSE)
        else:
            pgbouncer.pause(r.pooler, r.pooler_database)
            # rows a reverse replication delivered before it ended carry ids legacy's sequences never reached
            report.sequences = migration.advance_sequences(r.source)
            report.loss = "no reverse replication: legacy holds what it had when it last received (loss accepted)"
            report.steps.append(f"{report.loss}; {report.sequences} sequences moved past the highest ids legacy holds")
        return report
    # paused also when PgBouncer went back to legacy on its own: legacy must catch up first
    paused = pgbouncer.pause(r.pooler, r.pooler_database)
    try:
        try:
            migration.set_read_only(r.target, role, True)
            lsn, _ = migration.catch_up(r.target, names.REVERSE_SUBSCRIPTION, timeout)
            report.sequences = migration.copy_sequences(r.target, r.source)
        except (psycopg.Error, migration.MigrationError) as exc:
            if not (accept_loss and _unreachable(r.target)):
                raise not_level(exc) from exc
            report.sequences = migration.advance_sequences(r.source)
            migration.drop_subscription(r.source, names.REVERSE_SUBSCRIPTION, keep_slot=True)
            report.loss = (f"the new cluster is unreachable ({first_line(exc)}): legacy keeps what reverse "
                           "replication delivered (loss accepted)")
            report.steps.append(f"{report.loss}; {report.sequences} sequences moved past the highest ids legacy "
                                "holds; its replication slot is left on the new cluster")
            report.seconds = time.monotonic() - started
            return report
        report.reverse_applied_lsn = lsn
        if at_cut:
            at_cut()
        migration.drop_subscription(r.source, names.REVERSE_SUBSCRIPTION)
        report.steps.append(f"legacy applied the new cluster's LSN {lsn}; {report.sequences} sequences copied")
    except BaseException as exc:
        undo = [lambda: migration.set_read_only(r.target, role, False)]
        if paused:
            undo.append(lambda: pgbouncer.resume(r.pooler, r.pooler_database))
        for action in undo:
            try:
                action()
            except Exception as undo_exc:  # noqa: BLE001 - the first failure is the one to raise
                exc.add_note(f"undoing the detach also failed: {undo_exc}")
        raise
    report.seconds = time.monotonic() - started
    return report


def not_level(exc: BaseException) -> RollbackError:
    return RollbackError(f"legacy could not be brought level with the new cluster ({first_line(exc)}); nothing was "
                         "switched. Only if the new cluster is lost (unreachable), roll back with the loss accepted "
                         "(rollback.accept_loss): writes not yet on legacy are then lost")


def _unreachable(endpoint: PgSpec) -> bool:
    try:
        postgres.connect(endpoint).close()
    except psycopg.OperationalError:
        return True
    return False


def restore_traffic(r: Route) -> list[str]:
    """Legacy writable for the application, PgBouncer pointed at it, the pool resumed; safe to repeat."""
    try:  # a failure leaves the pool resumed, never paused: the application waits on nothing
        migration.thaw_ddl(r.source)
        migration.set_read_only(r.source, r.app_role, False)
        done = [f"legacy writable for {r.app_role}"]
        legacy = r.legacy_backend
        if not on_legacy(r):
            pgbouncer.repoint(r.pooler, r.swarm, r.pooler_database, *legacy)
            done.append(f"PgBouncer sends {r.pooler_database} to {legacy[0]}:{legacy[1]}")
        elif r.pooler.service:  # a switch cut short may have left the new backend staged: a RELOAD keeps legacy
            pgbouncer.stage(r.pooler, r.swarm, r.pooler_database, *legacy)
    finally:
        pgbouncer.resume(r.pooler, r.pooler_database)
    return done


def to_legacy(r: Route, accept_loss: bool = False, timeout: float = 60.0) -> RollbackReport:
    """Send the application back to legacy in one call; every part checks its effect first, so it can be re-run."""
    started = time.monotonic()
    report = detach_new(r, accept_loss, timeout)
    report.steps += restore_traffic(r)
    report.seconds = time.monotonic() - started
    return report


REPLICATION_OBJECTS = frozenset({names.PUBLICATION, names.REVERSE_PUBLICATION, names.SUBSCRIPTION,
                                 names.REVERSE_SUBSCRIPTION})  # publications, and the slots named after subscriptions


def left_behind(r: Route) -> list[str]:
    """What a migration, a rollback or a test left on the target that a fresh attempt must not meet: the
    application not on legacy, the pool paused, legacy read-only or its DDL frozen, replication objects,
    tables on the new cluster. Empty when legacy serves alone and the new cluster is empty."""
    found = []
    backend = pgbouncer.backend(r.pooler, r.pooler_database)
    if backend != r.legacy_backend:
        found.append(f"PgBouncer sends {r.pooler_database} to {backend[0]}:{backend[1]}, not legacy")
    if pgbouncer.paused(r.pooler, r.pooler_database):
        found.append(f"the pool {r.pooler_database} is paused")
    if migration.read_only_for(r.source, r.app_role):
        found.append(f"legacy is read-only for {r.app_role}")
    for endpoint, name in ((r.source, names.REVERSE_SUBSCRIPTION), (r.target, names.SUBSCRIPTION)):
        if migration.subscription_exists(endpoint, name):
            found.append(f"subscription {name} on {endpoint.name}")
    with postgres.connect(r.source) as conn:
        if postgres.query(conn, "SELECT 1 FROM pg_event_trigger WHERE evtname = %s", [migration.FREEZE]):
            found.append("DDL frozen on legacy")
    for endpoint in (r.source, r.target):
        with postgres.connect(endpoint) as conn:
            found += [f"{row['what']} on {endpoint.name}" for row in postgres.query(conn, """
                SELECT 'publication ' || pubname AS what FROM pg_publication WHERE pubname = ANY(%(names)s)
                UNION ALL SELECT 'replication slot ' || slot_name FROM pg_replication_slots
                WHERE slot_name = ANY(%(names)s)""", {"names": list(REPLICATION_OBJECTS)})]
    if tables := migration.user_tables(r.target):
        found.append(f"{len(tables)} tables on {r.target.name}")
    return found


def _clear_schema_objects(r: Route) -> list[str]:
    """What the schema copy brought besides tables and sequences: the application's own schemas (those legacy
    has too, public kept), its types and domains in public, and the large objects copied at the cut; a
    dump-restore attempt after a logical one would otherwise meet them and stop ("already exists")."""
    done = []
    with postgres.connect(r.source) as conn:
        legacy_schemas = {row["n"] for row in postgres.query(conn, _APP_SCHEMAS)}
    with postgres.connect(r.target) as conn:
        schemas = sorted({row["n"] for row in postgres.query(conn, _APP_SCHEMAS)} & legacy_schemas - {"public"})
        for name in schemas:
            postgres.query(conn, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        types = postgres.query(conn, """SELECT t.typname AS name FROM pg_type t
            JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c')
            AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
            AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                            AND d.deptype = 'e')""")
        for t in types:
            postgres.query(conn, sql.SQL("DROP TYPE IF EXISTS {} CASCADE").format(sql.Identifier("public", t["name"])))
        objects = postgres.query(conn, "SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
    if schemas:
        done.append(f"schemas {', '.join(schemas)} dropped on {r.target.name}")
    if types:
        done.append(f"{len(types)} types dropped on {r.target.name}")
    if objects:
        done.append(f"{len(objects)} large objects removed on {r.target.name}")
    return done


# schemas that hold only what a schema copy creates: none owned by or holding an extension's objects (an
# `extensions` schema with vector in it), none holding functions (a pooler's auth_query lookup)
_APP_SCHEMAS = """SELECT n.nspname AS n FROM pg_namespace n WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
                    AND d.deptype = 'e')
    AND NOT EXISTS (SELECT 1 FROM pg_extension e WHERE e.extnamespace = n.oid)
    AND NOT EXISTS (SELECT 1 FROM pg_proc f WHERE f.pronamespace = n.oid)"""


def clear_new(r: Route) -> list[str]:
    """Empty the new cluster for a fresh migration attempt: replication objects, the moved tables, and what
    the schema copy brought with them (schemas, types, large objects).

    Only for a new cluster that is not serving: refused while PgBouncer points at it.
    """
    if not on_legacy(r):
        raise RollbackError("PgBouncer does not point at legacy: roll back first (the new cluster is serving)")
    done = ["DDL freeze on legacy lifted"] if migration.thaw_ddl(r.source) else []
    for subscriber, name in ((r.target, names.SUBSCRIPTION), (r.source, names.REVERSE_SUBSCRIPTION)):
        if migration.drop_subscription(subscriber, name):
            done.append(f"subscription {name} dropped on {subscriber.name}")
    for endpoint, name in ((r.source, names.PUBLICATION), (r.target, names.REVERSE_PUBLICATION)):
        with postgres.connect(endpoint) as conn:
            postgres.query(conn, sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
    for endpoint, name in ((r.target, names.REVERSE_SUBSCRIPTION), (r.source, names.SUBSCRIPTION)):
        with postgres.connect(endpoint) as conn:  # a slot whose subscriber was dropped without it
            if postgres.query(conn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                    "WHERE slot_name = %s AND NOT active", [name]):
                done.append(f"replication slot {name} left by a detached subscription dropped on {endpoint.name}")
    tables = migration.user_tables(r.target)
    if tables:
        with postgres.connect(r.target) as conn:
            idents = [sql.Identifier(*t.replace('"', "").split(".", 1)) for t in tables]
            postgres.query(conn, sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.SQL(", ").join(idents)))
        done.append(f"{len(tables)} tables dropped on {r.target.name}")
    with postgres.connect(r.target) as conn:
        sequences = postgres.query(conn, """SELECT n.nspname AS schema, c.relname AS name FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S'
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND NOT EXISTS (
              SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.deptype = 'e')""")
        for seq in sequences:
            postgres.query(conn, sql.SQL("DROP SEQUENCE IF EXISTS {} CASCADE").format(
                sql.Identifier(seq["schema"], seq["name"])))
    if sequences:
        done.append(f"{len(sequences)} standalone sequences dropped on {r.target.name}")
    done += _clear_schema_objects(r)
    migration.set_read_only(r.target, r.app_role, False)
    migration.set_read_only(r.source, r.app_role, False)
    return done

