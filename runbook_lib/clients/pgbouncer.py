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
