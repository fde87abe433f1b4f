"""Phase 2 on the sandbox: each strategy end to end with papermill, the refusals, a mismatch, a killed kernel,
and the rollback runbook after a cutover.

Every test leaves the sandbox as it found it: PgBouncer on legacy, legacy writable, the new
cluster empty (fallback.to_legacy, then fallback.clear_new).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg import sql

from runbook_lib.books import phase2_migration as phase2
from runbook_lib.books import rollback
from runbook_lib.campaign import records
from runbook_lib.clients import pgbouncer, postgres, swarm
from runbook_lib.config import names
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.params import Params, load_params
from runbook_lib.ops import cutover, fallback, migration, writeprobe
from runbook_lib.run import runner, session
from runbook_lib.run.journal import read_events
from runbook_lib.run.step import Step, StepFailed
from tests.phase2.conftest import (
    LEGACY,
    count_marker,
    manifest_steps,
    pgbouncer_answers,
    rollback_run,
    step_evidence,
    wait_until,
    write_through_pool,
)

pytestmark = pytest.mark.sandbox

def test_refused_without_signoffs_before_any_change(sandbox_params_file: Path, sandbox_params: Params,
                                                     tmp_path: Path) -> None:
    report = runner.run("phase2_migration", str(sandbox_params_file), outputs_dir=tmp_path, echo=False,
                        campaign="unsigned")
    assert report.exit_code == 2 and report.message.startswith("refused before any change"), report.message
    steps = manifest_steps(report.run_dir)
    assert steps["signoff_gate"]["status"] == "failed" and "missing sign-offs" in steps["signoff_gate"]["summary"]
    assert list(steps) == ["signoff_gate"]
    assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY
    assert migration.user_tables(sandbox_params.endpoints.db("dpg-rw")) == []


def test_preflight_names_a_table_logical_replication_cannot_carry(sandbox_params_file: Path, sandbox_params: Params,
                                                                    signed: Path) -> None:
    with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:
        postgres.query(conn, "CREATE TABLE preflight_no_key (note text)")
    rb = session.start(str(sandbox_params_file), runbook="phase2_migration", campaign=signed.name,
                       outputs_dir=str(signed.parent))
    try:
        with pytest.raises(StepFailed, match=r"cannot carry: public\.preflight_no_key \(no primary key"):
            rb.run(phase2.preflight)
    finally:
        rb.release()
        with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:
            postgres.query(conn, "DROP TABLE preflight_no_key")
    assert migration.user_tables(sandbox_params.endpoints.db("dpg-rw")) == []


def test_preflight_refuses_what_the_move_cannot_carry_and_changes_nothing(sandbox_params_file: Path,
                                                                         sandbox_params: Params, signed: Path) -> None:
    legacy = sandbox_params.endpoints.db("legacy")
    with postgres.connect(legacy) as conn:
        postgres.query(conn, "CREATE ROLE preflight_only_on_legacy; CREATE UNLOGGED TABLE preflight_scratch "
                             "(id int PRIMARY KEY); GRANT SELECT ON preflight_scratch TO preflight_only_on_legacy; "
                             "SELECT lo_from_bytea(0, 'a document')")
    report = runner.run("phase2_migration", str(sandbox_params_file), outputs_dir=signed.parent, echo=False,
                        campaign=signed.name)
    try:
        assert report.exit_code == 2, report.message  # refused before any change
        steps = manifest_steps(report.run_dir)
        assert list(steps)[-1] == "preflight" and steps["preflight"]["status"] == "failed"
        summary = steps["preflight"]["summary"]
        for named in ("public.preflight_scratch (unlogged", "1 large objects (logical replication does not carry",
                      "preflight_only_on_legacy (owns or is granted"):
            assert named in summary, (named, summary)
        refused = {r["object"] for r in step_evidence(report.run_dir, "preflight") if r["verdict"] == "refused"}
        assert refused == {"public.preflight_scratch", "1 large objects", "preflight_only_on_legacy"}
        # nothing changed on either side
        assert migration.user_tables(sandbox_params.endpoints.db("dpg-rw")) == []
        assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY
        with postgres.connect(legacy) as conn:
            assert not postgres.query(conn, "SELECT 1 FROM pg_publication")
            assert not postgres.query(conn, "SELECT 1 FROM pg_event_trigger")
    finally:
        with postgres.connect(legacy) as conn:
            postgres.query(conn, "DROP TABLE preflight_scratch; DROP ROLE preflight_only_on_legacy; "
                                 "SELECT lo_unlink(oid) FROM pg_largeobject_metadata")


def test_ddl_is_frozen_on_legacy_from_the_copy_to_the_cutover(sandbox_params_file: Path, sandbox_params: Params,
                                                              signed: Path, restore_legacy: None) -> None:
    rb = filled(sandbox_params_file, signed)
    try:
        prepared = rb.results[-1]
        assert "DDL frozen on legacy until the cutover" in prepared.summary, prepared.summary
        with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:
            with pytest.raises(psycopg.Error, match="schema changes are frozen"):
                postgres.query(conn, "CREATE TABLE slipped_past (id int PRIMARY KEY)")
    finally:
        rb.release()
    fallback.clear_new(migration.route(sandbox_params))  # a stopped migration lifts the freeze
    with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:
        postgres.query(conn, "CREATE TABLE after_the_freeze (id int PRIMARY KEY); DROP TABLE after_the_freeze")


def test_logical_cutover_loses_nothing_and_keeps_legacy_current(sandbox_params_file: Path, sandbox_params: Params,
                                                                signed: Path, restore_legacy: None) -> None:
    report = runner.run("phase2_migration", str(sandbox_params_file), outputs_dir=signed.parent, echo=False,
                        campaign=signed.name)
    assert report.exit_code == 0, report.message
    steps = manifest_steps(report.run_dir)
    assert all(s["status"] == "ok" for s in steps.values()), {k: s["summary"] for k, s in steps.items()}
    assert steps["validate_cut"]["metrics"]["tables_validated"] >= 8
    cut = steps["cutover"]["metrics"]  # one critical section, bounded
    assert cut["pool_paused_s"] < load_params(sandbox_params_file).migration.critical_section_max, cut
    assert cut["probe_longest_gap_s"] is not None and cut["probe_failed_writes"] == 0, cut
    assert [e["what"] for e in step_evidence(report.run_dir, "cutover") if e["when"].startswith("+")] == [
        "paused", "legacy read-only", "last write applied", "sequences copied", "reverse slot at the cut",
        "switched", "resumed"]
    probe = steps["probe_report"]["metrics"]
    assert probe["attempts"] > 20 and probe["write_unavailable_s"] < 30, probe
    # the application kept running behind the paused pool: its error rate is reported and bounded
    assert probe["app_requests"] > 0 and probe["app_error_rate"] < 0.05, probe
    assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == ("127.0.0.1", 25500)
    with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:  # the way back sends only the new side's
        assert postgres.scalar(conn, "SELECT suborigin FROM pg_subscription WHERE subname = %s",  # own writes
                               [names.REVERSE_SUBSCRIPTION]) == "none"
    cutover = records.latest(signed, "cutover")  # where the 72-hour validation starts
    assert cutover and cutover["run_id"] == report.run_id and cutover["data"]["strategy"] == "logical"
    # after the cutover a write through PgBouncer lands on the new cluster and reaches legacy in reverse
    marker = f"after-{report.run_id}"
    write_through_pool(sandbox_params, marker)
    assert count_marker(sandbox_params, "dpg-rw", marker) == 1
    wait_until("reverse replication to legacy", lambda: count_marker(sandbox_params, "legacy", marker) == 1)
    # and the rollback loses none of it
    back = fallback.to_legacy(migration.route(sandbox_params))
    assert back.reverse_applied_lsn and pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY
    # (the application writes to legacy again at once, so the sides are compared by what the new one holds)
    for table in ("rollout_write_probe", "events"):
        newest = ids(sandbox_params, "dpg-rw", table)
        assert newest and not set(newest) - set(ids(sandbox_params, "legacy", table, newest)), table


def cut_over(params_file: Path, signed: Path) -> None:
    """A logical phase 2 run, all of it, into the signed campaign."""
    report = runner.run("phase2_migration", str(params_file), outputs_dir=signed.parent, echo=False, campaign=signed.name)
    assert report.exit_code == 0, report.message


def test_rollback_runbook_after_a_logical_cutover(sandbox_params_file: Path, sandbox_params: Params, signed: Path,
                                                  restore_legacy: None) -> None:
    cut_over(sandbox_params_file, signed)
    new_rw = ("127.0.0.1", 25500)
    # no trigger holds (Prometheus unreachable: never taken as a trigger) and no reason: nothing changes
    calm = rollback_run(sandbox_params_file, signed, "target.prometheus.url=https://127.0.0.1:9")
    assert calm.exit_code == 2 and pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == new_rw
    decision = manifest_steps(calm.run_dir)["rollback_decision"]
    assert "no trigger holds (5 unreadable" in decision["summary"], decision["summary"]

    # legacy cannot catch up (reverse replication disabled): the detach fails and undoes itself
    with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:
        postgres.query(conn, sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(
            sql.Identifier(names.REVERSE_SUBSCRIPTION)))
    marker = f"before-rollback-{calm.run_id}"
    write_through_pool(sandbox_params, marker)
    stuck = rollback_run(sandbox_params_file, signed, "rollback.reason=drill", "migration.apply_timeout=2s")
    assert stuck.exit_code == 1
    assert manifest_steps(stuck.run_dir)["stop_or_detach_new"]["status"] == "failed"
    assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == new_rw
    write_through_pool(sandbox_params, f"{marker}-2")  # the pool resumed and the new cluster is writable again
    assert count_marker(sandbox_params, "dpg-rw", f"{marker}-2") == 1
    with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:
        postgres.query(conn, sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(
            sql.Identifier(names.REVERSE_SUBSCRIPTION)))

    # PgBouncer fell back to its stack file's legacy backend on its own (a restarted task): legacy must
    # still catch up before it takes writes
    pgbouncer.repoint(sandbox_params.endpoints.admin(), sandbox_params.target.swarm, "app", *LEGACY)
    pgbouncer.command(sandbox_params.endpoints.admin(), "PAUSE", "app")  # and the pool was left paused (a cutover cut short)
    # the security trigger is raised: the rollback needs no other reason
    report = rollback_run(sandbox_params_file, signed, "rollback.security_issue=true")
    assert report.exit_code == 0, report.message
    steps = manifest_steps(report.run_dir)
    readings = {r["metric"]: r for r in step_evidence(report.run_dir, "rollback_decision")}
    assert set(readings) == {t.metric for t in sandbox_params.policy.rollback_triggers}
    assert not [r for r in readings.values() if r["note"].startswith("unreadable")], readings  # valid PromQL
    assert readings["critical_security_issue"]["fired"]
    assert [s for s in steps] == ["rollback_decision", "stop_or_detach_new", "restore_legacy_traffic",
                                  "validate_restore", "consistency_check", "notify_stakeholders", "completion"]
    assert all(s["status"] == "ok" for s in steps.values()), {k: s["summary"] for k, s in steps.items()}
    check = steps["consistency_check"]["metrics"]
    assert check["tables_compared"] >= 8 and check["tables_differing"] == 0, check
    assert steps["completion"]["metrics"]["rollback_min"] < 30
    assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY
    for m in (marker, f"{marker}-2"):  # written on the new cluster, on legacy after the rollback
        assert count_marker(sandbox_params, "legacy", m) == 1, m
    write_through_pool(sandbox_params, f"{marker}-3")  # resumed, and legacy's sequences are past the new ids
    assert count_marker(sandbox_params, "legacy", f"{marker}-3") == 1
    notices = sorted((signed / "outbox").glob("*-notice.txt"))
    assert notices and "Rollback of" in notices[-1].read_text()
    assert "critical_security_issue" in notices[-1].read_text()


def test_rollback_is_one_bounded_critical_section_and_loses_nothing(sandbox_params_file: Path,
                                                                    sandbox_params: Params, signed: Path,
                                                                    restore_legacy: None) -> None:
    cut_over(sandbox_params_file, signed)
    marker = f"one-cut-{signed.name}-{time.time():.0f}"
    write_through_pool(sandbox_params, marker)  # on the new cluster, and not waited for on legacy
    report = rollback_run(sandbox_params_file, signed, "rollback.reason=drill")
    assert report.exit_code == 0, report.message
    steps = manifest_steps(report.run_dir)
    detach = steps["stop_or_detach_new"]["metrics"]
    assert detach["pool_paused_s"] < load_params(sandbox_params_file).migration.critical_section_max, detach
    marks = [e["what"] for e in step_evidence(report.run_dir, "stop_or_detach_new") if e["when"].startswith("+")]
    assert marks == ["paused", "dpg-rw read-only", "last write applied", "sequences copied",
                     "both sides held at the cut", "legacy writable", "switched", "resumed"], marks
    assert steps["consistency_check"]["metrics"]["tables_differing"] == 0
    assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY
    assert count_marker(sandbox_params, "legacy", marker) == 1
    write_through_pool(sandbox_params, f"{marker}-after")
    assert count_marker(sandbox_params, "legacy", f"{marker}-after") == 1


def test_a_rollback_cut_short_after_its_resume_only_finishes(sandbox_params_file: Path, sandbox_params: Params,
                                                              signed: Path, restore_legacy: None) -> None:
    cut_over(sandbox_params_file, signed)
    r = migration.route(sandbox_params)
    leg = cutover.back(r)
    cutover.prepare(r, leg, 60)
    cutover.cut(r, leg, 2.0)  # switched back and resumed; the kernel "died" before reverse replication was dropped
    marker = f"after-resume-{signed.name}-{time.time():.0f}"
    for i in range(5):  # legacy takes writes: its sequences move past the new cluster's
        write_through_pool(sandbox_params, f"{marker}-{i}")
    report = rollback_run(sandbox_params_file, signed, "rollback.reason=drill")
    assert report.exit_code == 0, report.message
    detach = manifest_steps(report.run_dir)["stop_or_detach_new"]
    assert "the switch back was done already" in detach["summary"], detach["summary"]
    assert not fallback.reverse_replication(r)
    write_through_pool(sandbox_params, f"{marker}-after")  # no id handed out twice: legacy's sequences kept
    assert count_marker(sandbox_params, "legacy", f"{marker}-after") == 1


def _new_cluster_scaled(params: Params, replicas: int) -> None:
    """Every member of the new cluster's Patroni scaled to `replicas` tasks: 0 is the cluster lost. Each member
    is tried even when another failed (a cleanup must not leave members stopped); the first failure is raised."""
    services = swarm.for_target(params.target.swarm).services
    failures = []
    for member in params.target.patroni.members:
        try:
            swarm.scale(params.target.swarm, services.get(member.service).name, replicas)
        except Exception as exc:  # noqa: BLE001 - raised below, after the other members
            failures.append(exc)
    if failures:
        raise failures[0]


def test_rollback_with_the_new_cluster_lost_needs_the_loss_accepted(sandbox, sandbox_params_file: Path,  # noqa: ANN001
                                                                     sandbox_params: Params, signed: Path,
                                                                     restore_legacy: None) -> None:
    """After the cutover every task of the new cluster is stopped (the cluster lost, not a parameter pointing
    at a dead port): the rollback refuses to switch without rollback.accept_loss and changes nothing; with it,
    the application writes to legacy again, the writes reverse replication carried before the loss kept and no
    id handed out twice."""
    from tests import sandboxes

    cut_over(sandbox_params_file, signed)
    marker = f"lost-{signed.name}-{time.time():.0f}"
    write_through_pool(sandbox_params, marker)
    wait_until("reverse replication to legacy", lambda: count_marker(sandbox_params, "legacy", marker) == 1)
    try:
        _new_cluster_scaled(sandbox_params, 0)
        wait_until("the new cluster to stop answering",
                   lambda: not _accepts_sessions(sandbox_params.endpoints.db("dpg-rw")), 120)
        refused = rollback_run(sandbox_params_file, signed, "rollback.reason=new cluster lost")
        assert refused.exit_code == 1, refused.message  # the detach failed, and undid itself
        detach = manifest_steps(refused.run_dir)["stop_or_detach_new"]
        assert "rollback.accept_loss" in detach["summary"], detach["summary"]
        assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == ("127.0.0.1", 25500)  # nothing switched
        assert not pgbouncer.paused(sandbox_params.endpoints.admin(), "app")

        report = rollback_run(sandbox_params_file, signed, "rollback.reason=new cluster lost",
                              "rollback.accept_loss=true")
        assert report.exit_code == 0, report.message
        steps = manifest_steps(report.run_dir)
        assert "loss accepted" in steps["stop_or_detach_new"]["summary"], steps["stop_or_detach_new"]["summary"]
        assert "loss accepted" in steps["consistency_check"]["summary"]
        assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY
        assert count_marker(sandbox_params, "legacy", marker) == 1
        # ids the new cluster handed out reached legacy; legacy's sequences were moved past them
        for i in range(3):
            write_through_pool(sandbox_params, f"{marker}-after-{i}")
    finally:
        _new_cluster_scaled(sandbox_params, 1)
        sandboxes.wait_cluster_healthy(sandbox, 240)


def ids(params: Params, endpoint: str, table: str, among: list[int] | None = None) -> list[int]:
    """The newest 500 ids of a table, or which of `among` it holds."""
    with postgres.connect(params.endpoints.db(endpoint)) as conn:
        if among is None:
            rows = postgres.query(conn, sql.SQL("SELECT id FROM {} ORDER BY id DESC LIMIT 500").format(
                sql.Identifier(table)))
        else:
            rows = postgres.query(conn, sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(
                sql.Identifier(table)), [among])
    return [r["id"] for r in rows]


def test_dump_restore_cutover(sandbox_params_file: Path, sandbox_params: Params, signed: Path,
                              restore_legacy: None) -> None:
    report = runner.run("phase2_migration", str(sandbox_params_file), outputs_dir=signed.parent, echo=False,
                        campaign=signed.name, overrides=["migration.strategy=dump-restore"])
    assert report.exit_code == 0, report.message
    steps = manifest_steps(report.run_dir)
    assert steps["move_data"]["metrics"]["dump_restore_s"] > 0
    assert "scaled from 2 to 0" in steps["app_down"]["summary"]
    assert steps["validate_new"]["status"] == "ok"
    marker = f"after-{report.run_id}"
    write_through_pool(sandbox_params, marker)
    assert count_marker(sandbox_params, "dpg-rw", marker) == 1
    with pytest.raises(fallback.RollbackError, match="no reverse replication"):
        fallback.to_legacy(migration.route(sandbox_params))
    refused = rollback_run(sandbox_params_file, signed, "rollback.reason=drill")
    assert refused.exit_code == 2 and pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == ("127.0.0.1", 25500)
    assert "refused before any change: no reverse replication" in \
        manifest_steps(refused.run_dir)["rollback_decision"]["summary"]


def filled(params_file: Path, campaign_dir: Path, fill: bool = True) -> session.Session:
    """An interactive phase 2 up to a new cluster filled and streaming from legacy (the pause not begun);
    with fill=False up to the deployed, still empty new cluster."""
    rb = session.start(str(params_file), runbook="phase2_migration", campaign=campaign_dir.name,
                       outputs_dir=str(campaign_dir.parent))
    try:
        for step in (phase2.signoff_gate, phase2.window_check, phase2.preflight, phase2.deploy_new_stack,
                     phase2.prepare_replication)[:None if fill else -1]:
            rb.run(step)
    except BaseException:
        rb.release()
        raise
    return rb


def prepared_cut(params_file: Path, params: Params, campaign_dir: Path) -> tuple[session.Session, migration.Route,
                                                                                 cutover.Leg]:
    """Phase 2 filled and streaming, the forward leg prepared (PgBouncer staged, the new side caught up): what
    a test does inside the cut comes next. The write probe's table is published, so copied and streamed."""
    writeprobe.ensure_table(params.endpoints.db("legacy"), params.target.app.role)
    rb = filled(params_file, campaign_dir)
    try:
        r = migration.route(params)
        leg = cutover.forward(r)
        cutover.prepare(r, leg, 60)
    except BaseException:
        rb.release()
        raise
    return rb, r, leg


