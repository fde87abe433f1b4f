"""The write probe: one small write through the application's entry point every 50 ms, all phase 2 long.

Every attempt is recorded (start, end, ok, error) in write-probe.jsonl in the run folder, so
the write-unavailable time and the failed writes are measured, not estimated. The probe's
table has a primary key, so logical replication carries it like any application table.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.names import PROBE_TABLE

TABLE = PROBE_TABLE
FILE = "write-probe.jsonl"


def ensure_table(endpoint: PgSpec, app_role: str) -> None:
    """Create the probe table on the legacy database (as its owner) and let the application role write it.

    A resumed run finds it in place and changes nothing: legacy's DDL may be frozen by then."""
    with postgres.connect(endpoint) as conn:
        if postgres.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL AND has_table_privilege(%s, %s, 'INSERT')",
                           [TABLE, app_role, TABLE]):
            return
        postgres.query(conn, sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, run_id text NOT NULL, "
                                     "sent_at timestamptz NOT NULL DEFAULT clock_timestamp())").format(
            sql.Identifier(TABLE)))
        # a small table the runbooks add to production: autovacuum analyses it after any change, so its
        # statistics stay fresh (readiness DB-11) even when only a handful of rows were written
        postgres.query(conn, sql.SQL("ALTER TABLE {} SET (autovacuum_analyze_threshold = 0, "
                                     "autovacuum_analyze_scale_factor = 0)").format(sql.Identifier(TABLE)))
        postgres.query(conn, sql.SQL("GRANT INSERT, SELECT ON {} TO {}").format(sql.Identifier(TABLE),
                                                                                sql.Identifier(app_role)))
        postgres.query(conn, sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
            sql.Identifier(f"{TABLE}_id_seq"), sql.Identifier(app_role)))


def drop(endpoint: PgSpec) -> bool:
    """Remove the probe's table (the campaign is over); False when it was not there."""
    with postgres.connect(endpoint) as conn:
        if not postgres.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", [TABLE]):
            return False
        postgres.query(conn, sql.SQL("DROP TABLE {}").format(sql.Identifier(TABLE)))
    return True


def mark(endpoint: PgSpec, marker: str) -> None:
    """One write of the probe's kind, tagged: proves where a write through `endpoint` lands."""
    with postgres.connect(endpoint) as conn:
        postgres.query(conn, sql.SQL("INSERT INTO {} (run_id) VALUES (%s)").format(sql.Identifier(TABLE)), [marker])


LOGIN_RETRY_MAX = 30.0  # PgBouncer's server_login_retry (15 s by default) and a margin


def mark_through_pool(endpoint: PgSpec, marker: str, within: float = LOGIN_RETRY_MAX) -> None:
    """mark() through PgBouncer. After one failed server login (a backend restarting around a switch, a PAUSE
    given up at its bound) PgBouncer refuses every login with its cached error for server_login_retry: that
    refusal alone is waited out, at most `within` seconds; any other error is raised at once."""
    deadline = time.monotonic() + within
    while True:
        try:
            mark(endpoint, marker)
            return
        except psycopg.errors.ProtocolViolation as exc:
            if pgbouncer.CACHED_LOGIN_ERROR not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def marked(endpoint: PgSpec, marker: str) -> int:
    with postgres.connect(endpoint) as conn:
        return int(postgres.scalar(conn, sql.SQL("SELECT count(*) FROM {} WHERE run_id = %s").format(
            sql.Identifier(TABLE)), [marker]))


class WriteProbe:
    def __init__(self, endpoint: PgSpec, run_dir: Path, run_id: str, interval: float = 0.05) -> None:
        self.endpoint, self.run_id, self.interval = endpoint, run_id, interval
        self.path = run_dir / FILE
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="write-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _connect(self) -> psycopg.Connection[Any]:
        return postgres.connect(self.endpoint, connect_timeout=2)

    def _loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        statement = sql.SQL("INSERT INTO {} (run_id) VALUES (%s)").format(sql.Identifier(TABLE))
        with self.path.open("a") as out:
            while not self._stop.is_set():
                began = time.time()
                ok, error = True, None
                try:
                    if conn is None or conn.closed:
                        conn = self._connect()
                    conn.execute(statement, [self.run_id])
                except psycopg.Error as exc:
                    ok, error = False, str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                    if conn is not None and (conn.broken or conn.closed):
                        conn = None
                ended = time.time()
                out.write(json.dumps({"start": began, "end": ended, "ok": ok, "error": error}) + "\n")
                out.flush()
                self._stop.wait(max(0.0, self.interval - (ended - began)))
        if conn is not None:
            conn.close()


def analyse(endpoint: PgSpec) -> None:
    """After the window: the probe's rows counted in the planner statistics (readiness DB-11 reads them)."""
    with postgres.connect(endpoint) as conn:
        postgres.query(conn, sql.SQL("ANALYZE {}").format(sql.Identifier(TABLE)))


def load(run_dir: Path) -> pd.DataFrame:
    path = run_dir / FILE
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return pd.DataFrame(rows, columns=["start", "end", "ok", "error"])


SPAN_FACTOR = 4  # a gap this many probe intervals long is an outage, not scheduling jitter


def figures(frame: pd.DataFrame, interval: float = 0.05) -> dict[str, Any]:
    """Write-unavailable seconds and failures.

    write_unavailable_s is the longest span without a completed write, less one interval (the cutover
    pause); write_unavailable_total_s adds up every span longer than SPAN_FACTOR intervals (outages,
    not scheduling jitter), so a second pause elsewhere in the window (the validation cut) counts too.
    Without any outage the total is 0 while the longest span is a few milliseconds of jitter.
    """
    if frame.empty:
        return {"attempts": 0, "failed_writes": 0, "write_unavailable_s": None, "write_unavailable_total_s": None,
                "unavailable_spans": 0}
    done = frame[frame["ok"]].sort_values("end")["end"].to_numpy()
    gaps = (done[1:] - done[:-1]) if len(done) > 1 else []
    if not len(gaps):  # one write or none succeeded: the whole probe is the span
        gaps = [float(frame["end"].max() - frame["start"].min())]
    spans = [float(g) - interval for g in gaps if g > SPAN_FACTOR * interval]
    return {"attempts": int(len(frame)), "failed_writes": int((~frame["ok"]).sum()),
            "write_unavailable_s": round(max(0.0, float(max(gaps)) - interval), 3),
            "write_unavailable_total_s": round(sum(spans), 3),
            "unavailable_spans": len(spans),
            "max_write_latency_ms": round(float((frame["end"] - frame["start"]).max() * 1000), 1)}


def gap_across(frame: pd.DataFrame, paused: float, resumed: float, interval: float = 0.05) -> dict[str, Any]:
    """The probe's view of one pause: the longest span without a completed write from the last write done
    before `paused` to the first done after `resumed` (less one interval), and the writes that failed in it.
    Empty when the probe has no write on one side of the pause."""
    done = sorted(float(e) for e in frame[frame["ok"]]["end"])
    before = [e for e in done if e <= paused]
    after = [e for e in done if e >= resumed]
    if not before or not after:
        return {}
    span = [e for e in done if before[-1] <= e <= after[0]]
    longest = max(b - a for a, b in zip(span, span[1:], strict=False)) if len(span) > 1 else 0.0
    failed = frame[(~frame["ok"]) & (frame["start"] >= before[-1]) & (frame["start"] <= after[0])]
    return {"probe_longest_gap_s": round(max(0.0, longest - interval), 3), "probe_failed_writes": int(len(failed))}
