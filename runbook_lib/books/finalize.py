"""Ends the campaign once the 72-hour validation has given its **PASS** (or with a recorded override,
`finalize.override` and `finalize.approved_by`): the way back is taken down, legacy is retired, what the
campaign added to the databases is removed, and the stakeholders are told.

**What remains possible afterwards.** There is no lossless way back any more: legacy keeps the data as it was
when reverse replication stopped here, read-only. Going back to it means a new migration in the other
direction (phase 1 to 3 with legacy as the target), or restoring the new cluster's own backups. The new
cluster's backups, WAL archive and point-in-time recovery are the recovery path from now on.
"""

from __future__ import annotations

from runbook_lib.campaign import records
from runbook_lib.config.params import Patroni
from runbook_lib.ops import migration, notify, wayback, writeprobe
from runbook_lib.run.book import Book
from runbook_lib.run.session import Session
from runbook_lib.run.step import Outcome, requires, step, would

HAS_MIGRATION = requires("migration", "the migration")
AFTER = ("There is no lossless way back any more: legacy is read-only as it was when reverse replication stopped; "
         "going back means a new migration or a restore of the new cluster's backups")


def _patroni(session: Session) -> Patroni:
    if session.target.patroni is None:
        raise migration.MigrationError("target.patroni is not set")
    return session.target.patroni


@step("verdict_gate", "The 72-hour validation passed (or an override is recorded)", gate=True,
      guards=(HAS_MIGRATION,))
def verdict_gate(session: Session) -> Outcome:
    """The campaign's validation must have given its final PASS; without it, only a recorded override with
    who approved it lets the campaign end (the rollback stays possible until then)."""
    final = [r for r in records.history(session.campaign_dir, "validation") if r["data"].get("verdict") == "PASS"]
    override = session.params.finalize
    if final:
        return Outcome(summary=f"PASS given by validation run {final[-1]['run_id']} at {final[-1]['data']['at']}",
                       state={"finalize_basis": f"PASS ({final[-1]['run_id']})"})
    if override.override:
        return Outcome(summary=f"no PASS verdict; finalized by override: {override.override} "
                               f"(approved by {override.approved_by})",
                       state={"finalize_basis": f"override by {override.approved_by}: {override.override}"})
    latest = records.latest(session.campaign_dir, "validation")
    where = f"the latest checkpoint says {latest['data']['verdict']}" if latest else "no validation has run"
    return Outcome(summary=f"refused before any change: the 72-hour validation has not passed ({where}); wait for "
                           "its PASS, or set finalize.override and finalize.approved_by", failed=True)


@step("retire_way_back", "Reverse replication and its slot removed", mutating=True, guards=(HAS_MIGRATION,),
      plan=would("drop legacy's reverse subscription (and its slot on the new cluster), the publications, and "
                 "Patroni's ignore_slots entry"))
def retire_way_back(session: Session) -> Outcome:
    """Legacy's reverse subscription is dropped (its slot on the new leader with it), then the publications;
    the step waits until no member of the new cluster keeps a copy of the slot. The alert rules are told
    that no way back is to be watched any more."""
    done = wayback.retire(migration.route_of(session), session.endpoints.by_role("member"), _patroni(session))
    if wayback.expect(session.target.pushgateway, False):
        done.append("the way-back alert stands down (Pushgateway)")
    return Outcome(summary="; ".join(done) or "no reverse replication was left")


@step("remove_campaign_objects", "What the campaign added to the databases removed", mutating=True,
      guards=(HAS_MIGRATION,), plan=would("drop the write probe's table on both sides"))
def remove_campaign_objects(session: Session) -> Outcome:
    """The write probe's table, on both sides, and the DDL freeze on legacy if one was left."""
    r = migration.route_of(session)
    dropped = [spec.name for spec in (r.target, r.source) if writeprobe.drop(spec)]
    thawed = migration.thaw_ddl(r.source)
    return Outcome(summary=(f"write probe table dropped on {', '.join(dropped)}" if dropped else
                            "no write probe table was left") + ("; DDL freeze on legacy lifted" if thawed else ""))


@step("retire_legacy", "Legacy retired: read-only, its sessions ended", mutating=True, guards=(HAS_MIGRATION,),
      plan=would("make every new transaction in legacy's database read-only and end the sessions there"))
def retire_legacy(session: Session) -> Outcome:
    """Every new transaction in legacy's database is read-only and its sessions are ended, so a stray writer
    fails loudly instead of writing where nobody reads; recorded as the legacy retirement."""
    r = migration.route_of(session)
    ended = migration.retire_database(r.source)
    records.save(session.campaign_dir, "legacy_retired", {"endpoint": r.source.name, "database": r.source.dbname,
                                                           "basis": session.state.get("finalize_basis"),
                                                           "afterwards": AFTER}, session.info.run_id)
    return Outcome(summary=f"{r.source.name}/{r.source.dbname} read-only for every new transaction; {ended} sessions "
                           "ended; recorded in records/legacy_retired.json")


def _notice(session: Session) -> tuple[str, str]:
    t = session.target
    subject = f"[{t.environment}] Migration of {t.name} finalized: the new cluster is the only database"
    body = (f"The {t.name} migration campaign {session.info.campaign} is finalized "
            f"({session.state.get('finalize_basis', 'basis not recorded')}).\n{AFTER}.\n"
            f"Audience: {session.params.notifications.audience}.")
    return subject, body


@step("notify_stakeholders", "Tell the stakeholders", mutating=True,
      plan=lambda s: Outcome(summary=f"would send '{_notice(s)[0]}'"))
def notify_stakeholders(session: Session) -> Outcome:
    """The notice goes to every configured channel and to the campaign's outbox; it says what remains
    possible now that the way back is gone."""
    subject, body = _notice(session)
    deliveries = notify.send(session.params.notifications, session.params.base_dir, session.campaign_dir, subject,
                             body)
    return Outcome(summary=notify.summary(deliveries), evidence=[d.to_dict() for d in deliveries])


@step("record_finalized", "Record the end of the campaign", mutating=True,
      plan=would("save records/finalized.json"))
def record_finalized(session: Session) -> Outcome:
    """What ended the campaign and what remains possible, saved where the campaign page and a reviewer
    find it; the automatic rollback no longer acts on this campaign."""
    record = records.save(session.campaign_dir, "finalized", {"basis": session.state.get("finalize_basis"),
                                                              "afterwards": AFTER}, session.info.run_id)
    return Outcome(summary=f"records/finalized.json sha256 {record['sha256'][:16]}…")


BOOK = Book("finalize", "Finalize the campaign", mutating=True, steps=(
    verdict_gate, retire_way_back, remove_campaign_objects, retire_legacy, notify_stakeholders, record_finalized,
))
