"""Failover drills: an automatic failover (the leader's task stops) and a manual switchover.

Each drill measures how long the cluster had no writable leader and checks that the
write endpoint follows; the member taken down is brought back and must stream again.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import psycopg

from runbook_lib.clients import http, patroni, postgres, swarm
from runbook_lib.params import Params

DRILL_KINDS = {"automatic", "manual"}


def passed_kinds(record: dict[str, Any] | None) -> set[str]:
    """The drill kinds a failover_drill record shows passed; both are needed for a tested failover."""
    return {d["kind"] for d in ((record or {}).get("data") or {}).get("drills", []) if d.get("passed")}


class DrillError(Exception):
    pass


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _writable(params: Params, endpoint: str) -> bool:
    try:
        with postgres.connect(params, endpoint, connect_timeout=2) as conn:
            return postgres.scalar(conn, "SELECT NOT pg_is_in_recovery()") is True
    except psycopg.Error:
        return False


def _new_leader(params: Params, old: str) -> str | None:
    name = patroni.leader(params.target.patroni)
    return name if name and name != old else None


def _all_streaming(params: Params) -> bool:
    members = patroni.members(params.target.patroni)
    return len(members) == len(params.target.patroni.members) and all(
        m.get("role") == "leader" or m.get("state") == "streaming" for m in members)


def automatic(params: Params, write_endpoint: str, timeout: float = 120) -> DrillResult:
    """Stop the leader's Swarm service; a replica must take over and the write endpoint follow."""
    spec = params.target.patroni
    old = patroni.leader(spec)
    if old is None:
        raise DrillError("no leader before the drill: the cluster is not healthy enough to drill")
    service_name = next((m.service for m in spec.members if m.name == old), None)
    if not service_name:
        raise DrillError(f"target.patroni.members[{old}].service is not set: cannot stop the leader's task")
    t0 = time.monotonic()
    swarm.scale(params.target.swarm, service_name, 0)
    try:
        new, _ = _wait("a new leader", lambda: _new_leader(params, old), timeout)
        t_leader = time.monotonic() - t0
        _wait("the write endpoint on the new leader", lambda: _writable(params, write_endpoint), timeout)
        t_write = time.monotonic() - t0
    finally:
        swarm.scale(params.target.swarm, service_name, 1)
    rejoined = True
    try:
        _wait("every member streaming again", lambda: _all_streaming(params), timeout, interval=1)
    except DrillError:
        rejoined = False
    return DrillResult("automatic", rejoined, old, new, round(t_leader, 2), round(t_write, 2), rejoined)


def manual(params: Params, write_endpoint: str, timeout: float = 120) -> DrillResult:
    """A planned switchover through Patroni's REST API to a streaming replica."""
    spec = params.target.patroni
    members = patroni.members(spec)
    old = next((m["name"] for m in members if m.get("role") == "leader"), None)
    candidate = next((m["name"] for m in members if m.get("state") == "streaming"), None)
    if not old or not candidate:
        raise DrillError("need a leader and a streaming replica for a switchover")
    api = next(m.api_url for m in spec.members if m.name == old)
    t0 = time.monotonic()
    http.call("POST", f"{api.rstrip('/')}/switchover", json_body={"leader": old, "candidate": candidate},
              ok_codes=(200, 202), expect_json=False, timeout=60)
    new, _ = _wait("the candidate to lead", lambda: patroni.leader(spec) == candidate and candidate, timeout)
    t_leader = time.monotonic() - t0
    _wait("the write endpoint on the new leader", lambda: _writable(params, write_endpoint), timeout)
    t_write = time.monotonic() - t0
    rejoined = True
    try:
        _wait("every member streaming again", lambda: _all_streaming(params), timeout, interval=1)
    except DrillError:
        rejoined = False
    return DrillResult("manual", rejoined, old, candidate, round(t_leader, 2), round(t_write, 2), rejoined)


# ---------------------------------------------------------------- runbook steps

from runbook_lib import records  # noqa: E402
from runbook_lib.session import Session  # noqa: E402
from runbook_lib.steps import Guard, Outcome, step  # noqa: E402


def _write_endpoint(session: Session) -> str:
    return session.params.readiness.primary or next(
        n for n, d in session.target.databases.items() if d.role == "primary")


def _healthy(session: Session) -> str | None:
    if session.target.patroni is None:
        return "target.patroni is not set"
    try:
        return None if _all_streaming(session.params) and patroni.leader(session.target.patroni) else \
            "the cluster does not have one leader and every other member streaming"
    except http.HttpError as exc:
        return str(exc)


HEALTHY = Guard("cluster healthy before the drill", _healthy)


def _outcome(result: DrillResult) -> Outcome:
    return Outcome(summary=f"{result.kind}: {result.old_leader} -> {result.new_leader}; new leader after "
                           f"{result.seconds_to_new_leader} s, writes back after {result.seconds_write_endpoint_back} s"
                           + ("" if result.member_rejoined else "; the old leader did NOT rejoin"),
                   metrics={k: v for k, v in result.to_dict().items() if k != "kind"}, failed=not result.passed,
                   state={f"drill_{result.kind}": result.to_dict()})


def _plan_automatic(session: Session) -> Outcome:
    leader = patroni.leader(session.target.patroni)
    service = next((m.service for m in session.target.patroni.members if m.name == leader), None)
    return Outcome(summary=f"would scale service {service} (leader {leader}) to 0, wait for a new leader and the "
                           f"write endpoint {_write_endpoint(session)}, then scale it back to 1")


def _plan_manual(session: Session) -> Outcome:
    return Outcome(summary=f"would POST /switchover from leader {patroni.leader(session.target.patroni)} to a "
                           "streaming replica and wait for the write endpoint")


@step("automatic_failover", "Automatic failover: stop the leader's task", mutating=True, plan=_plan_automatic,
      guards=(HEALTHY,))
def automatic_failover(session: Session) -> Outcome:
    return _outcome(automatic(session.params, _write_endpoint(session)))


@step("manual_switchover", "Manual switchover through Patroni", mutating=True, plan=_plan_manual, guards=(HEALTHY,))
def manual_switchover(session: Session) -> Outcome:
    return _outcome(manual(session.params, _write_endpoint(session)))


def _plan_record(session: Session) -> Outcome:
    return Outcome(summary="would record the drills of this run in records/failover_drill.json")


@step("record_drills", "Record the drills in the campaign", mutating=True, plan=_plan_record)
def record_drills(session: Session) -> Outcome:
    drills = [session.state[k] for k in ("drill_automatic", "drill_manual") if k in session.state]
    record = records.save(session.run_dir.parent, "failover_drill", {"drills": drills}, session.info.run_id)
    return Outcome(summary=f"records/failover_drill.json: {len(drills)} drills ({record['sha256'][:12]})")
