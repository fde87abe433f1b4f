"""A JSON snapshot of the Swarm state of the target's stacks, so the infrastructure can be put back.

Service specs (with their versions), networks, config names and secret names, never the
data of a secret or a config: configs are recorded by name, labels and a hash of their data.
"""

from __future__ import annotations

import hashlib
from typing import Any

from runbook_lib.clients import swarm
from runbook_lib.config.params import Swarm


def take(spec: Swarm | None) -> dict[str, Any]:
    client = swarm.for_target(spec)
    services = swarm.stack_services(spec)
    stacks = set(spec.stacks) if spec and spec.stacks else None

    refs = {kind: {r.get(f"{kind}Name") for s in services
                   for r in s.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get(f"{kind}s", [])}
            for kind in ("Secret", "Config")}

    def in_stacks(labels: dict[str, str] | None) -> bool:
        return stacks is None or (labels or {}).get("com.docker.stack.namespace") in stacks

    configs = []
    for config in client.configs.list():
        if in_stacks(config.attrs["Spec"].get("Labels")) or config.name in refs["Config"]:
            data = config.attrs["Spec"].get("Data", "")
            configs.append({"name": config.name, "id": config.id, "labels": config.attrs["Spec"].get("Labels", {}),
                            "data_sha256": hashlib.sha256(str(data).encode()).hexdigest()})
    secrets = [{"name": s.name, "id": s.id, "labels": s.attrs["Spec"].get("Labels", {}),
                "created": s.attrs.get("CreatedAt")}
               for s in client.secrets.list() if in_stacks(s.attrs["Spec"].get("Labels")) or s.name in refs["Secret"]]
    networks = [{"name": n.name, "driver": n.attrs.get("Driver"), "scope": n.attrs.get("Scope"),
                 "labels": n.attrs.get("Labels") or {}} for n in client.networks.list()
                if in_stacks(n.attrs.get("Labels")) or n.name in {"host", "ingress"}]
    return {
        "engine": client.version().get("Version"),
        "swarm": client.info().get("Swarm", {}).get("Cluster", {}).get("ID"),
        "services": [{"name": s.name, "id": s.id, "version": s.attrs["Version"]["Index"], "spec": _strip(s.attrs["Spec"])}
                     for s in services],
        "networks": networks, "configs": configs, "secrets": secrets,
    }


def _strip(spec: dict[str, Any]) -> dict[str, Any]:
    """A service spec as deployable JSON; secret and config references keep names only (no data exists there)."""
    container = spec.get("TaskTemplate", {}).get("ContainerSpec", {})
    for ref in container.get("Secrets", []) + container.get("Configs", []):
        ref.pop("Data", None)
    return spec
