"""Where each sandbox service runs on several nodes, and the derived parameters of that sandbox: one member per
node, legacy and PgBouncer away from the manager and from the placed leader, every endpoint on its node's
address; one engine stays on 127.0.0.1. The committed parameters/sandbox-nodes.yaml is what sandbox.yaml
derives to."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_lib.config.params import ParamsError, load_params
from runbook_lib.config.sandbox_spec import SandboxPorts
from runbook_lib.sandbox import lifecycle, nodes, nodes_params, pgconf, placement
from runbook_lib.sandbox.context import Sandbox, SandboxError

ROOT = Path(__file__).resolve().parents[2]
PORTS = SandboxPorts()


def test_one_engine_keeps_everything_on_loopback() -> None:
    one = placement.Layout(1)
    assert not one.multi and one.listen == "127.0.0.1" and one.operator == "127.0.0.1"
    assert one.node("legacy") is None and one.constraint("member:0") is None and one.addresses() == []
    assert {one.host_for_port(PORTS, p) for p in PORTS.all_ports(2).values()} == {"127.0.0.1"}
    assert one.network() is None


def test_three_nodes_one_member_each_and_the_manager_runs_neither_legacy_nor_pgbouncer() -> None:
    three = placement.Layout(3)
    members = [three.node(f"member:{i}") for i in range(3)]
    assert [n.name for n in members if n] == ["rbk-n1", "rbk-n2", "rbk-n3"]
    manager, leader = nodes.Node(1), members[placement.LEADER_MEMBER]
    assert leader is not None and leader != manager
    for service in ("legacy", "pgbouncer"):
        assert three.node(service) not in (manager, leader), service
    assert three.constraint("legacy") == f"node.labels.{nodes.LABEL} == rbk-n3"
    assert three.listen == "0.0.0.0" and three.operator == nodes.BRIDGE_ADDRESS
    assert three.addresses() == [nodes.Node(i).address for i in (1, 2, 3)]


def test_each_port_is_served_on_its_services_node() -> None:
    three = placement.Layout(3)
    assert three.host_for_port(PORTS, PORTS.legacy) == nodes.Node(3).address
    assert [three.host_for_port(PORTS, p) for p in PORTS.pg] == [nodes.Node(i).address for i in (1, 2, 3)]
    assert three.host_for_port(PORTS, PORTS.etcd_client[1]) == nodes.Node(2).address
    assert three.host_for_port(PORTS, PORTS.haproxy_rw) == three.host("haproxy")
    assert three.host_for_port(PORTS, PORTS.app_metrics_base + 2) == three.host("app")
    with pytest.raises(KeyError, match="port 1 is not one of sandbox.ports"):
        three.host_for_port(PORTS, 1)


def test_pg_hba_lets_the_nodes_network_in_only_on_several_nodes() -> None:
    assert not any("10.213.7.0/24" in line for line in pgconf.hba_lines("app", "app"))
    lines = pgconf.hba_lines("app", "app", placement.Layout(3).network())
    assert "hostssl app app 10.213.7.0/24 scram-sha-256" in lines
    assert "hostssl app app 127.0.0.1/32 scram-sha-256" in lines
    assert all(line.startswith(("local ", "hostssl ")) for line in lines)  # TLS only over the network


def test_the_committed_nodes_parameters_are_derived_from_sandbox_yaml() -> None:
    source = load_params(ROOT / nodes_params.SOURCE)
    assert source.sandbox is not None
    derived = nodes_params.render((ROOT / nodes_params.SOURCE).read_text(), source.sandbox.ports)
    assert (ROOT / nodes_params.TARGET).read_text() == derived, \
        "parameters/sandbox-nodes.yaml is stale: run `runbook sandbox nodes params`"


def test_the_nodes_parameters_aim_at_the_nodes_without_the_single_node_waiver() -> None:
    params = load_params(ROOT / nodes_params.TARGET)
    assert params.sandbox is not None and params.sandbox.nodes == 3 and params.sandbox.synchronous_mode
    assert params.target.swarm is not None
    assert params.target.swarm.docker_host == nodes.Node(1).endpoint
    assert params.target.swarm.node_engines == nodes.engines(nodes.plan(3))
    assert "INF-03" not in {w.item for w in params.waivers}
    assert params.endpoints.db("legacy").host == nodes.Node(3).address
    assert params.target.patroni is not None
    assert [m.api_url for m in params.target.patroni.members] == [
        f"https://{nodes.Node(i + 1).address}:{PORTS.patroni_api[i]}" for i in range(3)]
    assert params.sandbox.state_dir != load_params(ROOT / nodes_params.SOURCE).sandbox.state_dir  # type: ignore[union-attr]


def test_fewer_than_three_nodes_is_refused() -> None:
    with pytest.raises(SandboxError, match="3 managers or more"):
        nodes_params.render((ROOT / nodes_params.SOURCE).read_text(), PORTS, 2)


def test_a_sandbox_yaml_of_another_shape_is_refused_naming_the_line() -> None:
    text = (ROOT / nodes_params.SOURCE).read_text().replace("synchronous_mode: false", "synchronous_mode: no")
    with pytest.raises(SandboxError, match="synchronous_mode"):
        nodes_params.render(text, PORTS)


def test_two_nodes_are_refused_naming_the_field() -> None:
    with pytest.raises(ParamsError, match="sandbox.nodes: 1 .* or 3 and more"):
        load_params(ROOT / nodes_params.SOURCE, ["sandbox.nodes=2"])


def test_nodes_without_the_managers_engine_are_refused_before_anything() -> None:
    params = load_params(ROOT / nodes_params.SOURCE, ["sandbox.nodes=3"])
    assert params.sandbox is not None
    with pytest.raises(SandboxError, match="target.swarm.docker_host must be the first node's engine"):
        lifecycle.check_nodes_params(Sandbox(params=params, spec=params.sandbox))
    aimed = load_params(ROOT / nodes_params.SOURCE, ["sandbox.nodes=3",
                                                     f"target.swarm.docker_host={nodes.Node(1).endpoint}"])
    assert aimed.sandbox is not None
    with pytest.raises(SandboxError, match="node_engines lacks rbk-n1, rbk-n2, rbk-n3"):
        lifecycle.check_nodes_params(Sandbox(params=aimed, spec=aimed.sandbox))
