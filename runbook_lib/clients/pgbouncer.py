"""PgBouncer's admin console (simple query protocol only, hence a client-side cursor)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from runbook_lib.clients import swarm
from runbook_lib.config.endpoints import PgBouncerSpec
from runbook_lib.config.params import Swarm
from runbook_lib.errors import RunbookError

SHOWABLE = frozenset({"POOLS", "DATABASES", "CLIENTS", "SERVERS", "CONFIG", "STATS", "LISTS", "VERSION"})
COMMANDS = frozenset({"PAUSE", "RESUME", "RELOAD", "RECONNECT"})


class PgBouncerError(RunbookError):
    pass


def connect(spec: PgBouncerSpec) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(autocommit=True, cursor_factory=psycopg.ClientCursor, row_factory=dict_row,
                           **spec.admin.connect_kwargs())


def show(conn: psycopg.Connection[Any], what: str) -> list[dict[str, Any]]:
    """SHOW POOLS / DATABASES / CLIENTS / CONFIG ... (what is checked against a fixed list)."""
    if what.upper() not in SHOWABLE:
        raise ValueError(f"SHOW {what}: not one of {sorted(SHOWABLE)}")
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SHOW {}").format(sql.SQL(what.upper())))
        return list(cur.fetchall())


def command(spec: PgBouncerSpec, verb: str, database: str | None = None) -> None:
    """PAUSE / RESUME / RELOAD / RECONNECT on the admin console, for one database or all."""
    if verb not in COMMANDS:
        raise ValueError(f"{verb}: not an allowed admin command")
    with connect(spec) as conn, conn.cursor() as cur:
        if database:
            cur.execute(sql.SQL("{} {}").format(sql.SQL(verb), sql.Identifier(database)))
        else:
            cur.execute(sql.SQL(verb))


def pause(spec: PgBouncerSpec, database: str) -> bool:
    """PAUSE a pool; False when it was paused already (so a caller undoes only its own pause)."""
    return _unless_already(spec, "PAUSE", database, "already")


def resume(spec: PgBouncerSpec, database: str) -> bool:
    """RESUME a pool; one that is not paused is already what was wanted (False)."""
    return _unless_already(spec, "RESUME", database, "not paused")


def _unless_already(spec: PgBouncerSpec, verb: str, database: str, already: str) -> bool:
    try:
        command(spec, verb, database)
    except psycopg.Error as exc:
        if already not in str(exc).lower():
            raise
        return False
    return True


def backend(spec: PgBouncerSpec, database: str) -> tuple[str, int]:
    """Where PgBouncer sends `database` right now (SHOW DATABASES)."""
    with connect(spec) as conn:
        row = next((r for r in show(conn, "DATABASES") if r["name"] == database), None)
    if row is None:
        raise PgBouncerError(f"PgBouncer has no database entry {database!r}")
    return row["host"], int(row["port"])


def repoint(spec: PgBouncerSpec, swarm_spec: Swarm | None, database: str, host: str, port: int) -> None:
    """Rewrite the [databases] entry in the running PgBouncer's config, then RELOAD and RECONNECT.

    The config file lives in the PgBouncer task (target.pgbouncer.service, .config_path); the
    change holds until the task restarts, so the stack definition must be updated as well.
    """
    if not spec.service:
        raise PgBouncerError("target.pgbouncer.service is not set: cannot reach PgBouncer's configuration")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", database) or not re.fullmatch(r"[A-Za-z0-9_.:-]+", host):
        raise PgBouncerError(f"refusing to write an unusual database or host name into pgbouncer.ini: "
                             f"{database!r} {host!r}")
    service = swarm.for_target(swarm_spec).services.get(spec.service)
    # the values travel as positional arguments of the script, never spliced into its text
    script = ('sed -i -E "s/^($1[[:space:]]*=.*host=)[^ ]+( port=)[0-9]+/\\\\1$2\\\\2$3/" "$4" '
              '&& grep -E "^$1[[:space:]]*=" "$4"')
    code, out = swarm.exec_in(swarm_spec, service, ["sh", "-c", script, "repoint", database, host, str(int(port)),
                                                    spec.config_path])
    if code != 0 or f"port={int(port)}" not in out:
        raise PgBouncerError(f"could not rewrite the {database} entry of {spec.config_path}: {out.strip()[:200]}")
    command(spec, "RELOAD")
    command(spec, "RECONNECT", database)