def assert_legacy_serves_writes(params: Params, marker: str) -> None:
    """PgBouncer still points at legacy, the pool is not paused and legacy takes the application's writes
    (a PgBouncer task Swarm replaced meanwhile is awaited first: restore_legacy reports it)."""
    pgbouncer_answers(params)
    assert pgbouncer.backend(params.endpoints.admin(), "app") == LEGACY
    # after a PAUSE given up at its bound, PgBouncer may refuse server logins for server_login_retry (15 s)
    # with a cached "pause mode" error: the write is retried through that window, no longer (any other error,
    # or that one past 25 s, is raised)
    writeprobe.mark_through_pool(params.endpoints.db("app-pool"), marker, within=25)
    assert count_marker(params, "legacy", marker) == 1


def test_mismatch_at_the_cut_stops_before_the_pause_with_legacy_serving(sandbox_params_file: Path,
                                                                        sandbox_params: Params, signed: Path,
                                                                        restore_legacy: None) -> None:
    writeprobe.ensure_table(sandbox_params.endpoints.db("legacy"), sandbox_params.target.app.role)  # what the test writes to
    rb = filled(sandbox_params_file, signed)
    try:
        with postgres.connect(sandbox_params.endpoints.db("dpg-rw")) as conn:  # the new side drifts from legacy
            postgres.query(conn, "UPDATE sandbox_seed SET scale = scale + 1")
        with pytest.raises(StepFailed, match=r"migration stopped before the pause: public\.sandbox_seed differ"):
            rb.run(phase2.validate_cut)  # same row count: only the checksum sees it
    finally:
        rb.release()
    assert_legacy_serves_writes(sandbox_params, f"cut-{rb.info.run_id}")


