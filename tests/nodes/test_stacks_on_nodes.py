"""The sandbox's stacks across a Swarm of three nodes (`sandbox up -f parameters/sandbox-nodes.yaml`): one etcd
and one Patroni member per node, the legacy database and PgBouncer on a node other than the manager the
runbooks talk to and other than the leader's; the whole campaign (load test, drills, readiness, phase 1,
phase 2 logical, phase 3, validation, rollback) with the leader off the manager's node; and the loss of the
leader's whole node under writes, measured (RTO, RPO) and judged by the drill policy."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from runbook_lib import rehearse
from runbook_lib.campaign import records
from runbook_lib.clients import patroni, pgbouncer, swarm
from runbook_lib.config.params import Params, load_params
from runbook_lib.ops import drills, fallback, migration
from runbook_lib.sandbox import health, lifecycle, nodes, overview, placement, stacks
from runbook_lib.sandbox.context import Sandbox, load
from tests.campaign import wait_until
from tests.conftest import ARTIFACTS

PARAMS = Path("parameters/sandbox-nodes.yaml")
MANAGER = "rbk-n1"  # target.swarm.docker_host: the engine the runbooks talk to


@pytest.fixture(scope="module")
def on_nodes(node_swarm: tuple[list[nodes.Node], str]) -> Iterator[tuple[Sandbox, Params]]:
    sb = load(PARAMS)
    try:
        lifecycle.up(sb)
        yield sb, load_params(PARAMS)
    finally:  # the stacks, their volumes and the shared WAL archive: the nodes' own tests run on a bare Swarm
        if os.environ.get("RUNBOOK_KEEP_SANDBOX") != "1":
            lifecycle.down(sb, volumes=True)


def power_cut(name: str) -> None:
    """A node lost at once (nodes stop --abrupt)."""
    nodes.power_off(_node(name))


def restart(name: str) -> None:
    nodes.start_engine(_node(name))


def _node(name: str) -> nodes.Node:
    assert name != MANAGER, "the drill would lose the engine the runbooks talk to"
    return next(n for n in nodes.existing() if n.name == name)


def node_of(params: Params, service: str) -> str:
    return swarm.node_of(params.target.swarm, service)


def leader_node(params: Params) -> tuple[str, str]:
    spec = params.target.patroni
    assert spec is not None
    leader = patroni.leader(spec)
    service = next(m.service for m in spec.members if m.name == leader)
    assert leader is not None and service is not None
    return leader, node_of(params, service)


def keep(name: str, text: str) -> None:
    """Beside the test reports (CI keeps tests/artifacts): the rehearsal's terminal, the drill's record."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(text)


def stacks_leader(sb: Sandbox) -> str:
    """The member the sandbox places as leader (on a node other than the manager's)."""
    return str(stacks.members(sb)[placement.LEADER_MEMBER]["name"])


def test_each_service_runs_where_the_placement_puts_it(on_nodes: tuple[Sandbox, Params]) -> None:
    sb, params = on_nodes
    layout = placement.Layout(3)
    members = {f"dpg_pg{i + 1}": layout.node(f"member:{i}") for i in range(3)}
    assert {s: node_of(params, s) for s in members} == {s: n.name for s, n in members.items() if n}
    assert len(set(members.values())) == 3  # one member per node
    etcd = {f"dpg_etcd{i + 1}": node_of(params, f"dpg_etcd{i + 1}") for i in range(3)}
    assert sorted(etcd.values()) == ["rbk-n1", "rbk-n2", "rbk-n3"]
    legacy, pooler = node_of(params, "legacy_postgres"), node_of(params, "edge_pgbouncer")
    leader, at = leader_node(params)
    assert at != MANAGER and legacy != MANAGER and pooler != MANAGER, (leader, at, legacy, pooler)
    assert legacy != at and pooler != at
    # the runbooks reach the legacy task on its own node: the exec runs in that node's network namespace
    service = swarm.for_target(params.target.swarm).services.get("legacy_postgres")
    code, out = swarm.exec_in(params.target.swarm, service, ["cat", "/proc/net/fib_trie"])
    assert code == 0 and nodes.Node(3).address in out and nodes.Node(1).address not in out
    # node exporter on every node, each scraped on its node's address
    wanted = {f"{nodes.Node(i).address}:{sb.spec.ports.node_exporter}" for i in (1, 2, 3)}
    wait_until("node exporter up on every node's address", lambda: {
        t["instance"] for t in overview.prometheus_targets(sb) if t["job"] == "node" and t["health"] == "up"} == wanted,
        60)


