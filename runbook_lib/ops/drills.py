"""Failover drills: an automatic failover (the leader's task stops) and a manual switchover.

Each drill measures how long the cluster had no writable leader and checks that the
write endpoint follows; the member taken down is brought back and must stream again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
from psycopg import sql

from runbook_lib.clients import http, patroni, postgres, prometheus, swarm
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.names import DRILL_TABLE
from runbook_lib.config.params import Patroni, Swarm
from runbook_lib.errors import RunbookError, first_line
from runbook_lib.promql.expressions import PLANNED_PROMOTIONS

DRILL_KINDS = {"automatic", "manual"}


def passed_kinds(record: dict[str, Any] | None) -> set[str]:
    """The drill kinds a failover_drill record shows passed; both are needed for a tested failover."""
    return {d["kind"] for d in ((record or {}).get("data") or {}).get("drills", []) if d.get("passed")}


class DrillError(RunbookError):
    pass


def plan_promotion(pushgateway: str, prometheus_url: str, timeout: float = 60) -> int:
    """Count the next promotion as planned, where the alert rules see it, before it happens.

    PLANNED_PROMOTIONS is a running count pushed to the Pushgateway; the rollback trigger and the
    validation subtract its rise over their window from the promotions they count. Prometheus must
    have scraped the count before the promotion (and, the first time, its starting value too), or the
    rise would not cancel the promotion: this waits, bounded, until it has.
    """
    query = f"max({PLANNED_PROMOTIONS})"
    current = prometheus.scalar(prometheus_url, query)
    if current is None:
        _push(pushgateway, 0)
        _wait("Prometheus to scrape the planned-promotions count", lambda: prometheus.scalar(prometheus_url, query)
              is not None, timeout, interval=1)
        current = 0.0
    count = int(current) + 1
    _push(pushgateway, count)
    _wait("Prometheus to scrape the planned promotion", lambda: (prometheus.scalar(prometheus_url, query) or 0) >= count,
          timeout, interval=1)
    return count


def _push(pushgateway: str, count: int) -> None:
    registry = CollectorRegistry()
    Gauge(PLANNED_PROMOTIONS, "promotions the runbooks' drills made on purpose (a running count)",
          registry=registry).set(count)
    push_to_gateway(pushgateway, job="runbook_drills", registry=registry, timeout=10, handler=http.push_handler)


@dataclass
class DrillResult:
    kind: str
    passed: bool
    old_leader: str
    new_leader: str | None
    seconds_to_new_leader: float | None
    seconds_write_endpoint_back: float | None
    member_rejoined: bool
    note: str = ""
    writes_acknowledged: int | None = None  # writes the endpoint confirmed while the drill ran
    writes_lost: int | None = None  # of those, missing from the new leader afterwards: the RPO in rows
    longest_write_gap_s: float | None = None  # the writer's own view of the outage: longest span between two acks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(result: DrillResult, rto_max: float, rpo_max_rows: int = 0) -> DrillResult:
    """The drill judged by its bounds: the old leader streaming again (within the rejoin wait), the write
    endpoint taking writes within rto_max seconds, and at most rpo_max_rows acknowledged writes lost (an
    unmeasured loss fails too); what it missed is said in the note."""
    missed = [] if result.member_rejoined else ["the old leader did not stream again in time (drills.rejoin_max)"]
    back = result.seconds_write_endpoint_back
    if back is None or back > rto_max:
        missed.append(f"writes back after {back} s, over drills.rto_max {rto_max:g} s")
    if result.writes_lost is None:
        missed.append("the writes lost were not measured" + (f" ({result.note})" if result.note else ""))
    elif result.writes_lost > rpo_max_rows:
        missed.append(f"{result.writes_lost} acknowledged write(s) lost, over drills.rpo_max_rows {rpo_max_rows}")
    return replace(result, passed=not missed, note="; ".join(missed))


class DrillWrites:
    """Application-shaped writes through the write endpoint for the whole drill: one row every `interval`,
    each acknowledged id kept, so that the rows lost in the failover are counted, not assumed.

    The rows go to their own table in the endpoint's maintenance database (never the application's: after a
    logical cutover the way back publishes that one whole), and the table is dropped once counted.
    """

    def __init__(self, endpoint: PgSpec, database: str, interval: float, label: str) -> None:
        self.endpoint, self.database = endpoint, database
        self.interval, self.label = interval, label
        self.acknowledged: list[int] = []
        self.ack_times: list[float] = []
        self.failed = 0
        self.problem = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"drill-writes-{label}", daemon=True)
        self._table = sql.Identifier(DRILL_TABLE)

    def __enter__(self) -> DrillWrites:
        try:
            with postgres.connect(self.endpoint, dbname=self.database, connect_timeout=5) as conn:
                postgres.query(conn, sql.SQL("CREATE TABLE IF NOT EXISTS {} (drill text NOT NULL, id bigint NOT NULL, "
                                             "at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                                             "PRIMARY KEY (drill, id))").format(self._table))
        except psycopg.Error as exc:
            self.problem = f"no table for the drill's writes in {self.database}: {first_line(exc)}"
            return self
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)  # each write is bounded (statement_timeout): it ends well before
        if exc_type is not None and not self.problem:  # the drill itself failed: leave nothing behind
            try:
                with postgres.connect(self.endpoint, dbname=self.database, connect_timeout=5) as conn:
                    postgres.query(conn, "SET lock_timeout = '10s'")
                    postgres.query(conn, sql.SQL("DROP TABLE IF EXISTS {}").format(self._table))
            except psycopg.Error:
                pass  # the drill's own error is the one to show

    def _loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        statement = sql.SQL("INSERT INTO {} (drill, id) VALUES (%s, %s)").format(self._table)
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                if conn is None or conn.closed:
                    conn = postgres.connect(self.endpoint, dbname=self.database, connect_timeout=2)
                    conn.execute("SET statement_timeout = '5s'")  # a write stuck in a failover ends, as a failure
                conn.execute(statement, [self.label, n])  # autocommit: acknowledged once execute returns
                self.acknowledged.append(n)
                self.ack_times.append(time.monotonic())
            except psycopg.Error:
                self.failed += 1
                if conn is not None and (conn.broken or conn.closed):
                    conn = None
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()

    def count_lost(self, timeout: float = 60) -> tuple[int | None, str]:
        """(acknowledged writes missing from the write endpoint now, why not measured); the table dropped."""
        if self.problem:
            return None, self.problem
        if self._thread.is_alive():
            return None, "the drill's writer did not stop in 30 s: a write may still be acknowledged"
        try:
            present: set[int] = set()

            def read() -> bool:
                with postgres.connect(self.endpoint, dbname=self.database, connect_timeout=2) as conn:
                    postgres.query(conn, "SET lock_timeout = '10s'")
                    rows = postgres.query(conn, sql.SQL("SELECT id FROM {} WHERE drill = %s").format(self._table),
                                          [self.label])
                    present.update(int(r["id"]) for r in rows)
                    postgres.query(conn, sql.SQL("DROP TABLE IF EXISTS {}").format(self._table))
                return True

            _wait("the write endpoint to count the drill's writes", read, timeout)
        except DrillError as exc:
            return None, str(exc)
        return len(set(self.acknowledged) - present), ""

    @property
    def longest_gap_s(self) -> float | None:
        times = self.ack_times
        return round(max(b - a for a, b in zip(times, times[1:], strict=False)), 3) if len(times) > 1 else None


def with_writes(result: DrillResult, writes: DrillWrites) -> DrillResult:
    """The drill's result with what its writes show: acknowledged, lost (or why not measured), longest gap."""
    lost, why = writes.count_lost()
    return replace(result, writes_acknowledged=len(writes.acknowledged), writes_lost=lost,
                   longest_write_gap_s=writes.longest_gap_s, note=why or result.note)


