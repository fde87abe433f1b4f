"""High-availability items (HA-01 .. HA-05): Patroni, replication, the write endpoint, etcd."""

from __future__ import annotations

import statistics
import time
from typing import Any

from runbook_lib import records
from runbook_lib.clients import etcd, patroni
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
    data = record["data"]
    kinds = {d["kind"] for d in data.get("drills", []) if d.get("passed")}
    age = records.age_seconds(record)
    ok = {"automatic", "manual"} <= kinds and age <= p.seconds(p.settings.drill_max_age)
    return Finding.check(ok, {"passed_kinds": sorted(kinds), "age_days": round(age / 86400, 2),
                              "run": record.get("run_id")},
                         f"automatic and manual passed, younger than {p.settings.drill_max_age}",
                         "records/failover_drill.json")


@check("HA-03")
def ha03(p: Probe) -> Finding:
    # replay_lag is the last measured value: one reading on a busy machine is a spike, not a state;
    # five readings over a second, and each standby is judged by its median
    readings: dict[str, list[dict]] = {}
    for i in range(5):
        for r in p.sql(p.write_endpoint, """SELECT application_name, state,
                coalesce(extract(epoch FROM replay_lag) * 1000, 0)::float AS replay_lag_ms,
                pg_wal_lsn_diff(sent_lsn, replay_lsn)::bigint AS byte_lag FROM pg_stat_replication"""):
            readings.setdefault(r["application_name"], []).append(r)
        if i < 4:
            time.sleep(0.25)
    rows = [{**rs[-1], "replay_lag_ms": statistics.median(x["replay_lag_ms"] for x in rs),
             "byte_lag": statistics.median(x["byte_lag"] for x in rs)} for rs in readings.values()]
    max_ms = p.params.policy.success_criteria.replication_lag_max * 1000
    # replay_lag keeps its last measured value for a while after a standby caught up: with nothing
    # outstanding (byte lag 0) the standby is current, whatever the last burst took
    slow = [r["application_name"] for r in rows
            if (r["byte_lag"] > 0 and r["replay_lag_ms"] >= max_ms) or r["byte_lag"] > p.settings.replication_byte_lag_max]
    ok = bool(rows) and not slow
    return Finding.check(ok, rows or "no standby connected",
                         f"replay_lag < {max_ms:g} ms while WAL is outstanding, byte lag < {p.settings.replication_byte_lag_max}",
                         "pg_stat_replication on the leader")


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
