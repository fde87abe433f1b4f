#!/usr/bin/python3
"""The synthetic application, run INSIDE the image (python3-psycopg, python3-prometheus-client).

Sends a realistic mix (point reads, inserts, updates, k-NN vector searches) through PgBouncer over
TLS as the least-privilege application role, and exports request, error and latency metrics. It
reconnects on errors, so failover and cutover show up as errors and latency, not as a dead app.

Configuration (environment; no secrets): APP_HOST, APP_PORT, APP_DB, APP_USER, APP_SSLROOTCERT,
APP_PASSWORD_FILE, APP_METRICS_BASE, APP_SLOT (swarm task slot), APP_RATE, APP_MIX (JSON), APP_WORKERS,
APP_FAULT_FILE.

Faults on purpose, to drive the rollback triggers and the watch by measurement: while APP_FAULT_FILE holds
JSON such as {"error_rate": 0.5, "kind": "injected", "latency_ms": 800}, that share of requests fails
(counted with that kind: "connection" counts as a database connection error) and every request is
that much slower. Read at most once a second; removing the file ends the fault.
"""

import json
import os
import random
import threading
import time

import psycopg
from prometheus_client import Counter, Gauge, Histogram, start_http_server

REQUESTS = Counter("app_requests_total", "Requests sent by the synthetic application", ["op"])
ERRORS = Counter("app_errors_total", "Failed requests of the synthetic application", ["op", "kind"])
LATENCY = Histogram("app_request_duration_seconds", "Request latency of the synthetic application", ["op"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CONNECTED = Gauge("app_connected_workers", "Workers holding a database connection")
INFO = Gauge("app_info", "Static facts about this replica", ["slot", "target"])

DIM = 384


class Fault:
    """The fault file's current content, re-read when its modification time changes (at most once a second)."""

    def __init__(self, path):
        self.path, self.spec, self.mtime, self.checked = path, {}, None, 0.0
        self.lock = threading.Lock()

    def current(self):
        with self.lock:
            now = time.monotonic()
            if self.path and now - self.checked >= 1.0:
                self.checked = now
                try:
                    mtime = os.stat(self.path).st_mtime
                    if mtime != self.mtime:
                        with open(self.path) as fh:
                            self.spec, self.mtime = json.load(fh), mtime
                except (OSError, ValueError):
                    self.spec, self.mtime = {}, None
            return self.spec


FAULT = Fault(os.environ.get("APP_FAULT_FILE"))


class InjectedFault(Exception):
    pass


def vec():
    return "[" + ",".join(f"{random.random():.4f}" for _ in range(DIM)) + "]"


class Worker(threading.Thread):
    def __init__(self, conninfo, rate, mix):
        super().__init__(daemon=True)
        self.conninfo, self.rate, self.mix = conninfo, rate, mix
        self.ops, self.weights = list(mix), list(mix.values())
        self.conn = None
        self.max_id = 1
        self.max_account = 1

    def connect(self):
        self.conn = psycopg.connect(self.conninfo, autocommit=True, prepare_threshold=None, connect_timeout=3)
        row = self.conn.execute("SELECT coalesce(max(id), 1) FROM entries").fetchone()
        self.max_id = row[0]
        self.max_account = self.conn.execute("SELECT coalesce(max(id), 1) FROM accounts").fetchone()[0]
        CONNECTED.inc()

    def op_point_read(self, c):
        c.execute("SELECT id, title, metadata FROM entries WHERE id = %s", (random.randint(1, self.max_id),)).fetchall()

    def op_insert(self, c):
        account = random.randint(1, self.max_account)
        with c.transaction():
            row = c.execute(
                "INSERT INTO entries (collection_id, account_id, title, body, embedding, metadata) "
                "SELECT id, account_id, %s, %s, %s::vector, %s::jsonb FROM collections "
                "WHERE account_id = %s LIMIT 1 RETURNING id",
                ("app entry", "written by the synthetic application", vec(), json.dumps({"source": "app"}), account),
            ).fetchone()
            entry_id = row[0] if row else None
            c.execute("INSERT INTO events (occurred_at, account_id, entry_id, kind, payload) "
                      "VALUES (now(), %s, %s, 'create', '{}'::jsonb)", (account, entry_id))
        if entry_id:
            self.max_id = max(self.max_id, entry_id)

    def op_update(self, c):
        c.execute("UPDATE entries SET metadata = metadata || jsonb_build_object('touched', now()), "
                  "updated_at = now() WHERE id = %s", (random.randint(1, self.max_id),))

    def op_knn(self, c):
        c.execute("SELECT id FROM entries ORDER BY embedding <=> %s::vector LIMIT 10", (vec(),)).fetchall()

    def run(self):
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while True:
            next_at += interval * random.expovariate(1.0)
            time.sleep(max(0.0, next_at - time.monotonic()))
            if time.monotonic() - next_at > 5:
                next_at = time.monotonic()  # do not burst after an outage
            op = random.choices(self.ops, self.weights)[0]
            REQUESTS.labels(op).inc()
            start = time.monotonic()
            fault = FAULT.current()
            try:
                if fault.get("latency_ms"):
                    time.sleep(float(fault["latency_ms"]) / 1000)
                if random.random() < float(fault.get("error_rate", 0)):
                    raise InjectedFault(fault.get("kind", "injected"))
                if self.conn is None or self.conn.closed:
                    self.connect()
                getattr(self, "op_" + op)(self.conn)
            except InjectedFault as exc:
                ERRORS.labels(op, str(exc)).inc()
            except psycopg.OperationalError:
                ERRORS.labels(op, "connection").inc()
                self.drop()
            except psycopg.Error:
                ERRORS.labels(op, "query").inc()
                if self.conn is not None and self.conn.broken:
                    self.drop()
            finally:
                LATENCY.labels(op).observe(time.monotonic() - start)

    def drop(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None
            CONNECTED.dec()
        time.sleep(0.5)


def main():
    env = os.environ
    slot = int(env.get("APP_SLOT", "1"))
    with open(env["APP_PASSWORD_FILE"]) as fh:
        password = fh.read().strip()
    conninfo = psycopg.conninfo.make_conninfo(
        host=env["APP_HOST"], port=env["APP_PORT"], dbname=env["APP_DB"], user=env["APP_USER"],
        password=password, sslmode="verify-ca", sslrootcert=env["APP_SSLROOTCERT"],
        application_name=f"sandbox-app-{slot}")
    start_http_server(int(env.get("APP_METRICS_BASE", "25200")) + slot, addr="127.0.0.1")
    INFO.labels(str(slot), f"{env['APP_HOST']}:{env['APP_PORT']}").set(1)
    workers = int(env.get("APP_WORKERS", "2"))
    rate = float(env.get("APP_RATE", "10")) / workers
    mix = json.loads(env.get("APP_MIX", '{"point_read": 1}'))
    for op in mix:  # every series exists from the start (an error rate of 0 is a fact, not a gap)
        REQUESTS.labels(op)
        LATENCY.labels(op)
        for kind in ("connection", "query", "injected"):
            ERRORS.labels(op, kind)
    for _ in range(workers):
        Worker(conninfo, rate, mix).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