def _wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> tuple[Any, float]:
    started = time.monotonic()
    while True:
        try:
            value = check()
        except Exception:  # the thing being waited for is down while it fails over
            value = None
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise DrillError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _writable(endpoint: PgSpec) -> bool:
    try:
        with postgres.connect(endpoint, connect_timeout=2) as conn:
            return postgres.scalar(conn, "SELECT NOT pg_is_in_recovery()") is True
    except psycopg.Error:
        return False


def _new_leader(spec: Patroni, old: str) -> str | None:
    name = patroni.leader(spec)
    return name if name and name != old else None


def all_streaming(spec: Patroni) -> bool:
    """One leader's view: every member of the spec is there, and each is the leader or streaming."""
    members = patroni.members(spec)
    return len(members) == len(spec.members) and all(
        m.get("role") == "leader" or m.get("state") == "streaming" for m in members)


def _rejoined(spec: Patroni, timeout: float) -> bool:
    """Whether every member streams again (the one taken down included) within the timeout."""
    try:
        _wait("every member streaming again", lambda: all_streaming(spec), timeout, interval=1)
    except DrillError:
        return False
    return True


Hook = Callable[[], None]


def _wait_promotable(spec: Patroni, timeout: float) -> list[str]:
    """Before the leader is taken away: the replicas Patroni will promote (see patroni.candidates)."""
    found, _ = _wait("a replica Patroni may promote (in synchronous mode: a designated synchronous standby)",
                     lambda: patroni.candidates(spec), timeout)
    return list(found)


