"""Docker Swarm through the docker SDK: nodes, services, tasks, and commands inside a task."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import docker
import docker.errors
from docker.models.services import Service

from runbook_lib.config.params import Swarm


@lru_cache(maxsize=4)
def client(docker_host: str | None = None) -> docker.DockerClient:
    if docker_host:
        # ssh://: through the host's own ssh client (the operator's ssh config, agent and known hosts)
        return docker.DockerClient(base_url=docker_host, version="auto", timeout=30,
                                   use_ssh_client=docker_host.startswith("ssh://"))
    return docker.from_env(version="auto", timeout=30)


def for_target(spec: Swarm | None) -> docker.DockerClient:
    return client(spec.docker_host if spec else None)


def stack_services(spec: Swarm | None) -> list[Service]:
    """Services of the target's stacks (all services when no stacks are named)."""
    services = for_target(spec).services.list()
    stacks = set(spec.stacks) if spec and spec.stacks else None
    if stacks is None:
        return services
    return [s for s in services if s.attrs["Spec"].get("Labels", {}).get("com.docker.stack.namespace") in stacks]


def scale(spec: Swarm | None, name: str, replicas: int, attempts: int = 5) -> None:
    """Set a service's replicas; Swarm rejects an update built on a stale version, so re-read and retry."""
    for attempt in range(attempts):
        service = for_target(spec).services.get(name)
        try:
            service.scale(replicas)
            return
        except docker.errors.APIError as exc:
            if "out of sequence" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.5)


def running_tasks(service: Service) -> list[dict[str, Any]]:
    """The service's tasks that are running now (and meant to)."""
    return [task for task in service.tasks(filters={"desired-state": "running"})
            if task.get("Status", {}).get("State") == "running"]


def engine_endpoint(node_id: str, hostname: str, own_node: str | None, engines: Mapping[str, str]) -> str | None:
    """The engine that runs a node's containers: its entry in node_engines (by ID, then hostname), else None
    for the connected engine when the node is its own (or it is in no swarm). Why: a manager lists every
    task, but only the engine of the node that runs one can exec in it."""
    endpoint = engines.get(node_id) or engines.get(hostname)
    if endpoint:
        return endpoint
    if not own_node or own_node == node_id:
        return None
    raise LookupError(f"the task runs on node {hostname} ({node_id}), not on the engine the runbooks talk to: set "
                      f"target.swarm.node_engines.{hostname} to that node's Docker engine (ssh://user@{hostname})")


def node_engine(spec: Swarm | None, node_id: str) -> docker.DockerClient:
    """A Docker client for the engine of the node that runs a task (see engine_endpoint)."""
    manager = for_target(spec)
    engines = spec.node_engines if spec else {}
    # asked at each call, not cached: a swarm initialised again (the sandbox's engine) gets a new node ID
    own = manager.info().get("Swarm", {}).get("NodeID") or None
    if not engines and own in (None, node_id):
        return manager
    hostname = manager.nodes.get(node_id).attrs["Description"]["Hostname"] if own and node_id else node_id
    endpoint = engine_endpoint(node_id, hostname, own, engines)
    return client(endpoint) if endpoint else manager


def node_of(spec: Swarm | None, service_name: str) -> str:
    """The hostname of the node that runs the service's task (a node-level drill loses that node)."""
    manager = for_target(spec)
    for task in running_tasks(manager.services.get(service_name)):
        return str(manager.nodes.get(task["NodeID"]).attrs["Description"]["Hostname"])
    raise LookupError(f"service {service_name} has no running task")


def running_container(spec: Swarm | None, service: Service) -> Any:
    """The container of a running task of the service, through the engine of the node that runs it."""
    for task in running_tasks(service):
        container_id = task.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
        if container_id:
            return node_engine(spec, task.get("NodeID", "")).containers.get(container_id)
    raise LookupError(f"service {service.name} has no running task")


def exec_in(spec: Swarm | None, service: Service, cmd: list[str], user: str = "") -> tuple[int, str]:
    container = running_container(spec, service)
    result = container.exec_run(cmd, user=user, demux=False)
    return result.exit_code, (result.output or b"").decode(errors="replace")
