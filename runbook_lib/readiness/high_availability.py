"""High-availability items (HA-01 .. HA-05): Patroni, replication, the write endpoint, etcd."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import psycopg

from runbook_lib.campaign import records
from runbook_lib.clients import etcd, patroni, postgres
from runbook_lib.ops import drills
from runbook_lib.readiness.model import Finding
from runbook_lib.readiness.probe import Probe
from runbook_lib.readiness.registry import check


def decide_patroni(members: list[dict[str, Any]]) -> Finding:
    leaders = [m["name"] for m in members if m.get("role") in ("leader", "standby_leader")]
    others = [m for m in members if m["name"] not in leaders]
    not_streaming = [m["name"] for m in others if m.get("state") != "streaming"]
    ok = len(members) >= 3 and len(leaders) == 1 and not not_streaming
    return Finding.check(ok, [{k: m.get(k) for k in ("name", "role", "state", "lag")} for m in members],
                         ">= 3 members, exactly one leader, every other member streaming", "GET /cluster")


def decide_etcd(members: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> Finding:
    leaders = {s["leader"] for s in statuses if s.get("leader")}
    unhealthy = [s["endpoint"] for s in statuses if not s["healthy"]]
    ok = len(members) >= 3 and len(statuses) >= 3 and not unhealthy and len(leaders) == 1
    return Finding.check(ok, {"members": [m.get("name") for m in members], "unhealthy": unhealthy,
                              "leaders_seen": sorted(str(x) for x in leaders)},
                         ">= 3 members, all healthy, one leader", "etcd v3 member/list, /health, maintenance/status")


def _cluster(p: Probe) -> list[dict[str, Any]]:
    spec = p.need(p.params.target.patroni, "target.patroni")
    return p.shared("patroni-members", lambda: patroni.members(spec))


@check("HA-01")
def ha01(p: Probe) -> Finding:
    return decide_patroni(_cluster(p))


@check("HA-02")
def ha02(p: Probe) -> Finding:
    record = records.latest(p.campaign_dir, "failover_drill")
    if record is None:
        return Finding("fail", "no failover drill recorded in this campaign",
                       "a passing drill of both kinds (automatic, manual)", "records/failover_drill.json")
    kinds = drills.passed_kinds(record)
    age = records.age_seconds(record)
    ok = drills.DRILL_KINDS <= kinds and age <= p.seconds(p.settings.drill_max_age)
    return Finding.check(ok, {"passed_kinds": sorted(kinds), "age_days": round(age / 86400, 2),
                              "run": record.get("run_id")},
                         f"automatic and manual passed, younger than {p.settings.drill_max_age}",
                         "records/failover_drill.json")


LAG_READINGS = 5
LAG_INTERVAL_S = 0.25


def decide_replication_lag(leader_rows: list[list[dict[str, Any]]], standbys: dict[str, list[dict[str, Any]]],
                           max_ms: float, byte_max: int) -> Finding:
    """Judge every standby from both sides over a short window of readings.

    The leader's replay_lag is only refreshed when a standby reports, so a standby that stopped
    replaying can look current there for seconds; the standby's own receive and replay positions
    show it at once: WAL it had at the first reading and still has not replayed at the last is
    older than the window, whatever the leader last heard.
    """
    # one reading on a busy machine is a spike, not a state: the leader's figures are medians
    by_name: dict[str, list[dict[str, Any]]] = {}
    for reading in leader_rows:
        for r in reading:
            by_name.setdefault(r["application_name"], []).append(r)
    rows: dict[str, dict[str, Any]] = {
        name: {**rs[-1], "replay_lag_ms": statistics.median(x["replay_lag_ms"] for x in rs),
               "byte_lag": statistics.median(x["byte_lag"] for x in rs)} for name, rs in by_name.items()}
    slow: dict[str, str] = {}
    for name, r in rows.items():
        # replay_lag keeps its last measured value for a while after a standby caught up: with
        # nothing outstanding (byte lag 0) the standby is current, whatever the last burst took
        if r["byte_lag"] > 0 and r["replay_lag_ms"] >= max_ms:
            slow[name] = f"replay_lag {r['replay_lag_ms']:.0f} ms on the leader"
        elif r["byte_lag"] > byte_max:
            slow[name] = f"byte lag {r['byte_lag']:.0f} on the leader"
    for name, readings in standbys.items():
        first, last = readings[0], readings[-1]
        window_ms = (last["t"] - first["t"]) * 1000
        row = rows.setdefault(name, {"endpoint": name})
        row.update(replay_paused=last["paused"], standby_unreplayed_bytes=(
            None if last["receive"] is None else max(last["receive"] - last["replay"], 0)))
        if last["paused"]:
            slow[name] = "WAL replay is paused on the standby"
        elif None not in (first["receive"], last["replay"]) and last["replay"] < first["receive"] and window_ms >= max_ms:
            slow[name] = f"WAL received more than {window_ms:.0f} ms ago is not replayed yet"
    for name, reason in slow.items():
        rows[name]["slow"] = reason
    ok = bool(rows) and not slow
    return Finding.check(ok, list(rows.values()) or "no standby connected",
                         f"replay_lag < {max_ms:g} ms while WAL is outstanding, byte lag < {byte_max}, "
                         "replay not paused, every standby replays what it received within the window",
                         "pg_stat_replication on the leader; receive and replay positions on each standby",
                         "; ".join(f"{name}: {reason}" for name, reason in slow.items()))


_LEADER_LAG = """SELECT application_name, state,
    coalesce(extract(epoch FROM replay_lag) * 1000, 0)::float AS replay_lag_ms,
    pg_wal_lsn_diff(sent_lsn, replay_lsn)::bigint AS byte_lag FROM pg_stat_replication"""
_STANDBY_POSITIONS = """SELECT pg_is_wal_replay_paused() AS paused,
    pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint AS receive,
    pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replay"""


@check("HA-03")
def ha03(p: Probe) -> Finding:
    with contextlib.ExitStack() as stack:
        leader = stack.enter_context(p.connect(p.write_endpoint))
        standbys: dict[str, Any] = {}
        for name in p.members():
            try:
                conn = stack.enter_context(p.connect(name))
            except psycopg.OperationalError:
                continue  # a member that is down is HA-01's finding; here only the running ones are judged
            if postgres.scalar(conn, "SELECT pg_is_in_recovery()"):
                standbys[name] = conn
        leader_rows: list[list[dict[str, Any]]] = []
        positions: dict[str, list[dict[str, Any]]] = {name: [] for name in standbys}
        for i in range(LAG_READINGS):
            leader_rows.append(postgres.query(leader, _LEADER_LAG))
            for name, conn in standbys.items():
                positions[name].append({**postgres.query(conn, _STANDBY_POSITIONS)[0], "t": time.monotonic()})
            if i < LAG_READINGS - 1:
                time.sleep(LAG_INTERVAL_S)
    return decide_replication_lag(leader_rows, positions, p.params.policy.success_criteria.replication_lag_max * 1000,
                                  p.settings.replication_byte_lag_max)


@check("HA-04")
def ha04(p: Probe) -> Finding:
    endpoint = p.write_endpoint
    row = p.sql_one(endpoint, "SELECT pg_is_in_recovery() AS in_recovery, inet_server_port() AS port")
    leader = next((m for m in _cluster(p) if m.get("role") == "leader"), None)
    if leader is None:
        return Finding("fail", "no Patroni leader", "a leader", "GET /cluster")
    ok = row["in_recovery"] is False and row["port"] == leader.get("port")
    return Finding.check(ok, {"endpoint": endpoint, "lands_on_port": row["port"], "in_recovery": row["in_recovery"],
                              "leader": leader["name"], "leader_port": leader.get("port")},
                         "the write endpoint lands on the current leader", "inet_server_port(); GET /cluster")


@check("HA-05")
def ha05(p: Probe) -> Finding:
    spec = p.need(p.params.target.etcd, "target.etcd")
    members = etcd.member_list(spec).get("members", [])
    statuses = []
    for endpoint in spec.endpoints:
        try:
            statuses.append(etcd.endpoint_status(endpoint))
        except Exception as exc:  # an endpoint that does not answer is unhealthy
            statuses.append({"endpoint": endpoint, "healthy": False, "leader": None, "error": str(exc)[:120]})
    return decide_etcd(members, statuses)
