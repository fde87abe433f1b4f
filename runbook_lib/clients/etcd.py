"""etcd's v3 JSON gateway: members, health and the leader."""

from __future__ import annotations

from typing import Any

from runbook_lib.clients import http
from runbook_lib.config.params import Etcd


def member_list(spec: Etcd) -> dict[str, Any]:
    return http.first_answer([e.rstrip("/") for e in spec.endpoints], "etcd member/list",
                             lambda url: http.post(f"{url}/v3/cluster/member/list"))


def endpoint_status(endpoint: str) -> dict[str, Any]:
    """Health and the leader as this endpoint sees them."""
    health = http.get(f"{endpoint.rstrip('/')}/health", ok_codes=(200, 503))
    status = http.post(f"{endpoint.rstrip('/')}/v3/maintenance/status")
    return {"endpoint": endpoint, "healthy": str(health.get("health")).lower() == "true",
            "member_id": status.get("header", {}).get("member_id"), "leader": status.get("leader")}
