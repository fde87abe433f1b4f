"""`sandbox build | up | down | reset`: idempotent orchestration of the other modules.

Order in `up` matters: ports are checked before anything is deployed; secrets and configs are
content-addressed, the seed is one transaction, and every deploy is a `docker stack deploy`, so a
failed `up` is repaired by running `up` again.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from runbook_lib.sandbox import (
    credentials,
    docker_cli,
    dockerd,
    etcd_auth,
    health,
    nodes,
    pgconf,
    placement,
    ports,
    progress,
    resync,
    seed,
    stacks,
    tls,
)
from runbook_lib.sandbox.build import build_image
from runbook_lib.sandbox.build import tag as image_tag
from runbook_lib.sandbox.context import STACKS, Sandbox, SandboxError


def prepare_engine(sb: Sandbox) -> None:
    """This machine's engine (it builds the image) and, on one engine, its single-node Swarm."""
    with progress.step("Docker engine"):
        version = dockerd.ensure_engine(sb)
        progress.info(f"engine {version}")
    if not sb.multi_node:
        with progress.step("Swarm"):
            progress.info(dockerd.ensure_swarm())


def check_nodes_params(sb: Sandbox) -> None:
    """On several nodes the parameters must aim at them: the manager as target.swarm.docker_host (else the stacks
    would go to this machine's own engine) and every node's engine in node_engines. Checked before anything."""
    planned = nodes.plan(sb.spec.nodes)
    swarm = sb.params.target.swarm
    if swarm is None or swarm.docker_host != planned[0].endpoint:
        raise SandboxError(f"target.swarm.docker_host must be the first node's engine ({planned[0].endpoint}) for "
                           f"sandbox.nodes: {sb.spec.nodes}; `runbook sandbox nodes params` writes a parameters "
                           "file that has it. Nothing was changed.")
    missing = sorted(set(nodes.engines(planned)) - set(sb.node_engines()))
    if missing:
        raise SandboxError(f"target.swarm.node_engines lacks {', '.join(missing)}: the sandbox cannot reach the "
                           "tasks on those nodes (runbook sandbox nodes params writes a parameters file with them). "
                           "Nothing was changed.")


def ensure_nodes(sb: Sandbox) -> None:
    """On several nodes: their namespaces, engines, image and Swarm (`runbook sandbox nodes up`), then every
    later docker call goes to the manager the parameters name (up checked them first: check_nodes_params), and
    a task's container to its node's engine."""
    nodes.up(sb.spec.nodes, image_tag(sb), source_env=sb.host_env())
    docker_cli.set_env(sb.docker_env(), sb.node_engines())


def build(sb: Sandbox, force: bool = False) -> float:
    prepare_engine(sb)
    name, seconds = build_image(sb, force=force)
    progress.info(f"image {name}" + (f" built in {seconds:.0f}s" if seconds else " (already built)"))
    return seconds


def check_ports(sb: Sandbox) -> None:
    conflicts = ports.conflicts(sb)
    if conflicts:
        lines = "\n".join(f"  - {c.describe()}" for c in conflicts)
        raise SandboxError(f"cannot deploy: {len(conflicts)} sandbox port(s) taken:\n{lines}\n"
                           "Stop the process(es) above or change sandbox.ports in the parameters file "
                           "(and the matching target endpoints). Nothing was deployed.")


