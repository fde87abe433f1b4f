"""Which node runs each sandbox service, and the address it is reached on.

Why: on one engine every service listens on 127.0.0.1. On a Swarm of several nodes (`sandbox.nodes`)
each service is pinned to a node by a placement constraint and reached on that node's address, laid out
as production should be and as the runbooks must cope with: one etcd and one Patroni member per node,
the manager the runbooks talk to (node 1) running neither the legacy database nor PgBouncer, which share
node 3, away from node 2, the member the sandbox makes leader (`LEADER_MEMBER`). HAProxy and monitoring
run on node 1; node exporter on every node. Inside a node's network namespace the interfaces are loopback,
the veth on our bridge and the docker_gwbridge its engine makes for Swarm (a bridge inside the namespace,
with no task on it: the tasks use host networking), so services listen on every address there (health
checks keep using 127.0.0.1), and the namespace has no route beyond our bridge, which this machine does
not forward to any other network.
"""

from __future__ import annotations

from dataclasses import dataclass

from runbook_lib.config.sandbox_spec import SandboxPorts
from runbook_lib.sandbox.nodes import BRIDGE_ADDRESS, LABEL, PREFIX, Node

LOOPBACK = "127.0.0.1"
# which service binds each port of sandbox.ports (member ports are per member)
PORT_SERVICE = {"legacy": "legacy", "legacy_exporter": "legacy", "haproxy_rw": "haproxy", "haproxy_ro": "haproxy",
                "haproxy_stats": "haproxy", "pgbouncer": "pgbouncer", "pgbouncer_exporter": "pgbouncer",
                "prometheus": "monitoring", "alertmanager": "monitoring", "alert_webhook": "monitoring",
                "mail_sink": "monitoring", "node_exporter": "monitoring", "pushgateway": "monitoring"}
MEMBER_PORTS = ("pg", "patroni_api", "pg_exporter", "etcd_client", "etcd_peer")
# service -> 1-based node index on a Swarm of three or more nodes; members go to node 1, 2, 3 in order
SERVICE_NODE = {"legacy": 3, "pgbouncer": 3, "app": 2, "haproxy": 1, "monitoring": 1}
LEADER_MEMBER = 1  # 0-based: pg2, on node 2, leads once the sandbox is up (not the manager's node)


@dataclass(frozen=True)
class Layout:
    """The placement of one sandbox; `nodes == 1` is the single engine on 127.0.0.1."""

    nodes: int = 1

    @property
    def multi(self) -> bool:
        return self.nodes > 1

    @property
    def listen(self) -> str:
        """The address every service binds: its node's every address, or loopback on one engine."""
        return "0.0.0.0" if self.multi else LOOPBACK

    @property
    def operator(self) -> str:
        """Where the nodes reach this machine: Alertmanager's rollback alerts go to `runbook autorollback` there
        (start it with --host at this address)."""
        return BRIDGE_ADDRESS if self.multi else LOOPBACK

    def node(self, service: str) -> Node | None:
        """The node a service is pinned to (None on one engine); `member:i` is the i-th member (0-based)."""
        if not self.multi:
            return None
        if service.startswith("member:"):
            return Node(int(service.split(":", 1)[1]) % self.nodes + 1)
        if service not in SERVICE_NODE:
            raise KeyError(f"no placement for sandbox service {service!r}")
        return Node(min(SERVICE_NODE[service], self.nodes))

    def host(self, service: str) -> str:
        node = self.node(service)
        return node.address if node else LOOPBACK

    def constraint(self, service: str) -> str | None:
        node = self.node(service)
        return f"node.labels.{LABEL} == {node.name}" if node else None

    def host_for_port(self, ports: SandboxPorts, port: int) -> str:
        """The address a sandbox port is served on (the runbooks' endpoints, the sandbox's own checks)."""
        for name in MEMBER_PORTS:
            if port in getattr(ports, name):
                return self.host(f"member:{getattr(ports, name).index(port)}")
        service = next((s for name, s in PORT_SERVICE.items() if getattr(ports, name) == port), None)
        if service:
            return self.host(service)
        if port > ports.app_metrics_base and port <= ports.app_metrics_base + 20:
            return self.host("app")
        raise KeyError(f"port {port} is not one of sandbox.ports")

    def addresses(self) -> list[str]:
        """Every node's address (empty on one engine)."""
        return [Node(i).address for i in range(1, self.nodes + 1)] if self.multi else []

    def network(self) -> str | None:
        """The nodes' network as a CIDR (for pg_hba and the readiness checks), None on one engine."""
        return f"{PREFIX}.0/24" if self.multi else None
