"""etcd's v3 JSON gateway: members, health and the leader."""

from __future__ import annotations

from typing import Any

from runbook_lib.clients import http
from runbook_lib.params import Etcd


def member_list(spec: Etcd) -> dict[str, Any]:
    errors = []
    for endpoint in spec.endpoints:
        try:
            return http.post(f"{endpoint.rstrip('/')}/v3/cluster/member/list")
        except http.HttpError as exc:
            errors.append(str(exc))
    raise http.HttpError("no etcd endpoint answered member/list: " + "; ".join(errors))


def endpoint_status(endpoint: str) -> dict[str, Any]:
    """Health and the leader as this endpoint sees them."""
    health = http.get(f"{endpoint.rstrip('/')}/health", ok_codes=(200, 503))
    status = http.post(f"{endpoint.rstrip('/')}/v3/maintenance/status")
    return {"endpoint": endpoint, "healthy": str(health.get("health")).lower() == "true",
            "member_id": status.get("header", {}).get("member_id"), "leader": status.get("leader")}