def test_a_cut_that_cannot_end_in_its_bound_leaves_legacy_serving(sandbox_params_file: Path, sandbox_params: Params,
                                                                  signed: Path, restore_legacy: None) -> None:
    """A slow subscriber, a transaction held open through the pool (PAUSE would wait for it for ever) and a
    writer the write stop does not cover: each stops the cut within its bound, with nothing switched."""
    legacy, new = sandbox_params.endpoints.db("legacy"), sandbox_params.endpoints.db("dpg-rw")
    writeprobe.ensure_table(legacy, sandbox_params.target.app.role)  # published, so copied and streamed
    rb = filled(sandbox_params_file, signed)
    r = migration.route(sandbox_params)
    try:
        serving, leg = cutover.serving(r), cutover.forward(r)
        cutover.prepare(r, leg, 60)
        with postgres.connect(new, autocommit=False) as blocker:
            # the new side's apply worker waits on this lock from legacy's next write on: the subscriber is slow
            blocker.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(names.PROBE_TABLE)))
            writeprobe.mark(legacy, f"delayed-{rb.info.run_id}")
            started = time.monotonic()
            with pytest.raises(cutover.CutoverAborted, match="stopped before the switch: the new cluster did not "
                                                             "apply"):
                cutover.cut(r, leg, 1.5)
            assert time.monotonic() - started < 15  # the bound, not the apply timeout
            blocker.rollback()
        assert not pgbouncer.paused(sandbox_params.endpoints.admin(), "app")
        with postgres.connect(sandbox_params.endpoints.db("app-pool"), autocommit=False) as held:
            held.execute("SELECT 1")  # a transaction through the pool, left open: it holds a server connection
            started = time.monotonic()
            with pytest.raises(cutover.CutoverAborted, match=r"PAUSE app waited 1\.5 s .* 1 server connection"):
                cutover.cut(r, leg, 1.5)
            assert time.monotonic() - started < 15
            assert not pgbouncer.paused(sandbox_params.endpoints.admin(), "app")
            held.rollback()
        with postgres.connect(legacy, autocommit=False) as writer:  # the runbook's role (a superuser): not drained
            writer.execute("SELECT pg_current_xact_id()")  # a transaction that writes, not committed yet
            with pytest.raises(cutover.CutoverAborted, match=r"sessions the write stop does not cover are in a transaction on "
                                                             r"legacy: postgres \(pid \d+"):
                cutover.cut(r, leg, 5)
            writer.rollback()
        cutover.unstage(r, leg, serving)
        assert not pgbouncer.paused(sandbox_params.endpoints.admin(), "app")
        pgbouncer.command(sandbox_params.endpoints.admin(), "RELOAD")  # the config file says legacy again
    finally:
        rb.release()
    assert_legacy_serves_writes(sandbox_params, f"slow-{rb.info.run_id}")


