"""Everything that must be true before the maintenance window is booked: a verified backup that restores, a
snapshot of the Swarm state, the readiness gate, the stakeholder notice, and the window itself. The phase 1
record saved at the end is what the five sign-offs bind to:

``` runbook signoff --campaign CAMPAIGN --role 'Database Team Lead' --name 'A. Person' runbook signoff
--campaign CAMPAIGN --status ```

Run it with `--plan` first to see what each changing step would do.

Phase 1 runs on the policy's 2-day budget, counted from its first completed step; past it the steps refuse and
phase 1 starts again, so no window is booked on stale backups or an old readiness verdict.
"""

from __future__ import annotations

import functools
import json

import pandas as pd

from runbook_lib.campaign import records, window
from runbook_lib.config.params import Window
from runbook_lib.ops import backup, notify, swarm_snapshot, tools
from runbook_lib.readiness import engine, report, scoring
from runbook_lib.run import archive
from runbook_lib.run import step as steps
from runbook_lib.run.book import Book
from runbook_lib.run.session import Session
from runbook_lib.run.step import Clock, Outcome, requires

CLOCK = Clock("pre_migration", "phase1_started", "the backups and the readiness verdict are too old to book a "
              "window on: start phase 1 again (a new run)")
step = functools.partial(steps.step, clock=CLOCK)  # every step runs on the phase budget

HAS_BACKUP = requires("backup", "the backup source and location")
HAS_WINDOW = requires("window", "the maintenance window")


def _window(session: Session) -> Window:
    if session.params.window is None:
        raise ValueError("window is not set in the parameters (start, end)")
    return session.params.window


def _plan_backup(session: Session) -> Outcome:
    space = backup.check_space(backup.plan(session.params))
    return Outcome(summary=f"would run pg_basebackup of {backup.plan(session.params).source.name} into {space['location']} "
                           f"({space['data_bytes'] / 1e6:.1f} MB of data, {space['free_bytes'] / 1e9:.1f} GB free, "
                           f"enough: {space['enough']})", metrics=space)


@step("snapshot_and_backup", "Online physical backup and schema dump of the legacy database", mutating=True,
      plan=_plan_backup, guards=(HAS_BACKUP,))
def snapshot_and_backup(session: Session) -> Outcome:
    """An online physical backup (pg_basebackup, WAL streamed, manifest with SHA-256 checksums) and a
    schema-only dump beside it. Refused before anything starts when the backup location has less than
    `backup.space_multiple` times the data free. A backup that fails or is interrupted (its location filling
    up, say) has its files removed, stays marked FAILED and is never used; the step can be run again.
    """
    result = backup.take(tools.of_run(session), backup.plan(session.params))
    return Outcome(summary=f"backup {result.id}: {result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s "
                           f"({result.mb_per_s:.1f} MB/s), LSN {result.start_lsn} .. {result.end_lsn}",
                   metrics={"id": result.id, "bytes": result.bytes, "seconds": result.seconds, "mb_per_s": round(result.mb_per_s, 2),
                            "start_lsn": result.start_lsn, "end_lsn": result.end_lsn},
                   state={"backup": result.to_dict()})


@step("verify_backup", "Verify the backup against its manifest", guards=(HAS_BACKUP,))
def verify_backup(session: Session) -> Outcome:
    """`pg_verifybackup` checks every file against the manifest and the WAL needed."""
    result = session.state["backup"]
    output = backup.verify(tools.of_run(session), result["path"])
    return Outcome(summary=output or "backup verified", metrics={"verified": True},
                   state={"backup": {**result, "verified": True}})


