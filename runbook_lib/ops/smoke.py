"""Smoke tests as the application does it, through its entry point, on whatever schema it has.

Two kinds, both run as the application's role: the checks the parameters declare (`checks.smoke`: a
statement and the rows it must return; one that writes runs in a transaction that is always rolled back),
and the ones derived from the catalog (`checks.derived`): a primary-key read of one row of every table the
role can read, and a k-NN search through every vector column's HNSW index, whose plan must use the index.
No table name is known in advance.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from runbook_lib.clients import postgres
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.params import SmokeCheck
from runbook_lib.config.readiness_settings import VectorExtension
from runbook_lib.ops import catalog
from runbook_lib.run.step import Outcome


class _Rollback(Exception):
    """Leaves a writing check's transaction without committing it."""


@dataclass
class Result:
    check: str
    kind: str  # declared | primary-key read | k-NN
    ok: bool
    rows: int | None
    ms: float
    detail: str = ""


def _expect(check: SmokeCheck, rows: int) -> str:
    """Empty when `rows` is what the check expects, else what was expected."""
    if check.rows is not None and rows != check.rows:
        return f"expected {check.rows} rows"
    if check.min_rows is not None and rows < check.min_rows:
        return f"expected at least {check.min_rows} rows"
    if check.max_rows is not None and rows > check.max_rows:
        return f"expected at most {check.max_rows} rows"
    return ""


def declared(conn: psycopg.Connection[Any], check: SmokeCheck, marker: str) -> Result:
    """A check from the parameters; %(marker)s in its SQL is this run's marker (a row it writes is findable)."""
    started = time.perf_counter()
    rows = 0
    try:
        with conn.transaction():
            with conn.cursor() as cur:
                cur.execute(check.sql, {"marker": marker} if "%(marker)s" in check.sql else None)  # type: ignore[arg-type]
                rows = cur.rowcount if cur.description is None else len(cur.fetchall())
            if check.writes:
                raise _Rollback
    except _Rollback:
        pass
    except psycopg.Error as exc:
        return Result(check.name, "declared", False, None, _ms(started), _first(exc))
    problem = _expect(check, rows)
    return Result(check.name, "declared", not problem, rows, _ms(started),
                  problem or ("written and rolled back" if check.writes else ""))


def primary_key_reads(conn: psycopg.Connection[Any]) -> list[Result]:
    """One row of each readable table with a primary key, read back by that key."""
    out = []
    for table in catalog.tables(conn):
        if not table.primary_key or table.partition:
            continue
        readable = postgres.scalar(conn, "SELECT has_table_privilege(%s, 'SELECT')", [table.ident.as_string(conn)])
        if not readable:
            continue
        started = time.perf_counter()
        keys = sql.SQL(", ").join(sql.Identifier(c) for c in table.primary_key)
        try:
            with conn.transaction():
                first = postgres.query(conn, sql.SQL("SELECT {} FROM {} LIMIT 1").format(keys, table.ident))
                if not first:
                    out.append(Result(table.qualified, "primary-key read", True, 0, _ms(started), "empty table"))
                    continue
                match = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in table.primary_key)
                rows = postgres.query(conn, sql.SQL("SELECT * FROM {} WHERE {}").format(table.ident, match),
                                      list(first[0].values()))
        except psycopg.Error as exc:
            out.append(Result(table.qualified, "primary-key read", False, None, _ms(started), _first(exc)))
            continue
        out.append(Result(table.qualified, "primary-key read", len(rows) == 1, len(rows), _ms(started),
                          "" if len(rows) == 1 else "the row read by its key did not come back"))
    return out


def knn_searches(conn: psycopg.Connection[Any], vector: VectorExtension) -> list[Result]:
    """Ten nearest neighbours of a stored vector, through each vector column's HNSW index (checked in the plan)."""
    out = []
    for col in catalog.vector_columns(conn, vector.hnsw_methods, vector.types):
        name = f"{col['schema']}.{col['table']}.{col['column']}"
        if not col["hnsw_indexes"]:
            out.append(Result(name, "k-NN", False, None, 0.0, "no valid HNSW index on this vector column"))
            continue
        table, column = sql.Identifier(col["schema"], col["table"]), sql.Identifier(col["column"])
        op = sql.SQL(catalog.distance_operator((col["opclasses"] or [""])[0]))
        query = sql.SQL("SELECT 1 FROM {t} ORDER BY {c} {op} (SELECT {c} FROM {t} WHERE {c} IS NOT NULL LIMIT 1) "
                        "LIMIT 10").format(t=table, c=column, op=op)
        started = time.perf_counter()
        try:
            with conn.transaction():
                postgres.query(conn, "SET LOCAL enable_seqscan = off")  # small tables tempt the planner to sort
                rows = postgres.query(conn, query)
                plan = json.dumps(postgres.query(conn, sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query)))
        except psycopg.Error as exc:
            out.append(Result(name, "k-NN", False, None, _ms(started), _first(exc)))
            continue
        used = [i for i in col["hnsw_indexes"] if i in plan]
        out.append(Result(name, "k-NN", bool(used) and len(rows) > 0, len(rows), _ms(started),
                          f"through {used[0]}" if used else "the plan does not use the HNSW index"))
    return out


def smoke(endpoint: PgSpec, run_id: str, checks: list[SmokeCheck], derived: bool, vector: VectorExtension) -> Outcome:
    """Every declared check, then (when asked) the catalog-derived reads and k-NN searches, through `endpoint`."""
    marker = f"smoke-{run_id}"
    with postgres.connect(endpoint) as conn:
        results = [declared(conn, c, marker) for c in checks]
        if derived:
            results += primary_key_reads(conn) + knn_searches(conn, vector)
    if not results:
        return Outcome(summary="no smoke test: none declared (checks.smoke) and none derived (checks.derived is off)",
                       failed=True)
    failing = [f"{r.check} ({r.kind}: {r.detail})" for r in results if not r.ok]
    knn = [r for r in results if r.kind == "k-NN"]
    summary = (f"failed: {'; '.join(failing)}" if failing else
               f"{len(results)} checks pass through {endpoint.name}: {sum(r.kind == 'declared' for r in results)} "
               f"declared, {sum(r.kind == 'primary-key read' for r in results)} primary-key reads, {len(knn)} k-NN "
               "searches through HNSW")
    return Outcome(summary=summary, evidence=[r.__dict__ for r in results], failed=bool(failing),
                   metrics={"checks": len(results), "failing": len(failing),
                            "knn_uses_hnsw": bool(knn) and all(r.ok for r in knn)})


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def of_run(run: Any) -> Outcome:
    """The smoke tests a run's parameters ask for, through the application's entry point (the pooler)."""
    checks = run.params.checks
    return smoke(run.endpoints.pooler(), run.info.run_id, checks.smoke, checks.derived, run.params.readiness.vector)
