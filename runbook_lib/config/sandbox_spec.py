"""The `sandbox:` section of a parameters file: how the local Swarm sandbox is built and laid out.

Pure pydantic on purpose: the parameters schema imports this without pulling in docker.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


@lru_cache(maxsize=1)
def packages() -> tuple[str, ...]:
    """The image's Debian package list (sandbox/image/packages.txt, shared with the Dockerfile)."""
    text = resources.files("runbook_lib").joinpath("sandbox/image/packages.txt").read_text()
    return tuple(line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SandboxPorts(_Strict):
    """Every 127.0.0.1 port the sandbox binds (host networking: all must be distinct and free)."""

    legacy: int = 25432
    legacy_exporter: int = 25180
    pg: list[int] = Field(default_factory=lambda: [25441, 25442, 25443])
    patroni_api: list[int] = Field(default_factory=lambda: [25801, 25802, 25803])
    pg_exporter: list[int] = Field(default_factory=lambda: [25181, 25182, 25183])
    etcd_client: list[int] = Field(default_factory=lambda: [25371, 25372, 25373])
    etcd_peer: list[int] = Field(default_factory=lambda: [25381, 25382, 25383])
    haproxy_rw: int = 25500
    haproxy_ro: int = 25501
    haproxy_stats: int = 25502
    pgbouncer: int = 25632
    pgbouncer_exporter: int = 25190
    prometheus: int = 25090
    alertmanager: int = 25093
    alert_webhook: int = 25094
    mail_sink: int = 25096  # the sandbox's SMTP server behind its email receiver
    node_exporter: int = 25100
    pushgateway: int = 25091
    auto_rollback: int = 25095  # `runbook autorollback` on the host: Alertmanager sends it action=rollback alerts
    app_metrics_base: int = 25200  # replica i (1-based task slot) listens on base + i

    def all_ports(self, app_replicas: int) -> dict[str, int]:
        """Name -> port for every port in use, app replicas included (for the in-use check)."""
        out: dict[str, int] = {}
        for name, value in self.model_dump().items():
            if name in ("app_metrics_base", "auto_rollback"):  # not bound by the stacks
                continue
            if isinstance(value, list):
                for i, port in enumerate(value, 1):
                    out[f"{name}[{i}]"] = port
            else:
                out[name] = value
        for slot in range(1, app_replicas + 1):
            out[f"app_metrics[{slot}]"] = self.app_metrics_base + slot
        return out

    @model_validator(mode="after")
    def _three_members(self) -> SandboxPorts:
        for name in ("pg", "patroni_api", "pg_exporter", "etcd_client", "etcd_peer"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"sandbox.ports.{name} must list exactly 3 ports (one per member)")
        return self


class PatroniTimings(_Strict):
    """DCS timings. Defaults fail over in seconds on a 2-core machine without false failovers.

    Patroni requires loop_wait + 2 * retry_timeout <= ttl.
    """

    ttl: int = 15
    loop_wait: int = 3
    retry_timeout: int = 5
    maximum_lag_on_failover: int = 1048576

    @model_validator(mode="after")
    def _patroni_rule(self) -> PatroniTimings:
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                f"patroni timings: loop_wait ({self.loop_wait}) + 2 * retry_timeout ({self.retry_timeout}) "
                f"must be <= ttl ({self.ttl})"
            )
        return self


class AppSpec(_Strict):
    """The synthetic application: replicas and the request mix each one sends."""

    replicas: int = Field(default=2, ge=0, le=20)
    rate_per_replica: float = Field(default=10.0, gt=0, description="requests per second per replica")
    mix: dict[str, float] = Field(
        default_factory=lambda: {"point_read": 0.5, "insert": 0.15, "update": 0.15, "knn": 0.2}
    )

    @model_validator(mode="after")
    def _known_ops(self) -> AppSpec:
        unknown = set(self.mix) - {"point_read", "insert", "update", "knn"}
        if unknown:
            raise ValueError(f"sandbox.app.mix: unknown operations {sorted(unknown)}")
        if sum(self.mix.values()) <= 0:
            raise ValueError("sandbox.app.mix: weights must add up to more than 0")
        return self


class SandboxSpec(_Strict):
    """Settings for `runbook sandbox ...`; only parameters/sandbox.yaml carries this section."""

    state_dir: str = "../.sandbox"  # relative to the parameters file; holds secrets, CA, rootfs
    image: str = "runbook-sandbox"  # tag is "<image>:<hash of packages.txt>"
    suite: str = "trixie"
    stack_prefix: str = ""  # prepended to stack names (legacy, dpg, edge, monitoring, app)
    docker_host: str | None = None  # None: DOCKER_HOST or the default socket
    nodes: int = Field(default=1, ge=1, le=9, description="Docker engines in the Swarm: 1 is this machine's engine "
                       "on 127.0.0.1; 3 or more are nodes in network namespaces (runbook sandbox nodes)")
    scale: int = Field(default=1, ge=1, le=1000, description="seed size multiplier (1 = test size)")
    profile: Literal["notes", "ledger"] = Field(default="notes", description="the application the legacy database "
                                                "holds and the synthetic app drives (runbook_lib/sandbox/seed.py)")
    ports: SandboxPorts = Field(default_factory=SandboxPorts)
    patroni: PatroniTimings = Field(default_factory=PatroniTimings)
    synchronous_mode: bool = False
    synchronous_node_count: int = Field(default=1, ge=1, le=2)
    shared_buffers: str = "128MB"
    # tmpfs on /dev/shm of every PostgreSQL task: parallel index builds (HNSW at 10x data) and parallel
    # queries use dynamic shared memory, and Docker's default of 64 MB fails them with "No space left"
    shm_size_mb: int = Field(default=1024, ge=64, le=65536)
    max_connections: int = 200
    pgbouncer_target: str = Field(default="legacy", pattern="^(legacy|dpg)$")
    pgbouncer_pool_size: int = 20
    app: AppSpec = Field(default_factory=AppSpec)
    up_timeout_s: int = 240
    # host directory (relative to the parameters file) mounted into Prometheus as extra rule files:
    # runbooks drop generated *.yml rules there and POST /-/reload
    prometheus_rules_dir: str = "../.sandbox/prometheus-rules"
    log_max_size: str = "10m"
    log_max_file: int = 3

    @model_validator(mode="after")
    def _nodes(self) -> SandboxSpec:
        if self.nodes == 2:
            raise ValueError("sandbox.nodes: 1 (this machine's engine) or 3 and more (a Swarm that keeps its etcd "
                             "and Raft quorum when a node is lost); 2 would lose both with either node")
        return self

    def image_tag(self) -> str:
        """`<image>:<12 hex of sha256(suite + sorted package list)>`: a changed list is a new image."""
        digest = hashlib.sha256("\n".join([self.suite, *sorted(packages())]).encode()).hexdigest()[:12]
        return f"{self.image}:{digest}"
