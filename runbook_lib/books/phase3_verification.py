"""Proves the new cluster healthy after the cutover: health checks, smoke tests as the application role through
PgBouncer, a performance baseline, and a watch of the live metrics against the verification thresholds of the
rollout policy (30 minutes in production; a rehearsal may shorten it with a recorded `policy_loosening`
entry). Any failing check stops the run and names the check.

Phase 3 runs on the policy's 1-hour budget, counted from its first completed step; past it the steps refuse
until the incident lead decides (the rollback plan, or a recorded loosening).
"""

from __future__ import annotations

import functools
import time

import pandas as pd
import plotly.graph_objects as go

from runbook_lib.campaign import records
from runbook_lib.clients import prometheus
from runbook_lib.ops import migration, smoke, wayback, workload
from runbook_lib.promql.expressions import expression
from runbook_lib.readiness import engine
from runbook_lib.run import step as steps
from runbook_lib.run.book import Book
from runbook_lib.run.session import Session
from runbook_lib.run.step import Clock, Outcome

CLOCK = Clock("verification", "phase3_started", "decide with the incident lead: the rollback plan, or a recorded "
              "`policy_loosening` of phases.verification")
step = functools.partial(steps.step, clock=CLOCK)  # every step runs on the phase budget

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
    """Patroni members (one leader, replicas streaming), replication lag, the write endpoint on the leader,
    etcd, HAProxy routing, PgBouncer pools and waiting clients, exporters up; after a logical cutover, the
    way back too: legacy's reverse subscription running, its slot on the leader and synced on every standby.
    """
    results = engine.run(session.params, only=list(HEALTH_ITEMS), campaign_dir=session.run_dir.parent)
    rows = [{"check": HEALTH_ITEMS[r.id], "item": r.id, "outcome": r.outcome,
             "detail": r.reason or str(r.observed)[:200]} for r in results]
    failing = [f"{HEALTH_ITEMS[r.id]} ({r.id}: {r.outcome})" for r in results if r.outcome != "pass"]
    cutover = records.latest(session.campaign_dir, "cutover")
    if cutover and cutover["data"].get("strategy") == "logical":  # a logical cutover left a way back to watch
        way, _ = wayback.settle(migration.route_of(session), session.endpoints.by_role("member"), timeout=30)
        rows.append({"check": "the way back: reverse replication to legacy, its slot on every member",
                     "item": "WAY-BACK", "outcome": "pass" if way.ok else "fail",
                     "detail": f"subscription {way.subscription}, lag {way.lag_bytes} bytes" if way.ok
                     else "; ".join(way.problems)[:400]})
        if not way.ok:
            failing.append("the way back (reverse replication)")
    return Outcome(summary="failing: " + "; ".join(failing) if failing else f"all {len(rows)} health checks pass",
                   evidence=rows, failed=bool(failing), metrics={"failing": len(failing)})


def _smoke(session: Session) -> Outcome:
    """As the application role through PgBouncer: the smoke tests the parameters declare (`checks.smoke`; one
    that writes is rolled back), a primary-key read of every table the role can read, and a k-NN search through
    each vector column's HNSW index, whose plan must use it (EXPLAIN); the tables come from the catalog.
    """
    return smoke.of_run(session)


smoke_tests = step("smoke_tests", "Smoke tests as the application role through PgBouncer")(_smoke)


def _baseline(session: Session) -> Outcome:
    """The application's query mix for `target.workload.duration`; saved as the campaign's baseline
    (readiness MON-09 and the 72-hour validation compare against it).
    """
    outcome = workload.load_test(session.target.workload, session.endpoints, session.progress,
                                session.params.readiness.vector)
    if not outcome.failed:
        records.save(session.campaign_dir, "baseline", {**outcome.state["load_test"], "recorded_on": "phase3"},
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
    """Error rate, p95 latency, CPU and the memory trend from Prometheus over
    `policy.verification_watch.duration`, against its thresholds.
    """
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
    window = duration  # the watch's own span: what happened before it (the cutover) is phase 2's to judge
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
        ok = observed < limit  # the policy's limits are strict: "< 0.1 %", "< 500ms", "< 60 %"
        rows.append({"metric": metric, "observed": round(observed, 5), "limit": limit, "ok": ok,
                     "note": "relative rise over the window" if kind == "trend" else "maximum over the window"})
        if not ok:
            failing.append(f"{metric} {observed:.4g} >= {limit:g}")
        fig = go.Figure(go.Scatter(x=pd.to_datetime(frame["t"], unit="s"), y=frame["value"], mode="lines",
                                   name=metric))
        if kind == "max":
            fig.add_hline(y=limit, line_dash="dash", line_color="red", annotation_text="threshold")
        fig.update_layout(title=f"{metric} during the watch", height=300)
        figures.append(fig)
    return Outcome(summary=("breached: " + "; ".join(failing)) if failing else
                   f"every threshold held for {duration / 60:g} min", evidence=rows, figures=figures,
                   failed=bool(failing), metrics={str(r["metric"]): r["observed"] for r in rows})


BOOK = Book("phase3_verification", "Phase 3: verification", mutating=False, steps=(
    health_checks, smoke_tests, performance_baseline, watch_metrics,
))
