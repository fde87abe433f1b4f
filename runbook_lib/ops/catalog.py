"""What a database holds, read from its catalog: the runbooks derive their checks from it, never from names.

Every application schema differs; tables, vector columns and their indexes are found here, so
a check works on a schema the project has never seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from runbook_lib.clients import postgres

VECTOR_COLUMNS = sql.SQL("""
        SELECT n.nspname AS schema, c.relname AS table, a.attname AS column, t.typname AS type,
               array_remove(array_agg(DISTINCT CASE WHEN am.amname = ANY({methods}) AND i.indisvalid
                                                THEN ic.relname END), NULL) AS hnsw_indexes,
               array_remove(array_agg(DISTINCT CASE WHEN am.amname = ANY({methods}) AND i.indisvalid
                                                THEN opc.opcname END), NULL) AS opclasses
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p')
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_index i ON i.indrelid = c.oid AND a.attnum = ANY(i.indkey)
        LEFT JOIN pg_class ic ON ic.oid = i.indexrelid
        LEFT JOIN pg_am am ON am.oid = ic.relam
        LEFT JOIN pg_opclass opc ON opc.oid = i.indclass[array_position(i.indkey::int2[], a.attnum)]  -- both 0-based
        WHERE t.typname = ANY({types}) AND a.attnum > 0 AND NOT a.attisdropped
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND NOT c.relispartition
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3""")


def vector_columns(conn: psycopg.Connection[Any], methods: Sequence[str], types: Sequence[str]) -> list[dict[str, Any]]:
    """Every column of a vector type (types) and the valid indexes on it of an HNSW access method (methods)."""
    return postgres.query(conn, vector_columns_query(methods, types))


def vector_columns_query(methods: Sequence[str], types: Sequence[str]) -> sql.Composed:
    return VECTOR_COLUMNS.format(methods=sql.Literal(list(methods)), types=sql.Literal(list(types)))


DISTANCE = {"l2": "<->", "cosine": "<=>", "ip": "<#>"}


def distance_operator(opclass: str) -> str:
    """The ORDER BY operator an HNSW index's opclass serves (pgvector-shaped names, RuVector's too)."""
    for kind, op in DISTANCE.items():
        if f"_{kind}_" in f"_{opclass}_" or opclass.endswith(f"_{kind}_ops"):
            return op
    return "<->"


@dataclass(frozen=True)
class Table:
    """A table as the catalog describes it: what the migration must know before it moves the data."""

    schema: str
    name: str
    kind: str  # r (plain) | p (partitioned)
    unlogged: bool
    primary_key: tuple[str, ...]  # column names, empty when there is none
    replica_identity: str  # d (default: the primary key) | f (full) | i (an index) | n (nothing)
    partition: bool
    rows: int  # the planner's estimate (reltuples), -1 when never analysed

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


TABLES = """
SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind, c.relpersistence = 'u' AS unlogged,
       c.relispartition AS partition, c.relreplident AS replica_identity, c.reltuples::bigint AS rows,
       coalesce((SELECT array_agg(a.attname ORDER BY k.i) FROM pg_index x
                 CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, i)
                 JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                 WHERE x.indrelid = c.oid AND x.indisprimary), '{}') AS primary_key
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 1, 2"""


def tables(conn: psycopg.Connection[Any]) -> list[Table]:
    """Every user table (partitioned parents and partitions included; extension-owned ones left out)."""
    return [Table(r["schema"], r["name"], r["kind"], r["unlogged"], tuple(r["primary_key"]), r["replica_identity"],
                  r["partition"], int(r["rows"])) for r in postgres.query(conn, TABLES)]


def extensions(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Installed extensions and their versions (plpgsql, which every database has, left out)."""
    rows = postgres.query(conn, "SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql'")
    return {r["extname"]: r["extversion"] for r in rows}


def large_objects(conn: psycopg.Connection[Any]) -> int:
    return int(postgres.scalar(conn, "SELECT count(*) FROM pg_largeobject_metadata"))


def materialized_views(conn: psycopg.Connection[Any]) -> list[str]:
    return [r["v"] for r in postgres.query(conn, """SELECT format('%I.%I', schemaname, matviewname) AS v
                                                    FROM pg_matviews ORDER BY 1""")]


def roles_in_use(conn: psycopg.Connection[Any]) -> list[str]:
    """Roles that own something in this database or hold a privilege on it (what the application needs)."""
    return [r["r"] for r in postgres.query(conn, """
        SELECT DISTINCT rolname AS r FROM pg_roles WHERE oid IN (
            SELECT relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
            UNION SELECT nspowner FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
            UNION SELECT (aclexplode(relacl)).grantee FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE relacl IS NOT NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE nspacl IS NOT NULL
              AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema')
          AND rolname NOT LIKE 'pg\\_%' ORDER BY 1""")]
