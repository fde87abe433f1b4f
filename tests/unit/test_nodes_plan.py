"""The plan of a multi-node sandbox: names, addresses and engine sockets per node; a bad count is refused
before anything is created."""

from __future__ import annotations

import pytest

from runbook_lib.sandbox import nodes
from runbook_lib.sandbox.context import SandboxError


def test_three_nodes_each_with_its_own_address_and_engine() -> None:
    planned = nodes.plan(3)
    assert [n.name for n in planned] == ["rbk-n1", "rbk-n2", "rbk-n3"]
    assert len({n.address for n in planned}) == 3
    assert all(n.address.startswith(f"{nodes.PREFIX}.") and n.address != f"{nodes.PREFIX}.1" for n in planned)
    assert nodes.engines(planned) == {n.name: f"unix://{nodes.RUN_ROOT}/{n.name}/docker.sock" for n in planned}
    assert len({n.data_root for n in planned}) == 3


@pytest.mark.parametrize("count", [0, 1, nodes.MAX_NODES + 1])
def test_a_count_out_of_range_is_refused_naming_the_option(count: int) -> None:
    with pytest.raises(SandboxError, match=rf"--nodes must be between 2 and {nodes.MAX_NODES}.*got {count}"):
        nodes.plan(count)
