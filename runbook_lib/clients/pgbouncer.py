"""PgBouncer's admin console (simple query protocol only, hence a client-side cursor)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from runbook_lib.params import Params


def connect(params: Params) -> psycopg.Connection:
    spec = params.target.pgbouncer
    if spec is None:
        raise ValueError("target.pgbouncer is not configured")
    kwargs: dict[str, Any] = {"host": spec.host, "port": spec.port, "dbname": "pgbouncer", "user": spec.admin_user,
                              "sslmode": spec.sslmode, "connect_timeout": 5}
    if spec.sslrootcert:
        kwargs["sslrootcert"] = str(params.path(spec.sslrootcert))
    if spec.admin_password:
        kwargs["password"] = params.resolve(spec.admin_password).reveal()
    return psycopg.connect(autocommit=True, cursor_factory=psycopg.ClientCursor, row_factory=dict_row, **kwargs)


def show(conn: psycopg.Connection, what: str) -> list[dict[str, Any]]:
    """SHOW POOLS / DATABASES / CLIENTS / CONFIG ... (what is checked against a fixed list)."""
    allowed = {"POOLS", "DATABASES", "CLIENTS", "SERVERS", "CONFIG", "STATS", "LISTS", "VERSION"}
    if what.upper() not in allowed:
        raise ValueError(f"SHOW {what}: not one of {sorted(allowed)}")
    with conn.cursor() as cur:
        cur.execute(f"SHOW {what.upper()}")
        return list(cur.fetchall())


def command(params: Params, verb: str, database: str | None = None) -> None:
    """PAUSE / RESUME / RELOAD / RECONNECT on the admin console (database checked against the target's)."""
    if verb not in ("PAUSE", "RESUME", "RELOAD", "RECONNECT"):
        raise ValueError(f"{verb}: not an allowed admin command")
    with connect(params) as conn, conn.cursor() as cur:
        if database:
            from psycopg import sql

            cur.execute(sql.SQL("{} {}").format(sql.SQL(verb), sql.Identifier(database)))
        else:
            cur.execute(verb)


def pause(params: Params, database: str) -> bool:
    """PAUSE a pool; False when it was paused already (so a caller undoes only its own pause)."""
    return _unless_already(params, "PAUSE", database, "already")


def resume(params: Params, database: str) -> bool:
    """RESUME a pool; one that is not paused is already what was wanted (False)."""
    return _unless_already(params, "RESUME", database, "not paused")


def _unless_already(params: Params, verb: str, database: str, already: str) -> bool:
    try:
        command(params, verb, database)
    except Exception as exc:
        if already not in str(exc).lower():
            raise
        return False
    return True


def backend(params: Params, database: str) -> tuple[str, int]:
    """Where PgBouncer sends `database` right now (SHOW DATABASES)."""
    with connect(params) as conn:
        row = next((r for r in show(conn, "DATABASES") if r["name"] == database), None)
    if row is None:
        raise LookupError(f"PgBouncer has no database entry {database!r}")
    return row["host"], int(row["port"])


def repoint(params: Params, database: str, host: str, port: int) -> None:
    """Rewrite the [databases] entry in the running PgBouncer's config, then RELOAD and RECONNECT.

    The config file lives in the PgBouncer task (target.pgbouncer.service, .config_path); the
    change holds until the task restarts, so the stack definition must be updated as well.
    """
    import re

    from runbook_lib.clients import swarm

    spec = params.target.pgbouncer
    if not spec.service:
        raise ValueError("target.pgbouncer.service is not set: cannot reach PgBouncer's configuration")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", database) or not re.fullmatch(r"[A-Za-z0-9_.:-]+", host):
        raise ValueError(f"refusing to write an unusual database or host name into pgbouncer.ini: {database} {host}")
    service = swarm.for_target(params.target.swarm).services.get(spec.service)
    script = (f"sed -i -E 's/^({database}\\s*=.*host=)[^ ]+( port=)[0-9]+/\\1{host}\\2{int(port)}/' "
              f"{spec.config_path} && grep -E '^{database}\\s*=' {spec.config_path}")
    code, out = swarm.exec_in(params.target.swarm, service, ["sh", "-c", script])
    if code != 0 or f"port={int(port)}" not in out:
        raise RuntimeError(f"could not rewrite the {database} entry of {spec.config_path}: {out.strip()[:200]}")
    command(params, "RELOAD")
    command(params, "RECONNECT", database)
