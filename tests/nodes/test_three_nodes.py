"""A Swarm of three Docker engines on this machine (`runbook sandbox nodes`): each node a manager on its own
address; a task placed on another node than the manager the runbooks talk to is reached through that
node's engine (target.swarm.node_engines) and serves on that node's address; losing a whole node leaves
the Swarm its quorum, and the node rejoins and runs its task again when its engine is back."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker
import pytest

from runbook_lib.clients import swarm
from runbook_lib.config.params import Params, Swarm, load_params
from runbook_lib.readiness import engine
from runbook_lib.sandbox import nodes
from tests.campaign import decide, wait_until

PORT = 18480


@pytest.fixture(scope="module")
def three(node_swarm: tuple[list[nodes.Node], str]) -> tuple[list[nodes.Node], str]:
    return node_swarm


def on_nodes(present: list[nodes.Node]) -> Params:
    """The sandbox's parameters aimed at the three nodes' Swarm, with production's minimum of nodes and
    without the single-node sandbox's waivers of INF-01 and INF-03."""
    params = load_params("parameters/sandbox.yaml", [f"target.swarm.docker_host={present[0].endpoint}",
                                                     "readiness.min_swarm_nodes=3"])
    kept = [w for w in params.waivers if w.item not in ("INF-01", "INF-03")]
    return params.model_copy(update={"waivers": kept})


def members(lead: docker.DockerClient) -> dict[str, dict]:
    return {m.attrs["Description"]["Hostname"]: m.attrs for m in lead.nodes.list()}


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a configured proxy


def serves(address: str, port: int = PORT) -> bool:
    try:
        with _DIRECT.open(f"http://{address}:{port}/", timeout=3) as reply:
            return reply.status == 200
    except OSError:
        return False


@contextmanager
def probing(image: str, on: nodes.Node, name: str, manager: nodes.Node) -> Iterator[tuple[docker.DockerClient, Any]]:
    """A small HTTP server pinned to node `on` (host networking, on its own address), made through the
    `manager` node's engine and serving before the caller goes on; removed afterwards."""
    with manager.client() as lead:
        for old in lead.services.list(filters={"name": name}):
            old.remove()
        service = lead.services.create(
            image, ["python3", "-m", "http.server", "--bind", on.address, str(PORT)], name=name,
            networks=["host"], constraints=[f"node.labels.{nodes.LABEL}=={on.name}"])
        try:
            wait_until(f"the probe to serve on {on.name} ({on.address})", lambda: serves(on.address), 90,
                       interval=0.5)
            yield lead, service
        finally:
            service.remove()
            # the next probe on this node must not be answered by this one while it stops
            wait_until(f"the probe on {on.name} to stop", lambda: not serves(on.address), 60, interval=0.5)


def test_each_node_is_a_manager_on_its_own_address(three):  # noqa: ANN001
    present, _ = three
    with present[0].client() as lead:
        seen = members(lead)
    assert sorted(seen) == [n.name for n in present]
    for node in present:
        assert seen[node.name]["Status"]["State"] == "ready"
        assert seen[node.name]["ManagerStatus"]["Addr"] == f"{node.address}:2377"
        assert seen[node.name]["Spec"]["Labels"][nodes.LABEL] == node.name


def test_inf01_and_inf03_pass_on_three_nodes_without_a_waiver(three):  # noqa: ANN001
    present, _ = three
    results = {r.id: r for r in engine.run(on_nodes(present), only=["INF-01", "INF-03"])}
    assert {i: r.outcome for i, r in results.items()} == {"INF-01": "pass", "INF-03": "pass"}
    assert sorted(results["INF-01"].observed) == [n.name for n in present]  # every node's engine version
    assert results["INF-03"].observed["ready_active_nodes"] == 3
    assert results["INF-03"].observed["reachable_managers"] == 3


def test_a_task_on_another_node_is_reached_through_its_engine(three):  # noqa: ANN001
    present, image = three
    first, third = present[0], present[2]
    with probing(image, third, "rbk-probe-third", manager=first) as (_, service):
        manager_only = Swarm(docker_host=first.endpoint)
        with pytest.raises(LookupError, match=f"node {third.name}.*node_engines.{third.name}"):
            swarm.running_container(manager_only, service)
        spec = Swarm(docker_host=first.endpoint, node_engines=nodes.engines(present))
        code, out = swarm.exec_in(spec, service, ["cat", "/proc/net/fib_trie"])
        assert code == 0
        assert third.address in out and first.address not in out  # inside the third node's namespace


@pytest.mark.parametrize("loss", ["engine stopped", "power cut"])
def test_a_lost_node_leaves_a_quorum_and_rejoins(three, loss: str):  # noqa: ANN001
    present, image = three
    first, second = present[0], present[1]
    with probing(image, second, "rbk-probe-second", manager=first) as (lead, service):
        try:
            if loss == "power cut":
                assert nodes.power_off(second) >= 3  # its dockerd, containerd and the probe at least
            else:
                nodes.stop_engine(second)
            assert not serves(second.address)
            down_s = wait_until(f"the Swarm to see {second.name} down",
                                lambda: members(lead)[second.name]["Status"]["State"] == "down", 90, interval=0.5)
            assert lead.services.get(service.id).name == "rbk-probe-second"  # two managers of three decide
            assert decide(on_nodes(present), "INF-03") == {"INF-03": "fail"}  # 2 ready nodes < 3
            nodes.start_engine(second)
            back_s = wait_until(f"{second.name} to rejoin",
                                lambda: members(lead)[second.name]["Status"]["State"] == "ready", 90, interval=0.5)
            serving_s = wait_until(f"the probe to serve again on {second.name}", lambda: serves(second.address), 90,
                                   interval=0.5)
            assert decide(on_nodes(present), "INF-03") == {"INF-03": "pass"}
            print(f"node loss ({loss}): seen down after {down_s:.1f}s; after restart ready in {back_s:.1f}s, "
                  f"its task serving {serving_s:.1f}s later")
        finally:
            nodes.start_engine(second)
