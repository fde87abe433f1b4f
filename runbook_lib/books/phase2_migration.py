"""Moves production from the legacy database to the new cluster and loses nothing. Every step shows the elapsed
and remaining time of the window budget (4 h, from the sign-off gate); past it, steps refuse and point to the
rollback plan. The steps that open the cutover also refuse outside the locked window; once writes are off,
finishing (or going back) is safer than stopping halfway, so the later steps do not.

**Strategies** (`migration.strategy`):
- `logical` (default): the new cluster is filled by logical replication *before* the write pause, and every table's checksum compared at a consistent cut; the pause is one step in straight code (pause the pool, legacy read-only, wait for its last write to apply, copy sequences, reload PgBouncer's staged backend, resume), bounded by `migration.critical_section_max`. Reverse replication then keeps legacy a current fallback.
- `dump-restore`: the classic path (applications down, dump, restore, validate, switch).

A write probe writes through PgBouncer every 50 ms for the whole phase; the last step plots it and reports the
write-unavailable time and failed writes.

If the kernel dies, re-run with `runbook run phase2_migration --params FILE --resume RUN_ID`: completed steps
are not repeated, gates are decided again, and each changing step checks its own effect first.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pandas as pd
import plotly.graph_objects as go

from runbook_lib.campaign import records, signoffs, window
from runbook_lib.clients import patroni, pgbouncer, postgres, prometheus, swarm
from runbook_lib.config import names, signing
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.params import Patroni
from runbook_lib.errors import first_line
from runbook_lib.ops import backup, cutover, migration, survey, tools, wayback, writeprobe
from runbook_lib.run.book import Book
from runbook_lib.run.session import Session
from runbook_lib.run.step import Clock, Guard, Outcome, requires, step, would

ROLLBACK = "stop here and run the rollback plan: PgBouncer back to legacy (`writes_on` on legacy), or the rollback runbook"
PROBE = "write_probe"  # the session resource holding the probe's thread, from probe_start to probe_report


def _m(session: Session):  # noqa: ANN202 - the Migration settings
    return session.params.migration


HAS_MIGRATION = requires("migration", "the migration")
# the 4 h budget starts at the sign-off gate, the policy's first phase 2 step
CLOCK = Clock("migration", "window_started", ROLLBACK, start_on="signoff_gate")
BUDGET = CLOCK.guard
GUARDS = (HAS_MIGRATION, BUDGET)
# before the write pause a step that starts a change needs the window still open; once writes are off,
# finishing the cutover (or going back) is safer than stopping halfway, so the later steps do not ask
IN_WINDOW = Guard("inside the locked maintenance window", lambda s: window.outside(s.campaign_dir))
OPENING = (*GUARDS, IN_WINDOW)


def _timer(session: Session, outcome: Outcome) -> Outcome:
    """Every phase 2 step shows the elapsed and remaining time of the window budget."""
    return CLOCK.stamp(session, outcome, "", time.time())


# ---------------------------------------------------------------- gates


@step("signoff_gate", "Sign-off gate", gate=True)
def signoff_gate(session: Session) -> Outcome:
    """All five sign-offs, bound to the current readiness and phase 1 records. Refused otherwise, before any
    change. A sandbox rehearsal's own approvals count on the sandbox only.
    """
    campaign = session.run_dir.parent
    rows = signoffs.status(campaign, session.params.policy, accept_rehearsal=session.target.environment == "sandbox",
                           trusted=signing.trusted_for(session.params))
    missing = [r.role for r in rows if not r.present]
    stale = [r.role for r in rows if r.stale and not r.present]
    evidence = [{"role": r.role, "approved": r.present, "by": r.name, "at": r.at, "rehearsal": r.rehearsal,
                 "stale_approvals": len(r.stale or [])} for r in rows]
    if missing:
        detail = f"missing sign-offs: {', '.join(missing)}"
        if stale:
            detail += f" (approvals of an older readiness or phase 1 record do not count: {', '.join(stale)})"
        return Outcome(summary=f"refused: {detail}", evidence=evidence, failed=True)
    started = session.state.get("window_started") or time.time()
    rehearsed = sum(r.rehearsal for r in rows)
    return Outcome(summary=f"all {len(rows)} sign-offs present and bound to the current records"
                           + (f" ({rehearsed} are sandbox rehearsal approvals)" if rehearsed else ""), evidence=evidence,
                   state={"window_started": started})


@step("window_check", "Inside the maintenance window", gate=True)
def window_check(session: Session) -> Outcome:
    """Inside the window phase 1 locked."""
    reason = window.outside(session.run_dir.parent)
    return _timer(session, Outcome(summary=f"refused: {reason}" if reason else "inside the locked window",
                                   failed=bool(reason)))


@step("preflight", "Preflight: strategy, tables logical replication cannot carry, both sides reachable",
      guards=(HAS_MIGRATION,), gate=True)
def preflight(session: Session) -> Outcome:
    """Everything legacy holds that the move must carry or refuse is named here, before anything changes:
    tables without a key or unlogged (refused unless excluded with a reason), large objects (refused, or copied
    at the cut), extensions (the same version on the new cluster), roles the application uses (present on the
    new cluster), materialized views (refreshed after the copy), and rows already on the new cluster.
    """
    m = _m(session)
    r = migration.route_of(session)
    found = survey.survey(r.source, r.target, m)
    refused = [i for i in found if i.refused]
    problems = []
    if refused:
        problems.append(f"{'logical replication' if m.strategy == 'logical' else 'the move'} cannot carry: "
                        + ", ".join(f"{i.object} ({i.how})" for i in refused))
    if m.strategy == "logical":
        problems += [f"the way back would not outlive a failover of the new cluster: {p}"
                     for p in wayback.unprotected(session.endpoints.by_role("member"))]
    current = pgbouncer.backend(r.pooler, r.pooler_database)
    return _timer(session, Outcome(
        summary=("refused before any change: " + "; ".join(problems)) if problems else
        f"strategy {m.strategy}; PgBouncer sends {m.pooler_database} to {current[0]}:{current[1]}",
        evidence=survey.rows(found) or None, failed=bool(problems),
        metrics={"strategy": m.strategy, "refused": len(refused)}))


# ---------------------------------------------------------------- write probe


def _patroni(session: Session) -> Patroni:
    if session.target.patroni is None:
        raise migration.MigrationError("target.patroni is not set: the new cluster's Patroni must keep the way back")
    return session.target.patroni


def _probe_endpoint(session: Session) -> PgSpec:
    m = _m(session)
    return session.endpoints.db(m.probe_endpoint) if m.probe_endpoint else session.endpoints.pooler()


def _plan_probe(session: Session) -> Outcome:
    return Outcome(summary=f"would create {names.PROBE_TABLE} on {_m(session).source} and write to it through "
                           f"{_probe_endpoint(session).name} every {_m(session).probe_interval * 1000:.0f} ms")


@step("probe_start", "Start the write probe", mutating=True, plan=_plan_probe, guards=(HAS_MIGRATION, IN_WINDOW),
      always_run=True)
def probe_start(session: Session) -> Outcome:
    """Starts writing through PgBouncer every 50 ms."""
    m = _m(session)
    r = migration.route_of(session)
    writeprobe.ensure_table(r.source, r.app_role)
    probe = session.held(PROBE)
    if probe is None or not probe.running:
        probe = writeprobe.WriteProbe(_probe_endpoint(session), session.run_dir, session.info.run_id,
                                      m.probe_interval)
        probe.start()
        session.hold(PROBE, probe, probe.stop)
    time.sleep(1)
    figures = writeprobe.figures(writeprobe.load(session.run_dir))
    return _timer(session, Outcome(summary=f"probe writing through {_probe_endpoint(session).name}: "
                                           f"{figures['attempts']} attempts, {figures['failed_writes']} failed so far",
                                   failed=figures["attempts"] == 0 or figures["failed_writes"] == figures["attempts"]))


# ---------------------------------------------------------------- the new cluster and the data


@step("deploy_new_stack", "The new stack deployed and healthy", guards=GUARDS)
def deploy_new_stack(session: Session) -> Outcome:
    """The new cluster must be up: one leader, every other member streaming."""
    spec = session.target.patroni
    members = patroni.members(spec) if spec else []
    leaders = [m["name"] for m in members if m.get("role") == "leader"]
    streaming = [m["name"] for m in members if m.get("state") == "streaming"]
    ok = len(leaders) == 1 and len(streaming) == len(members) - 1 and members
    return _timer(session, Outcome(
        summary=f"leader {leaders[0]}, {len(streaming)} streaming replicas" if ok else
        "the new cluster is not healthy (one leader, every other member streaming): deploy it first "
        "(`docker stack deploy`; on the sandbox `runbook sandbox up`)",
        evidence=[{k: m.get(k) for k in ("name", "role", "state", "lag")} for m in members], failed=not ok))


@step("prepare_replication", "Fill the new cluster by logical replication (before the write pause)",
      mutating=True, plan=would("copy the schema, create the publication and subscription, wait for the copy"),
      guards=OPENING)
def prepare_replication(session: Session) -> Outcome:
    """Logical strategy: schema first (HNSW indexes are built on the new side), then the initial copy and
    streaming. Writes continue on legacy meanwhile.
    """
    m = _m(session)
    if m.strategy != "logical":
        return _timer(session, Outcome(summary="dump-restore strategy: the data moves during the pause"))
    r = migration.route_of(session)
    protected = wayback.protect(_patroni(session))  # before any slot exists: Patroni would drop it
    schema = migration.copy_schema(tools.of_run(session), r.source, r.target)
    migration.ensure_publication(r.source, names.PUBLICATION, r.exclude)
    # after the schema copy (never copied with it) and the publication (itself DDL on legacy)
    frozen = migration.freeze_ddl(r.source, session.info.campaign)
    created = migration.ensure_subscription(r.target, r.source, names.SUBSCRIPTION, names.PUBLICATION,
                                            copy_data=True)
    with session.progress(None, total=1, desc="initial copy (tables)") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        lost_slots = migration.LostSyncSlots(r.target, r.source, names.SUBSCRIPTION, names.PUBLICATION)
        copy = migration.wait_initial_copy(r.target, names.SUBSCRIPTION, m.copy_timeout, progress, lost_slots)
    tables = copy.states.get("r", 0)
    views = migration.refresh_materialized_views(r.target)
    rode_out = (f"; the new cluster's endpoint did not answer {copy.interruptions} poll(s) (a failover?) "
                "and the copy carried on" if copy.interruptions else "")
    rode_out += (f"; the copy started again from scratch {copy.restarts} time(s): table-sync slot lost for "
                 f"{', '.join(copy.lost)}" if copy.restarts else "")
    return _timer(session, Outcome(summary=f"{schema}; subscription {'created' if created else 'already present'}; "
                                           f"{tables} tables copied and streaming{rode_out}"
                                           + (f"; {len(views)} materialized views refreshed" if views else "")
                                           + ("; DDL frozen on legacy until the cutover" if frozen else "")
                                           + (f"; Patroni set to keep the way back: {', '.join(protected)}"
                                              if protected else ""),
                                   metrics={"tables": tables, "copy_interruptions": copy.interruptions,
                                            "copy_restarts": copy.restarts}))


@step("final_backup", "Final online backup of legacy (before the pause)", mutating=True,
      plan=would("take an online pg_basebackup of legacy and verify it"), guards=OPENING)
def final_backup(session: Session) -> Outcome:
    """An online backup of legacy just before the pause; its end LSN is recorded. The policy takes it after writes
    stop; here it comes just before, so the pause stays seconds long. Legacy itself, read-only for the
    application from the pause on and kept current by reverse replication, is the copy that follows it.
    """
    if session.params.backup is None:
        return _timer(session, Outcome(summary="backup is not set in the parameters", failed=True))
    result = backup.take(tools.of_run(session), backup.plan(session.params))
    backup.verify(tools.of_run(session), result.path)
    return _timer(session, Outcome(summary=f"backup {result.id} verified, ends at LSN {result.end_lsn}",
                                   metrics={"backup_end_lsn": result.end_lsn, "backup_seconds": result.seconds},
                                   state={"final_backup": {"id": result.id, "end_lsn": result.end_lsn}}))


def _not_cut(session: Session, exc: cutover.NotCut, prepared: list[str]) -> Outcome:
    return _timer(session, Outcome(summary=f"cutover not done: {exc}; legacy serving, writable, the pool resumed on "
                                           "it, nothing switched", failed=True,
                                   evidence=cutover.evidence(prepared, exc.retried)))


def _pause(session: Session) -> bool:
    r = migration.route_of(session)
    return pgbouncer.pause(r.pooler, r.pooler_database)


def _resume(session: Session) -> None:
    r = migration.route_of(session)
    pgbouncer.resume(r.pooler, r.pooler_database)


def _checks_table(checks: list[migration.TableCheck]) -> list[dict[str, object]]:
    return [{"table": c.table, "source_rows": c.source_rows, "target_rows": c.target_rows,
             "checksum_equal": c.source_checksum == c.target_checksum} for c in checks]


CUT_APPLY_TIMEOUT = 10.0  # the new side is caught up before the pause; inside it, only the last writes remain


def _compare_at_cut(session: Session) -> tuple[str, list[migration.TableCheck], tuple[float, float]]:
    """Both sides still for a moment (pool paused, the new side caught up), a snapshot on each, pool resumed.

    The new side catches up and both connections open before the pool pauses, so the pause lasts only
    while the writes of the last moment apply.
    """
    m, r = _m(session), migration.route_of(session)
    tables = migration.moved_tables(r)
    cutover.set_apply_commit(cutover.forward(r), "on")  # the subscriber reports an applied write at once
    migration.catch_up(r.source, names.SUBSCRIPTION, m.apply_timeout)
    with postgres.connect(r.source) as src, postgres.connect(r.target) as dst, \
            pgbouncer.console(r.pooler) as admin:
        pause_sent = time.time()
        try:  # PAUSE waits for the transactions in flight (bounded); the pool resumes in every case
            admin.pause(r.pooler_database, within=CUT_APPLY_TIMEOUT)
            lsn, _ = migration.flushed_lsn_on(src)  # the application's asynchronous commits included
            migration.wait_applied_on(src, names.SUBSCRIPTION, lsn,
                                      time.monotonic() + min(m.apply_timeout, CUT_APPLY_TIMEOUT))
            migration.begin_snapshot(src)
            migration.begin_snapshot(dst)
        finally:  # a pool found paused was left so by an interrupted run of this phase: resumed as well
            admin.resume(r.pooler_database)  # the snapshots hold the cut; the application writes meanwhile
        resumed_at = time.time()
        return lsn, migration.compare(src, dst, tables), (pause_sent, resumed_at)


@step("validate_cut", "Validate at a consistent cut (before the pause): checksums of every table", mutating=True,
      plan=would("pause the pool for a moment, snapshot both sides at the same LSN, resume, compare checksums"),
      guards=OPENING)
def validate_cut(session: Session) -> Outcome:
    """Logical strategy: the pool pauses for a moment while legacy and the new cluster are caught up, each
    side takes a snapshot at that same LSN, and the pool resumes. Row counts and a checksum of every row
    are then compared inside those snapshots while the application keeps writing, so the write pause below
    does not grow with the data. A writer that bypasses the pool would make one cut differ, so a second
    cut tells that from a real difference; a difference found twice stops the migration here: legacy keeps
    serving and nothing has been switched. The cutover itself needs no recount: the new cluster applies
    legacy's final LSN inside its pause.
    """
    if _m(session).strategy != "logical":
        return _timer(session, Outcome(summary="dump-restore strategy: the data is validated during the pause"))
    for attempt in (1, 2):  # noqa: B007 - the summary says which cut held
        lsn, checks, (paused, resumed) = _compare_at_cut(session)
        bad = [c.table for c in checks if not c.equal]
        if not bad:
            break
    rows = _checks_table(checks)
    if bad:
        return _timer(session, Outcome(summary=f"migration stopped before the pause: {', '.join(bad)} differ at "
                                               f"the cut (LSN {lsn}, twice); legacy serving, nothing switched",
                                       evidence=rows, failed=True))
    return _timer(session, Outcome(summary=f"{len(checks)} tables: row counts and checksums equal at LSN {lsn}"
                                           + (" (second cut)" if attempt == 2 else ""),
                                   evidence=rows, metrics={"cut_lsn": lsn, "tables_validated": len(checks),
                                                           "pool_paused_s": round(resumed - paused, 4),
                                                           **_probe_across(session, paused, resumed)},
                                   state={"cut_lsn": lsn}))


def _probe_across(session: Session, paused: float, resumed: float) -> dict[str, float | int]:
    """The write probe's view of a pause: the longest span without a completed write across it and the
    writes that failed in it (waits, bounded, for the probe's first write after the resume)."""
    if session.held(PROBE) is None:
        return {}
    deadline = time.monotonic() + 5
    while True:
        frame = writeprobe.load(session.run_dir)
        seen = writeprobe.gap_across(frame, paused, resumed, _m(session).probe_interval) if not frame.empty else {}
        if seen or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


@step("cutover", "The cutover in one critical section (logical): pause, last write applied, switch, resume",
      mutating=True, plan=would("stage PgBouncer's new backend and the reverse slot; then, in one pause bounded by "
                                "migration.critical_section_max: legacy read-only, its last write applied on the "
                                "new cluster, sequences copied, PgBouncer reloaded, resumed; then reverse "
                                "replication"), guards=OPENING)
def cutover_step(session: Session) -> Outcome:
    """Logical strategy: the write pause is this one step. Before it, PgBouncer's config file gets the new
    backend (not yet reloaded), the new cluster gets the reverse slot and catches up. Inside it, in straight
    code: PAUSE, legacy read-only and drained, its final LSN applied on the new cluster, sequences copied,
    the reverse slot moved to the cut, RELOAD, RESUME. Past `migration.critical_section_max` (or on any
    error) before the switch, legacy is writable again and the pool resumed on it: nothing switched. After
    the resume, reverse replication (new -> legacy) starts from the cut.
    """
    m, r = _m(session), migration.route_of(session)
    if m.strategy != "logical":
        return _timer(session, Outcome(summary="dump-restore: the write pause is the steps that follow"))
    if cutover.serving(r) == r.new_backend:  # a re-run after the switch
        resumed = pgbouncer.resume(r.pooler, r.pooler_database)
        done = cutover.finish_forward(r, session.state.get("cut", {}).get("reverse_from"))
        return _timer(session, Outcome(summary="the switch was done already (a re-run)"
                                               + ("; the pool resumed" if resumed else "")
                                               + "".join(f"; {d}" for d in done)))
    serving, leg = cutover.serving(r), cutover.forward(r)
    try:
        prepared = cutover.prepare(r, leg, m.apply_timeout)
    except BaseException as exc:
        cutover.unstage_after(r, leg, serving, exc)  # a later RELOAD must not find the new backend staged
        raise
    first_pause = time.time()
    try:
        cut, retried = cutover.cut_retrying(r, leg, serving, m.critical_section_max,
                                            large_objects=m.large_objects == "copy")
    except cutover.NotCut as exc:
        return _not_cut(session, exc, prepared)
    done_state = {"cutover_lsn": cut.lsn, "cut": cut.to_dict()}
    try:
        after = cutover.finish_forward(r, cut.reverse_from)
    except Exception as exc:  # switched already: the cut's record must outlive this for the re-run
        return _timer(session, Outcome(summary=f"PgBouncer sends {m.pooler_database} to the new cluster (pool paused "
                                               f"{cut.paused_s * 1000:.0f} ms) but reverse replication did not start: "
                                               f"{first_line(exc)}; fix it and run the step again (it only finishes)",
                                       failed=True, state=done_state, metrics={"pool_paused_s": round(cut.paused_s, 4)}))
    host, port = r.new_backend
    metrics = {"pool_paused_s": round(cut.paused_s, 4), "apply_wait_s": cut.apply_wait_s,
               "cutover_lsn": cut.lsn, "sequences": cut.sequences,
               **_probe_across(session, first_pause if retried else cut.pause_sent, cut.resumed_at)}
    evidence = cutover.evidence(prepared, retried, cut, after)
    gap = (f"; the write probe's longest gap {metrics['probe_longest_gap_s']} s"
           if metrics.get("probe_longest_gap_s") is not None else "")
    return _timer(session, Outcome(
        summary=f"PgBouncer sends {m.pooler_database} to {host}:{port}; pool paused {cut.paused_s * 1000:.0f} ms "
                f"(legacy's LSN {cut.lsn} applied after {cut.apply_wait_s * 1000:.0f} ms, {cut.sequences} sequences"
                + (f", {cut.large_objects} large objects" if cut.large_objects else "") + f"){gap}; "
                "reverse replication new -> legacy running", evidence=evidence, metrics=metrics,
        state=done_state))


LOGICAL_DONE = "logical: done inside the cutover's critical section above"


@step("writes_off", "Writes off: pause the pool, legacy read-only for the application", mutating=True,
      plan=would("PAUSE the application's pool in PgBouncer and make legacy read-only for the application role"),
      guards=OPENING)
def writes_off(session: Session) -> Outcome:
    """Dump-restore: the write pause starts here: PgBouncer pauses the application's pool; legacy becomes
    read-only for the application role.
    """
    m = _m(session)
    if m.strategy == "logical":
        return _timer(session, Outcome(summary=LOGICAL_DONE))
    _pause(session)
    r = migration.route_of(session)
    ended = migration.set_read_only(r.source, r.app_role, True)
    return _timer(session, Outcome(summary=f"pool {m.pooler_database} paused; legacy read-only for "
                                           f"{r.app_role} ({ended} sessions ended)",
                                   state={"writes_off_at": time.time()}))


@step("drain_connections", "Drain the application's connections to legacy", mutating=True,
      plan=would("end every remaining session of the application role on legacy"), guards=GUARDS)
def drain_connections(session: Session) -> Outcome:
    """Dump-restore: as the policy says, every non-admin session on legacy's database is ended (the application role's and
    every other one), so no write can land there after the pause; superusers and replication stay.
    """
    if _m(session).strategy == "logical":
        return _timer(session, Outcome(summary=LOGICAL_DONE))
    r = migration.route_of(session)
    ended = migration.set_read_only(r.source, r.app_role, True) + migration.drain(r.source)
    return _timer(session, Outcome(summary=f"{ended} remaining non-admin sessions ended on legacy",
                                   metrics={"sessions_ended": ended}))


@step("app_down", "Applications down (or kept behind the paused pool)", mutating=True,
      plan=would("scale the application service to 0 (dump-restore), or keep it behind the paused pool (logical)"),
      guards=GUARDS)
def app_down(session: Session) -> Outcome:
    """Logical: they stay up behind the paused pool (clients wait seconds instead of failing, where the policy
    stops them). Dump-restore: scaled to 0 through Swarm, as the policy says."""
    m = _m(session)
    if m.strategy == "logical" or not m.app_service:
        return _timer(session, Outcome(summary="applications kept running behind the paused pool"))
    service = swarm.for_target(session.target.swarm).services.get(m.app_service)
    replicas = service.attrs["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 1)
    before = session.state.get("app_replicas", replicas)
    if replicas:
        swarm.scale(session.target.swarm, m.app_service, 0)
    return _timer(session, Outcome(summary=f"{m.app_service} scaled from {before} to 0",
                                   state={"app_replicas": before}))


@step("move_data", "Move the data (dump-restore)", mutating=True,
      plan=would("dump legacy and restore into the new cluster (dump-restore)"), guards=GUARDS)
def move_data(session: Session) -> Outcome:
    """Dump-restore: dump legacy and restore it into the new cluster."""
    m, r = _m(session), migration.route_of(session)
    if m.strategy == "logical":
        return _timer(session, Outcome(summary=LOGICAL_DONE))
    started = time.monotonic()
    if migration.user_tables(r.target):
        counts = {c.table: c.equal for c in migration.validate(r.source, r.target, tables=migration.moved_tables(r))}
        if all(counts.values()):
            return _timer(session, Outcome(summary="the new cluster already holds identical data (resumed run)"))
        raise migration.MigrationError("the new cluster holds different data already; empty it before restoring")
    migration.dump_restore(tools.of_run(session), r.source, r.target)
    return _timer(session, Outcome(summary=f"dump and restore took {time.monotonic() - started:.1f} s",
                                   metrics={"dump_restore_s": round(time.monotonic() - started, 2)}))


def _back_to_legacy(session: Session) -> str:
    """Leave legacy serving: writable for the application again, pool resumed (still pointing at legacy)."""
    r = migration.route_of(session)
    migration.set_read_only(r.source, r.app_role, False)
    _resume(session)
    return "legacy left serving: writable again and the pool resumed"


@step("validate_new", "Validate: per-table row count and checksum on both sides", guards=GUARDS)
def validate_new(session: Session) -> Outcome:
    """Dump-restore: row count and an order-independent checksum of every row (vector columns included) per
    table on both sides. Any difference stops the cutover, names the table and leaves legacy serving.
    (Logical: the checksums were compared at a consistent cut before the pause, and the cutover waits until
    the new cluster applied legacy's final LSN.)
    """
    if _m(session).strategy == "logical":
        return _timer(session, Outcome(summary=LOGICAL_DONE))
    r = migration.route_of(session)
    checks = migration.validate(r.source, r.target, tables=migration.moved_tables(r))
    rows = _checks_table(checks)
    bad = [c.table for c in checks if not c.equal]
    if bad:
        fallback = _back_to_legacy(session)
        return _timer(session, Outcome(summary=f"cutover stopped: {', '.join(bad)} differ; {fallback}",
                                       evidence=rows, failed=True))
    return _timer(session, Outcome(summary=f"{len(checks)} tables: row counts and checksums equal",
                                   evidence=rows, metrics={"tables_validated": len(checks)}))


@step("switch_traffic", "Point PgBouncer at the new cluster (dump-restore)",
      mutating=True, plan=would("repoint PgBouncer to the new write endpoint"),
      guards=GUARDS)
def switch_traffic(session: Session) -> Outcome:
    """Dump-restore: PgBouncer now sends the application to the new cluster's write endpoint. There is no
    reverse replication: legacy stays the pre-cutover copy.
    """
    m, r = _m(session), migration.route_of(session)
    if m.strategy == "logical":
        return _timer(session, Outcome(summary=LOGICAL_DONE))
    host, port = r.new_backend
    if pgbouncer.backend(r.pooler, r.pooler_database) != (host, port):
        pgbouncer.repoint(r.pooler, r.swarm, r.pooler_database, host, port)
    return _timer(session, Outcome(summary=f"PgBouncer sends {m.pooler_database} to {host}:{port}; no reverse "
                                           "replication (dump-restore): legacy is the pre-cutover copy"))


@step("writes_on", "Writes on: resume the pool", mutating=True, plan=would("RESUME the pool"), guards=GUARDS)
def writes_on(session: Session) -> Outcome:
    """Dump-restore: the pool resumes; the write pause ends."""
    if _m(session).strategy == "logical":
        return _timer(session, Outcome(summary=LOGICAL_DONE))
    _resume(session)
    paused = time.time() - session.state["writes_off_at"] if session.state.get("writes_off_at") else None
    return _timer(session, Outcome(summary="pool resumed" + (f" after {paused:.2f} s" if paused else ""),
                                   metrics={"pool_paused_s": round(paused, 3) if paused else None}))


@step("app_up", "Applications up and writing to the new cluster", mutating=True,
      plan=would("scale the application back (dump-restore) and prove a write through PgBouncer lands in the new "
                 "cluster"), guards=GUARDS)
def app_up(session: Session) -> Outcome:
    """A write through PgBouncer must land in the new cluster."""
    m, r = _m(session), migration.route_of(session)
    if m.strategy == "dump-restore" and m.app_service and session.state.get("app_replicas"):
        swarm.scale(session.target.swarm, m.app_service, session.state["app_replicas"])
    marker = f"cutover-{session.info.run_id}"
    writeprobe.mark_through_pool(_probe_endpoint(session), marker)
    landed = writeprobe.marked(r.target, marker)
    if landed:  # the 72-hour validation measures from here
        records.save(session.run_dir.parent, "cutover", {"at": datetime.now(UTC).isoformat(),
                                                         "strategy": m.strategy}, session.info.run_id)
    return _timer(session, Outcome(summary="a write through PgBouncer landed in the new cluster" if landed else
                                   "a write through PgBouncer did NOT land in the new cluster", failed=not landed))


WAY_BACK_WAIT = 60.0  # slot sync copies a new slot to the standbys within seconds; a minute is generous


@step("way_back", "The way back outlives a failover: the reverse slot on every standby", guards=GUARDS)
def way_back(session: Session) -> Outcome:
    """Reverse replication keeps legacy current for the rollback plan; its slot lives on the new cluster's
    leader. Each standby must hold a synced copy, so that a failover of the new cluster inside the
    72 hours keeps the way back: waited for here, at most a minute. Dump-restore has no way back.
    """
    if _m(session).strategy != "logical":
        return _timer(session, Outcome(summary="dump-restore strategy: no reverse replication (legacy is the "
                                               "pre-cutover copy)"))
    way, tidied = wayback.settle(migration.route_of(session), session.endpoints.by_role("member"), WAY_BACK_WAIT)
    if wayback.expect(session.target.pushgateway, True):
        tidied.append("the way-back alert now watches it (Pushgateway)")
    summary = (f"legacy's subscription {way.subscription}; the slot on the leader and synced on every standby "
               f"(lag {way.lag_bytes} bytes)" if way.ok else "the way back is NOT protected: " + "; ".join(way.problems))
    return _timer(session, Outcome(summary=summary + (f"; {'; '.join(tidied)}" if tidied else ""),
                                   evidence=way.rows(), failed=not way.ok,
                                   metrics={"wayback_lag_bytes": way.lag_bytes}))


@step("probe_report", "Write probe: availability through the window", always_run=True)
def probe_report(session: Session) -> Outcome:
    """The write probe's every attempt through the window, plotted: the longest write-unavailable span,
    the total, and the failed writes; beside them the application's own errors from Prometheus.
    """
    session.drop(PROBE)  # stops the probe's thread
    if session.params.migration:
        writeprobe.analyse(migration.route_of(session).source)
    frame = writeprobe.load(session.run_dir)
    if frame.empty:
        return Outcome(summary="no write probe data in this run", failed=True)
    interval = session.params.migration.probe_interval if session.params.migration else 0.05
    figures = writeprobe.figures(frame, interval)
    t0 = frame["start"].min()
    fig = go.Figure()
    for ok, colour, name in ((True, "#1a7f37", "write ok"), (False, "#cf222e", "write failed")):
        part = frame[frame["ok"] == ok]
        fig.add_trace(go.Scatter(x=part["start"] - t0, y=(part["end"] - part["start"]) * 1000, mode="markers",
                                 marker={"color": colour, "size": 4}, name=name))
    fig.update_layout(title="Write probe: latency of each write through the window (ms)", xaxis_title="seconds",
                      yaxis_title="ms", yaxis_type="log", height=350)
    figures.update(_app_impact(session, float(frame["end"].max() - frame["start"].min())))
    app = (f"; the application: {figures['app_errors']:.0f} errors of {figures['app_requests']:.0f} requests"
           if figures.get("app_requests") is not None else "")
    return Outcome(summary=f"write-unavailable {figures['write_unavailable_s']} s at most at once, "
                           f"{figures['write_unavailable_total_s']} s in {figures['unavailable_spans']} span(s) "
                           f"in all; {figures['failed_writes']} of "
                           f"{figures['attempts']} writes failed{app}", metrics=figures, figures=[fig],
                   evidence=pd.DataFrame([figures]))


def _app_impact(session: Session, seconds: float) -> dict[str, float | None]:
    """The application's own requests and errors over the window, from Prometheus (none if not scraped)."""
    spec = session.target.prometheus
    if spec is None:
        return {}
    names = session.params.readiness.app_metrics
    window = f"{max(int(seconds) + 15, 30)}s"  # the last scrape before the window counts too

    def total(metric: str) -> float | None:
        return prometheus.scalar(spec.url, f"sum(increase({metric}[{window}]))")

    requests, errors = total(names["requests"]), total(names["errors"])
    rate = errors / requests if requests and errors is not None else None
    return {"app_requests": requests, "app_errors": errors,
            "app_error_rate": round(rate, 4) if rate is not None else None}


BOOK = Book("phase2_migration", "Phase 2: the maintenance window", mutating=True, steps=(
    signoff_gate, window_check, preflight, probe_start, deploy_new_stack, prepare_replication, final_backup,
    validate_cut, cutover_step, writes_off, drain_connections, app_down, move_data, validate_new, switch_traffic,
    writes_on, app_up, way_back, probe_report,
))