def _leader_service(spec: Patroni, why: str) -> tuple[str, str]:
    old = patroni.leader(spec)
    if old is None:
        raise DrillError("no leader before the drill: the cluster is not healthy enough to drill")
    service_name = next((m.service for m in spec.members if m.name == old), None)
    if not service_name:
        raise DrillError(f"target.patroni.members[{old}].service is not set: {why}")
    return old, service_name


def _nothing() -> None:
    return None


def automatic(spec: Patroni, swarm_spec: Swarm | None, write_endpoint: PgSpec, timeout: float = 120,
              before_promotion: Hook = _nothing, rejoin_timeout: float = 180) -> DrillResult:
    """Stop the leader's Swarm service; a replica must take over and the write endpoint follow."""
    _wait_promotable(spec, timeout)  # first: leadership may still move while it waits
    old, service_name = _leader_service(spec, "cannot stop the leader's task")
    before_promotion()
    new, t_leader, t_write = _taken_away(spec, write_endpoint, old, timeout,
                                         take=lambda: swarm.scale(swarm_spec, service_name, 0),
                                         give_back=lambda: swarm.scale(swarm_spec, service_name, 1))
    rejoined = _rejoined(spec, rejoin_timeout)
    return DrillResult("automatic", rejoined, old, new, t_leader, t_write, rejoined)


def _taken_away(spec: Patroni, write_endpoint: PgSpec, old: str, timeout: float, take: Hook,
                give_back: Hook) -> tuple[str, float, float]:
    """Take the leader away, time a new leader and the write endpoint on it, then give it back (always):
    (new leader, seconds to it, seconds until writes are taken)."""
    t0 = time.monotonic()
    take()
    try:
        new, _ = _wait("a new leader", lambda: _new_leader(spec, old), timeout)
        t_leader = time.monotonic() - t0
        _wait("the write endpoint on the new leader", lambda: _writable(write_endpoint), timeout)
        t_write = time.monotonic() - t0
    finally:
        give_back()
    return new, round(t_leader, 2), round(t_write, 2)


NodeAction = Callable[[str], None]


def node_loss(spec: Patroni, swarm_spec: Swarm | None, write_endpoint: PgSpec, lose: NodeAction,
              restore: NodeAction, timeout: float = 120, before_promotion: Hook = _nothing,
              rejoin_timeout: float = 180) -> DrillResult:
    """Lose the whole node the leader runs on (its engine, and with it every task there, its etcd member
    too), then bring it back: a replica on another node must take over, the write endpoint follow, and the
    old leader rejoin once its node returns. `lose` and `restore` act on a node by hostname (a power cut
    and a restart in the sandbox; on production, what the team's drill plan says)."""
    _wait_promotable(spec, timeout)  # first: leadership may still move while it waits
    old, service_name = _leader_service(spec, "cannot find the leader's node")
    node = swarm.node_of(swarm_spec, service_name)
    if patroni.leader(spec) != old:
        raise DrillError(f"the leader moved from {old} while the drill looked for its node; run the drill again")
    before_promotion()
    new, t_leader, t_write = _taken_away(spec, write_endpoint, old, timeout, take=lambda: lose(node),
                                         give_back=lambda: restore(node))
    rejoined = _rejoined(spec, rejoin_timeout)
    return DrillResult("node_loss", rejoined, old, new, t_leader, t_write, rejoined, note=f"node {node} lost")


def manual(spec: Patroni, write_endpoint: PgSpec, timeout: float = 120, before_promotion: Hook = _nothing,
           rejoin_timeout: float = 180) -> DrillResult:
    """A planned switchover through Patroni's REST API to a replica it accepts (see patroni.candidates)."""
    candidate = _wait_promotable(spec, timeout)[0]
    old = patroni.leader(spec)
    if not old:
        raise DrillError("need a leader and a streaming replica for a switchover")
    api = next(m.api_url for m in spec.members if m.name == old)
    before_promotion()
    t0 = time.monotonic()
    http.call("POST", f"{api.rstrip('/')}/switchover", json_body={"leader": old, "candidate": candidate},
              ok_codes=(200, 202), expect_json=False, timeout=60)
    new, _ = _wait("the candidate to lead", lambda: patroni.leader(spec) == candidate and candidate, timeout)
    t_leader = time.monotonic() - t0
    _wait("the write endpoint on the new leader", lambda: _writable(write_endpoint), timeout)
    t_write = time.monotonic() - t0
    rejoined = _rejoined(spec, rejoin_timeout)
    return DrillResult("manual", rejoined, old, candidate, round(t_leader, 2), round(t_write, 2), rejoined)
