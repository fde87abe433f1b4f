"""The way back: reverse replication (new cluster -> legacy) that keeps legacy current for 72 hours.

Its slot lives on the new cluster's leader, so a failover of the new cluster would take the slot
with it. PostgreSQL 17 failover slots keep a copy on every standby: the subscription asks for
`failover = true`, each standby runs the slot-sync worker (`sync_replication_slots`,
`hot_standby_feedback`, a `dbname` in `primary_conninfo`), and the leader holds a change back from
the subscriber until the other members have it (`synchronized_standby_slots`), so legacy is never
ahead of the member that takes over. Patroni 4.0 drops every slot it does not know once that slot is
inactive (on the leader too), so the slot is named in its `ignore_slots`.

Chosen over Patroni's permanent logical slots: those are copied into a replica by restarting it and
then advanced every loop, which lets the subscriber run ahead of an asynchronous replica, and on 4.0
they fight PostgreSQL's own slot sync. The forward direction (legacy -> new) is the same problem on
legacy's side when legacy is itself a Patroni cluster: out of scope here (its slot is dropped at the
cutover, so only the initial copy would have to ride out a failover of legacy).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
from psycopg import sql

from runbook_lib.clients import http, patroni, postgres
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.names import PUBLICATION, REVERSE_PUBLICATION, REVERSE_SUBSCRIPTION
from runbook_lib.config.names import REVERSE_SLOT as SLOT
from runbook_lib.config.params import HttpService, Patroni
from runbook_lib.ops import migration
from runbook_lib.ops.migration import Route
from runbook_lib.promql.expressions import WAY_BACK_EXPECTED

DYNAMIC = {"hot_standby_feedback": "on", "sync_replication_slots": "on"}


@dataclass
class Member:
    name: str
    role: str  # leader | standby | unreachable
    slot: str  # active | inactive | synced | unsynced | missing | -
    detail: str = ""


@dataclass
class WayBack:
    """Where the way back stands: legacy's subscription, the slot on the leader and on every standby."""

    subscription: str  # running | stopped | disabled | missing
    lag_bytes: int | None
    members: list[Member] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(m) for m in self.members]


def protect(spec: Patroni) -> list[str]:
    """Patroni's dynamic configuration made to keep the reverse slot: what was changed (empty when nothing)."""
    config = patroni.config(spec)
    have = (config.get("postgresql") or {}).get("parameters") or {}
    change: dict[str, Any] = {}
    params = {k: v for k, v in DYNAMIC.items() if str(have.get(k)) != v}
    if params:
        change["postgresql"] = {"parameters": params}
    ignored = list(config.get("ignore_slots") or [])
    if not any(s.get("name") == SLOT for s in ignored):
        change["ignore_slots"] = [*ignored, {"name": SLOT, "type": "logical"}]
    if change:
        patroni.patch_config(spec, change)
    return [f"postgresql.parameters.{k}={v}" for k, v in params.items()] + \
        ([f"ignore_slots += {SLOT}"] if "ignore_slots" in change else [])