@pytest.mark.restarts_pgbouncer
def test_pgbouncer_restarted_inside_the_cut_leaves_legacy_serving(sandbox_params_file: Path, sandbox_params: Params,
                                                                  signed: Path, restore_legacy: None) -> None:
    """PgBouncer's task killed with the pool paused and legacy read-only: Swarm starts another, which reads its
    deployed config (legacy) and is not paused. The cut is tried as the phase 2 book tries it: the RELOAD on
    the lost console fails and a fresh console says the pool does not lead to the new cluster (or, when a
    write on legacy in that long pause gave the first attempt back, the second one's RELOAD loads legacy, not
    the staged backend). Either way legacy is given back: writable, the new cluster read-only again, the
    config file unstaged, and the application's next write lands on legacy."""
    legacy, new = sandbox_params.endpoints.db("legacy"), sandbox_params.endpoints.db("dpg-rw")
    rb, r, leg = prepared_cut(sandbox_params_file, sandbox_params, signed)
    try:
        serving = cutover.serving(r)
        killed = swarm.running_container(r.swarm, swarm.for_target(r.swarm).services.get(r.pooler.service)).id

        def restart_pgbouncer() -> None:  # inside the cut: paused, legacy read-only, both sides level
            swarm.for_target(r.swarm).containers.get(killed).kill()
            pgbouncer_answers(sandbox_params, 180, replacing=killed)

        attempts: list[str] = []

        def hold() -> Callable[[], None]:  # the first attempt only: a task restarts once
            attempts.append("cut")
            return restart_pgbouncer if len(attempts) == 1 else (lambda: None)

        with pytest.raises(cutover.NotCut, match="the critical section stopped at the switch|PgBouncer reloaded "
                                                 r"127\.0\.0\.1:25432, not the staged"):
            cutover.cut_retrying(r, leg, serving, 240, hold=hold)
        assert cutover.serving(r) == LEGACY
        assert not pgbouncer.paused(sandbox_params.endpoints.admin(), "app")
        assert not migration.read_only_for(legacy, r.app_role)
        assert migration.read_only_for(new, r.app_role) == leg.reopen  # closed again if the cut had opened it
    finally:
        rb.release()
    assert_legacy_serves_writes(sandbox_params, f"restarted-{rb.info.run_id}")


