"""Which Docker engine reaches a task: the node's own (target.swarm.node_engines), never assumed to be the
manager's, and a task on a node without an entry is an error naming the parameter to set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runbook_lib.clients.swarm import engine_endpoint
from runbook_lib.config.params import ParamsError, load_params

ENGINES = {"db-2": "ssh://ops@db-2.internal", "n3id": "tcp://10.0.0.3:2376"}


@pytest.mark.parametrize(("node_id", "hostname", "own", "expected"), [
    ("n1id", "db-1", "n1id", None),  # the connected engine's own node: itself
    ("n1id", "db-1", None, None),  # an engine in no swarm
    ("n2id", "db-2", "n1id", "ssh://ops@db-2.internal"),  # by hostname
    ("n3id", "db-3", "n1id", "tcp://10.0.0.3:2376"),  # by node ID
    ("n2id", "db-2", "n2id", "ssh://ops@db-2.internal"),  # an entry wins even for the connected node
])
def test_a_task_is_reached_through_the_engine_of_its_node(node_id: str, hostname: str, own: str | None,
                                                          expected: str | None) -> None:
    assert engine_endpoint(node_id, hostname, own, ENGINES) == expected


def test_a_task_on_another_node_without_an_entry_names_the_parameter() -> None:
    with pytest.raises(LookupError, match=r"node db-4 \(n4id\).*target\.swarm\.node_engines\.db-4"):
        engine_endpoint("n4id", "db-4", "n1id", ENGINES)


@pytest.mark.parametrize(("endpoint", "message"), [
    ("db-2.internal", "db-2: 'db-2.internal' is not a Docker engine endpoint"),
    ("ssh://ops:hunter2@db-2.internal", "carries a literal password"),
])
def test_a_bad_engine_endpoint_is_refused_naming_the_node(tmp_path: Path, endpoint: str, message: str) -> None:
    data = {"campaign": "c1", "target": {"name": "t1", "environment": "sandbox", "swarm": {
        "node_engines": {"db-2": endpoint}}, "databases": {
        "main": {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": "env:PGPW"}}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match="node_engines") as info:
        load_params(path)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)
