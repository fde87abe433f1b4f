"""The tools' containers (pg_dump, pg_basebackup, the restore test) bind the operator's folders, so they run on
the operator's own engine, never on the Swarm's manager; an engine elsewhere is refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runbook_lib.clients import swarm
from runbook_lib.config.params import ParamsError, load_params
from runbook_lib.ops import tools


def params_file(tmp_path: Path, tools_section: dict) -> Path:
    data = {"campaign": "c1", "target": {"name": "t1", "environment": "sandbox",
                                         "swarm": {"docker_host": "ssh://ops@manager-1.internal"},
                                         "databases": {"main": {"host": "127.0.0.1", "port": 5432, "user": "postgres",
                                                                "password": "env:PGPW"}}},
            "tools": tools_section}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("section", "engine"), [
    ({"mode": "image", "image": "pg:17"}, None),  # DOCKER_HOST or the local socket
    ({"mode": "image", "image": "pg:17", "docker_host": "unix:///run/docker.sock"}, "unix:///run/docker.sock"),
])
def test_the_tools_run_on_the_operators_engine_not_the_managers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                section: dict, engine: str | None) -> None:
    asked: list[str | None] = []
    monkeypatch.setattr(swarm, "client", lambda host=None: asked.append(host) or object())
    chosen = tools.for_params(load_params(params_file(tmp_path, section)))
    chosen.docker  # noqa: B018 - the engine is reached on first use
    assert asked == [engine]


@pytest.mark.parametrize("endpoint", ["ssh://ops@manager-1.internal", "tcp://manager-1.internal:2376"])
def test_a_remote_engine_for_the_tools_is_refused_naming_the_field(tmp_path: Path, endpoint: str) -> None:
    with pytest.raises(ParamsError, match=r"tools\.docker_host") as info:
        load_params(params_file(tmp_path, {"mode": "image", "docker_host": endpoint}))
    assert "not an engine on this host" in str(info.value)
