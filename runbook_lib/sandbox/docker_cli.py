"""Thin wrapper over the docker CLI: the CLI negotiates the API version with old engines (20.10)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from runbook_lib.sandbox.context import SandboxError

_ENV: dict[str, str] | None = None
_ENGINES: dict[str, str] = {}  # node hostname -> its engine (DOCKER_HOST), for a task on another node


def set_env(env: dict[str, str], engines: dict[str, str] | None = None) -> None:
    """Use this environment (DOCKER_HOST) for every later call, and these nodes' engines for tasks' containers."""
    global _ENV, _ENGINES
    _ENV = env
    _ENGINES = dict(engines or {})


def run(*args: str, check: bool = True, input: str | None = None, timeout: float = 300,
        host: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `docker ARGS` (on engine `host` if given); on failure raise SandboxError with the command and its
    stderr."""
    env = {**(_ENV if _ENV is not None else os.environ), "DOCKER_HOST": host} if host else _ENV
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, env=env,
                              input=input, timeout=timeout)
    except FileNotFoundError:
        raise SandboxError("the docker CLI is not installed; install docker.io (apt-get install -y docker.io)") from None
    if check and proc.returncode != 0:
        raise SandboxError(f"docker {' '.join(args[:3])} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def lines(*args: str, host: str | None = None) -> list[str]:
    return [line for line in run(*args, host=host).stdout.splitlines() if line.strip()]


def json_lines(*args: str, host: str | None = None) -> list[dict[str, Any]]:
    """Output of `docker ... --format '{{json .}}'` as dicts."""
    return _parsed(run(*args, "--format", "{{json .}}", host=host).stdout)


def _parsed(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def all_engines() -> list[str | None]:
    """Every node's engine (the manager's among them), or the connected engine (None) on one: what lists
    containers or volumes must ask each."""
    return list(dict.fromkeys(_ENGINES.values())) or [None]


def json_lines_everywhere(*args: str) -> list[dict[str, Any]]:
    """`json_lines` from every engine that answers: an engine that is down (a node lost) runs no container."""
    rows: list[dict[str, Any]] = []
    for engine in all_engines():
        proc = run(*args, "--format", "{{json .}}", host=engine, check=False)
        if proc.returncode == 0:
            rows += _parsed(proc.stdout)
    return rows


def task_container(service: str) -> tuple[str, str | None]:
    """(container ID, engine) of the service's running task, on whichever node runs it: the manager names the
    node, and that node's engine (node_engines) has the container. Never assumes the manager runs it."""
    nodes = lines("service", "ps", service, "--filter", "desired-state=running", "--format", "{{.Node}}")
    engine = next((_ENGINES[n] for n in nodes if n in _ENGINES), None)
    ids = lines("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}", host=engine)
    if not ids:
        where = f"node {nodes[0]}" if nodes else "any node"
        raise SandboxError(f"no running container of {service} on {where}"
                           + ("" if engine or not nodes or not _ENGINES else
                              f"; target.swarm.node_engines has no engine for {nodes[0]}"))
    return ids[0], engine


def inspect(kind: str, *names: str) -> list[dict[str, Any]]:
    if not names:
        return []
    args = ("inspect", "--type", kind) if kind == "task" else (kind, "inspect")
    proc = run(*args, *names, check=False)
    if proc.returncode != 0 and not proc.stdout.strip():
        return []
    return json.loads(proc.stdout or "[]")