@step("restore_test", "Restore test in a scratch server", guards=(HAS_BACKUP,))
def restore_test(session: Session) -> Outcome:
    """A scratch server starts from a copy of the backup; row counts are compared with the source (equal, or
    between the counts at the backup's start and end where rows were added meanwhile), btree indexes pass
    amcheck, the vector extension loads and a k-NN query answers through the HNSW index. The scratch
    server is removed afterwards, also when a check fails.
    """
    result = backup.BackupResult(**session.state["backup"])
    checks = backup.restore_test(tools.of_run(session), backup.plan(session.params), result,
                                 session.params.readiness.vector)
    rows = [{"table": t, **v} for t, v in checks["mismatched"].items()]
    summary = (f"restored server ready in {checks['ready_seconds']} s; {checks['tables']} tables, "
               f"{checks['amcheck_indexes']} btree indexes pass amcheck, {len(checks['extensions'])} extensions "
               f"({', '.join(f'{k} {v}' for k, v in checks['extensions'].items())}), k-NN through HNSW on "
               f"{checks['knn_columns'] - len(checks['knn_failing'])} of {checks['knn_columns']} vector columns")
    if checks["unlogged_not_in_backup"]:
        summary += (f"; unlogged, so in no physical backup by design: {', '.join(checks['unlogged_not_in_backup'])}")
    if checks["missing_extensions"]:
        summary += f"; extensions missing after the restore: {', '.join(checks['missing_extensions'])}"
    if checks["knn_failing"]:
        summary += f"; k-NN not through its HNSW index: {', '.join(checks['knn_failing'])}"
    if checks["mismatched"]:
        summary += f"; row counts differ in {', '.join(checks['mismatched'])}"
    return Outcome(summary=summary, evidence=rows or None, metrics={k: v for k, v in checks.items()
                                                                    if k != "mismatched"},
                   failed=not checks["passed"], state={"restore_test": checks})


@step("swarm_snapshot", "Snapshot of the Swarm state (names and specs, never secret data)")
def swarm_state(session: Session) -> Outcome:
    """Every service spec, network, config and secret *name* of the target's stacks, saved in the run folder
    so the infrastructure can be put back as it was.
    """
    snapshot = swarm_snapshot.take(session.target.swarm)
    campaign = session.run_dir.parent
    path = session.run_dir / "swarm-snapshot.json"
    path.write_text(json.dumps(snapshot, indent=2, sort_keys=True, default=str))
    values, _ = archive.secret_values([str(r) for r in session.params.scan_refs()])
    leaked = [v for v in values if v in path.read_text()]
    if leaked:
        path.unlink()
        return Outcome(summary="the snapshot contained a secret value; it was deleted", failed=True)
    record = records.save(campaign, "swarm_snapshot", {"file": str(path.relative_to(campaign)),
                                                       "services": len(snapshot["services"]),
                                                       "sha256": archive.sha256_file(path)}, session.info.run_id)
    table = pd.DataFrame([{"service": s["name"], "version": s["version"]} for s in snapshot["services"]])
    return Outcome(summary=f"{len(snapshot['services'])} services, {len(snapshot['networks'])} networks, "
                           f"{len(snapshot['configs'])} configs, {len(snapshot['secrets'])} secret names -> "
                           f"{path.name}", evidence=table, state={"swarm_snapshot_sha256": record["data"]["sha256"]})


@step("readiness_gate", "Readiness gate", gate=True)
def readiness_gate(session: Session) -> Outcome:
    """Uses the campaign's readiness record when it is younger than `phase1.readiness_max_age`, else checks
    now. As the policy says, phase 1 goes on only on a "ready" verdict: a failing blocker, a score under the
    gate, or a warning that is not waived (with a reason, in `waivers`) stops it here.
    """
    campaign = session.run_dir.parent
    record = records.latest(campaign, "readiness")
    gate = session.params.policy.readiness_gate
    max_age = session.params.phase1.readiness_max_age
    if record is None or records.age_seconds(record) > max_age:
        why = "no readiness record" if record is None else "the readiness record is too old"
        results = engine.run(session.params, campaign_dir=campaign)
        verdict = scoring.verdict(results, gate.min_score, gate.blockers_allowed)
        record = report.save_record(campaign, results, verdict, session.info.run_id, session.target.name)
        source = f"{why}: checked now"
    else:
        source = f"campaign record from run {record.get('run_id')} ({records.age_seconds(record) / 3600:.1f} h old)"
    v = record["data"]["verdict"]
    blockers, warnings = v["failing_blockers"], v.get("warnings", [])
    ok = v["score"] >= gate.min_score and len(blockers) <= gate.blockers_allowed and not warnings
    summary = (f"{'PASSED' if ok else 'STOPPED'}: score {v['score']:.1%} (gate {gate.min_score:.0%}), "
               f"blockers: {', '.join(blockers) or 'none'}, warnings not waived: {', '.join(warnings) or 'none'}"
               f"; {source}")
    return Outcome(summary=summary, failed=not ok, metrics={"score": v["score"], "blockers": len(blockers),
                                                            "warnings": len(warnings)},
                   state={"readiness_sha256": record["sha256"]})


