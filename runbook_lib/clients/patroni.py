"""Patroni's REST API: cluster membership, roles, lag, and the leader."""

from __future__ import annotations

from typing import Any

from runbook_lib.clients import http
from runbook_lib.config.params import Patroni


def cluster(spec: Patroni) -> dict[str, Any]:
    """GET /cluster from the first member that answers."""
    return http.first_answer([m.api_url.rstrip("/") for m in spec.members], "Patroni /cluster",
                             lambda url: http.get(f"{url}/cluster"))


def members(spec: Patroni) -> list[dict[str, Any]]:
    return cluster(spec).get("members", [])


def leader(spec: Patroni) -> str | None:
    return next((m["name"] for m in members(spec) if m.get("role") in ("leader", "standby_leader")), None)


SYNC_ROLES = ("sync_standby", "quorum_standby")


def switchover_candidates(members: list[dict[str, Any]], synchronous_mode: object = False) -> list[str]:
    """The streaming replicas Patroni accepts to take over (a switchover's candidate, a failover's winner):
    with synchronous_mode on only a designated synchronous standby (any other: HTTP 412 on a switchover, and
    no promotion on a failover), else every streaming replica."""
    streaming = [m for m in members if m.get("role") not in ("leader", "standby_leader")
                 and m.get("state") == "streaming"]
    if synchronous_mode:
        streaming = [m for m in streaming if m.get("role") in SYNC_ROLES]
    return [str(m["name"]) for m in streaming]


def candidates(spec: Patroni) -> list[str]:
    """switchover_candidates of the cluster as it is now. A new leader names its synchronous standbys a loop
    or two after it leads: a leader lost before that leaves the cluster with no leader until it returns."""
    return switchover_candidates(members(spec), config(spec).get("synchronous_mode"))


def promotable(spec: Patroni) -> bool:
    """Whether a replica could take over now (see candidates)."""
    return bool(candidates(spec))


def is_primary(api_url: str) -> bool:
    """GET /primary answers 200 only on the leader (what HAProxy's health check asks)."""
    return http.status(f"{api_url.rstrip('/')}/primary") == 200


def config(spec: Patroni) -> dict[str, Any]:
    """GET /config (the cluster's dynamic configuration) from the first member that answers."""
    return http.first_answer([m.api_url.rstrip("/") for m in spec.members], "Patroni /config",
                             lambda url: http.get(f"{url}/config"))


def patch_config(spec: Patroni, change: dict[str, Any]) -> dict[str, Any]:
    """PATCH /config on the leader's API: a dynamic configuration change for the whole cluster."""
    name = leader(spec)
    api = next((m.api_url for m in spec.members if m.name == name), spec.members[0].api_url)
    return http.call("PATCH", f"{api.rstrip('/')}/config", json_body=change)
