"""Two drills on the Patroni cluster, each refused unless the cluster is healthy first (one leader, every other
member streaming):

1. **Automatic failover**: the leader's Swarm service is scaled to 0, as if its node died. A replica must take over and the write endpoint must follow; the old leader's service is scaled back and must rejoin as a streaming replica.
2. **Manual switchover**: a planned switchover through Patroni's REST API to a streaming replica.

Writes are unavailable for the seconds a failover takes. During each drill a row is written every 20 ms
through the write endpoint (into the drill's own table in the maintenance database, dropped after) and the
acknowledged rows the new leader lacks are counted: the RPO. A drill fails past `drills.rto_max` (writes
back), `drills.rpo_max_rows` (rows lost) or `drills.rejoin_max` (the old leader streaming again). Run
`--plan` first to see what would be done. The results are recorded in the campaign (readiness HA-02 reads
them).
"""

from __future__ import annotations

from collections.abc import Callable

from runbook_lib.campaign import records
from runbook_lib.clients import http, patroni
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.params import Patroni
from runbook_lib.ops import drills, fallback, migration, wayback
from runbook_lib.ops.drills import DrillError, DrillResult, all_streaming
from runbook_lib.run.book import Book
from runbook_lib.run.session import Session
from runbook_lib.run.step import Guard, Outcome, step


def _patroni(session: Session) -> Patroni:
    if session.target.patroni is None:
        raise DrillError("target.patroni is not set: there is no cluster to drill")
    return session.target.patroni


def _write_endpoint(session: Session) -> PgSpec:
    name = session.params.readiness.primary
    return session.endpoints.db(name) if name else session.endpoints.by_role("primary")[0]


def _healthy(session: Session) -> str | None:
    if session.target.patroni is None:
        return "target.patroni is not set"
    try:
        return None if all_streaming(session.target.patroni) and patroni.leader(_patroni(session)) else \
            "the cluster does not have one leader and every other member streaming"
    except http.HttpError as exc:
        return str(exc)


HEALTHY = Guard("cluster healthy before the drill", _healthy)


def _announce(session: Session) -> Callable[[], None]:
    """Before the promotion: its count as planned, pushed where the rollback trigger's alert rule reads it."""
    push, prom = session.target.pushgateway, session.target.prometheus
    if push is None or prom is None:
        return lambda: None

    def announce() -> None:
        drills.plan_promotion(push.url, prom.url)

    return announce


def _outcome(session: Session, result: DrillResult) -> Outcome:
    """The drill's figures; after a cutover, also the way back, which must outlive the drill."""
    result = drills.verdict(result, session.params.drills.rto_max, session.params.drills.rpo_max_rows)
    summary = (f"{result.kind}: {result.old_leader} -> {result.new_leader}; new leader after "
               f"{result.seconds_to_new_leader} s, writes back after {result.seconds_write_endpoint_back} s; "
               f"{result.writes_acknowledged} writes acknowledged during the drill, {result.writes_lost} lost"
               + (f"; FAILED: {result.note}" if not result.passed else ""))
    if session.target.pushgateway is None:
        summary += "; no target.pushgateway: the alert rules count this promotion as unplanned"
    failed = not result.passed
    route = migration.route(session.params) if session.params.migration else None
    if route is not None and fallback.reverse_replication(route):
        way, tidied = wayback.settle(route, session.endpoints.by_role("member"))
        summary += ("; the way back held" if way.ok else "; the way back is BROKEN: " + "; ".join(way.problems))
        summary += f" ({'; '.join(tidied)})" if tidied else ""
        failed = failed or not way.ok
    return Outcome(summary=summary, metrics={k: v for k, v in result.to_dict().items() if k != "kind"}, failed=failed,
                   state={f"drill_{result.kind}": result.to_dict()})


def _under_writes(session: Session, kind: str, drill: Callable[[], DrillResult]) -> Outcome:
    """The drill with the application's kind of writes going on through the write endpoint, the ones lost
    counted afterwards (the RPO), then judged by the drills' bounds."""
    bounds = session.params.drills
    with drills.DrillWrites(_write_endpoint(session), bounds.write_database, bounds.write_interval,
                            f"{session.info.run_id}-{kind}") as writes:
        result = drill()
    return _outcome(session, drills.with_writes(result, writes))


def _plan_automatic(session: Session) -> Outcome:
    leader = patroni.leader(_patroni(session))
    service = next((m.service for m in _patroni(session).members if m.name == leader), None)
    return Outcome(summary=f"would scale service {service} (leader {leader}) to 0, wait for a new leader and the "
                           f"write endpoint {_write_endpoint(session).name}, then scale it back to 1")


def _plan_manual(session: Session) -> Outcome:
    return Outcome(summary=f"would POST /switchover from leader {patroni.leader(_patroni(session))} to a "
                           "streaming replica and wait for the write endpoint")


@step("automatic_failover", "Automatic failover: stop the leader's task", mutating=True, plan=_plan_automatic,
      guards=(HEALTHY,))
def automatic_failover(session: Session) -> Outcome:
    """The leader's Swarm task is stopped; a replica must take over and the write endpoint follow it.
    The stopped member is started again and must stream from the new leader.
    """
    return _under_writes(session, "automatic", lambda: drills.automatic(
        _patroni(session), session.target.swarm, _write_endpoint(session), before_promotion=_announce(session),
        rejoin_timeout=session.params.drills.rejoin_max))


@step("manual_switchover", "Manual switchover through Patroni", mutating=True, plan=_plan_manual, guards=(HEALTHY,))
def manual_switchover(session: Session) -> Outcome:
    """A planned switchover through Patroni's REST API to a streaming replica; the write endpoint must
    follow and the old leader must stream again.
    """
    return _under_writes(session, "manual", lambda: drills.manual(
        _patroni(session), _write_endpoint(session), before_promotion=_announce(session),
        rejoin_timeout=session.params.drills.rejoin_max))


def _plan_record(session: Session) -> Outcome:
    return Outcome(summary="would record the drills of this run in records/failover_drill.json")


@step("record_drills", "Record the drills in the campaign", mutating=True, plan=_plan_record)
def record_drills(session: Session) -> Outcome:
    """Both drills, with their timings, saved as `records/failover_drill.json` (readiness HA-02 reads it)."""
    drills = [session.state[k] for k in ("drill_automatic", "drill_manual") if k in session.state]
    record = records.save(session.run_dir.parent, "failover_drill", {"drills": drills}, session.info.run_id)
    return Outcome(summary=f"records/failover_drill.json: {len(drills)} drills ({record['sha256'][:12]})")


BOOK = Book("failover_drill", "Failover drills", mutating=True, steps=(
    automatic_failover, manual_switchover, record_drills,
))
