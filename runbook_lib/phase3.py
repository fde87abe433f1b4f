"""Steps of phase 3 (verification): health checks, smoke tests, performance baseline, metrics watch."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from runbook_lib import baseline, records
from runbook_lib.clients import postgres, prometheus
from runbook_lib.monitoring.expressions import expression
from runbook_lib.readiness import engine
from runbook_lib.session import Session
from runbook_lib.steps import Outcome, step

HEALTH_ITEMS = {
    "HA-01": "Patroni: one leader, replicas streaming",
    "HA-03": "replication lag",
    "HA-04": "write endpoint on the leader",
    "HA-05": "etcd healthy",
    "INF-09": "HAProxy routing (rw to the leader, ro to a replica)",
    "DB-12": "PgBouncer reachable, pools within capacity",
    "PERF-07": "PgBouncer: no waiting clients",
    "MON-01": "exporters and targets up",
}


@step("health_checks", "Health of the new cluster")
def health_checks(session: Session) -> Outcome:
    results = engine.run(session.params, only=list(HEALTH_ITEMS), campaign_dir=session.run_dir.parent)
    rows = [{"check": HEALTH_ITEMS[r.id], "item": r.id, "outcome": r.outcome,
             "detail": r.reason or str(r.observed)[:200]} for r in results]
    failing = [f"{HEALTH_ITEMS[r.id]} ({r.id}: {r.outcome})" for r in results if r.outcome != "pass"]
    return Outcome(summary="failing: " + "; ".join(failing) if failing else f"all {len(rows)} health checks pass",
                   evidence=rows, failed=bool(failing), metrics={"failing": len(failing)})


def pooler(session: Session) -> str:
    poolers = [n for n, d in session.target.databases.items() if d.role == "pooler"]
    if not poolers:
        raise ValueError("no database endpoint with role pooler (the application's entry point)")
    return poolers[0]


def smoke(session: Session) -> Outcome:
    """Create, read, update, delete and a k-NN search as the application does it, through its pooler."""
    endpoint = pooler(session)
    rows: list[dict[str, Any]] = []
    marker = f"smoke-{session.info.run_id}@example.test"

    def timed(name: str, statement: str, args: Any = None) -> list[dict]:
        t0 = time.perf_counter()
        out = postgres.query(conn, statement, args)
        rows.append({"operation": name, "ms": round((time.perf_counter() - t0) * 1000, 2), "rows": len(out)})
        return out

    with postgres.connect(session.params, endpoint) as conn:
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


smoke_tests = step("smoke_tests", "Smoke tests as the application role through PgBouncer")(smoke)


def _baseline(session: Session) -> Outcome:
    outcome = baseline.load_test.run(session)
    if not outcome.failed:
        records.save(session.run_dir.parent, "baseline", {**outcome.state["load_test"], "recorded_on": "phase3"},
                     session.info.run_id)
        outcome.summary += "; saved as the campaign's baseline"
    return outcome


performance_baseline = step("performance_baseline", "Performance baseline")(_baseline)


def _series(url: str, metric: str, seconds: float, step_s: float) -> pd.DataFrame:
    result = prometheus.query_range(url, expression(metric), seconds, step_s)
    points = [(float(t), float(v)) for series in result for t, v in series["values"] if v not in ("NaN", "+Inf")]
    return pd.DataFrame(points, columns=["t", "value"]).groupby("t", as_index=False).max()


def memory_trend(frame: pd.DataFrame) -> float:
    """Relative rise of memory over the window from a least-squares line (0.02 = rose by 2 %)."""
    if len(frame) < 3 or frame["value"].mean() == 0:
        return 0.0
    t = frame["t"] - frame["t"].iloc[0]
    slope = ((t - t.mean()) * (frame["value"] - frame["value"].mean())).sum() / ((t - t.mean()) ** 2).sum()
    return float(slope * (t.iloc[-1] or 1) / frame["value"].mean())


@step("watch_metrics", "Metrics watch against the verification thresholds")
def watch_metrics(session: Session) -> Outcome:
    policy = session.params.policy.verification_watch
    url = session.target.prometheus.url if session.target.prometheus else None
    if url is None:
        return Outcome(summary="target.prometheus is not set", failed=True)
    duration = policy.duration
    with session.progress(None, total=int(duration), desc="watching (s)") as bar:
        started = time.monotonic()
        while (remaining := duration - (time.monotonic() - started)) > 0:
            pause = min(5.0, remaining)
            time.sleep(pause)
            bar.update(pause)
    step_s = max(5.0, duration / 120)
    window = max(duration, 60.0)
    checks = {"error_rate": (policy.error_rate_max, "max"), "latency_p95": (policy.latency_p95_max, "max"),
              "cpu_usage": (policy.cpu_max, "max"), "memory_usage": (policy.memory_trend_max, "trend")}
    rows, figures, failing = [], [], []
    for metric, (limit, kind) in checks.items():
        frame = _series(url, metric, window, step_s)
        if frame.empty:
            rows.append({"metric": metric, "observed": None, "limit": limit, "ok": False, "note": "no data"})
            failing.append(f"{metric}: no data")
            continue
        observed = memory_trend(frame) if kind == "trend" else float(frame["value"].max())
        ok = observed <= limit
        rows.append({"metric": metric, "observed": round(observed, 5), "limit": limit, "ok": ok,
                     "note": "relative rise over the window" if kind == "trend" else "maximum over the window"})
        if not ok:
            failing.append(f"{metric} {observed:.4g} > {limit:g}")
        fig = go.Figure(go.Scatter(x=pd.to_datetime(frame["t"], unit="s"), y=frame["value"], mode="lines",
                                   name=metric))
        if kind == "max":
            fig.add_hline(y=limit, line_dash="dash", line_color="red", annotation_text="threshold")
        fig.update_layout(title=f"{metric} during the watch", height=300)
        figures.append(fig)
    return Outcome(summary=("breached: " + "; ".join(failing)) if failing else
                   f"every threshold held for {duration / 60:g} min", evidence=rows, figures=figures,
                   failed=bool(failing), metrics={r["metric"]: r["observed"] for r in rows})
