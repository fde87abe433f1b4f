"""PostgreSQL through psycopg 3: connections built from the parameters, never from strings with passwords."""

from __future__ import annotations

from typing import Any, Iterable

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from runbook_lib.params import Database, Params


def conninfo(db: Database) -> str:
    """A displayable connection string: everything but the password."""
    parts = [f"host={db.host}", f"port={db.port}", f"dbname={db.dbname}", f"user={db.user}", f"sslmode={db.sslmode}"]
    return " ".join(parts)


def connect(params: Params, name: str, *, dbname: str | None = None, autocommit: bool = True,
            **overrides: Any) -> psycopg.Connection:
    """Open a connection to the endpoint called `name`; the password is resolved only here."""
    db = params.target.databases[name]
    kwargs: dict[str, Any] = {
        "host": db.host, "port": db.port, "dbname": dbname or db.dbname, "user": db.user,
        "sslmode": db.sslmode, "connect_timeout": db.connect_timeout, "application_name": "runbook",
    }
    if db.sslrootcert:
        kwargs["sslrootcert"] = str(params.path(db.sslrootcert))
    if db.password:
        kwargs["password"] = params.resolve(db.password).reveal()
    kwargs.update(overrides)
    return psycopg.connect(autocommit=autocommit, row_factory=dict_row, **kwargs)


def query(conn: psycopg.Connection, statement: str | sql.Composable, args: Iterable[Any] | None = None) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute(statement, args)
        return list(cur.fetchall()) if cur.description else []


def scalar(conn: psycopg.Connection, statement: str | sql.Composable, args: Iterable[Any] | None = None) -> Any:
    rows = query(conn, statement, args)
    return next(iter(rows[0].values())) if rows else None
