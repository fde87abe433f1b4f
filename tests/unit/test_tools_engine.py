"""The tools' containers (pg_dump, pg_basebackup, the restore test) bind the operator's folders, so they run on
the operator's own engine, never on the Swarm's manager; an engine elsewhere is refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runbook_lib.clients import swarm
from runbook_lib.config.params import ParamsError, load_params
from runbook_lib.ops import tools


def params_file(tmp_path: Path, tools_section: dict, manager: str = "ssh://ops@manager-1.internal") -> Path:
    data = {"campaign": "c1", "target": {"name": "t1", "environment": "sandbox", "swarm": {"docker_host": manager},
                                         "databases": {"main": {"host": "127.0.0.1", "port": 5432, "user": "postgres",
                                                                "password": "env:PGPW"}}},
            "tools": tools_section}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("section", "manager", "engine"), [
    ({"mode": "image", "image": "pg:17"}, "ssh://ops@manager-1.internal", None),  # DOCKER_HOST or the socket
    ({"mode": "image", "image": "pg:17", "docker_host": "unix:///run/docker.sock"}, "ssh://ops@manager-1.internal",
     "unix:///run/docker.sock"),
    ({"mode": "image", "image": "pg:17"}, "unix:///run/sandbox.sock", "unix:///run/sandbox.sock"),  # a local Swarm
])
def test_the_tools_run_on_the_operators_engine_not_the_managers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                section: dict, manager: str,
                                                                engine: str | None) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    asked: list[str | None] = []
    monkeypatch.setattr(swarm, "client", lambda host=None: asked.append(host) or object())
    chosen = tools.for_params(load_params(params_file(tmp_path, section, manager)))
    chosen.docker  # noqa: B018 - the engine is reached on first use
    assert asked == [engine]


def test_a_remote_docker_host_in_the_environment_is_refused_when_the_tools_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "ssh://ops@manager-1.internal")
    chosen = tools.for_params(load_params(params_file(tmp_path, {"mode": "image", "image": "pg:17"})))
    with pytest.raises(tools.ToolError, match=r"not on this host \(DOCKER_HOST\).*tools\.docker_host"):
        chosen.docker  # noqa: B018


@pytest.mark.parametrize("endpoint", ["ssh://ops@manager-1.internal", "tcp://manager-1.internal:2376",
                                      "tcp://ops:hunter2@manager-1.internal:2376"])
def test_a_remote_engine_for_the_tools_is_refused_naming_the_field(tmp_path: Path, endpoint: str) -> None:
    with pytest.raises(ParamsError, match=r"tools\.docker_host") as info:
        load_params(params_file(tmp_path, {"mode": "image", "docker_host": endpoint}))
    assert "not an engine on this host" in str(info.value) or "literal password" in str(info.value)
    assert "hunter2" not in str(info.value)
