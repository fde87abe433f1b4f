"""Real faults on the sandbox, not simulated by parameters: etcd losing its quorum, Prometheus stopped and a
drilled leader that cannot come back.
Each is made by stopping the real tasks, judged by what the runbooks say and do, and undone."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from runbook_lib import rehearse
from runbook_lib.clients import patroni, postgres, swarm
from runbook_lib.config.params import Params
from runbook_lib.readiness import engine
from runbook_lib.run import runner
from runbook_lib.sandbox import docker_cli
from tests.campaign import cluster_healthy, decide, prometheus_sees_all_up, wait_until

pytestmark = pytest.mark.sandbox


def scale(params: Params, service: str, replicas: int) -> None:
    swarm.scale(params.target.swarm, swarm.for_target(params.target.swarm).services.get(service).name, replicas)


def writable(params: Params) -> bool:
    try:
        with postgres.connect(params.endpoints.db(params.readiness.primary), dbname="postgres", connect_timeout=2) as c:
            return postgres.scalar(c, "SELECT NOT pg_is_in_recovery()") is True
    except psycopg.Error:
        return False


def test_etcd_losing_its_quorum_turns_the_cluster_read_only_and_it_recovers_losing_nothing(
        sandbox_params: Params) -> None:
    """Two of three etcd members stopped: HA-05 fails, Patroni's leader can no longer hold its key and
    demotes itself (no member takes writes without the DCS), and once etcd is back a leader takes writes
    again with every row written before the outage still there."""
    primary = sandbox_params.endpoints.db(sandbox_params.readiness.primary)
    with postgres.connect(primary, dbname="postgres") as conn:
        postgres.query(conn, "CREATE TABLE IF NOT EXISTS quorum_fault (id int PRIMARY KEY)")
        postgres.query(conn, "TRUNCATE quorum_fault")
        postgres.query(conn, "INSERT INTO quorum_fault SELECT generate_series(1, 500)")
    stopped = ("dpg_etcd2", "dpg_etcd3")
    try:
        for service in stopped:
            scale(sandbox_params, service, 0)
        wait_until("HA-05 to fail", lambda: decide(sandbox_params, "HA-05")["HA-05"] == "fail", timeout=90,
                   interval=3)
        wait_until("the write endpoint to refuse writes (the leader demoted itself)",
                   lambda: not writable(sandbox_params), timeout=180, interval=2)
    finally:
        for service in stopped:
            scale(sandbox_params, service, 1)
    wait_until("a leader taking writes again", lambda: writable(sandbox_params), timeout=240, interval=2)
    wait_until("every member streaming again", lambda: cluster_healthy(sandbox_params), timeout=240, interval=3)
    wait_until("HA-05 to pass again", lambda: decide(sandbox_params, "HA-05")["HA-05"] == "pass", timeout=120,
               interval=3)
    with postgres.connect(primary, dbname="postgres") as conn:
        assert postgres.scalar(conn, "SELECT count(*) FROM quorum_fault") == 500
        postgres.query(conn, "DROP TABLE quorum_fault")


def test_with_prometheus_stopped_monitoring_items_are_undecided_and_the_watch_refuses_to_pass(
        sandbox_params: Params, sandbox_params_file: Path, tmp_path: Path) -> None:
    scale(sandbox_params, "monitoring_prometheus", 0)
    try:
        wait_until("Prometheus to stop answering",
                   lambda: next(iter(engine.run(sandbox_params, only=["MON-01"]))).outcome == "error",
                   timeout=120, interval=3)
        found = {r.id: r for r in engine.run(sandbox_params, only=["MON-01", "MON-03"])}
        assert {r.outcome for r in found.values()} == {"error"}, found  # never a pass, never a guess
        report = runner.run("phase3_verification", str(sandbox_params_file), outputs_dir=tmp_path, echo=False,
                            overrides=rehearse.SANDBOX_PHASE3)
        assert report.exit_code == 1, report.message
        steps = {s["name"]: s for s in json.loads((report.run_dir / "manifest.json").read_text())["steps"]}
        assert any(s["status"] == "failed" for s in steps.values()), steps
        assert steps.get("watch_metrics", {"status": "not run"})["status"] != "ok", steps["watch_metrics"]
    finally:
        scale(sandbox_params, "monitoring_prometheus", 1)
    prometheus_sees_all_up(sandbox_params, timeout=240)


NOWHERE = "node.labels.runbook-test-nowhere"  # a node label no node of the sandbox carries


def test_a_drill_whose_old_leader_cannot_come_back_fails_naming_the_rejoin_bound(
        sandbox, sandbox_params: Params, sandbox_params_file: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """The automatic drill stops the leader's task; while it is down, its service gets a placement no node
    satisfies (what a lost node does to a pinned member), so the task the drill starts again is never placed.
    The drill must fail on drills.rejoin_max, naming it, with the write endpoint on the new leader; once the
    placement is lifted the member streams again."""
    spec = sandbox_params.target.patroni
    leader = patroni.leader(spec)
    member = next(m for m in spec.members if m.name == leader)
    service = swarm.for_target(sandbox_params.target.swarm).services.get(member.service).name
    stranded, done = threading.Event(), threading.Event()

    def strand() -> None:  # between the drill's scale to 0 and its scale back to 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not done.is_set():
            replicas = docker_cli.run("service", "inspect", service, "--format",
                                      "{{.Spec.Mode.Replicated.Replicas}}").stdout.strip()
            if replicas == "0":
                if docker_cli.run("service", "update", "--detach", "--constraint-add", f"{NOWHERE}==true",
                                  service, check=False).returncode == 0:
                    stranded.set()
                    return
            time.sleep(0.1)

    stranding = threading.Thread(target=strand, daemon=True)
    stranding.start()
    try:
        drill = runner.run("failover_drill", str(sandbox_params_file), outputs_dir=tmp_path, echo=False,
                           overrides=["drills.rejoin_max=30s"])
        stranding.join(timeout=130)
        assert stranded.is_set(), "the stopped leader's service was never given its impossible placement"
        assert drill.exit_code == 1, drill.message
        steps = {s["name"]: s for s in json.loads((drill.run_dir / "manifest.json").read_text())["steps"]}
        failed = steps["automatic_failover"]
        assert failed["status"] == "failed" and "did not stream again in time (drills.rejoin_max)" in failed["summary"]
        assert "manual_switchover" not in steps or steps["manual_switchover"]["status"] != "ok"
        assert patroni.leader(spec) not in (None, leader) and writable(sandbox_params)  # writes go on meanwhile
    finally:
        done.set()
        stranding.join(timeout=30)

        def placeable() -> bool:  # tried again: an update racing the drill's scale is refused "out of sequence"
            docker_cli.run("service", "update", "--detach", "--constraint-rm", f"{NOWHERE}==true", service,
                           check=False)
            return NOWHERE not in docker_cli.run("service", "inspect", service, "--format",
                                                 "{{json .Spec.TaskTemplate.Placement}}").stdout

        wait_until("the impossible placement lifted", placeable, timeout=60, interval=1)
        scale(sandbox_params, member.service, 1)
        wait_until("every member streaming again", lambda: cluster_healthy(sandbox_params), timeout=300, interval=3)
        prometheus_sees_all_up(sandbox_params, timeout=240)
