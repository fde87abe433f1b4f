"""The `readiness:` section of a parameters file: the figures the 77 checks compare against.

Defaults are the checklist's own (production) figures; a target states what differs
(the sandbox's node memory, its smaller connection floor, ...). Pure pydantic.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field

from runbook_lib.config.policy import parse_duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class VectorExtension(_Strict):
    accepted: list[str] = Field(default_factory=lambda: ["ruvector"], description="extension names accepted")
    min_version: dict[str, str] = Field(default_factory=lambda: {"ruvector": "2.0.0", "vector": "0.8.0"})
    hnsw_methods: list[str] = Field(default_factory=lambda: ["hnsw", "ruhnsw", "ruvector_hnsw"])
    types: list[str] = Field(default_factory=lambda: ["vector", "ruvector", "halfvec"])


class Contact(_Strict):
    primary: str
    backup: str
    oncall_route: str


class Network(_Strict):
    name: str
    driver: str
    probe_from: str = Field(description="service whose task opens the probe connection")
    probe_to: str = Field(description="host:port of another service, reached from probe_from")


class ReadinessSettings(_Strict):
    concurrency: int = Field(8, ge=1, le=32)
    item_timeout_s: float = Field(30, gt=0)
    app_database: str | None = Field(None, description="database endpoint holding the application schema")
    primary: str | None = Field(None, description="database endpoint of the new cluster's leader (write endpoint)")
    replica_endpoint: str | None = Field(None, description="database endpoint of the read-only port")
    min_swarm_nodes: int = Field(3, ge=1)
    database_services: list[str] = Field(default_factory=list, description="Swarm services running PostgreSQL")
    network: Network | None = None
    cert_min_days: int = 30
    dns: dict[str, str] = Field(default_factory=dict, description="name -> expected address")
    clock_offset_max_ms: float = 100
    swappiness_max: int = 10
    somaxconn_min: int = 65535
    nofile_min: int = 65536
    backup_location: str | None = None
    backup_space_multiple: float = 3.0
    vector: VectorExtension = Field(default_factory=VectorExtension)
    node_memory: str | None = Field(None, description="memory of a database node, e.g. 64GB (DB-03)")
    allowed_cidrs: list[str] = Field(default_factory=list)
    admin_cidrs: list[str] = Field(default_factory=list, description="where a superuser may connect from")
    wal_retention_limit_mb: int = 1024
    archive_max_age_s: int = 120
    autovacuum_large_table_rows: int = 1_000_000
    autovacuum_scale_factor_max: float = 0.05
    analyse_max_age: str = "7d"
    analyse_modified_max: float = 0.20
    max_connections_floor: int = 500
    timeseries_tables: list[str] = Field(default_factory=list)
    citus_required: bool = False
    unused_index_min_mb: float = 10
    bloat_max_ratio: float = 0.5
    default_passwords: list[str] = Field(default_factory=lambda: ["postgres", "password", "admin", "changeme",
                                                                  "secret", "123456"])
    secret_rotation: str = "90d"
    https_endpoints: list[str] = Field(default_factory=list)
    grafana_url: str | None = None
    dashboard_json: str | None = Field(None, description="provisioned Grafana dashboard file (MON-02)")
    dashboard_min_panels: int = 15
    log_aggregation_url: str | None = None
    contacts: dict[str, Contact] = Field(default_factory=dict)
    contact_roles: list[str] = Field(default_factory=lambda: ["Database Lead", "Infrastructure", "Security",
                                                              "Management"],
                                     description="the escalation roles the policy names; MON-10 wants a contact each")
    baseline_max_age: str = "7d"
    drill_max_age: str = "30d"
    load_test_concurrency: int = 1000
    tps_target: float = 1000
    latency_targets_ms: dict[str, float] = Field(default_factory=lambda: {"p50": 50.0, "p95": 200.0, "p99": 500.0})
    memory_peak_max: float = 0.80
    disk_util_max: float = 0.70
    vector_p95_max_ms: float = 50
    vector_recall_min: float = 0.95
    vector_queries: int = 30
    large_table_rows: int = 100_000
    capacity_users: int | None = None
    replication_byte_lag_max: int = 16 * 1024 * 1024
    scrape_jobs: dict[str, list[str]] = Field(default_factory=lambda: {
        "postgres": ["postgres"], "patroni": ["patroni"], "pgbouncer": ["pgbouncer"], "etcd": ["etcd"],
        "application": ["app"]})
    app_metrics: dict[str, str] = Field(default_factory=lambda: {
        "requests": "app_requests_total", "errors": "app_errors_total", "latency": "app_request_duration_seconds_bucket"})
    compose_files: list[str] = Field(default_factory=list, description="stack files + overrides (INF-02)")


# The direction of each threshold: a change the other way makes a check easier to pass, so it is a loosening
# that needs a recorded reason (a `policy_loosening` entry keyed `readiness.<field>`), like the policy's own.
_MINIMUMS = ("cert_min_days", "min_swarm_nodes", "somaxconn_min", "nofile_min", "max_connections_floor",
             "dashboard_min_panels", "load_test_concurrency", "tps_target", "vector_recall_min", "vector_queries",
             "backup_space_multiple")
_MAXIMUMS = ("clock_offset_max_ms", "swappiness_max", "wal_retention_limit_mb", "archive_max_age_s",
             "autovacuum_large_table_rows", "autovacuum_scale_factor_max", "analyse_max_age", "analyse_modified_max",
             "unused_index_min_mb", "bloat_max_ratio", "secret_rotation", "baseline_max_age", "drill_max_age",
             "memory_peak_max", "disk_util_max", "vector_p95_max_ms", "large_table_rows",
             "replication_byte_lag_max")
# a network wider than this (an address range of the whole internet or a large part of it) is a loosening
_WIDEST_PREFIX = {4: 8, 6: 32}


def _number(value: object) -> float:
    """A threshold as a number; durations written as text (7d, 90d) in seconds."""
    return parse_duration(value) if isinstance(value, str) else float(value)  # type: ignore[arg-type]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _wide(cidrs: list[str]) -> list[str]:
    wide = []
    for text in cidrs:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            wide.append(text)  # unreadable: the checks cannot use it either
            continue
        if net.prefixlen < _WIDEST_PREFIX[net.version]:
            wide.append(text)
    return wide


def figure(key: str) -> bool:
    """Whether `key` names a readiness figure the loosening rule watches (what a readiness_loosening may name)."""
    head, _, rest = key.partition(".")
    if head in ("latency_targets_ms", "vector"):
        return bool(rest) and (head == "latency_targets_ms" or rest == "accepted" or rest.startswith("min_version."))
    return head in (*_MINIMUMS, *_MAXIMUMS, "default_passwords", "allowed_cidrs", "admin_cidrs") and not rest


def loosenings(effective: ReadinessSettings) -> list[tuple[str, object, object]]:
    """(field, default, value) for every readiness figure made looser than the checklist's own."""
    default = ReadinessSettings()
    found: list[tuple[str, object, object]] = []
    for name in _MINIMUMS + _MAXIMUMS:
        old, new = getattr(default, name), getattr(effective, name)
        if old != new and (_number(new) < _number(old)) == (name in _MINIMUMS):
            found.append((name, old, new))
    for key, default_limit in default.latency_targets_ms.items():
        limit = effective.latency_targets_ms.get(key)
        if limit is None or limit > default_limit:  # a target dropped is a target loosened
            found.append((f"latency_targets_ms.{key}", default_limit, "none" if limit is None else limit))
    for name, default_version in default.vector.min_version.items():
        version = effective.vector.min_version.get(name)
        if version is not None and _version(version) < _version(default_version):
            found.append((f"vector.min_version.{name}", default_version, version))
    dropped = [p for p in default.default_passwords if p not in effective.default_passwords]
    if dropped:
        found.append(("default_passwords", f"{len(default.default_passwords)} candidates",
                      f"{len(dropped)} of them dropped"))
    for name in ("allowed_cidrs", "admin_cidrs"):
        wide = _wide(getattr(effective, name))
        if wide:
            found.append((name, f"no range wider than /{_WIDEST_PREFIX[4]} (IPv4) or /{_WIDEST_PREFIX[6]} (IPv6)",
                          wide))
    added = [e for e in effective.vector.accepted if e not in default.vector.accepted]
    if added:
        found.append(("vector.accepted", default.vector.accepted, effective.vector.accepted))
    return found
