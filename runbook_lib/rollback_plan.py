"""Steps of the rollback plan: back to legacy within the policy's 30 minutes, losing nothing.

The decision comes first: the policy's rollback triggers, read from Prometheus with the PromQL
of the alert rules that page for them, or the operator's recorded reason. Then the new cluster
stops taking writes and legacy applies its last one (reverse replication), both sides are held
in snapshots at that cut, traffic goes back to legacy, the application is checked through the
pool, and the two snapshots are compared table by table, so "nothing lost" is shown, not assumed.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import psycopg

from runbook_lib import migration, notify, phase3, rollback
from runbook_lib.phase2 import HAS_MIGRATION
from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.monitoring import triggers
from runbook_lib.session import Session
from runbook_lib.steps import Outcome, on_the_clock, step, would

# run id -> the snapshots taken at the rollback cut, held from stop_or_detach_new to consistency_check
_cuts: dict[str, tuple[ExitStack, psycopg.Connection, psycopg.Connection]] = {}



def _budget(session: Session) -> float:
    return min(session.params.policy.phases["rollback"].budget, session.params.policy.rollback_completion_max)


def _clock(session: Session, outcome: Outcome) -> Outcome:
    return on_the_clock(outcome, session.state.get("rollback_started", time.time()), _budget(session), "rollback")


# Not re-run on --resume: after the detach the triggers are calm and reverse replication is gone, so
# a second decision would refuse a rollback that is half done; its recorded state (start, why) is reused.
@step("rollback_decision", "Decision: a rollback trigger holds, or the operator's reason", guards=(HAS_MIGRATION,))
def rollback_decision(session: Session) -> Outcome:
    p = session.params
    url = session.target.prometheus.url if session.target.prometheus else None
    raised = triggers.RAISED_BY_OPERATOR if p.rollback.security_issue else set()
    readings = triggers.read(url, p.policy.rollback_triggers, raised)
    fired = [f"{r.metric} {r.condition} (observed {r.observed})" for r in readings if r.fired]
    evidence = [r.to_dict() for r in readings]
    unreadable = [r.metric for r in readings if r.note.startswith("unreadable")]
    if not fired and not p.rollback.reason:
        blind = f" ({len(unreadable)} unreadable: {', '.join(unreadable)})" if unreadable else ""
        return Outcome(summary=f"no rollback: no trigger holds{blind} and no reason is recorded (to roll back by "
                               "decision, run with -p rollback.reason='...')", evidence=evidence, failed=True)
    refused = rollback.refusal(p, p.rollback.accept_loss)
    if refused:
        return Outcome(summary=f"refused before any change: {refused} (-p rollback.accept_loss=true)",
                       evidence=evidence, failed=True)
    why = "; ".join(filter(None, ["triggers hold: " + ", ".join(fired) if fired else "",
                                  f"reason: {p.rollback.reason}" if p.rollback.reason else ""]))
    return _clock(session, Outcome(summary=f"rolling back ({why})", evidence=evidence,
                                   metrics={"triggers_fired": len(fired)},
                                   state={"rollback_started": time.time(), "rollback_why": why}))


def _hold_cut(session: Session) -> None:
    """Snapshots of both sides while they are level and still, kept open for the consistency check."""
    m = session.params.migration
    _release(session)
    with ExitStack() as stack:
        legacy = stack.enter_context(migration.snapshot(session.params, m.source))
        new = stack.enter_context(migration.snapshot(session.params, m.target))
        _cuts[session.info.run_id] = (stack.pop_all(), legacy, new)


def _release(session: Session) -> None:
    held = _cuts.pop(session.info.run_id, None)
    if held:
        held[0].close()


@step("stop_or_detach_new", "Stop writes on the new cluster; legacy applies its last write", mutating=True,
      plan=would("pause the pool, make the new cluster read-only for the application, wait until legacy applied "
                 "its last write, copy the sequences, snapshot both sides, drop reverse replication"),
      guards=(HAS_MIGRATION,))
def stop_or_detach_new(session: Session) -> Outcome:
    p = session.params
    paused_at = time.time()
    try:
        report = rollback.detach_new(p, p.rollback.accept_loss, p.migration.apply_timeout,
                                     at_cut=lambda: _hold_cut(session))
    except BaseException:
        _release(session)  # the new cluster takes writes again: no transaction may stay open on it
        raise
    return _clock(session, Outcome(summary="; ".join(report.steps) + "; pool paused",
                                   metrics={"reverse_applied_lsn": report.reverse_applied_lsn,
                                            "sequences": report.sequences, "detach_s": round(report.seconds, 3)},
                                   state={"rollback_cut_lsn": report.reverse_applied_lsn, "pool_paused_at": paused_at,
                                          "rollback_loss": report.loss}))


@step("restore_legacy_traffic", "Traffic back to legacy: writable, PgBouncer repointed, pool resumed",
      mutating=True, plan=would("make legacy writable for the application, point PgBouncer at it and resume"),
      guards=(HAS_MIGRATION,))
def restore_legacy_traffic(session: Session) -> Outcome:
    done = rollback.restore_traffic(session.params)
    paused = time.time() - session.state["pool_paused_at"] if session.state.get("pool_paused_at") else None
    return _clock(session, Outcome(summary="; ".join(done) + "; pool resumed" +
                                   (f" after {paused:.2f} s" if paused is not None else ""),
                                   metrics={"pool_paused_s": round(paused, 3) if paused is not None else None}))


@step("validate_restore", "The application works on legacy through the pool", guards=(HAS_MIGRATION,))
def validate_restore(session: Session) -> Outcome:
    p = session.params
    backend = pgbouncer.backend(p, p.migration.pooler_database)
    if backend != rollback.legacy_backend(p):
        return _clock(session, Outcome(summary=f"PgBouncer still sends the application to {backend[0]}:{backend[1]}",
                                       failed=True))
    with postgres.connect(p, phase3.pooler(session)) as conn:
        read_only = postgres.scalar(conn, "SELECT current_setting('transaction_read_only')")
    if read_only != "off":
        return _clock(session, Outcome(summary="legacy is still read-only for the application role", failed=True))
    outcome = phase3.smoke(session)
    outcome.summary = f"PgBouncer sends the application to legacy ({backend[0]}:{backend[1]}); {outcome.summary}"
    return _clock(session, outcome)


@step("consistency_check", "Nothing lost: every table equal on both sides at the rollback cut",
      guards=(HAS_MIGRATION,))
def consistency_check(session: Session) -> Outcome:
    """Row counts and checksums of every table inside the two snapshots taken at the cut."""
    lsn = session.state.get("rollback_cut_lsn")
    held = _cuts.get(session.info.run_id)
    if lsn is None:
        loss = session.state.get("rollback_loss")
        return _clock(session, Outcome(summary=f"no cut to compare: {loss}" if loss else
                                       "no cut to compare: PgBouncer already sent the application to legacy and no "
                                       "reverse replication ran; writes the new cluster took since the cutover, if "
                                       "any, are only there (it is kept)", failed=False))
    if held is None:
        return _clock(session, Outcome(
            summary=f"the snapshots taken at the cut (LSN {lsn}) were lost when the kernel restarted: compare the "
                    "new cluster (read-only for the application, keep it) with legacy by primary key before "
                    "dropping it", failed=True))
    try:
        tables = migration.user_tables(session.params, session.params.migration.source)
        checks = migration.compare(held[1], held[2], tables)
    finally:
        _release(session)
    rows = [{"table": c.table, "legacy_rows": c.source_rows, "new_rows": c.target_rows,
             "checksum_equal": c.source_checksum == c.target_checksum} for c in checks]
    bad = [c.table for c in checks if not c.equal]
    return _clock(session, Outcome(
        summary=(f"DIFFER at the cut (LSN {lsn}): {', '.join(bad)}; the new cluster is read-only and kept"
                 if bad else f"{len(checks)} tables: row counts and checksums equal at the cut (LSN {lsn})"),
        evidence=rows, failed=bool(bad), metrics={"tables_compared": len(checks), "tables_differing": len(bad)}))


def _notice(session: Session) -> tuple[str, str]:
    t = session.target
    elapsed = (time.time() - session.state.get("rollback_started", time.time())) / 60
    subject = f"[{t.environment}] Rollback of {t.name}: traffic is back on the previous database"
    body = (f"The {t.name} application runs on its previous database again after a rollback "
            f"({session.state.get('rollback_why', 'reason not recorded')}).\nIt took {elapsed:.1f} min; "
            f"the new cluster is kept read-only for the postmortem.\nAudience: {session.params.notifications.audience}."
            f"\nCampaign: {session.info.campaign}; coordinator: {session.info.operator}.")
    return subject, body


@step("notify_stakeholders", "Tell the stakeholders", mutating=True,
      plan=lambda s: Outcome(summary=f"would send '{_notice(s)[0]}'"), guards=(HAS_MIGRATION,))
def notify_stakeholders(session: Session) -> Outcome:
    subject, body = _notice(session)
    deliveries = notify.send(session.params, session.run_dir.parent, subject, body)
    failed = [d.channel for d in deliveries if not d.ok]
    return _clock(session, Outcome(summary=notify.summary(deliveries), evidence=[d.to_dict() for d in deliveries],
                                   metrics={"failed_channels": len(failed)}))


@step("completion", "Completed within the rollback budget", always_run=True, guards=(HAS_MIGRATION,))
def completion(session: Session) -> Outcome:
    _release(session)
    started = session.state.get("rollback_started")
    if started is None:
        return Outcome(summary="the rollback did not start", failed=True)
    minutes, budget = (time.time() - started) / 60, _budget(session) / 60
    return Outcome(summary=f"rollback completed in {minutes:.1f} min of the {budget:.0f} min budget"
                           + ("" if minutes <= budget else ": OVER BUDGET"),
                   failed=minutes > budget, metrics={"rollback_min": round(minutes, 2), "budget_min": budget})
