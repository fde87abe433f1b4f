"""Smoke tests as the application does it, through its entry point: the rows it writes are removed."""

from __future__ import annotations

import time
from typing import Any

from runbook_lib.clients import postgres
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.run.step import Outcome


def smoke(endpoint: PgSpec, run_id: str) -> Outcome:
    """Create, read, update, delete and a k-NN search as the application does it, through its pooler."""
    rows: list[dict[str, Any]] = []
    marker = f"smoke-{run_id}@example.test"

    def timed(name: str, statement: str, args: Any = None) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        out = postgres.query(conn, statement, args)
        rows.append({"operation": name, "ms": round((time.perf_counter() - t0) * 1000, 2), "rows": len(out)})
        return out

    with postgres.connect(endpoint) as conn:
        created = timed("create", "INSERT INTO accounts (email, display_name) VALUES (%s, 'smoke test') "
                                  "RETURNING id", [marker])
        account = created[0]["id"]
        read = timed("read", "SELECT id, email FROM accounts WHERE id = %s", [account])
        updated = timed("update", "UPDATE accounts SET display_name = 'smoke test (updated)' WHERE id = %s "
                                  "RETURNING id", [account])
        deleted = timed("delete", "DELETE FROM accounts WHERE id = %s RETURNING id", [account])
        with conn.transaction():  # small tables tempt the planner to sort instead: ask for the index
            postgres.query(conn, "SET LOCAL enable_seqscan = off")
            knn = timed("knn", "SELECT id FROM entries ORDER BY embedding <=> (SELECT embedding FROM entries "
                               "ORDER BY id LIMIT 1) LIMIT 10")
            plan = postgres.query(conn, "EXPLAIN (FORMAT JSON) SELECT id FROM entries ORDER BY embedding <=> "
                                        "(SELECT embedding FROM entries ORDER BY id LIMIT 1) LIMIT 10"
                                  )[0]["QUERY PLAN"]
    plan_text = str(plan)
    uses_hnsw = "Index Scan" in plan_text and "hnsw" in plan_text.lower()
    problems = [name for name, got in (("create", created), ("read", read), ("update", updated),
                                       ("delete", deleted)) if len(got) != 1]
    if len(knn) != 10:
        problems.append("knn returned fewer than 10 rows")
    if not uses_hnsw:
        problems.append("the k-NN query does not use the HNSW index")
    return Outcome(summary="failed: " + ", ".join(problems) if problems else
                   "create, read, update, delete and k-NN (HNSW index scan) work through the pooler",
                   evidence=rows, failed=bool(problems), metrics={"knn_uses_hnsw": uses_hnsw})