def _settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    names = ["sync_replication_slots", "hot_standby_feedback", "primary_conninfo", "synchronized_standby_slots"]
    rows = postgres.query(conn, "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [names])
    return {r["name"]: r["setting"] for r in rows}


def unprotected(members: list[PgSpec]) -> list[str]:
    """What stops the reverse slot from outliving a failover that the runbooks cannot set themselves.

    The leader must hold changes back for its standbys (synchronized_standby_slots) and every standby
    must reach the leader's `postgres`-like database for slot sync (a dbname in primary_conninfo).
    """
    if not members:
        return ["no member endpoints (role member) in target.databases: the standbys cannot be checked"]
    problems = []
    for spec in members:
        try:
            with postgres.connect(spec) as conn:
                standby = postgres.scalar(conn, "SELECT pg_is_in_recovery()")
                got = _settings(conn)
        except psycopg.OperationalError as exc:
            problems.append(f"{spec.name}: unreachable ({_first(exc)})")
            continue
        if standby and "dbname=" not in got.get("primary_conninfo", ""):
            problems.append(f"{spec.name}: primary_conninfo names no dbname (slot sync needs one; Patroni 4.0+ adds "
                            "it)")
        if not standby and not got.get("synchronized_standby_slots"):
            problems.append(f"{spec.name} (leader): synchronized_standby_slots is empty: set it on each member to "
                            "the other members' slot names (Patroni's local postgresql.parameters)")
    return problems


def state(route: Route, members: list[PgSpec]) -> WayBack:
    """Legacy's subscription, the slot on the leader (active, lag) and its synced copy on each standby."""
    with postgres.connect(route.source) as conn:
        sub = postgres.query(conn, """SELECT s.subenabled AS enabled,
                                             (SELECT count(*) FROM pg_stat_subscription w
                                              WHERE w.subid = s.oid AND w.pid IS NOT NULL) AS workers
                                      FROM pg_subscription s WHERE s.subname = %s""", [REVERSE_SUBSCRIPTION])
    way = WayBack(subscription="missing", lag_bytes=None)
    if not sub:
        way.problems.append(f"legacy has no subscription {REVERSE_SUBSCRIPTION}: nothing keeps it current")
    else:
        s = sub[0]
        way.subscription = "disabled" if not s["enabled"] else ("running" if s["workers"] else "stopped")
        if way.subscription != "running":
            way.problems.append(f"legacy's subscription {REVERSE_SUBSCRIPTION} is {way.subscription}")
    leaders = 0
    for spec in members:
        member = _member(spec)
        way.members.append(member)
        if member.role == "leader":
            leaders += 1
            if member.slot == "missing":
                way.problems.append(f"{spec.name} (leader) has no slot {SLOT}: changes since it was lost are not on "
                                    "legacy")
            elif member.detail == "not a failover slot":
                way.problems.append(f"slot {SLOT} on {spec.name} (leader) is not a failover slot: no standby keeps a "
                                    "copy, so it does not outlive a failover")
            if member.slot == "active":
                way.lag_bytes = _lag(spec)
        elif member.role == "standby" and member.slot != "synced":
            way.problems.append(f"{spec.name}: the slot is {member.slot} on this standby, so a failover to it would "
                                "lose the way back")
        elif member.role == "unreachable":
            way.problems.append(f"{spec.name}: unreachable ({member.detail})")
    if members and leaders != 1:
        way.problems.append(f"{leaders} members answer as leader")
    return way


def _member(spec: PgSpec) -> Member:
    try:
        with postgres.connect(spec) as conn:
            standby = postgres.scalar(conn, "SELECT pg_is_in_recovery()")
            rows = postgres.query(conn, """SELECT active, synced, temporary, conflicting, invalidation_reason, failover
                                           FROM pg_replication_slots WHERE slot_name = %s""", [SLOT])
    except psycopg.OperationalError as exc:
        return Member(spec.name, "unreachable", "-", _first(exc))
    role = "standby" if standby else "leader"
    if not rows:
        return Member(spec.name, role, "missing")
    slot = rows[0]
    if slot["invalidation_reason"] or slot["conflicting"]:
        return Member(spec.name, role, "invalid", slot["invalidation_reason"] or "conflicting")
    if standby:
        return Member(spec.name, role, "synced" if slot["synced"] and not slot["temporary"] else "unsynced")
    return Member(spec.name, role, "active" if slot["active"] else "inactive",
                  "" if slot["failover"] else "not a failover slot")


def _lag(spec: PgSpec) -> int | None:
    with postgres.connect(spec) as conn:
        lag = postgres.scalar(conn, """SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                                       FROM pg_replication_slots WHERE slot_name = %s""", [SLOT])
    return int(lag) if lag is not None else None


def settle(route: Route, members: list[PgSpec], timeout: float = 60.0) -> tuple[WayBack, list[str]]:
    """The way back once it has settled (slot sync copies a slot within seconds), or as it stands at the
    timeout; leftovers that block slot sync are dropped on the way. Returns the state and what was tidied."""
    deadline = time.monotonic() + timeout
    tidied: list[str] = []
    while True:
        tidied += tidy(members)
        way = state(route, members)
        if way.ok or time.monotonic() > deadline:
            return way, tidied
        nudge(members)
        time.sleep(2)


def nudge(members: list[PgSpec]) -> None:
    """A standby persists its synced copy only once the leader's slot has moved past the standby's own
    position, which waits for a running-transactions record (every 15 s, or longer on a busy machine);
    the leader logs one now, as PostgreSQL's documentation advises. Needs superuser: skipped without."""
    for spec in members:
        try:
            with postgres.connect(spec) as conn:
                if not postgres.scalar(conn, "SELECT pg_is_in_recovery()"):
                    postgres.query(conn, "SELECT pg_log_standby_snapshot()")
                    return
        except psycopg.Error:
            continue


def tidy(members: list[PgSpec]) -> list[str]:
    """Drop a standby's leftover unsynced copy (a former leader's own slot after a switchover).

    PostgreSQL's slot sync will not overwrite a slot of the same name that it did not create, so such
    a standby never gets a current copy; dropping the leftover lets the sync worker create one.
    """
    done = []
    for spec in members:
        try:
            with postgres.connect(spec) as conn:
                if not postgres.scalar(conn, "SELECT pg_is_in_recovery()"):
                    continue
                dropped = postgres.query(conn, """SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                                                  WHERE slot_name = %s AND NOT synced AND NOT active""", [SLOT])
        except psycopg.Error:
            continue  # an unreachable standby is reported by state(), not here
        if dropped:
            done.append(f"{spec.name}: dropped a leftover unsynced {SLOT} (slot sync recreates it)")
    return done


def retire(route: Route, members: list[PgSpec], spec: Patroni, timeout: float = 60.0) -> list[str]:
    """End the way back: legacy's subscription dropped (its slot on the leader with it), the publications
    dropped, Patroni's ignore_slots entry removed; waits until no member keeps a copy of the slot."""
    done = []
    if migration.drop_subscription(route.source, REVERSE_SUBSCRIPTION):
        done.append(f"legacy's subscription {REVERSE_SUBSCRIPTION} dropped, and its slot on the leader")
    for endpoint, name in ((route.target, REVERSE_PUBLICATION), (route.source, PUBLICATION)):
        with postgres.connect(endpoint) as conn:
            if postgres.query(conn, "SELECT 1 FROM pg_publication WHERE pubname = %s", [name]):
                postgres.query(conn, sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(name)))
                done.append(f"publication {name} dropped on {endpoint.name}")
    deadline = time.monotonic() + timeout
    while left := [m.name for m in (_member(s) for s in members) if m.slot not in ("missing", "-")]:
        tidy(members)  # slot sync drops synced copies; a leftover a switchover made is dropped here
        if time.monotonic() > deadline:
            raise RuntimeError(f"slot {SLOT} is still on {', '.join(left)} after {timeout:g} s")
        time.sleep(2)
    config = patroni.config(spec)
    ignored = [s for s in (config.get("ignore_slots") or []) if s.get("name") != SLOT]
    if len(ignored) != len(config.get("ignore_slots") or []):
        patroni.patch_config(spec, {"ignore_slots": ignored or None})
        done.append(f"Patroni no longer ignores {SLOT}")
    return done


def expect(pushgateway: HttpService | None, expected: bool) -> bool:
    """Tell the alert rules whether a way back exists to watch (True from the cutover, False once it is gone);
    False when no Pushgateway is configured (then the way-back alert cannot fire)."""
    if pushgateway is None:
        return False
    registry = CollectorRegistry()
    Gauge(WAY_BACK_EXPECTED, "1 while reverse replication to legacy must run (after a logical cutover)",
          registry=registry).set(1 if expected else 0)
    push_to_gateway(pushgateway.url, job="runbook_way_back", registry=registry, timeout=10, handler=http.push_handler)
    return True


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
