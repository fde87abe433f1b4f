"""Synthetic application traffic for load tests and baselines: the application's own query mix.

Point reads, inserts, updates and k-NN vector searches against the application schema
(entries with a vector column and an HNSW index, time-partitioned events), from N
concurrent clients, each with its own connection. Bounded in time and count.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.express as px
import psycopg
import psycopg.rows

from runbook_lib.clients import postgres
from runbook_lib.config.endpoints import Endpoints
from runbook_lib.config.params import Workload
from runbook_lib.run.step import Outcome

Progress = Callable[..., Any]  # tqdm-like: progress(iterable, total=, desc=) used as a context manager

MIX = {"point_read": 0.5, "insert": 0.15, "update": 0.15, "knn": 0.2}
STATEMENTS = {
    "point_read": "SELECT id, title, collection_id FROM entries WHERE id = %(id)s",
    "insert": "INSERT INTO events (occurred_at, account_id, entry_id, kind, payload) "
              "VALUES (now(), %(account)s, %(id)s, 'view', '{}'::jsonb)",
    "update": "UPDATE entries SET updated_at = now() WHERE id = %(id)s",
    "knn": "SELECT id FROM entries ORDER BY embedding <=> (SELECT embedding FROM entries WHERE id = %(id)s) LIMIT 10",
}


@dataclass
class WorkloadResult:
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    @property
    def tps(self) -> float:
        return (self.requests - self.errors) / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float, op: str | None = None) -> float | None:
        values = sorted(self.latencies_ms.get(op, []) if op else
                        [v for vs in self.latencies_ms.values() for v in vs])
        if not values:
            return None
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]

    def summary(self) -> dict[str, Any]:
        p = lambda q, op=None: round(self.percentile(q, op) or 0.0, 2)  # noqa: E731
        return {"concurrency": self.concurrency, "duration_s": round(self.duration_s, 2),
                "requests": self.requests, "errors": self.errors, "tps": round(self.tps, 1),
                "error_rate": round(self.errors / self.requests, 5) if self.requests else 0.0,
                "p50_ms": p(0.50), "p95_ms": p(0.95), "p99_ms": p(0.99), "vector_p95_ms": p(0.95, "knn"),
                "per_op": {op: {"n": len(v), "mean_ms": round(statistics.fmean(v), 2) if v else None}
                           for op, v in self.latencies_ms.items()}}


def run(connect: Callable[[], psycopg.Connection[Any]], *, concurrency: int, duration_s: float,
        max_requests: int = 1_000_000, mix: dict[str, float] | None = None,
        on_tick: Callable[[int], None] | None = None) -> WorkloadResult:
    """Run the mix from `concurrency` clients for `duration_s` seconds (or until max_requests)."""
    mix = mix or MIX
    with connect() as conn:
        cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
        row = cur.execute("SELECT min(id), max(id), (SELECT max(id) FROM accounts) FROM entries").fetchone()
    low, high, accounts = row if row is not None else (None, None, None)
    if low is None:
        raise ValueError("the entries table is empty: nothing to read, update or search")
    ops, weights = list(mix), list(mix.values())
    lock = threading.Lock()
    result = WorkloadResult(concurrency, duration_s, 0, 0, {op: [] for op in ops})
    deadline = time.monotonic() + duration_s
    budget = [max_requests]

    def client(seed: int) -> None:
        rng = random.Random(seed)
        try:
            conn = connect()
        except psycopg.Error as exc:
            with lock:
                result.errors += 1
                result.requests += 1
                result.error_samples.append(str(exc).strip()[:200])
            return
        with conn:
            conn.autocommit = True
            while time.monotonic() < deadline:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                op = rng.choices(ops, weights)[0]
                args = {"id": rng.randint(low, high), "account": rng.randint(1, accounts or 1)}
                t0 = time.perf_counter()
                try:
                    conn.execute(STATEMENTS[op], args).fetchall() if op in ("point_read", "knn") else \
                        conn.execute(STATEMENTS[op], args)
                    elapsed = (time.perf_counter() - t0) * 1000
                    with lock:
                        result.requests += 1
                        result.latencies_ms[op].append(elapsed)
                except psycopg.Error as exc:
                    with lock:
                        result.requests += 1
                        result.errors += 1
                        if len(result.error_samples) < 10:
                            result.error_samples.append(f"{op}: {str(exc).strip()[:200]}")
                    if conn.broken:
                        return

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        if on_tick:
            on_tick(result.requests)
    result.duration_s = time.monotonic() - started
    return result


def load_test(spec: Workload | None, endpoints: Endpoints, progress: Progress) -> Outcome:
    """Run the mix as the load test and the baseline do, and report TPS, latency percentiles and errors."""
    if spec is None:
        return Outcome(summary="target.workload is not set: name the endpoint, concurrency and duration",
                       failed=True)
    endpoint = endpoints.db(spec.endpoint)
    with progress(None, total=int(spec.duration), desc=f"load x{spec.concurrency} (s)") as bar:
        result = run(lambda: postgres.connect(endpoint), concurrency=spec.concurrency, duration_s=spec.duration,
                     max_requests=spec.max_requests, on_tick=lambda _: bar.update(0.5))
    figures = result.summary()
    figures["endpoint"] = spec.endpoint
    rows = [{"op": op, "latency_ms": v} for op, vs in result.latencies_ms.items() for v in vs[:: max(1, len(vs) // 2000)]]
    fig = px.box(pd.DataFrame(rows), x="op", y="latency_ms", points=False, log_y=True,
                 title=f"Latency by operation at concurrency {spec.concurrency} (ms, log scale)")
    per_op = pd.DataFrame([{"op": op, **v} for op, v in figures.pop("per_op").items()])
    return Outcome(summary=f"{figures['tps']} TPS, p95 {figures['p95_ms']} ms, vector p95 {figures['vector_p95_ms']} ms, "
                           f"{figures['errors']} errors of {figures['requests']}",
                   evidence=per_op, metrics=figures, figures=[fig], failed=figures["requests"] == 0,
                   state={"load_test": figures})
