"""Observe the sandbox: service replicas, container health, Patroni cluster state, readiness waits."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from runbook_lib.clients import etcd, http, patroni
from runbook_lib.sandbox import credentials, docker_cli, placement
from runbook_lib.sandbox.context import STACKS, Sandbox, SandboxError


@dataclass
class ServiceState:
    stack: str
    name: str
    desired: int
    running: int
    healthy: int
    unhealthy: int
    last_error: str = ""
    updating: bool = False

    @property
    def ok(self) -> bool:
        return self.running == self.desired and self.healthy == self.desired and not self.updating


def services(sb: Sandbox) -> list[ServiceState]:
    """Every service of the sandbox's stacks: desired replicas, and tasks that run the *current* spec
    and whose container reports healthy (so a redeploy is not mistaken for done before it rolled)."""
    health_by_container: dict[str, str] = {}
    # a container's health is known only to the engine of its node
    for row in docker_cli.json_lines_everywhere("ps", "--no-trunc", "--filter", "label=com.docker.stack.namespace"):
        health_by_container[row["ID"]] = row.get("Status", "")
    ready_nodes = sum(n.get("Status") == "Ready" for n in docker_cli.json_lines("node", "ls"))
    out: list[ServiceState] = []
    for stack in STACKS:
        name = sb.stack_name(stack)
        svcs = docker_cli.inspect("service", *docker_cli.lines(
            "service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={name}"))
        task_ids = docker_cli.run("stack", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", name,
                                  check=False).stdout.split()
        tasks = docker_cli.inspect("task", *task_ids) if task_ids else []
        for svc in sorted(svcs, key=lambda x: x["Spec"]["Name"]):
            spec = svc["Spec"]
            current = _spec_key(spec["TaskTemplate"].get("ContainerSpec"))
            mine = [t for t in tasks if t.get("ServiceID") == svc["ID"]]
            # a global service wants one task on every ready node
            desired = ready_nodes if "Global" in spec.get("Mode", {}) else \
                (spec.get("Mode", {}).get("Replicated") or {}).get("Replicas", 1)
            running = [t for t in mine if t.get("Status", {}).get("State") == "running"
                       and _spec_key(t.get("Spec", {}).get("ContainerSpec")) == current]
            statuses = [health_by_container.get(((t.get("Status") or {}).get("ContainerStatus") or {})
                                                .get("ContainerID", ""), "") for t in running]
            updating = (svc.get("UpdateStatus") or {}).get("State") in ("updating", "rollback_started")
            out.append(ServiceState(
                stack=stack, name=spec["Name"], desired=int(desired), running=len(running),
                healthy=sum("(healthy)" in x for x in statuses), unhealthy=sum("unhealthy" in x for x in statuses),
                updating=updating))
    return out


def last_task_error(service: str) -> str:
    """The most recent task error of a service (why it does not start), for messages."""
    rows = docker_cli.run("service", "ps", service, "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}",
                          check=False).stdout.splitlines()
    for row in rows:
        state, _, err = row.partition("|")
        if err.strip():
            return f"{state.strip()}: {err.strip()}"
    return ""


def connect(sb: Sandbox, port: int, dbname: str = "postgres", user: str = "postgres",
            secret: str = "postgres_password", timeout: int = 3, **kw: Any) -> psycopg.Connection:
    """TLS (verify-ca against the sandbox CA) connection with a password from the state dir."""
    host = placement.Layout(sb.spec.nodes).host_for_port(sb.spec.ports, port)
    return psycopg.connect(host=host, port=port, dbname=dbname, user=user,
                           password=credentials.read(sb, secret), sslmode="verify-ca",
                           sslrootcert=str(sb.tls_dir / "ca.crt"), connect_timeout=timeout, **kw)


def _spec_key(cs: dict[str, Any] | None) -> tuple[Any, ...]:
    cs = cs or {}
    return (cs.get("Image"), cs.get("Args"), cs.get("Env"),
            sorted(c.get("ConfigName", "") for c in cs.get("Configs") or []),
            sorted(c.get("SecretName", "") for c in cs.get("Secrets") or []))


def crashlooping(sb: Sandbox, since: float, limit: int = 4) -> str | None:
    """A message naming services whose tasks failed `limit` times after `since` (epoch seconds)."""
    ids: list[str] = []
    for stack in STACKS:
        ids += docker_cli.run("stack", "ps", "-q", "--no-trunc", sb.stack_name(stack),
                              check=False).stdout.split()
    failed: dict[str, list[str]] = {}
    current: dict[str, Any] = {}
    for task in docker_cli.inspect("task", *ids) if ids else []:
        status = task.get("Status", {})
        if status.get("State") not in ("failed", "rejected"):
            continue
        svc = task.get("ServiceID", "?")
        if svc not in current:
            spec = docker_cli.inspect("service", svc)
            current[svc] = _spec_key(spec[0]["Spec"]["TaskTemplate"].get("ContainerSpec")) if spec else None
        if _spec_key(task.get("Spec", {}).get("ContainerSpec")) != current[svc]:
            continue  # a failure of an older version of the service: not this deploy's problem
        stamp = status.get("Timestamp", "")
        try:
            when = datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if when >= since:
            failed.setdefault(svc, []).append(status.get("Err", ""))
    bad = []
    for svc_id, errs in failed.items():
        if len(errs) >= limit:
            name = docker_cli.run("service", "inspect", "--format", "{{.Spec.Name}}", svc_id, check=False).stdout.strip()
            bad.append(f"{name or svc_id}: {len(errs)} failed tasks (last: {errs[-1]})")
    return "; ".join(bad) or None


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0,
             abort: Callable[[], str | None] | None = None) -> Any:
    """Poll `check` until it returns a truthy value; raise SandboxError naming what and the last error.

    `abort` is consulted every few seconds: a message from it ends the wait at once (crash loops).
    """
    deadline = time.monotonic() + timeout
    last = ""
    next_abort = time.monotonic() + 10
    while time.monotonic() < deadline:
        if abort and time.monotonic() > next_abort:
            next_abort = time.monotonic() + 10
            reason = abort()
            if reason:
                raise SandboxError(f"gave up waiting for {what}: {reason}. "
                                   "See `docker service logs <service>`; fix and rerun `runbook sandbox up`.")
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        time.sleep(interval)
    raise SandboxError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def patroni_apis(sb: Sandbox) -> list[str]:
    """The members' REST API URLs as the parameters give them (TLS and credentials come with their access)."""
    spec = sb.params.target.patroni
    return [m.api_url.rstrip("/") for m in spec.members] if spec else []


