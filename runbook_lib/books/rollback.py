"""Run this when a rollback trigger of the policy holds (Alertmanager pages for each one as `RollbackTrigger…`,
labelled `action=rollback`) or when the incident lead decides to roll back. The policy's budget is **30
minutes** from the decision to the stakeholder notice; every step shows the time used and left.

**What makes it lossless**: after a logical cutover, reverse replication (new cluster → legacy) keeps
legacy current. The rollback stops writes on the new cluster, waits until legacy has applied the
last of them, holds a snapshot of both sides at that moment, and only then sends the traffic back.
The two snapshots are compared table by table afterwards. Without reverse replication (a
dump-restore cutover) writes made since the cutover would be lost: that is refused unless
`rollback.accept_loss` is set.

**Inputs** (`-p key=value` or the parameters file):
- `rollback.reason`: roll back by decision, recorded in the journal and the notice;
- `rollback.security_issue`: a critical security issue is open (the policy's manual trigger);
- `rollback.accept_loss`: accept losing writes made on the new cluster (only without reverse replication).

The new cluster is kept, read-only for the application, for the postmortem; `--plan` shows every change
without making it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack

import psycopg

from runbook_lib.campaign import records
from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.ops import cutover, fallback, migration, notify, smoke, wayback
from runbook_lib.promql import triggers
from runbook_lib.run.book import Book
from runbook_lib.run.session import Session
from runbook_lib.run.step import Outcome, on_the_clock, requires, step, would

HAS_MIGRATION = requires("migration", "the migration")
CUT = "rollback_cut"  # the session resource: snapshots of both sides at the cut, held until consistency_check


def _budget(session: Session) -> float:
    return min(session.params.policy.phases["rollback"].budget, session.params.policy.rollback_completion_max)


def _clock(session: Session, outcome: Outcome) -> Outcome:
    return on_the_clock(outcome, session.state.get("rollback_started", time.time()), _budget(session), "rollback")


# Not re-run on --resume: after the detach the triggers are calm and reverse replication is gone, so
# a second decision would refuse a rollback that is half done; its recorded state (start, why) is reused.
@step("rollback_decision", "Decision: a rollback trigger holds, or the operator's reason", guards=(HAS_MIGRATION,),
      gate=True, always_run=False)
def rollback_decision(session: Session) -> Outcome:
    """Each rollback trigger of the policy, read now from Prometheus (a trigger with a `for` window must have
    held for all of it). No trigger and no `rollback.reason`: nothing changes. A rollback that would lose
    writes is refused here too.
    """
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
    route = migration.route_of(session)
    refused = fallback.refusal(route, p.rollback.accept_loss)
    if not refused and fallback.reverse_replication(route) and not p.rollback.accept_loss:
        leader = [m for m in wayback.state(route, session.endpoints.by_role("member")).members if m.role == "leader"]
        if leader and leader[0].slot == "missing":
            refused = (f"the reverse slot is gone from the new cluster's leader {leader[0].name}: writes it took since "
                       "the slot was lost are not on legacy")
    if refused:
        return Outcome(summary=f"refused before any change: {refused} (-p rollback.accept_loss=true)",
                       evidence=evidence, failed=True)
    why = "; ".join(filter(None, ["triggers hold: " + ", ".join(fired) if fired else "",
                                  f"reason: {p.rollback.reason}" if p.rollback.reason else ""]))
    return _clock(session, Outcome(summary=f"rolling back ({why})", evidence=evidence,
                                   metrics={"triggers_fired": len(fired)},
                                   state={"rollback_started": time.time(), "rollback_why": why}))


def _hold_cut(session: Session) -> Callable[[], None]:
    """Two connections opened now (before the pause) and kept for the consistency check; the callable
    returned starts a snapshot on each, both sides level and still (inside the pause: two round trips)."""
    r = migration.route_of(session)
    with ExitStack() as stack:
        legacy = stack.enter_context(postgres.connect(r.source))
        new = stack.enter_context(postgres.connect(r.target))
        held = stack.pop_all()
    session.hold(CUT, (legacy, new), held.close)

    def begin() -> None:
        for conn in (legacy, new):
            migration.begin_snapshot(conn)
    return begin


def _one_critical_section(session: Session) -> Outcome:
    """Reverse replication runs and PgBouncer leads to the new cluster: the way back is the cutover mirrored."""
    r = migration.route_of(session)
    serving, leg = cutover.serving(r), cutover.back(r)
    try:
        prepared = cutover.prepare(r, leg, r.apply_timeout)
    except BaseException as exc:
        cutover.unstage_after(r, leg, serving, exc)  # a later RELOAD must not find legacy staged
        if isinstance(exc, psycopg.Error | migration.MigrationError):
            raise fallback.not_level(exc) from exc
        raise
    try:  # the held connections are dropped after a failed attempt: the new cluster takes writes again
        cut, retried = cutover.cut_retrying(r, leg, serving, r.critical_section_max, hold=lambda: _hold_cut(session),
                                            release=lambda: session.drop(CUT))
    except cutover.NotCut as exc:
        return _clock(session, Outcome(summary=f"rollback not done: {exc}; the new cluster serving, writable, "
                                               "the pool resumed on it, nothing switched", failed=True,
                                       evidence=cutover.evidence(prepared, exc.retried)))
    after = cutover.finish_back(r)
    wayback.expect(session.target.pushgateway, False)
    evidence = cutover.evidence(prepared, retried, cut, after)
    return _clock(session, Outcome(
        summary=f"PgBouncer sends {r.pooler_database} to legacy; pool paused {cut.paused_s * 1000:.0f} ms (the new "
                f"cluster's LSN {cut.lsn} applied on legacy after {cut.apply_wait_s * 1000:.0f} ms, {cut.sequences} "
                "sequences copied, both sides snapshotted at the cut)" + "".join(f"; {d}" for d in after),
        evidence=evidence, metrics={"reverse_applied_lsn": cut.lsn, "sequences": cut.sequences,
                                    "pool_paused_s": round(cut.paused_s, 4), "apply_wait_s": cut.apply_wait_s},
        state={"rollback_cut_lsn": cut.lsn, "pool_paused_s": round(cut.paused_s, 4), "rollback_loss": None}))


@step("stop_or_detach_new", "The way back in one critical section: pause, legacy level with the new cluster, "
                            "switched, resumed", mutating=True,
      plan=would("stage PgBouncer's legacy backend; then, in one pause bounded by migration.critical_section_max: "
                 "the new cluster read-only for the application, its last write applied on legacy, sequences "
                 "copied, both sides snapshotted, legacy writable, PgBouncer reloaded, resumed; then reverse "
                 "replication dropped"),
      guards=(HAS_MIGRATION,))
def stop_or_detach_new(session: Session) -> Outcome:
    """With reverse replication running, the write pause is this one step, the cutover mirrored: PgBouncer's
    config file gets legacy's address beforehand (not reloaded); inside the pause, in straight code, the
    new cluster becomes read-only for the application, legacy applies its last write and gets its sequence
    values, both sides are snapshotted at that cut, legacy becomes writable, PgBouncer reloads, the pool
    resumes. Past `migration.critical_section_max` (or on any error) before the switch, the new cluster is
    writable again and the pool resumed on it: nothing changed. Without reverse replication (or with the
    loss accepted and the new cluster unreachable) the pool is paused here and resumed on legacy below.
    """
    p, r = session.params, migration.route_of(session)
    if fallback.reverse_replication(r) and not p.rollback.accept_loss:
        if not fallback.on_legacy(r):
            return _one_critical_section(session)
        if not migration.read_only_for(r.source, r.app_role):
            # the critical section ran to its RESUME (legacy writable, serving) before this step was cut short:
            # only what follows the resume is left; copying sequences now would move legacy's backwards
            after = cutover.finish_back(r)
            wayback.expect(session.target.pushgateway, False)
            return _clock(session, Outcome(summary="the switch back was done already (a re-run): legacy serves "
                                                   "and is writable" + "".join(f"; {d}" for d in after)))
    paused_at = time.time()
    try:
        report = fallback.detach_new(r, p.rollback.accept_loss, r.apply_timeout,
                                     at_cut=lambda: _hold_cut(session)())
    except BaseException:
        session.drop(CUT)  # the new cluster takes writes again: no transaction may stay open on it
        raise
    wayback.expect(session.target.pushgateway, False)
    return _clock(session, Outcome(summary="; ".join(report.steps) + "; pool paused",
                                   metrics={"reverse_applied_lsn": report.reverse_applied_lsn,
                                            "sequences": report.sequences, "detach_s": round(report.seconds, 3)},
                                   state={"rollback_cut_lsn": report.reverse_applied_lsn, "pool_paused_at": paused_at,
                                          "rollback_loss": report.loss}))


@step("restore_legacy_traffic", "Traffic back to legacy: writable, PgBouncer repointed, pool resumed",
      mutating=True, plan=would("make legacy writable for the application, point PgBouncer at it and resume"),
      guards=(HAS_MIGRATION,))
def restore_legacy_traffic(session: Session) -> Outcome:
    """Legacy writable for the application, PgBouncer pointed at it, the pool resumed: done inside the critical
    section above when reverse replication ran (checked again here), done here otherwise.
    """
    done = fallback.restore_traffic(migration.route_of(session))
    paused = session.state.get("pool_paused_s")
    if paused is None and session.state.get("pool_paused_at"):
        paused = time.time() - session.state["pool_paused_at"]
    return _clock(session, Outcome(summary="; ".join(done) + "; pool resumed" +
                                   (f" after {paused:.2f} s" if paused is not None else ""),
                                   metrics={"pool_paused_s": round(paused, 3) if paused is not None else None}))


@step("validate_restore", "The application works on legacy through the pool", guards=(HAS_MIGRATION,))
def validate_restore(session: Session) -> Outcome:
    """Through PgBouncer as the application role: legacy serves, accepts writes, and passes the smoke tests
    (the declared ones, a primary-key read of every table, a k-NN search through each HNSW index).
    """
    r = migration.route_of(session)
    backend = pgbouncer.backend(r.pooler, r.pooler_database)
    if backend != r.legacy_backend:
        return _clock(session, Outcome(summary=f"PgBouncer still sends the application to {backend[0]}:{backend[1]}",
                                       failed=True))
    with postgres.connect(session.endpoints.pooler()) as conn:
        read_only = postgres.scalar(conn, "SELECT current_setting('transaction_read_only')")
    if read_only != "off":
        return _clock(session, Outcome(summary="legacy is still read-only for the application role", failed=True))
    outcome = smoke.of_run(session)
    outcome.summary = f"PgBouncer sends the application to legacy ({backend[0]}:{backend[1]}); {outcome.summary}"
    return _clock(session, outcome)


@step("consistency_check", "Nothing lost: every table equal on both sides at the rollback cut",
      guards=(HAS_MIGRATION,))
def consistency_check(session: Session) -> Outcome:
    """Row counts and a checksum of every row, per table, inside the two snapshots taken at the cut: legacy
    must hold exactly what the new cluster held.
    """
    lsn = session.state.get("rollback_cut_lsn")
    held = session.held(CUT)
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
        tables = migration.moved_tables(migration.route_of(session))
        checks = migration.compare(held[0], held[1], tables)
    finally:
        session.drop(CUT)
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
    """The notice goes to every configured channel (webhook, SMTP) and always to the campaign's outbox; a
    failed channel is shown.
    """
    subject, body = _notice(session)
    deliveries = notify.send(session.params.notifications, session.params.base_dir, session.campaign_dir, subject,
                             body)
    failed = [d.channel for d in deliveries if not d.ok]
    return _clock(session, Outcome(summary=notify.summary(deliveries), evidence=[d.to_dict() for d in deliveries],
                                   metrics={"failed_channels": len(failed)}))


@step("completion", "Completed within the rollback budget", always_run=True, guards=(HAS_MIGRATION,))
def completion(session: Session) -> Outcome:
    """Time from the decision to here, against the policy's 30 minutes."""
    session.drop(CUT)
    started = session.state.get("rollback_started")
    if started is None:
        return Outcome(summary="the rollback did not start", failed=True)
    minutes, budget = (time.time() - started) / 60, _budget(session) / 60
    records.save(session.campaign_dir, "rollback", {"why": session.state.get("rollback_why"),
                                                    "minutes": round(minutes, 2),
                                                    "loss": session.state.get("rollback_loss")}, session.info.run_id)
    return Outcome(summary=f"rollback completed in {minutes:.1f} min of the {budget:.0f} min budget"
                           + ("" if minutes < budget else ": OVER BUDGET"),
                   failed=minutes >= budget,  # the policy: "< 30 min"
                   metrics={"rollback_min": round(minutes, 2), "budget_min": budget})


BOOK = Book("rollback", "Rollback plan: back to the legacy database, losing nothing", mutating=True, steps=(
    rollback_decision, stop_or_detach_new, restore_legacy_traffic, validate_restore, consistency_check,
    notify_stakeholders, completion,
))