def test_the_whole_campaign_runs_with_the_leader_off_the_managers_node(on_nodes: tuple[Sandbox, Params],
                                                                        tmp_path: Path) -> None:
    sb, params = on_nodes
    terminal = io.StringIO()
    console = Console(file=terminal, width=240, soft_wrap=True)
    legs: list[str] = []
    after: dict[str, tuple[str, str]] = {}  # leg -> (leader, its node) once the leg ended
    moved_before: list[str] = []
    placed = stacks_leader(sb)

    def leader_off_the_manager(runbook: str) -> None:
        if legs:  # what the previous leg left
            after[legs[-1]] = leader_node(params)
        legs.append(runbook)
        if runbook != "failover_drill" and leader_node(params)[1] == MANAGER:  # the drills move the leader
            health.lead_from(sb, placed, 120)
            moved_before.append(runbook)

    try:
        result = rehearse.rehearse(str(PARAMS), campaign="nodes-rehearsal", outputs_dir=tmp_path,
                                   with_rollback=True, console=console, before_leg=leader_off_the_manager)
        printed = terminal.getvalue()
        keep("nodes-rehearsal.txt", printed)
        assert result.exit_code == 0, printed
        assert all(r.status in ("succeeded", "approved") for r in result.results), printed
        assert [r.leg for r in result.results][-1] == "rollback drill"
        after[legs[-1]] = leader_node(params)
        # from the readiness leg on, each leg ran and ended with the leader off the manager's node: placed there
        # at most once, after the drills, and no leg moved it back
        assert moved_before in ([], ["readiness"]), moved_before
        later = legs[legs.index("readiness"):]
        assert {"readiness", "phase1_pre_migration", "phase2_migration", "phase3_verification", "rollback"} <= \
            set(later), legs
        assert all(after[leg][1] != MANAGER for leg in later), after
        figures = {r.leg: r.figures for r in result.results}
        assert figures["readiness"]["failing items"] == 0
        assert figures["phase 2"]["tables compared"] > 0 and figures["phase 2"]["failed writes"] == 0
        assert figures["rollback drill"]["tables differing"] == 0
        # three nodes, no waiver: INF-01 and INF-03 decided on what they observed, and passed
        readiness = records.latest(tmp_path / "nodes-rehearsal", "readiness")
        assert readiness is not None
        items = {i["id"]: i for i in readiness["data"]["items"]}
        assert [(items[i]["outcome"], items[i]["waiver"]) for i in ("INF-01", "INF-03")] == [("pass", None)] * 2, \
            (items["INF-01"], items["INF-03"])
        # the rollback drill put the application back on legacy, on its node's address
        legacy = params.endpoints.db("legacy")
        assert pgbouncer.backend(params.endpoints.admin(), "app") == (legacy.host, legacy.port)
    finally:
        fallback.to_legacy(migration.route(params), accept_loss=True)
        fallback.clear_new(migration.route(params))


def test_losing_the_leaders_node_loses_no_acknowledged_write(on_nodes: tuple[Sandbox, Params]) -> None:
    sb, params = on_nodes
    health.lead_from(sb, stacks_leader(sb), 120)
    spec, bounds = params.target.patroni, params.drills
    assert spec is not None
    write_endpoint = params.endpoints.db(params.readiness.primary or "dpg-rw")

    with drills.DrillWrites(write_endpoint, bounds.write_database, 0.05, "node-loss") as writes:
        result = drills.node_loss(spec, params.target.swarm, write_endpoint, power_cut, restart,
                                  rejoin_timeout=bounds.rejoin_max)
    judged = drills.verdict(drills.with_writes(result, writes), bounds.rto_max, bounds.rpo_max_rows)
    record = judged.to_dict()
    keep("node-loss-drill.json", json.dumps(record, indent=1))
    print("node-loss drill:", json.dumps(record))
    assert judged.passed, record
    assert judged.writes_lost == 0 and (judged.writes_acknowledged or 0) > 20, record
    assert judged.new_leader not in (None, judged.old_leader) and judged.member_rejoined, record
    lifecycle.wait_healthy(sb, 240)  # every task of the lost node runs again
