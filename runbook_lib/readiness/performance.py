"""Performance items (PERF-01 .. PERF-12): campaign records, Prometheus, and live k-NN measurements."""

from __future__ import annotations

import statistics
import time
from typing import Any

from psycopg import sql

from runbook_lib.clients import pgbouncer, postgres, prometheus
from runbook_lib.ops import catalog
from runbook_lib.promql.expressions import expression
from runbook_lib.readiness.database import vector_columns
from runbook_lib.readiness.model import Finding
from runbook_lib.readiness.probe import Probe
from runbook_lib.readiness.registry import check


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def decide_knn(latencies_ms: list[float], recalls: list[float], index_used: bool, p95_max: float,
               recall_min: float) -> Finding:
    p95 = percentile(latencies_ms, 0.95)
    recall = statistics.mean(recalls)
    ok = index_used and p95 < p95_max and recall >= recall_min
    return Finding.check(ok, {"p95_ms": round(p95, 2), "recall_at_10": round(recall, 3), "queries": len(latencies_ms),
                              "hnsw_index_used": index_used},
                         {"p95_ms": f"< {p95_max:g}", "recall_at_10": f">= {recall_min:g}", "hnsw_index_used": True},
                         "k-NN queries through the HNSW index vs exact search")


@check("PERF-01")
def perf01(p: Probe) -> Finding:
    target = p.settings.load_test_concurrency
    def decide(d: dict[str, Any]) -> Finding:  # the clients really connected at once, not the number asked for
        reached = d.get("peak_clients", d.get("concurrency", 0)) or 0
        return Finding.check(reached >= target, {"asked": d.get("concurrency"), "connected_at_once": reached},
                             f">= {target} clients at once", "records/load_test.json", otherwise="warn")

    return p.record_finding("load_test", p.settings.baseline_max_age, decide)


@check("PERF-02")
def perf02(p: Probe) -> Finding:
    target = p.settings.tps_target
    return p.record_finding("load_test", p.settings.baseline_max_age, lambda d: Finding.check(
        d.get("tps", 0) >= target, d.get("tps"), f">= {target:g} TPS", "records/load_test.json"))


@check("PERF-03")
def perf03(p: Probe) -> Finding:
    targets = p.settings.latency_targets_ms

    def decide(d: dict[str, Any]) -> Finding:
        observed = {q: d.get(f"{q}_ms") for q in targets}
        ok = all(v is not None and v <= targets[q] for q, v in observed.items())
        return Finding.check(ok, observed, {q: f"<= {v:g} ms" for q, v in targets.items()}, "records/load_test.json",
                             otherwise="warn")

    return p.record_finding("load_test", p.settings.baseline_max_age, decide)


def _node_metric(p: Probe, metric: str, window_s: float) -> float | None:
    return prometheus.scalar(p.prometheus_url(), f"max_over_time(({expression(metric)})[{int(window_s)}s:30s])")


@check("PERF-04")
def perf04(p: Probe) -> Finding:
    from runbook_lib.campaign import records

    record = records.latest(p.campaign_dir, "load_test")
    window = max(records.age_seconds(record) + 60, 300) if record else 3600
    peak = _node_metric(p, "memory_usage", window)
    if peak is None:
        return Finding("error", reason="no node memory metrics in Prometheus (node exporter not scraped)",
                       source="Prometheus")
    return Finding.check(peak < p.settings.memory_peak_max, round(peak, 3), f"< {p.settings.memory_peak_max:.0%}",
                         "max_over_time(memory_usage) over the load test window", otherwise="warn")


@check("PERF-06")
def perf06(p: Probe) -> Finding:
    endpoint = p.app_endpoint
    if not p.sql(endpoint, "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"):
        return Finding("warn", "pg_stat_statements not installed", "installed", "pg_extension")
    # the application's own statements (its role's): the runbooks' full-table checksums are meant to scan
    role = p.params.target.app.role if p.params.target.app else None
    top = p.sql(endpoint, """SELECT query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = current_database() AND query ~* '^\\s*(select|update|delete)' AND query !~* 'pg_catalog|pg_stat'
          AND (%s::text IS NULL OR s.userid = (SELECT oid FROM pg_roles WHERE rolname = %s))
        ORDER BY total_exec_time DESC LIMIT 10""", [role, role])
    large = {r["relname"] for r in p.sql(endpoint, "SELECT relname FROM pg_class WHERE relkind = 'r' AND reltuples > %s",
                                         [p.settings.large_table_rows])}
    seq, planned = [], 0
    with p.connect(endpoint) as conn:
        for row in top:
            try:
                plan = postgres.query(conn, sql.SQL("EXPLAIN (GENERIC_PLAN, FORMAT JSON) {}").format(
                    sql.SQL(row["query"])))[0]["QUERY PLAN"]
            except Exception:
                continue  # utility statements and the like have no generic plan
            planned += 1
            stack = [plan[0]["Plan"]]
            while stack:
                node = stack.pop()
                if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in large:
                    seq.append(f"{node['Relation Name']}: {row['query'][:80]}")
                stack.extend(node.get("Plans", []))
    return Finding.check(not seq, {"top_queries_planned": planned, "seq_scans_on_large_tables": seq},
                         f"no sequential scan on tables above {p.settings.large_table_rows} rows",
                         "pg_stat_statements; EXPLAIN (GENERIC_PLAN)", otherwise="warn")