def etcd_answers(sb: Sandbox) -> bool:
    """etcd has a quorum: its auth status comes back (a raft request) over TLS with the parameters' client
    certificate and no login, since the users' passwords may be another state directory's until etcd_auth."""
    if sb.params.target.etcd is None:
        return False
    etcd.auth_status(sb.params.target.etcd)  # raises until an endpoint answers; with auth off "enabled" is left out
    return True


def reload_prometheus(sb: Sandbox) -> None:
    """POST /-/reload: rule files live on a bind mount, a running Prometheus re-reads them only when told."""
    if sb.params.target.prometheus is not None:
        http.call("POST", f"{sb.params.target.prometheus.url.rstrip('/')}/-/reload", expect_json=False, timeout=10)


def patroni_cluster(sb: Sandbox) -> dict[str, Any] | None:
    """GET /cluster from the first member that answers."""
    for api in patroni_apis(sb):
        try:
            return http.get(f"{api}/cluster", timeout=2)  # type: ignore[no-any-return]
        except http.HttpError:
            continue
    return None


def patroni_ready(sb: Sandbox) -> bool:
    """Exactly one leader running and two streaming replicas."""
    cluster = patroni_cluster(sb) or {}
    ms = cluster.get("members", [])
    leaders = [m for m in ms if m.get("role") == "leader" and m.get("state") == "running"]
    streaming = [m for m in ms if m.get("role") in ("replica", *patroni.SYNC_ROLES) and m.get("state") == "streaming"]
    return len(leaders) == 1 and len(streaming) == 2


def running_leader(sb: Sandbox) -> str | None:
    """The leader's name once its PostgreSQL runs (a leader key alone may belong to a starting member)."""
    cluster = patroni_cluster(sb) or {}
    return next((m["name"] for m in cluster.get("members", [])
                 if m.get("role") == "leader" and m.get("state") == "running"), None)


def leader_name(sb: Sandbox) -> str | None:
    cluster = patroni_cluster(sb) or {}
    for m in cluster.get("members", []):
        if m.get("role") == "leader":
            return m["name"]
    return None


def lead_from(sb: Sandbox, member: str, timeout: float) -> str:
    """Make `member` the leader by a switchover (on several nodes the sandbox's leader is placed away from the
    manager the runbooks talk to) and wait until it leads with two streaming replicas, one of them promotable;
    return what it did. Asks again while Patroni refuses: a member that just rejoined is named a synchronous
    standby a loop later (HTTP 412 before), and a switchover still settling answers 503."""
    spec = sb.params.target.patroni
    if spec is None:
        raise SandboxError("target.patroni is not set: no leader to place")
    asked: list[str] = []

    def placed() -> bool:
        current = running_leader(sb)
        if current == member:
            return patroni_ready(sb) and patroni.promotable(spec)
        if current is None or member not in patroni.candidates(spec):
            return False
        api = next(m.api_url.rstrip("/") for m in spec.members if m.name == current)
        reply = http.call("POST", f"{api}/switchover", json_body={"leader": current, "candidate": member},
                          ok_codes=http.ANY_STATUS, expect_json=False, timeout=60)
        asked.append(f"{current}: HTTP {reply.status_code}")
        return False

    was = running_leader(sb)
    wait_for(f"{member} to lead with two streaming replicas, one of them promotable", placed, timeout, interval=2)
    if not asked:
        return f"leader {member}, as placed"
    return f"leader moved from {was} to {member} (placement: away from the manager's node; asked {'; '.join(asked)})"


def align_patroni_parameters(sb: Sandbox, wanted: dict[str, Any]) -> list[str]:
    """Patroni keeps PostgreSQL settings in its dynamic configuration (etcd), written once at bootstrap:
    PATCH the ones that differ from the sandbox's settings so a changed setting reaches a running cluster."""
    for api in patroni_apis(sb):
        try:
            current = http.get(f"{api}/config", timeout=3)
        except http.HttpError:
            continue
        have = (current.get("postgresql") or {}).get("parameters") or {}
        changed = {k: v for k, v in wanted.items() if str(have.get(k)) != str(v)}
        if changed:
            http.call("PATCH", f"{api}/config", json_body={"postgresql": {"parameters": changed}}, timeout=5)
        return sorted(changed)
    raise SandboxError("no Patroni member answers its REST API: cannot align the PostgreSQL settings")
