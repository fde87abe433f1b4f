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
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from runbook_lib import migration
from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.params import Params


class RollbackError(Exception):
    pass


@dataclass
class RollbackReport:
    seconds: float
    reverse_applied_lsn: str | None
    sequences: int
    steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 2), "reverse_applied_lsn": self.reverse_applied_lsn,
                "sequences": self.sequences, "steps": self.steps}


def _has_subscription(params: Params, endpoint: str, name: str) -> bool:
    with postgres.connect(params, endpoint) as conn:
        return bool(postgres.query(conn, "SELECT 1 FROM pg_subscription WHERE subname = %s", [name]))


def _legacy_backend(params: Params) -> tuple[str, int]:
    db = params.target.databases[params.migration.source]
    return db.host, db.port


def to_legacy(params: Params, accept_loss: bool = False, timeout: float = 60.0) -> RollbackReport:
    """Send the application back to legacy; every step checks its effect first, so it can be re-run."""
    m = params.migration
    if m is None:
        raise RollbackError("migration is not set in the parameters: nothing says what legacy and the new cluster are")
    started = time.monotonic()
    app_role = params.target.app.role
    reverse = _has_subscription(params, m.source, migration.REVERSE_SUBSCRIPTION)
    legacy = _legacy_backend(params)
    on_legacy = pgbouncer.backend(params, m.pooler_database) == legacy
    if not reverse and not on_legacy and not accept_loss:
        raise RollbackError("no reverse replication from the new cluster to legacy: writes made since the cutover "
                            "would be lost. Copy them back first, or accept the loss explicitly")
    report = RollbackReport(0.0, None, 0)
    if not on_legacy:
        pgbouncer.command(params, "PAUSE", m.pooler_database)
    try:
        if reverse:
            migration.set_read_only(params, m.target, app_role, True)
            lsn, _ = migration.catch_up(params, m.target, migration.REVERSE_SUBSCRIPTION, timeout)
            report.reverse_applied_lsn = lsn
            report.sequences = migration.copy_sequences(params, m.target, m.source)
            migration.drop_subscription(params, m.source, migration.REVERSE_SUBSCRIPTION)
            report.steps.append(f"legacy applied the new cluster's LSN {lsn}; {report.sequences} sequences copied")
        migration.set_read_only(params, m.source, app_role, False)
        if not on_legacy:
            pgbouncer.repoint(params, m.pooler_database, *legacy)
            report.steps.append(f"PgBouncer sends {m.pooler_database} to {legacy[0]}:{legacy[1]}")
    finally:
        try:  # also when a cutover stopped between writes off and the switch: the pool must not stay paused
            pgbouncer.command(params, "RESUME", m.pooler_database)
        except Exception as exc:  # noqa: BLE001 - not paused is the state we want
            if "not paused" not in str(exc).lower():
                raise
    report.seconds = time.monotonic() - started
    return report


def clear_new(params: Params) -> list[str]:
    """Empty the new cluster for a fresh migration attempt: replication objects and the moved tables.

    Only for a new cluster that is not serving: refused while PgBouncer points at it.
    """
    m = params.migration
    if pgbouncer.backend(params, m.pooler_database) != _legacy_backend(params):
        raise RollbackError("PgBouncer does not point at legacy: roll back first (the new cluster is serving)")
    done = []
    for subscriber, name in ((m.target, migration.SUBSCRIPTION), (m.source, migration.REVERSE_SUBSCRIPTION)):
        if migration.drop_subscription(params, subscriber, name):
            done.append(f"subscription {name} dropped on {subscriber}")
    for endpoint, name in ((m.source, migration.PUBLICATION), (m.target, migration.REVERSE_PUBLICATION)):
        with postgres.connect(params, endpoint) as conn:
            postgres.query(conn, sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
    tables = migration.user_tables(params, m.target)
    if tables:
        with postgres.connect(params, m.target) as conn:
            idents = [sql.Identifier(*t.replace('"', "").split(".", 1)) for t in tables]
            postgres.query(conn, sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.SQL(", ").join(idents)))
        done.append(f"{len(tables)} tables dropped on {m.target}")
    with postgres.connect(params, m.target) as conn:
        sequences = postgres.query(conn, """SELECT n.nspname AS schema, c.relname AS name FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S'
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND NOT EXISTS (
              SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.deptype = 'e')""")
        for seq in sequences:
            postgres.query(conn, sql.SQL("DROP SEQUENCE IF EXISTS {} CASCADE").format(
                sql.Identifier(seq["schema"], seq["name"])))
    if sequences:
        done.append(f"{len(sequences)} standalone sequences dropped on {m.target}")
    migration.set_read_only(params, m.target, params.target.app.role, False)
    migration.set_read_only(params, m.source, params.target.app.role, False)
    return done

