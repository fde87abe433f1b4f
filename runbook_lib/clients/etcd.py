"""etcd's v3 JSON gateway: members, health and the leader."""

from __future__ import annotations

from typing import Any

from runbook_lib.clients import http
from runbook_lib.config.params import Etcd


def member_list(spec: Etcd) -> dict[str, Any]:
    return http.first_answer([e.rstrip("/") for e in spec.endpoints], "etcd member/list",
                             lambda url: http.post(f"{url}/v3/cluster/member/list"))


def auth_status(spec: Etcd) -> dict[str, Any]:
    """Whether auth is on (see auth_status_at), from the first endpoint that answers."""
    return http.first_answer([e.rstrip("/") for e in spec.endpoints], "etcd auth/status", auth_status_at)


def auth_status_at(url: str) -> dict[str, Any]:
    """Whether auth is on, asked with the client certificate and no login, so it answers whatever the passwords
    are, and only with a quorum (a raft request). With auth on, etcd refuses the question itself for want of a user
    after applying it: that refusal is the answer "on". With auth off, the JSON leaves "enabled" out (false)."""
    reply = http.call("POST", f"{url.rstrip('/')}/v3/auth/status", json_body={}, login=False, expect_json=False,
                      ok_codes=(200, 400))
    if reply.status_code == 200:
        return {"enabled": False, **reply.json()}
    if "user name is empty" in reply.text:
        return {"enabled": True}
    raise http.HttpError(f"POST {url}/v3/auth/status: HTTP 400 {reply.text[:200]}")


def endpoint_status(endpoint: str) -> dict[str, Any]:
    """Health and the leader as this endpoint sees them."""
    health = http.get(f"{endpoint.rstrip('/')}/health", ok_codes=(200, 503))
    status = http.post(f"{endpoint.rstrip('/')}/v3/maintenance/status")
    return {"endpoint": endpoint, "healthy": str(health.get("health")).lower() == "true",
            "member_id": status.get("header", {}).get("member_id"), "leader": status.get("leader")}
