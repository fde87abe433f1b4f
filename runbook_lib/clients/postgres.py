"""PostgreSQL through psycopg 3: connections opened from a resolved spec, never from strings with passwords."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from runbook_lib.config.endpoints import PgSpec


def connect(spec: PgSpec, *, dbname: str | None = None, autocommit: bool = True,
            **overrides: Any) -> psycopg.Connection[dict[str, Any]]:
    """Open a connection to the endpoint; the password is resolved only here."""
    kwargs = {**spec.connect_kwargs(), "application_name": "runbook", **overrides}
    if dbname:
        kwargs["dbname"] = dbname
    return psycopg.connect(autocommit=autocommit, row_factory=dict_row, **kwargs)


def query(conn: psycopg.Connection[Any], statement: str | sql.Composable,
          args: Iterable[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(statement, args)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []


def scalar(conn: psycopg.Connection[Any], statement: str | sql.Composable,
           args: Iterable[Any] | dict[str, Any] | None = None) -> Any:
    rows = query(conn, statement, args)
    return next(iter(rows[0].values())) if rows else None
