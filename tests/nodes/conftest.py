"""One Swarm of three nodes on this machine for every test here (bringing it up costs the image's copy into
three engines): up before the first test that asks for it, purged after the last one, even when bringing it
up failed."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from runbook_lib.sandbox import build, docker_cli, lifecycle, nodes
from runbook_lib.sandbox.context import load

COUNT = 3


@pytest.fixture(scope="package")
def node_swarm() -> Iterator[tuple[list[nodes.Node], str]]:
    sb = load()
    lifecycle.build(sb)  # the engine that builds and holds the image the nodes load
    image = build.tag(sb)
    try:
        nodes.up(COUNT, image, source_env=sb.host_env())
        yield nodes.plan(COUNT), image
    finally:
        docker_cli.set_env(sb.docker_env())  # later packages' docker calls go to this machine's engine again
        if os.environ.get("RUNBOOK_KEEP_SANDBOX") != "1":
            nodes.down(purge=True)
