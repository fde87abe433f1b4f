"""What a database holds, read from its catalog: the runbooks derive their checks from it, never from names.

Every application schema differs; tables, vector columns and their indexes are found here, so
a check works on a schema the project has never seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from runbook_lib.clients import postgres

VECTOR_COLUMNS = """
        SELECT n.nspname AS schema, c.relname AS table, a.attname AS column, t.typname AS type,
               array_remove(array_agg(DISTINCT CASE WHEN am.amname = ANY(%(methods)s) AND i.indisvalid
                                                THEN ic.relname END), NULL) AS hnsw_indexes,
               array_remove(array_agg(DISTINCT CASE WHEN am.amname = ANY(%(methods)s) AND i.indisvalid
                                                THEN opc.opcname END), NULL) AS opclasses
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p')
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_index i ON i.indrelid = c.oid AND a.attnum = ANY(i.indkey)
        LEFT JOIN pg_class ic ON ic.oid = i.indexrelid
        LEFT JOIN pg_am am ON am.oid = ic.relam
        LEFT JOIN pg_opclass opc ON opc.oid = i.indclass[array_position(i.indkey::int2[], a.attnum)]  -- both 0-based
        WHERE t.typname = ANY(%(types)s) AND a.attnum > 0 AND NOT a.attisdropped
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND NOT c.relispartition
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3"""


def vector_columns(conn: psycopg.Connection[Any], methods: Sequence[str], types: Sequence[str]) -> list[dict[str, Any]]:
    """Every column of a vector type (types) and the valid indexes on it of an HNSW access method (methods)."""
    return postgres.query(conn, VECTOR_COLUMNS, {"methods": list(methods), "types": list(types)})