def test_legacy_killed_inside_the_cut_is_given_back_and_the_next_cut_loses_nothing(
        sandbox_params_file: Path, sandbox_params: Params, signed: Path, restore_legacy: None) -> None:
    """Legacy's task killed with the pool paused and legacy read-only for the application: Swarm restarts it
    from its volume. The cut's session to it is lost; the give-back undoes the read-only mark on a fresh
    session, so the cut stops with legacy serving. The next cut carries every write legacy committed."""
    legacy = sandbox_params.endpoints.db("legacy")
    rb, r, leg = prepared_cut(sandbox_params_file, sandbox_params, signed)
    marker = f"before-kill-{rb.info.run_id}"
    try:
        writeprobe.mark(legacy, marker)  # committed on legacy just before the cut
        service = swarm.for_target(r.swarm).services.get("legacy_postgres")
        killed = swarm.running_container(r.swarm, service).id

        def kill_legacy() -> None:  # inside the cut: paused, legacy read-only, both sides level
            swarm.for_target(r.swarm).containers.get(killed).kill()
            wait_until("Swarm to restart legacy", lambda: _accepts_sessions(legacy), 180)

        with pytest.raises(cutover.CutoverAborted, match="the critical section stopped before the switch"):
            cutover.cut(r, leg, 240, at_cut=kill_legacy)
        assert cutover.serving(r) == LEGACY and not pgbouncer.paused(sandbox_params.endpoints.admin(), "app")
        assert not migration.read_only_for(legacy, r.app_role)  # given back on a fresh session
        done, _ = cutover.cut_retrying(r, leg, cutover.serving(r), 60)  # legacy back: the next cut goes through
        assert "switched" in done.marks
        cutover.finish_forward(r, done.reverse_from)
        assert count_marker(sandbox_params, "dpg-rw", marker) == 1
    finally:
        rb.release()
        # a crash restart resets the server's statistics: analysed again, so DB-11 finds legacy as it was
        wait_until("legacy to accept sessions", lambda: _accepts_sessions(legacy), 180)
        with postgres.connect(legacy) as conn:
            postgres.query(conn, "ANALYZE")


def _accepts_sessions(endpoint: PgSpec) -> bool:
    try:
        with postgres.connect(endpoint) as conn:
            return postgres.scalar(conn, "SELECT NOT pg_is_in_recovery()") is True
    except psycopg.OperationalError:
        return False


def test_a_write_no_session_owns_aborts_the_cut_and_the_next_cut_takes_it(sandbox_params_file: Path,
                                                                         sandbox_params: Params, signed: Path,
                                                                         restore_legacy: None) -> None:
    """A transaction with an xid that ends on legacy inside the cut, leaving no session holding one (what an
    autovacuum's ANALYZE does), aborts the cut as an UnattributedWrite with legacy given back; the runbooks try
    the cut once more, and that cut carries the write over."""
    legacy = sandbox_params.endpoints.db("legacy")
    rb, r, leg = prepared_cut(sandbox_params_file, sandbox_params, signed)
    marker = f"quiet-{rb.info.run_id}"
    try:
        def quiet_write() -> None:  # committed before the check looks: no session holds its xid any more
            writeprobe.mark(legacy, marker)

        with pytest.raises(cutover.UnattributedWrite, match="transactions that ended meanwhile"):
            cutover.cut(r, leg, 10, at_cut=quiet_write)
        assert not pgbouncer.paused(sandbox_params.endpoints.admin(), "app")
        assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY  # given back, still staged
        done = cutover.cut(r, leg, 10)  # the second attempt: nothing writes now
        assert "switched" in done.marks
        cutover.finish_forward(r, done.reverse_from)
        assert count_marker(sandbox_params, "dpg-rw", marker) == 1  # the write the first cut saw is carried over
    finally:
        rb.release()


