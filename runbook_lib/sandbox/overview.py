"""`sandbox status`: every service and its health, Patroni members (role, state, lag), etcd members,
where PgBouncer points, and the Prometheus targets. Exit 0 when all is healthy, 1 otherwise."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from rich.table import Table

from runbook_lib.clients import etcd, http
from runbook_lib.sandbox import credentials, docker_cli, dockerd, health, progress, stacks
from runbook_lib.sandbox.context import Sandbox


def etcd_members(sb: Sandbox) -> list[dict[str, Any]]:
    """Member list (v3 JSON gateway) plus per-endpoint health, over TLS with the parameters' client certificate."""
    spec = sb.params.target.etcd
    if spec is None:
        return []
    try:
        listing = etcd.member_list(spec).get("members", [])
    except http.HttpError:
        return []
    out: list[dict[str, Any]] = []
    for m in listing:
        url = (m.get("clientURLs") or [""])[0]
        try:
            status = etcd.endpoint_status(url)
        except http.HttpError:
            status = {"healthy": False, "member_id": None, "leader": None}
        out.append({"name": m.get("name"), "client_url": url, "healthy": status["healthy"],
                    "leader": status["leader"] is not None and str(m.get("ID")) == str(status["leader"])})
    return out


def pgbouncer_backend(sb: Sandbox) -> dict[str, Any]:
    """Where PgBouncer sends the application database, from its admin console (SHOW DATABASES)."""
    app_db, _ = stacks.app_names(sb)
    try:
        with psycopg.connect(host=stacks.layout(sb).host("pgbouncer"), port=sb.spec.ports.pgbouncer, dbname="pgbouncer",
                             user="pgbouncer_admin", password=credentials.read(sb, "pgbouncer_admin_password"),
                             sslmode="verify-ca", sslrootcert=str(sb.tls_dir / "ca.crt"), connect_timeout=3,
                             autocommit=True, prepare_threshold=None, cursor_factory=psycopg.ClientCursor) as conn:
            cur = conn.execute("SHOW DATABASES")
            cols = [c.name for c in cur.description or []]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    except (psycopg.Error, OSError) as exc:
        return {"error": str(exc).strip().splitlines()[0]}
    row = next((r for r in rows if r["name"] == app_db), None)
    if row is None:
        return {"error": f"no [databases] entry for {app_db}"}
    names = {sb.spec.ports.legacy: "legacy", sb.spec.ports.haproxy_rw: "dpg-rw"}
    names.update({p: f"pg{i + 1}" for i, p in enumerate(sb.spec.ports.pg)})
    return {"database": app_db, "host": row["host"], "port": row["port"],
            "points_at": names.get(int(row["port"]), "unknown")}


def prometheus_targets(sb: Sandbox) -> list[dict[str, Any]]:
    prometheus = sb.params.target.prometheus
    if prometheus is None:
        return []
    try:
        data = http.get(f"{prometheus.url.rstrip('/')}/api/v1/targets", timeout=3)
    except http.HttpError:
        return []
    return [{"job": t["labels"].get("job"), "instance": t["labels"].get("instance"), "health": t.get("health"),
             "last_error": t.get("lastError", "")} for t in data.get("data", {}).get("activeTargets", [])]


def collect(sb: Sandbox) -> dict[str, Any]:
    docker_cli.set_env(sb.docker_env(), sb.node_engines())
    version = dockerd.server_version()
    if version is None:
        return {"engine": None, "healthy": False}
    services = [s.__dict__ | {"ok": s.ok} for s in health.services(sb)]
    cluster = health.patroni_cluster(sb) or {}
    patroni = [{"name": m.get("name"), "role": m.get("role"), "state": m.get("state"),
                "lag": m.get("lag", 0 if m.get("role") == "leader" else None), "timeline": m.get("timeline")}
               for m in cluster.get("members", [])]
    report: dict[str, Any] = {"engine": version, "services": services, "patroni": patroni, "etcd": etcd_members(sb),
              "pgbouncer": pgbouncer_backend(sb), "prometheus_targets": prometheus_targets(sb)}
    report["healthy"] = (bool(services) and all(s["ok"] for s in services)
                         and len(services) > 0 and health.patroni_ready(sb)
                         and all(e["healthy"] for e in report["etcd"]) and len(report["etcd"]) == 3
                         and "error" not in report["pgbouncer"]
                         and bool(report["prometheus_targets"])
                         and all(t["health"] == "up" for t in report["prometheus_targets"]))
    return report


def show(sb: Sandbox, as_json: bool = False) -> int:
    report = collect(sb)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return 0 if report["healthy"] else 1
    c = progress.console
    if report["engine"] is None:
        c.print("[red]no Docker engine answers[/red]; `runbook sandbox up` starts one (root) or set DOCKER_HOST")
        return 1
    t = Table(title=f"services (engine {report['engine']})")
    for col in ("stack", "service", "replicas", "health"):
        t.add_column(col)
    for s in report["services"]:
        mark = "[green]healthy[/green]" if s["ok"] else f"[red]{s['healthy']} healthy, {s['unhealthy']} unhealthy[/red]"
        t.add_row(s["stack"], s["name"], f"{s['running']}/{s['desired']}", mark)
    if not report["services"]:
        t.add_row("-", "(no stacks deployed)", "-", "-")
    c.print(t)
    t = Table(title="Patroni members")
    for col in ("member", "role", "state", "lag (bytes)", "timeline"):
        t.add_column(col)
    for m in report["patroni"]:
        t.add_row(m["name"], m["role"], m["state"], str(m["lag"]), str(m["timeline"]))
    c.print(t)
    t = Table(title="etcd members")
    for col in ("member", "client url", "healthy", "leader"):
        t.add_column(col)
    for m in report["etcd"]:
        t.add_row(m["name"], m["client_url"], str(m["healthy"]), "yes" if m["leader"] else "")
    c.print(t)
    pb = report["pgbouncer"]
    c.print("PgBouncer: " + (f"[red]{pb['error']}[/red]" if "error" in pb else
                             f"{pb['database']} -> {pb['host']}:{pb['port']} ({pb['points_at']})"))
    t = Table(title="Prometheus targets")
    for col in ("job", "instance", "health", "last error"):
        t.add_column(col)
    for x in report["prometheus_targets"]:
        t.add_row(x["job"], x["instance"], x["health"], x["last_error"])
    c.print(t)
    c.print("[green]sandbox healthy[/green]" if report["healthy"] else "[yellow]sandbox not (fully) healthy[/yellow]")
    return 0 if report["healthy"] else 1
