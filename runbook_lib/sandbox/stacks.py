"""Render the five stack files (and their configs) from templates and deploy them with `docker stack deploy`.

Configs and secrets carry a content hash in their Docker name: both are immutable in Swarm, so a
changed file becomes a new object and the redeploy swaps it in instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jinja2

from runbook_lib.promql import rules as matrix_rules
from runbook_lib.sandbox import build, credentials, docker_cli, pgconf, placement, tls
from runbook_lib.sandbox.context import IMAGE_DIR, STACKS, Sandbox, SandboxError

TEMPLATES = IMAGE_DIR / "templates"
LABEL = "runbook.sandbox"

# config key -> (source: template name or package file, file name in the rendered stack dir)
CONFIGS = {
    "legacy": {"entry": "entry.py", "legacy_start": "templates/legacy-start.sh",
               "legacy_conf": "@legacy_conf", "legacy_hba": "@hba"},
    "dpg": {"entry": "entry.py", "patroni_yml": "patroni.yml.j2", "haproxy_cfg": "haproxy.cfg.j2"},
    "edge": {"entry": "entry.py", "pgbouncer_ini": "pgbouncer.ini.j2", "pgbouncer_users": "userlist.txt.j2"},
    "monitoring": {"entry": "entry.py", "prometheus_yml": "prometheus.yml.j2", "rules_yml": "rules.yml.j2",
                   "alertmanager_yml": "alertmanager.yml.j2", "webhook_py": "webhook.py"},
    "app": {"app_py": "app.py"},
}
TLS_SECRETS = {"tls_server_key": "server.key", "tls_server_crt": "server.crt", "tls_ca_crt": "ca.crt",
               **{f"tls_{stem.replace('-', '_')}_{kind}": f"{stem}.{kind}"
                  for stem in tls.CLIENTS for kind in ("crt", "key")}}


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
        variable_start_string="[[", variable_end_string="]]", block_start_string="[%", block_end_string="%]",
        comment_start_string="[#", comment_end_string="#]", keep_trailing_newline=True)


def layout(sb: Sandbox) -> placement.Layout:
    return placement.Layout(sb.spec.nodes)


def members(sb: Sandbox) -> list[dict[str, Any]]:
    p, where = sb.spec.ports, layout(sb)
    names = [f"pg{i + 1}" for i in range(3)]
    return [{"name": names[i], "etcd": f"etcd{i + 1}", "host": where.host(f"member:{i}"),
             "pg": p.pg[i], "api": p.patroni_api[i],
             "exporter": p.pg_exporter[i], "etcd_client": p.etcd_client[i], "etcd_peer": p.etcd_peer[i],
             "others": ",".join(n for n in names if n != names[i])}  # the other members' physical slots
            for i in range(3)]


def member_port(sb: Sandbox, name: str) -> int:
    """The PostgreSQL port of the Patroni member called `name`."""
    return next(m["pg"] for m in members(sb) if m["name"] == name)


def app_names(sb: Sandbox) -> tuple[str, str]:
    app = sb.params.target.app
    return (app.database, app.role) if app else ("app", "app")


def scope(sb: Sandbox) -> str:
    return sb.params.target.patroni.scope if sb.params.target.patroni else "dpg"


def secret_names(sb: Sandbox) -> dict[str, tuple[str, Path]]:
    """Docker secret name and source file for every secret the stacks use."""
    out: dict[str, tuple[str, Path]] = {}
    files = {n: sb.secrets_dir / n for n in [*credentials.NAMES, credentials.WEB_CONFIG]}
    files.update({n: sb.tls_dir / f for n, f in TLS_SECRETS.items()})
    for name, path in files.items():
        out[name] = (f"{sb.spec.stack_prefix}sbx_{name}_{credentials.content_hash(path)}", path)
    return out


def ensure_secrets(sb: Sandbox) -> int:
    """Create the Docker secrets that do not exist yet; return how many were created."""
    existing = set(docker_cli.lines("secret", "ls", "--format", "{{.Name}}"))
    created = 0
    for docker_name, path in secret_names(sb).values():
        if docker_name not in existing:
            docker_cli.run("secret", "create", "--label", f"{LABEL}=1", docker_name, str(path))
            created += 1
    return created


def context(sb: Sandbox) -> dict[str, Any]:
    spec, ports = sb.spec, sb.spec.ports
    ms = members(sb)
    app_db, app_role = app_names(sb)
    where = layout(sb)
    backend = ports.legacy if spec.pgbouncer_target == "legacy" else ports.haproxy_rw
    return {
        "spec": spec, "ports": ports, "members": ms, "image": build.tag(sb), "layout": where,
        "net": {"external": True, "name": "host"},
        "scope": scope(sb), "target_name": sb.params.target.name,
        "etcd_hosts": ",".join(f"{m['host']}:{m['etcd_client']}" for m in ms),
        "patroni_api_user": credentials.PATRONI_API_USER, "monitoring_user": credentials.MONITORING_USER,
        "webhook_user": credentials.WEBHOOK_USER,
        "etcd_initial_cluster": ",".join(f"{m['etcd']}=http://{m['host']}:{m['etcd_peer']}" for m in ms),
        "etcd_targets": json.dumps([f"{m['host']}:{m['etcd_client']}" for m in ms]),
        "app_targets": json.dumps([f"{where.host('app')}:{ports.app_metrics_base + s}"
                                   for s in range(1, spec.app.replicas + 1)]),
        "node_targets": json.dumps([f"{a}:{ports.node_exporter}" for a in where.addresses() or [placement.LOOPBACK]]),
        "pg_params": {k: json.dumps(v) for k, v in pgconf.settings(spec).items()},
        "hba_lines": [json.dumps(line) for line in pgconf.hba_lines(app_db, app_role, where.network())],
        "app_db": app_db, "app_role": app_role, "backend_port": backend,
        "backend_host": where.host("legacy" if spec.pgbouncer_target == "legacy" else "haproxy"),
        "wal_archive": wal_archive(sb),
        "pgbouncer_target": spec.pgbouncer_target,
        "app_mix": json.dumps(spec.app.mix),
        "sec": {n: v[0] for n, v in secret_names(sb).items()},
        "prometheus_rules_dir": str(rules_dir(sb)),
        "app_fault_dir": str(fault_dir(sb)),
        "priority_routes": [json.dumps(r) for r in matrix_rules.routes(sb.params.policy, "runbook-webhook")],
    }


def wal_archive(sb: Sandbox) -> str:
    """The members' WAL archive: a volume on one engine; on several nodes a folder of this machine that every
    node binds (shared storage: a replica restores what another node's leader archived). One folder per Swarm,
    so a new cluster never restores the segments of a purged one, whose names it reuses."""
    if not layout(sb).multi:
        return "archive"
    cluster = docker_cli.run("info", "--format", "{{.Swarm.Cluster.ID}}").stdout.strip()
    if not cluster:
        raise SandboxError("the engine is not a Swarm manager; cannot place the WAL archive (runbook sandbox up)")
    folder = archive_root(sb) / cluster
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def archive_root(sb: Sandbox) -> Path:
    return sb.state_dir / "archive"


def fault_dir(sb: Sandbox) -> Path:
    """Host directory the application reads its fault file from (bind-mounted; it must exist)."""
    d = sb.state_dir / "app-fault"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    return d


def rules_dir(sb: Sandbox) -> Path:
    """Host directory of extra Prometheus rule files (created here: a bind mount needs it to exist).

    It always holds the alert rules generated from the policy's monitoring matrix, as a
    production Prometheus would, so readiness (MON-03) finds them loaded.
    """
    d = sb.params.path(sb.spec.prometheus_rules_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "monitoring-matrix.yml").write_text(matrix_rules.render(sb.params.policy))
    return d


def render(sb: Sandbox) -> dict[str, Path]:
    """Write every stack file with its config files under <state>/stacks/<stack>/; return stack -> file."""
    env = _env()
    ctx = context(sb)
    app_db, app_role = app_names(sb)
    out: dict[str, Path] = {}
    for stack in STACKS:
        d = sb.rendered_dir / stack
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        cfg: dict[str, dict[str, str]] = {}
        for key, source in CONFIGS[stack].items():
            if source == "@legacy_conf":
                text, fname = pgconf.postgresql_conf(sb.spec, sb.spec.ports.legacy, layout(sb).listen), "sandbox.conf"
            elif source == "@hba":
                text, fname = "\n".join(pgconf.hba_lines(app_db, app_role, layout(sb).network())) + "\n", "pg_hba.conf"
            elif source.endswith(".j2"):
                text, fname = env.get_template(source).render(**ctx), source[:-3]
            else:
                text, fname = (IMAGE_DIR / source).read_text(), Path(source).name
            (d / fname).write_text(text)
            digest = hashlib.sha256(text.encode()).hexdigest()[:10]
            cfg[key] = {"name": f"{sb.stack_name(stack)}_{key}_{digest}", "file": fname}
        path = d / "stack.yml"
        path.write_text(env.get_template(f"{stack}.yml.j2").render(cfg=cfg, **ctx))
        out[stack] = path
    return out


def deploy(sb: Sandbox, stack: str, path: Path) -> None:
    """`docker stack deploy` (idempotent: an unchanged stack is a no-op, a changed one is updated)."""
    docker_cli.run("stack", "deploy", "--resolve-image", "never", "--prune", "-c", str(path),
                   sb.stack_name(stack), timeout=300)


def deployed(sb: Sandbox) -> list[str]:
    """Stacks of this sandbox that exist on the engine."""
    names = set(docker_cli.lines("stack", "ls", "--format", "{{.Name}}"))
    return [s for s in STACKS if sb.stack_name(s) in names]