def up(sb: Sandbox, scale: int | None = None, profile: str | None = None,
       settle: Callable[[], None] | None = None) -> float:
    """Bring every stack to healthy; return seconds from deploy start to all healthy.

    `settle` runs once every service is healthy, before the application's query through PgBouncer is
    checked: a caller's chance to bring a used sandbox to rest (a pool left paused fails that check)."""
    if sb.multi_node:
        check_nodes_params(sb)
    if scale:
        sb.spec.scale = scale
    if profile:
        sb.spec.profile = profile  # type: ignore[assignment]  # argparse's choices are the schema's
    prepare_engine(sb)
    if not sb.multi_node:  # the nodes' addresses are in namespaces of our own: nothing else binds there
        with progress.step("port check (127.0.0.1)"):
            check_ports(sb)
            progress.info(f"{len(sb.spec.ports.all_ports(sb.spec.app.replicas))} ports free or held by this sandbox")
    build_image(sb)
    if sb.multi_node:
        ensure_nodes(sb)
    with progress.step("credentials, CA and server certificate"):
        credentials.ensure(sb)
        credentials.ensure_signing(sb)
        tls.ensure(sb)
        created = stacks.ensure_secrets(sb)
        progress.info(f"state in {sb.state_dir} (0600); {created} Docker secret(s) created")
    files = stacks.render(sb)
    start, since = time.monotonic(), time.time()
    with progress.step("deploy legacy, dpg, edge, monitoring"):
        for stack in ("legacy", "dpg", "edge", "monitoring"):
            stacks.deploy(sb, stack, files[stack])
            progress.info(f"stack {sb.stack_name(stack)} deployed")
    timeout = sb.spec.up_timeout_s
    app_db, app_role = stacks.app_names(sb)
    with progress.step("legacy database: roles and seed"):
        wait_healthy(sb, timeout, since, only="legacy")
        conn = health.wait_for("legacy PostgreSQL to accept TLS connections",
                               lambda: _connect_or_resync(sb, f"{sb.stack_name('legacy')}_postgres",
                                                          sb.spec.ports.legacy), timeout,
                               abort=lambda: health.crashlooping(sb, since))
        with conn:
            seed.ensure_roles(conn, app_db, app_role, credentials.read(sb, "app_password"),
                              credentials.read(sb, "monitor_password"))
        with health.connect(sb, sb.spec.ports.legacy, dbname=app_db) as conn:
            try:
                counts = seed.seed(conn, sb.spec.scale, app_role, seed.PROFILES[sb.spec.profile])
            except seed.ProfileMismatch as exc:
                raise SandboxError(str(exc)) from None
        progress.info("already seeded" if counts is None else
                      "seeded " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    with progress.step("etcd: auth on (client certificates, users log in)"):
        health.wait_for("etcd to answer over TLS", lambda: health.etcd_answers(sb), timeout,
                        abort=lambda: health.crashlooping(sb, since))
        progress.info(etcd_auth.enable(sb))
    with progress.step("dpg cluster: leader, roles, two streaming replicas"):
        # The leader's passwords first: a member that must pg_rewind or re-clone from the leader
        # authenticates with this state directory's passwords, which an older volume lacks until reset
        # (without them the member starts unrewound on a diverged timeline and never becomes healthy).
        health.wait_for("a running Patroni leader with this state directory's passwords",
                        lambda: _leader_resynced(sb), timeout, abort=lambda: health.crashlooping(sb, since))
        wait_healthy(sb, timeout, since, only="dpg")  # a changed spec rolls every member first
        leader = health.wait_for("a running Patroni leader", lambda: health.running_leader(sb), timeout,
                                 abort=lambda: health.crashlooping(sb, since))
        progress.info(f"leader {leader}")
        changed = health.align_patroni_parameters(sb, pgconf.settings(sb.spec))
        if changed:
            progress.info("settings changed through Patroni: " + ", ".join(changed))
        with health.wait_for("HAProxy read-write port", lambda: health.connect(sb, sb.spec.ports.haproxy_rw),
                             60) as conn:
            seed.ensure_roles(conn, app_db, app_role, credentials.read(sb, "app_password"),
                              credentials.read(sb, "monitor_password"), credentials.read(sb, "replication_password"))
        with health.connect(sb, sb.spec.ports.haproxy_rw, dbname=app_db) as conn:
            conn.autocommit = True
            seed.grant_app(conn, app_role, seed.PROFILES[sb.spec.profile])
        health.wait_for("two streaming replicas", lambda: health.patroni_ready(sb), timeout,
                        abort=lambda: health.crashlooping(sb, since))
        if sb.multi_node:
            progress.info(health.lead_from(sb, stacks.members(sb)[placement.LEADER_MEMBER]["name"], timeout))
    with progress.step("deploy app"):
        stacks.deploy(sb, "app", files["app"])
    with progress.step("all services healthy"):
        wait_healthy(sb, timeout, since)
        if settle:
            settle()
        health.wait_for("an application query through PgBouncer", lambda: _app_query(sb, app_db, app_role), 60)
        # rule files live on a bind mount: a Prometheus that was already running must re-read them
        health.reload_prometheus(sb)
    elapsed = time.monotonic() - start
    progress.info(f"sandbox up: deploy to all healthy in {elapsed:.1f}s")
    return elapsed


def _app_query(sb: Sandbox, app_db: str, app_role: str) -> bool:
    """End to end as the application sees it: TLS to PgBouncer, the app role, a read of its data."""
    with health.connect(sb, sb.spec.ports.pgbouncer, dbname=app_db, user=app_role, secret="app_password") as conn:
        mark = sql.Identifier(*seed.PROFILES[sb.spec.profile].mark.split("."))
        return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(mark)).fetchone() is not None


def _leader_resynced(sb: Sandbox) -> bool:
    """True once the running leader accepts this state directory's superuser password."""
    leader = health.running_leader(sb)
    if leader is None:
        return False
    _connect_or_resync(sb, f"{sb.stack_name('dpg')}_{leader}", stacks.member_port(sb, leader)).close()
    return True