def test_a_failover_after_the_copy_is_survived(sandbox, sandbox_params_file: Path, sandbox_params: Params,  # noqa: ANN001
                                               signed: Path, restore_legacy: None) -> None:
    from tests import sandboxes

    rb = filled(sandbox_params_file, signed)
    try:
        moved = sandboxes.failover(sandbox, timeout=90)  # the subscriber's leader goes away while legacy takes writes
        assert moved["new_leader"] != moved["old_leader"]
        sandboxes.wait_cluster_healthy(sandbox, 180)
        assert rb.run(phase2.validate_cut).status == "ok"  # every table's checksum equal at a consistent cut
        cut = rb.run(phase2.cutover_step)  # the subscription resumed on the new leader and applied legacy's last LSN
        assert cut.status == "ok", cut.summary
    finally:
        rb.release()


def _sync_state(params: Params, table: str) -> str | None:
    """The subscription's copy state of one table on the new cluster (None while not listed or unreachable)."""
    try:
        with postgres.connect(params.endpoints.db("dpg-rw")) as conn:
            return postgres.scalar(conn, "SELECT srsubstate::text FROM pg_subscription_rel WHERE srrelid = %s::regclass",
                                   [table])
    except Exception:  # noqa: BLE001 - the table or the endpoint is not there yet
        return None


@pytest.fixture
def copy_ballast(sandbox_params: Params):  # noqa: ANN201
    """A legacy table big enough that its initial copy is still running a few seconds in; dropped after."""
    with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:
        postgres.query(conn, "DROP TABLE IF EXISTS copy_ballast")  # an earlier run cut short left it
        postgres.query(conn, "CREATE TABLE copy_ballast (id bigint PRIMARY KEY, payload text)")
        postgres.query(conn, "INSERT INTO copy_ballast SELECT g, repeat(md5(g::text), 4) "
                             "FROM generate_series(1, 1500000) g")
    yield "copy_ballast"
    with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:
        postgres.query(conn, "DROP TABLE IF EXISTS copy_ballast")


def copying(rb: session.Session) -> tuple[threading.Thread, dict[str, object]]:
    """prepare_replication started in a thread; its StepResult (or the error) lands in the dict."""
    outcome: dict[str, object] = {}

    def fill() -> None:
        try:
            outcome["result"] = rb.run(phase2.prepare_replication)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            outcome["error"] = exc

    filler = threading.Thread(target=fill, daemon=True)  # a failed test's copy does not keep pytest from exiting
    filler.start()
    return filler, outcome


def _sync_slot_prefix(params: Params, table: str) -> str:
    """pg_<subscription oid>_sync_<relation oid>_: how PostgreSQL names the table's sync slot on the publisher."""
    with postgres.connect(params.endpoints.db("dpg-rw")) as conn:
        ids = postgres.query(conn, """SELECT r.srsubid::text AS sub, r.srrelid::oid::text AS rel
                                      FROM pg_subscription_rel r WHERE r.srrelid = %s::regclass""", [table])[0]
    return f"pg_{ids['sub']}_sync_{ids['rel']}_"


def _copy_waits(endpoint: PgSpec) -> int:
    """Rows a table-sync worker's COPY holds while it waits for another transaction (0: none waits)."""
    with postgres.connect(endpoint) as conn:
        return postgres.scalar(conn, """SELECT coalesce(max(p.tuples_processed), 0) FROM pg_stat_progress_copy p
                                        JOIN pg_stat_activity a ON a.pid = p.pid
                                        WHERE a.wait_event_type = 'Lock' AND a.wait_event = 'transactionid'""")


def _lock_waits(endpoint: PgSpec, table: str) -> bool:
    """Some session waits for a lock on `table` there."""
    with postgres.connect(endpoint) as conn:
        return bool(postgres.query(conn, "SELECT 1 FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
                                   [table]))


