#!/usr/bin/python3
"""The synthetic application, run INSIDE the image (python3-psycopg, python3-prometheus-client).

Sends a realistic mix (point reads, inserts, updates, k-NN vector searches) through PgBouncer over
TLS as the least-privilege application role, and exports request, error and latency metrics. It
reconnects on errors, so failover and cutover show up as errors and latency, not as a dead app.

Configuration (environment; no secrets): APP_HOST, APP_PORT, APP_DB, APP_USER, APP_SSLROOTCERT,
APP_PASSWORD_FILE, APP_METRICS_BASE, APP_SLOT (swarm task slot), APP_RATE, APP_MIX (JSON), APP_WORKERS,
APP_FAULT_FILE, APP_PROFILE (notes or ledger: which application's tables it uses, see sandbox/seed.py).

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


def vec(dim):
    return "[" + ",".join(f"{random.random():.4f}" for _ in range(dim)) + "]"


class Notes:
    """The default profile: entries with a vector(384) embedding, in public."""

    def facts(self, c):
        self.max_id = c.execute("SELECT coalesce(max(id), 1) FROM entries").fetchone()[0]
        self.max_account = c.execute("SELECT coalesce(max(id), 1) FROM accounts").fetchone()[0]

    def point_read(self, c):
        c.execute("SELECT id, title, metadata FROM entries WHERE id = %s", (random.randint(1, self.max_id),)).fetchall()

    def insert(self, c):
        account = random.randint(1, self.max_account)
        with c.transaction():
            row = c.execute(
                "INSERT INTO entries (collection_id, account_id, title, body, embedding, metadata) "
                "SELECT id, account_id, %s, %s, %s::vector, %s::jsonb FROM collections "
                "WHERE account_id = %s LIMIT 1 RETURNING id",
                ("app entry", "written by the synthetic application", vec(384), json.dumps({"source": "app"}),
                 account),
            ).fetchone()
            entry_id = row[0] if row else None
            c.execute("INSERT INTO events (occurred_at, account_id, entry_id, kind, payload) "
                      "VALUES (now(), %s, %s, 'create', '{}'::jsonb)", (account, entry_id))
        if entry_id:
            self.max_id = max(self.max_id, entry_id)

    def update(self, c):
        c.execute("UPDATE entries SET metadata = metadata || jsonb_build_object('touched', now()), "
                  "updated_at = now() WHERE id = %s", (random.randint(1, self.max_id),))

    def knn(self, c):
        c.execute("SELECT id FROM entries ORDER BY embedding <=> %s::vector LIMIT 10", (vec(384),)).fetchall()


class Ledger:
    """The second profile: customers and partitioned postings in schema ledger, documents with a vector(64)
    summary_vec in schema search."""

    def facts(self, c):
        self.max_customer = c.execute("SELECT coalesce(max(customer_no), 1) FROM ledger.customers").fetchone()[0]

    def point_read(self, c):
        c.execute("SELECT customer_no, legal_name, reference FROM ledger.customers WHERE customer_no = %s",
                  (random.randint(1, self.max_customer),)).fetchall()

    def insert(self, c):
        c.execute("INSERT INTO ledger.postings (booked_on, customer_no, side, amount, memo) "
                  "VALUES (current_date, %s, %s, %s, 'written by the synthetic application')",
                  (random.randint(1, self.max_customer), random.choice(["debit", "credit"]),
                   random.randint(100, 100000)))

    def update(self, c):
        c.execute("UPDATE search.documents SET filed_at = now() WHERE doc_key = "
                  "(SELECT doc_key FROM search.documents WHERE customer_no = %s LIMIT 1)",
                  (random.randint(1, self.max_customer),))

    def knn(self, c):
        c.execute("SELECT doc_key FROM search.documents ORDER BY summary_vec <-> %s::vector LIMIT 10",
                  (vec(64),)).fetchall()


PROFILES = {"notes": Notes, "ledger": Ledger}


class Worker(threading.Thread):
    def __init__(self, conninfo, rate, mix, profile):
        super().__init__(daemon=True)
        self.conninfo, self.rate, self.mix = conninfo, rate, mix
        self.ops, self.weights = list(mix), list(mix.values())
        self.conn = None
        self.app = PROFILES[profile]()

    def connect(self):
        self.conn = psycopg.connect(self.conninfo, autocommit=True, prepare_threshold=None, connect_timeout=3)
        self.app.facts(self.conn)
        CONNECTED.inc()

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
                getattr(self.app, op)(self.conn)
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
    start_http_server(int(env.get("APP_METRICS_BASE", "25200")) + slot, addr=env.get("APP_METRICS_ADDR", "127.0.0.1"))
    INFO.labels(str(slot), f"{env['APP_HOST']}:{env['APP_PORT']}").set(1)
    workers = int(env.get("APP_WORKERS", "2"))
    rate = float(env.get("APP_RATE", "10")) / workers
    mix = json.loads(env.get("APP_MIX", '{"point_read": 1}'))
    for op in mix:  # every series exists from the start (an error rate of 0 is a fact, not a gap)
        REQUESTS.labels(op)
        LATENCY.labels(op)
        for kind in ("connection", "query", "injected"):
            ERRORS.labels(op, kind)
    profile = env.get("APP_PROFILE", "notes")
    for _ in range(workers):
        Worker(conninfo, rate, mix, profile).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