POOL_LOOKS, POOL_LOOK_EVERY = 3, 1.0  # a pool short of servers keeps clients waiting; one arriving mid-login does not


@check("PERF-07")
def perf07(p: Probe) -> Finding:
    """Clients waiting at every one of POOL_LOOKS looks a second apart: one waiting at a single look is a
    connection being set up, not a pool too small."""
    waiting: dict[str, int] | None = None
    with pgbouncer.connect(p.params.endpoints.admin()) as conn:
        for look in range(POOL_LOOKS):
            if look:
                time.sleep(POOL_LOOK_EVERY)
            now = {f"{r['database']}/{r['user']}": int(r["cl_waiting"]) for r in pgbouncer.show(conn, "POOLS")
                   if int(r["cl_waiting"]) > 0}
            waiting = now if waiting is None else {k: max(v, now[k]) for k, v in waiting.items() if k in now}
            if not waiting:
                break
    return Finding.check(not waiting, waiting or "no waiting clients", f"cl_waiting = 0 in every pool at one of "
                         f"{POOL_LOOKS} looks {POOL_LOOK_EVERY:g} s apart", "SHOW POOLS", otherwise="warn")


@check("PERF-08")
def perf08(p: Probe) -> Finding:
    row = p.sql_one(p.app_endpoint, "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = "
                                    "current_database()")
    total = row["blks_hit"] + row["blks_read"]
    ratio = row["blks_hit"] / total if total else 1.0
    return Finding.check(ratio >= 0.90, round(ratio, 4), ">= 0.90", "pg_stat_database", otherwise="warn")


@check("PERF-10")
def perf10(p: Probe) -> Finding:
    util = _node_metric(p, "disk_io", 3600)
    if util is None:
        ref = p.params.evidence.get("PERF-10")
        return Finding("pass", ref, "evidence", "parameters.evidence") if ref else Finding(
            "missing", None, "node disk metrics or evidence", "Prometheus", "no node disk metrics and no evidence")
    return Finding.check(util < p.settings.disk_util_max, round(util, 3), f"< {p.settings.disk_util_max:.0%}",
                         "max_over_time(disk_io) over the last hour", otherwise="warn")


@check("PERF-11", alone=True)
def perf11(p: Probe) -> Finding:
    endpoint = p.app_endpoint
    columns = [c for c in vector_columns(p, endpoint) if c["hnsw_indexes"]]
    if not columns:
        return Finding("fail", "no vector column with an HNSW index", "an indexed vector column", "pg_index")
    col = columns[0]
    table = sql.Identifier(col["schema"], col["table"])
    column = sql.Identifier(col["column"])
    op = sql.SQL(catalog.distance_operator((col["opclasses"] or ["vector_l2_ops"])[0]))
    knn = sql.SQL("SELECT ctid::text AS id FROM {t} ORDER BY {c} {op} %s::{typ} LIMIT 10").format(
        t=table, c=column, op=op, typ=sql.Identifier(col["type"]))
    latencies, recalls = [], []
    with p.connect(endpoint) as conn:
        samples = postgres.query(conn, sql.SQL("SELECT {c}::text AS v FROM {t} TABLESAMPLE SYSTEM (10) LIMIT %s")
                                 .format(c=column, t=table), [p.settings.vector_queries])
        if len(samples) < p.settings.vector_queries:
            samples = postgres.query(conn, sql.SQL("SELECT {c}::text AS v FROM {t} LIMIT %s").format(c=column, t=table),
                                     [p.settings.vector_queries])
        with conn.transaction():
            postgres.query(conn, "SET LOCAL enable_seqscan = off")
            plan = postgres.query(conn, sql.SQL("EXPLAIN (FORMAT JSON) ") + knn, [samples[0]["v"]])[0]["QUERY PLAN"]
        index_used = any(name in str(plan) for name in col["hnsw_indexes"])
        # every k-NN query first, the exact ones after: an exact search reads the whole table, and timed between
        # them each k-NN query would find the index pushed out of the cache, which is not how the application runs
        # them; one untimed round first brings the index in, as the application's steady stream keeps it
        approx: list[set[str]] = []
        for timed in (False, True):
            for sample in samples:
                with conn.transaction():  # through the index, as the application's k-NN queries are meant to run
                    postgres.query(conn, "SET LOCAL enable_seqscan = off")
                    t0 = time.perf_counter()
                    ids = {r["id"] for r in postgres.query(conn, knn, [sample["v"]])}
                    if timed:
                        latencies.append((time.perf_counter() - t0) * 1000)
                        approx.append(ids)
        for sample, found in zip(samples, approx, strict=True):
            with conn.transaction():
                postgres.query(conn, "SET LOCAL enable_indexscan = off")
                exact = {r["id"] for r in postgres.query(conn, knn, [sample["v"]])}
            recalls.append(len(found & exact) / max(len(exact), 1))
    return decide_knn(latencies, recalls, index_used, p.settings.vector_p95_max_ms, p.settings.vector_recall_min)


@check("PERF-12")
def perf12(p: Probe) -> Finding:
    value = p.settings.capacity_users
    return Finding.check(value is not None, value, "a capacity figure (readiness.capacity_users)", "parameters",
                         otherwise="missing")