@pytest.mark.parametrize("state", ["i", "i, its sync slot left", "d", "f"])
def test_a_failover_mid_copy_is_survived_in_each_table_state(sandbox, sandbox_params_file: Path,  # noqa: ANN001
                                                            sandbox_params: Params, signed: Path,
                                                            copy_ballast: str, restore_legacy: None,
                                                            state: str) -> None:
    """The new cluster's leader is stopped while the ballast table's copy is held in one state (issue 15):
    'i' (no table-sync worker may start), 'i' with a sync slot an earlier leader left on legacy (a member
    that missed the state 'd' was promoted), 'd' (its COPY all but done: stopped at its last row, which an
    open transaction on the new cluster also writes) and 'f' (copied, its catch-up waiting on a lock on the
    new cluster). The copy must end with every table equal, started from scratch only where nothing else can
    save it."""
    from tests import sandboxes

    legacy, target = sandbox_params.endpoints.db("legacy"), sandbox_params.endpoints.db("dpg-rw")
    rb = filled(sandbox_params_file, signed, fill=False)
    held: list[psycopg.Connection] = []
    locker: threading.Thread | None = None
    try:
        with contextlib.ExitStack() as workers_held:
            workers_held.enter_context(sandboxes.patroni_parameters(sandbox, everywhere=True,
                                                                    max_sync_workers_per_subscription=0))
            filler, outcome = copying(rb)  # every table waits at 'i': no table-sync worker may start
            wait_until("the ballast table listed at 'i'", lambda: _sync_state(sandbox_params, copy_ballast) == "i",
                       300)
            if state == "i, its sync slot left":
                with postgres.connect(target) as conn:
                    system = postgres.scalar(conn, "SELECT system_identifier::text FROM pg_control_system()")
                with postgres.connect(legacy) as conn:
                    postgres.query(conn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
                                   [_sync_slot_prefix(sandbox_params, copy_ballast) + system])
            if state in ("d", "f"):  # the ballast's last row, written on the new cluster and not committed: the
                # COPY stops there, every other row in, waiting for this transaction (the primary key's check)
                with postgres.connect(legacy) as conn:
                    last = postgres.scalar(conn, sql.SQL("SELECT max(id) FROM {}").format(sql.Identifier(copy_ballast)))
                held.append(postgres.connect(target, autocommit=False))
                held[0].execute(sql.SQL("INSERT INTO {} (id) VALUES (%s)").format(sql.Identifier(copy_ballast)), [last])
                workers_held.close()  # the parameter undone: the workers start
                wait_until("the ballast's COPY to stop at its last row", lambda: (
                    _sync_state(sandbox_params, copy_ballast) == "d" and _copy_waits(target)), 300)
            if state == "f":  # a lock queued behind the copy on the new cluster: granted when it commits 'f'
                with postgres.connect(legacy) as conn:  # after the COPY's snapshot: the catch-up has it to apply
                    postgres.query(conn, sql.SQL("INSERT INTO {} (id) VALUES (%s)").format(
                        sql.Identifier(copy_ballast)), [last + 1])
                catch_up = postgres.connect(target, autocommit=False)
                held.append(catch_up)
                catch_up.execute("SET lock_timeout = '600s'")
                locker = threading.Thread(target=lambda: catch_up.execute(sql.SQL(
                    "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(copy_ballast))), daemon=True)
                locker.start()
                wait_until("the lock on the new cluster to queue behind the copy",
                           lambda: _lock_waits(target, copy_ballast), 60)
                held.pop(0).close()  # the row given up: the COPY ends and commits 'f'
                locker.join(timeout=600)
                assert not locker.is_alive(), "the copy never finished"
                wait_until("the catch-up to wait for the lock with the late row to apply",
                           lambda: _lock_waits(target, copy_ballast), 60)
            if state == "d":  # interrupted with all but the last row copied, not before nor after
                assert _copy_waits(target) >= last - 1000, "the COPY is not at its last row"
            before = _sync_state(sandbox_params, copy_ballast)
            assert before == state[0], f"the ballast is at {before!r}, not {state[0]!r}, when the leader stops"
            # 'd' and 'f' wait on a transaction or a lock on the leader: a fast shutdown would end it first and let
            # the worker run on (even drop its slot on legacy and die before committing 's', a real loss); frozen
            # then killed, every process stops where it is and the table stays in the state it was held in
            moved = sandboxes.failover(sandbox, timeout=90, frozen=state in ("d", "f"))
            assert moved["new_leader"] != moved["old_leader"]
            if state.startswith("i"):  # still held: the new leader has the ballast where the old one left it
                wait_until("the new leader to list the ballast",
                           lambda: _sync_state(sandbox_params, copy_ballast) is not None, 60)
                assert _sync_state(sandbox_params, copy_ballast) == state[0]
        for conn in held:  # every hold let go
            conn.close()
        held.clear()
        filler.join(timeout=1200)
        assert not filler.is_alive() and "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        print(result.summary)
        # no state here needs a copy from scratch: a worker commits 'd' before it makes its slot, so the one
        # left in its way fails it once and its retry, at 'd', drops the slot and copies again
        assert result.metrics["copy_restarts"] == 0, result.summary
        if state == "i, its sync slot left":  # the slot was in the way: a worker failed on it (counted once)
            assert migration.sync_errors(target, names.SUBSCRIPTION)[0] >= 1
        sandboxes.wait_cluster_healthy(sandbox, 180)
        validated = rb.run(phase2.validate_cut)  # every table, the ballast included, equal on both sides
        assert validated.status == "ok", validated.summary
        assert rb.run(phase2.cutover_step).status == "ok"
    finally:
        if locker is not None and locker.is_alive():  # a queued LOCK left behind must not outlive the test
            catch_up.cancel_safe()
            locker.join(timeout=30)
        for conn in held:
            conn.close()
        rb.release()


def _lose_sync_slot(params: Params, table: str) -> str:
    """End the table-sync walsender of `table` on legacy and drop its slot: what a failover of the subscriber
    to a member that missed the slot's drop leaves behind. Returns the slot's name."""
    prefix = _sync_slot_prefix(params, table)
    with postgres.connect(params.endpoints.db("legacy")) as conn:
        def dropped() -> bool:
            slot = postgres.query(conn, "SELECT slot_name, active_pid FROM pg_replication_slots "
                                        "WHERE starts_with(slot_name, %s)", [prefix])
            if not slot:
                return True
            if slot[0]["active_pid"]:
                postgres.query(conn, "SELECT pg_terminate_backend(%s)", [slot[0]["active_pid"]])
            try:
                postgres.query(conn, "SELECT pg_drop_replication_slot(%s)", [slot[0]["slot_name"]])
            except psycopg.errors.ObjectInUse:
                return False
            return True

        wait_until(f"the table-sync slot {prefix}* dropped on legacy", dropped, 30)
    return prefix


def test_a_lost_table_sync_slot_starts_the_copy_again(sandbox_params_file: Path, sandbox_params: Params,
                                                      signed: Path, copy_ballast: str, restore_legacy: None) -> None:
    """A table whose copy finished ('f') but whose table-sync slot is gone never streams (issue 15: seen after
    a failover mid-copy); the copy must start again from scratch and end equal on both sides."""
    rb = filled(sandbox_params_file, signed, fill=False)
    stop = threading.Event()

    def write_ballast() -> None:  # rows after the copy's snapshot: the table's catch-up has changes to apply
        with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:
            row = 2_000_000
            while not stop.is_set():
                postgres.query(conn, "INSERT INTO copy_ballast VALUES (%s, 'after the snapshot')", [row])
                row += 1
                stop.wait(0.1)

    writer = threading.Thread(target=write_ballast)
    writer.start()
    try:
        filler, outcome = copying(rb)
        wait_until("the ballast table's copy to start", lambda: _sync_state(sandbox_params, copy_ballast) == "d", 120)
        with postgres.connect(sandbox_params.endpoints.db("dpg-rw"), autocommit=False) as holder:
            holder.execute("SET lock_timeout = '600s'")
            # granted once the copy commits (state 'f'); the table's catch-up then waits on it, holding state 'f'
            holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(copy_ballast)))
            assert _sync_state(sandbox_params, copy_ballast) == "f"
            _lose_sync_slot(sandbox_params, copy_ballast)
            holder.rollback()
        filler.join(timeout=900)
        assert not filler.is_alive() and "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        print(result.summary)
        assert result.metrics["copy_restarts"] == 1, result.summary
        assert "table-sync slot lost for public.copy_ballast" in result.summary
        stop.set()
        writer.join(timeout=30)
        validated = rb.run(phase2.validate_cut)  # the ballast, its late rows included, equal on both sides
        assert validated.status == "ok", validated.summary
    finally:
        stop.set()
        writer.join(timeout=30)
        rb.release()


def journal(run_dir: Path) -> list[dict]:
    return list(read_events(run_dir / "journal.jsonl"))


def completed(run_dir: Path, step_name: str) -> bool:
    return any(e["event"] == "step" and e["name"] == step_name and e["status"] == "ok" for e in journal(run_dir))


def mutating_runs(book: object, *run_dirs: Path) -> dict[str, int]:
    """Each mutating step of these runs (a killed one and its resume) -> how many times it completed; steps
    the book runs again on resume by design (always_run: the write probe, gates) left out."""
    again = {v.name for v in vars(book).values() if isinstance(v, Step) and v.always_run}
    events = [e for d in run_dirs for e in journal(d)]
    done = Counter(e["name"] for e in events if e["event"] == "step" and e["status"] == "ok")
    return {e["name"]: done[e["name"]] for e in events
            if e["event"] == "step_start" and e["mutating"] and e["name"] not in again}


def _kernels(proc: subprocess.Popen) -> list[psutil.Process]:
    return [c for c in psutil.Process(proc.pid).children(recursive=True)
            if any("ipykernel" in part for part in c.cmdline())]


def killed_after(params_file: Path, signed: Path, runbook: str, step_name: str, *overrides: str) -> Path:
    """Run a runbook through the CLI and SIGKILL its kernel as soon as `step_name` completed; the run exits 3
    (kernel died). Returns its run folder, for a resume."""
    proc = subprocess.Popen([sys.executable, "-m", "runbook_lib.cli", "run", runbook, "--params", str(params_file),
                             "--outputs", str(signed.parent), "--campaign", signed.name,
                             *[x for o in overrides for x in ("-p", o)]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = set(signed.iterdir())
    deadline = time.monotonic() + 300
    run_dir = None
    while run_dir is None or not completed(run_dir, step_name):
        assert time.monotonic() < deadline and proc.poll() is None, f"{runbook} never completed {step_name}"
        new = [d for d in set(signed.iterdir()) - before if (d / "journal.jsonl").exists()]
        run_dir = new[0] if new else None
        time.sleep(0.1)
    for kernel in _kernels(proc):
        os.kill(kernel.pid, signal.SIGKILL)
    proc.communicate(timeout=180)
    assert proc.returncode == 3
    return run_dir


def test_resume_after_a_killed_kernel_continues_without_repeating(sandbox_params_file: Path, sandbox_params: Params,
                                                                  signed: Path, restore_legacy: None) -> None:
    run_dir = killed_after(sandbox_params_file, signed, "phase2_migration", "prepare_replication")
    resumed = runner.run("phase2_migration", str(sandbox_params_file), outputs_dir=signed.parent, echo=False,
                         campaign=signed.name, resume=run_dir.name)
    assert resumed.exit_code == 0, resumed.message
    steps = manifest_steps(resumed.run_dir)
    assert steps["prepare_replication"]["status"] == "skipped"
    assert steps["cutover"]["status"] == "ok" and steps["app_up"]["status"] == "ok"
    ran = mutating_runs(phase2, run_dir, resumed.run_dir)
    assert {"prepare_replication", "cutover"} <= set(ran) and set(ran.values()) == {1}, ran  # each exactly once
    assert pgbouncer.backend(load_params(sandbox_params_file).endpoints.admin(), "app") == ("127.0.0.1", 25500)


def test_a_rollback_whose_kernel_is_killed_resumes_without_repeating_and_loses_nothing(
        sandbox_params_file: Path, sandbox_params: Params, signed: Path, restore_legacy: None) -> None:
    """The rollback's kernel killed (SIGKILL) right after the switch back: the run exits 3; a resume does not
    switch again, sees the application on a writable legacy, and every write made on the new cluster before
    the rollback is on legacy. The comparison at the cut cannot be made any more (its two snapshots died
    with the kernel): the resumed run stops there and says so, naming the cut's LSN and what to compare,
    instead of reporting a check it did not make."""
    cut_over(sandbox_params_file, signed)
    marker = f"killed-rollback-{signed.name}-{time.time():.0f}"
    write_through_pool(sandbox_params, marker)
    run_dir = killed_after(sandbox_params_file, signed, "rollback", "stop_or_detach_new", "rollback.reason=drill")
    resumed = runner.run("rollback", str(sandbox_params_file), outputs_dir=signed.parent, echo=False,
                         campaign=signed.name, resume=run_dir.name, overrides=["rollback.reason=drill"])
    steps = manifest_steps(resumed.run_dir)
    assert steps["stop_or_detach_new"]["status"] == "skipped", steps["stop_or_detach_new"]
    ran = mutating_runs(rollback, run_dir, resumed.run_dir)
    assert ran["stop_or_detach_new"] == 1 and max(ran.values()) == 1, ran  # none twice
    assert steps["restore_legacy_traffic"]["status"] == "ok" and steps["validate_restore"]["status"] == "ok", steps
    assert resumed.exit_code == 1 and steps["consistency_check"]["status"] == "failed"
    assert "were lost when the kernel restarted" in steps["consistency_check"]["summary"]
    assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY
    assert count_marker(sandbox_params, "legacy", marker) == 1
    write_through_pool(sandbox_params, f"{marker}-after")
    assert count_marker(sandbox_params, "legacy", f"{marker}-after") == 1