def _notice(session: Session) -> tuple[str, str]:
    w = _window(session)
    t = session.target
    subject = f"[{t.environment}] Database migration window for {t.name}: {w.start:%Y-%m-%d %H:%M} - {w.end:%H:%M} UTC"
    body = (f"The {t.name} database moves to the new PostgreSQL cluster (Patroni, HA) during the maintenance window "
            f"{w.start.isoformat()} to {w.end.isoformat()}.\n\nWhat to expect: writes pause for seconds at cutover; "
            f"reads continue. Rollback to the current database is prepared and completes within "
            f"{session.params.policy.rollback_completion_max / 60:.0f} minutes if needed.\n"
            f"Audience: {session.params.notifications.audience}.\nCampaign: {session.info.campaign}; "
            f"coordinator: {session.info.operator}.")
    return subject, body


def _plan_notify(session: Session) -> Outcome:
    channels = ["webhook"] * bool(session.params.notifications.webhook_url) + \
        ["smtp"] * bool(session.params.notifications.smtp) + ["outbox"]
    return Outcome(summary=f"would send '{_notice(session)[0]}' to: {', '.join(channels)}")


@step("notify_stakeholders", "Stakeholder notice", mutating=True, plan=_plan_notify, guards=(HAS_WINDOW,))
def notify_stakeholders(session: Session) -> Outcome:
    """To the webhook and e-mail when configured, and always to the campaign's outbox. Each delivery is
    recorded; a failed channel is reported.
    """
    subject, body = _notice(session)
    deliveries = notify.send(session.params.notifications, session.params.base_dir, session.campaign_dir, subject,
                             body)
    failed = [d.channel for d in deliveries if not d.ok]
    return Outcome(summary=notify.summary(deliveries),
                   evidence=[d.to_dict() for d in deliveries], metrics={"failed_channels": len(failed)},
                   state={"notice": {"subject": subject, "deliveries": [d.to_dict() for d in deliveries]}})


def _plan_lock(session: Session) -> Outcome:
    w = _window(session)
    return Outcome(summary=f"would lock the window {w.start.isoformat()} .. {w.end.isoformat()} in the campaign")


@step("lock_window", "Lock the maintenance window", mutating=True, plan=_plan_lock, guards=(HAS_WINDOW,))
def lock_window(session: Session) -> Outcome:
    """The migration runbook refuses to change anything outside it."""
    w = _window(session)
    budget = session.params.policy.phases["migration"].budget
    if (w.end - w.start).total_seconds() < budget:
        note = f"; shorter than the migration budget of {budget / 3600:g} h"
    else:
        note = ""
    window.lock(session.run_dir.parent, w.start, w.end, session.info.run_id)
    return Outcome(summary=f"window {w.start.isoformat()} .. {w.end.isoformat()} locked{note}",
                   state={"window": {"start": w.start.isoformat(), "end": w.end.isoformat()}})


def _plan_record(session: Session) -> Outcome:
    return Outcome(summary="would save records/phase1.json, the record sign-offs bind to")


@step("record_phase1", "Record the phase 1 outcome for the sign-offs", mutating=True, plan=_plan_record)
def record_phase1(session: Session) -> Outcome:
    """The backup, restore test, snapshot, readiness and notice, saved as `records/phase1.json`: the
    record every sign-off binds to.
    """
    keys = ("backup", "restore_test", "swarm_snapshot_sha256", "readiness_sha256", "notice", "window")
    data = {k: session.state.get(k) for k in keys}
    record = records.save(session.run_dir.parent, "phase1", data, session.info.run_id)
    return Outcome(summary=f"records/phase1.json sha256 {record['sha256'][:16]}…; sign-offs now bind to it "
                           f"(`runbook signoff --campaign {session.info.campaign} --role ROLE --name NAME`)",
                   metrics={"phase1_sha256": record["sha256"]})


BOOK = Book("phase1_pre_migration", "Phase 1: pre-migration", mutating=True, steps=(
    snapshot_and_backup, verify_backup, restore_test, swarm_state, readiness_gate, notify_stakeholders,
    lock_window, record_phase1,
))
