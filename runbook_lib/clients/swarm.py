"""Docker Swarm through the docker SDK: nodes, services, tasks, and commands inside a task."""

from __future__ import annotations

import time
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


def running_container(spec: Swarm | None, service: Service) -> Any:
    """The container of a running task of the service (single-node sandbox, or a task on this node)."""
    for task in running_tasks(service):
        container_id = task.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
        if container_id:
            return for_target(spec).containers.get(container_id)
    raise LookupError(f"service {service.name} has no running task on this node")


def exec_in(spec: Swarm | None, service: Service, cmd: list[str], user: str = "") -> tuple[int, str]:
    container = running_container(spec, service)
    result = container.exec_run(cmd, user=user, demux=False)
    return result.exit_code, (result.output or b"").decode(errors="replace")
