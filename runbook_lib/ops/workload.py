"""Synthetic application traffic for load tests and baselines: the application's own query mix.

The mix is what the parameters declare (`target.workload.mix`: each operation's SQL, weight, and a sample
query whose rows give its arguments), or, when they declare none, one derived from the catalog: a
primary-key read of each table and a k-NN search through each vector column's HNSW index. It runs from
N concurrent clients, each with its own connection, bounded in time and count.
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
from psycopg import sql

from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.config.endpoints import Endpoints
from runbook_lib.config.params import Workload, WorkloadOp
from runbook_lib.config.readiness_settings import VectorExtension
from runbook_lib.errors import RunbookError
from runbook_lib.ops import catalog
from runbook_lib.run.step import Outcome

Progress = Callable[..., Any]  # tqdm-like: progress(iterable, total=, desc=) used as a context manager

SAMPLE_ROWS = 10_000  # argument rows kept per operation
LOAD_CONNECT_TIMEOUT = 15  # s: a client of a loaded pooler waits for its handshake as an application would


@dataclass(frozen=True)
class Op:
    """One operation ready to run: its statement and the argument rows it draws from."""

    name: str
    statement: str | sql.Composable
    weight: float
    args: list[dict[str, Any]]
    vector: bool = False


def prepare(conn: psycopg.Connection[Any], declared: list[WorkloadOp] | None, vector: VectorExtension) -> list[Op]:
    """The declared mix with its samples read, or the mix derived from the catalog."""
    if declared:
        ops = []
        for op in declared:
            args = postgres.query(conn, sql.SQL("SELECT * FROM ({}) AS s LIMIT {}").format(
                sql.SQL(op.sample), sql.Literal(SAMPLE_ROWS))) if op.sample else [{}]  # type: ignore[arg-type]
            if not args:
                raise WorkloadError(f"target.workload.mix[{op.name}].sample returned no rows: nothing to run it with")
            ops.append(Op(op.name, op.sql, op.weight, args, op.vector))
        return ops
    return derived(conn, vector)


def derived(conn: psycopg.Connection[Any], vector: VectorExtension) -> list[Op]:
    """Primary-key reads of every table with a single-column key and rows, k-NN through every HNSW index."""
    ops: list[Op] = []
    tables = catalog.tables(conn)
    by_name = {(t.schema, t.name): t for t in tables}
    for table in tables:
        if len(table.primary_key) != 1 or table.partition:
            continue
        key = sql.Identifier(table.primary_key[0])
        args = postgres.query(conn, sql.SQL("SELECT {} AS k FROM {} LIMIT {}").format(key, table.ident,
                                                                                     sql.Literal(SAMPLE_ROWS)))
        if args:
            ops.append(Op(f"read:{table.qualified}", sql.SQL("SELECT * FROM {} WHERE {} = %(k)s").format(
                table.ident, key), 1.0, args))
    for col in catalog.vector_columns(conn, vector.hnsw_methods, vector.types):
        owner = by_name.get((col["schema"], col["table"]))
        if not col["hnsw_indexes"] or owner is None or len(owner.primary_key) != 1:
            continue
        key, column = sql.Identifier(owner.primary_key[0]), sql.Identifier(col["column"])
        args = postgres.query(conn, sql.SQL("SELECT {} AS k FROM {} WHERE {} IS NOT NULL LIMIT {}").format(
            key, owner.ident, column, sql.Literal(SAMPLE_ROWS)))
        if args:
            op = sql.SQL(catalog.distance_operator((col["opclasses"] or [""])[0]))
            ops.append(Op(f"knn:{owner.qualified}.{col['column']}", sql.SQL(
                "SELECT {k} FROM {t} ORDER BY {c} {op} (SELECT {c} FROM {t} WHERE {k} = %(k)s) LIMIT 10").format(
                k=key, t=owner.ident, c=column, op=op), 1.0, args, vector=True))
    if not ops:
        raise WorkloadError("no workload: target.workload.mix declares none and the catalog offers no table with a "
                            "single-column primary key and rows")
    return ops


class WorkloadError(RunbookError):
    pass


@dataclass
class WorkloadResult:
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    vector_ops: set[str] = field(default_factory=set)
    peak_clients: int = 0  # the most clients connected at once: the concurrency the test really reached
    connect_errors: int = 0  # connection attempts that failed (each retried, as an application's pool would)

    @property
    def tps(self) -> float:
        return (self.requests - self.errors) / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float, op: str | None = None) -> float | None:
        values = sorted(self.latencies_ms.get(op, []) if op else
                        [v for vs in self.latencies_ms.values() for v in vs])
        if not values:
            return None
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]

    def vector_percentile(self, q: float) -> float | None:
        values = sorted(v for op, vs in self.latencies_ms.items() if op in self.vector_ops for v in vs)
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else None

    def summary(self) -> dict[str, Any]:
        p = lambda q, op=None: round(self.percentile(q, op) or 0.0, 2)  # noqa: E731
        return {"concurrency": self.concurrency, "peak_clients": self.peak_clients,
                "connect_errors": self.connect_errors,
                "duration_s": round(self.duration_s, 2),
                "requests": self.requests, "errors": self.errors, "tps": round(self.tps, 1),
                "error_rate": round(self.errors / self.requests, 5) if self.requests else 0.0,
                "p50_ms": p(0.50), "p95_ms": p(0.95), "p99_ms": p(0.99),
                "vector_p95_ms": round(self.vector_percentile(0.95) or 0.0, 2),
                "first_errors": self.error_samples[:5],
                "per_op": {op: {"n": len(v), "mean_ms": round(statistics.fmean(v), 2) if v else None}
                           for op, v in self.latencies_ms.items()}}


def run(connect: Callable[[], psycopg.Connection[Any]], mix: list[Op], *, concurrency: int, duration_s: float,
        max_requests: int = 1_000_000, on_tick: Callable[[int], None] | None = None,
        ramp_s: float = 0.0) -> WorkloadResult:
    """Run the mix from `concurrency` clients for `duration_s` seconds (or until max_requests); the clients
    connect evenly over the first `ramp_s` seconds."""
    weights = [op.weight for op in mix]
    lock = threading.Lock()
    result = WorkloadResult(concurrency, duration_s, 0, 0, {op.name: [] for op in mix},
                            vector_ops={op.name for op in mix if op.vector})
    deadline = time.monotonic() + duration_s
    budget = [max_requests]
    connected = [0]

    def client(seed: int) -> None:
        rng = random.Random(seed)
        time.sleep(ramp_s * seed / concurrency)
        while True:  # a refused or timed-out connection is tried again, as an application's pool would
            try:
                conn = connect()
                break
            except psycopg.Error as exc:
                with lock:
                    result.connect_errors += 1
                    if len(result.error_samples) < 10:
                        result.error_samples.append(f"connect: {str(exc).strip()[:200]}")
                if not _transient(exc) or time.monotonic() + 1 >= deadline:
                    return
                time.sleep(rng.uniform(0.5, 1.5))
        with lock:
            connected[0] += 1
            result.peak_clients = max(result.peak_clients, connected[0])
        try:
            _requests(conn, rng)
        finally:
            with lock:
                connected[0] -= 1

    def _requests(conn: psycopg.Connection[Any], rng: random.Random) -> None:
        with conn:
            conn.autocommit = True
            while time.monotonic() < deadline:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                op = rng.choices(mix, weights)[0]
                t0 = time.perf_counter()
                try:
                    cursor = conn.execute(op.statement, rng.choice(op.args) or None)  # type: ignore[arg-type]
                    if cursor.description is not None:
                        cursor.fetchall()
                    elapsed = (time.perf_counter() - t0) * 1000
                    with lock:
                        result.requests += 1
                        result.latencies_ms[op.name].append(elapsed)
                except psycopg.Error as exc:
                    with lock:
                        result.requests += 1
                        result.errors += 1
                        if len(result.error_samples) < 10:
                            result.error_samples.append(f"{op.name}: {str(exc).strip()[:200]}")
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


# what libpq says of a connection worth trying again (a login refused or a database missing is not); PgBouncer's
# own refusals come through as the server's words after "FATAL:"
_TRANSIENT = ("timeout expired", "timed out", "connection refused", "closed the connection unexpectedly",
              "connection reset", "could not receive data", "could not send data", "too many clients",
              "no more connections", "starting up", "shutting down", "not yet accepting connections",
              "cannot connect to server", pgbouncer.CACHED_LOGIN_ERROR)


def _transient(exc: psycopg.Error) -> bool:
    """Worth a retry: a timeout, refusal or reset, the server out of connections or restarting; never a refused
    login or a missing database, which would only be hammered. Decided by the message: a failed connect
    carries no SQLSTATE (libpq reports it as text)."""
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT)


def load_test(spec: Workload | None, endpoints: Endpoints, progress: Progress, vector: VectorExtension) -> Outcome:
    """Run the mix as the load test and the baseline do, and report TPS, latency percentiles and errors."""
    if spec is None:
        return Outcome(summary="target.workload is not set: name the endpoint, concurrency and duration",
                       failed=True)
    endpoint = endpoints.db(spec.endpoint)
    with postgres.connect(endpoint) as conn:
        mix = prepare(conn, spec.mix, vector)
    with progress(None, total=int(spec.duration), desc=f"load x{spec.concurrency} (s)") as bar:
        timeout = max(endpoint.connect_timeout, LOAD_CONNECT_TIMEOUT)
        result = run(lambda: postgres.connect(endpoint, connect_timeout=timeout), mix, concurrency=spec.concurrency,
                     duration_s=spec.duration, max_requests=spec.max_requests, on_tick=lambda _: bar.update(0.5),
                     ramp_s=spec.ramp_s)
    figures = result.summary()
    figures["endpoint"] = spec.endpoint
    rows = [{"op": op, "latency_ms": v} for op, vs in result.latencies_ms.items() for v in vs[:: max(1, len(vs) // 2000)]]
    fig = px.box(pd.DataFrame(rows), x="op", y="latency_ms", points=False, log_y=True,
                 title=f"Latency by operation at concurrency {spec.concurrency} (ms, log scale)")
    per_op = pd.DataFrame([{"op": op, **v} for op, v in figures.pop("per_op").items()])
    return Outcome(summary=f"{figures['tps']} TPS, p95 {figures['p95_ms']} ms, vector p95 {figures['vector_p95_ms']} ms, "
                           f"{figures['errors']} errors of {figures['requests']}, {figures['peak_clients']} of "
                           f"{spec.concurrency} clients connected at once"
                           + (f" ({figures['connect_errors']} connection attempts failed and were retried)"
                              if figures["connect_errors"] else "")
                           + (f"; first error: {figures['first_errors'][0]}" if figures["first_errors"] else ""),
                   evidence=per_op, metrics=figures, figures=[fig], failed=figures["requests"] == 0,
                   state={"load_test": figures})