def _connect_or_resync(sb: Sandbox, service: str, port: int):  # type: ignore[no-untyped-def]
    """Connect as the superuser; if the volume predates our credentials, reset them and retry."""
    try:
        return health.connect(sb, port)
    except psycopg.OperationalError as exc:
        if "password authentication failed" not in str(exc):
            raise
    progress.warn(f"{service}: data directory predates this state directory's credentials; resetting passwords")
    resync.reset_passwords(sb, service, port)
    return health.connect(sb, port)


def wait_healthy(sb: Sandbox, timeout: float, since: float | None = None, only: str | None = None) -> None:
    """Wait until every service (of one stack with `only`) runs its current spec and reports healthy.

    A service whose tasks keep failing ends the wait early; the limit leaves room for exporters
    that fail until the server they watch has rolled over to a new spec.
    """
    since = time.time() if since is None else since
    wanted = {only} if only else set(STACKS)

    def ours() -> list[health.ServiceState]:
        return [s for s in health.services(sb) if s.stack in wanted]

    def check() -> bool:
        states = ours()
        return {s.stack for s in states} == wanted and all(s.ok for s in states)

    what = f"every service of {only} to run and report healthy" if only else "every service to run and report healthy"
    try:
        health.wait_for(what, check, timeout, interval=2, abort=lambda: health.crashlooping(sb, since, limit=8))
    except SandboxError as exc:
        bad = [s for s in ours() if not s.ok]
        detail = "\n".join(f"  - {s.name}: {s.running}/{s.desired} running, {s.healthy} healthy "
                           f"{health.last_task_error(s.name)}" for s in bad)
        raise SandboxError(f"{exc}\n{detail}\nInspect with `docker service logs <name>`; "
                           "`runbook sandbox up` again repairs a partial deploy.") from None


def down(sb: Sandbox, volumes: bool = False) -> None:
    """Remove the stacks (and with volumes=True their volumes, on every node, and the sandbox's secrets and
    configs)."""
    docker_cli.set_env(sb.docker_env(), sb.node_engines())
    if dockerd.server_version() is None:
        raise SandboxError("no Docker engine answers; nothing to take down (start it or set DOCKER_HOST)")
    present = stacks.deployed(sb)
    with progress.step(f"remove stacks {', '.join(present) or '(none deployed)'}"):
        for stack in reversed(STACKS):
            if stack in present:
                docker_cli.run("stack", "rm", sb.stack_name(stack))
        _wait_gone(sb)
    if volumes:
        with progress.step("remove volumes, secrets and configs"):
            names = {sb.stack_name(s) for s in STACKS}
            vols = []
            for engine in docker_cli.all_engines():
                listed = docker_cli.run("volume", "ls", "--format", "{{.Name}}", host=engine, check=False)
                if listed.returncode != 0:
                    progress.warn(f"engine {engine} does not answer: its volumes stay (nodes down --purge removes "
                                  "them)")
                mine = [v for v in listed.stdout.split() if v.split("_", 1)[0] in names]
                for v in mine:
                    docker_cli.run("volume", "rm", "-f", v, host=engine)
                vols += mine
            shutil.rmtree(stacks.archive_root(sb), ignore_errors=True)  # the nodes' shared WAL archive
            secrets = docker_cli.lines("secret", "ls", "--filter", f"label={stacks.LABEL}", "--format", "{{.Name}}")
            for s in secrets:
                docker_cli.run("secret", "rm", s, check=False)
            progress.info(f"{len(vols)} volume(s), {len(secrets)} secret(s) removed; "
                          f"credentials and CA stay in {sb.state_dir}")


def _wait_gone(sb: Sandbox, timeout: float = 90) -> None:
    """Stack removal is asynchronous: wait until no container of ours is left (volumes are then free)."""
    ours = {sb.stack_name(s) for s in STACKS}

    def gone() -> bool:
        rows = docker_cli.json_lines_everywhere("ps", "--filter", "label=com.docker.stack.namespace")
        return not any(f"com.docker.stack.namespace={n}" in r.get("Labels", "") for r in rows for n in ours)
    health.wait_for("the sandbox's containers to stop", gone, timeout)
    # exited containers (Swarm's task history) hold volumes and the image: remove ours, on every node
    for engine in docker_cli.all_engines():
        for n in ours:
            ids = docker_cli.run("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={n}", host=engine,
                                 check=False).stdout.split()
            if ids:
                docker_cli.run("rm", "-f", *ids, check=False, host=engine)
