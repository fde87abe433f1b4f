"""Infrastructure items (INF-01 .. INF-15): Swarm, network, storage, certificates, host."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from typing import Any
from urllib.parse import urlparse

from runbook_lib.clients import postgres, swarm, tlsprobe
from runbook_lib.readiness.model import Finding
from runbook_lib.readiness.probe import Probe
from runbook_lib.readiness.registry import check


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


# ---------------------------------------------------------------- decisions (pure)


def decide_engine_versions(versions: dict[str, str]) -> Finding:
    old = {n: v for n, v in versions.items() if _version(v) < (20, 10)}
    return Finding.check(bool(versions) and not old, versions, ">= 20.10 on every node", "docker node inspect")


def decide_swarm(state: str, nodes: list[dict[str, Any]], min_nodes: int) -> Finding:
    """nodes: [{name, state, availability, manager, reachable}] as the Swarm reports them."""
    ready = [n for n in nodes if n["state"] == "ready" and n["availability"] == "active"]
    managers = [n for n in nodes if n["manager"]]
    reachable = [n for n in managers if n["reachable"]]
    quorum = len(reachable) > len(managers) / 2 if managers else False
    ok = state == "active" and len(ready) >= min_nodes and quorum
    return Finding.check(ok, {"swarm": state, "ready_active_nodes": len(ready), "managers": len(managers),
                              "reachable_managers": len(reachable)},
                         f"swarm active, >= {min_nodes} ready+active nodes, managers in quorum", "docker node ls")


def decide_kernel(values: dict[str, dict[str, int]], swappiness_max: int, somaxconn_min: int) -> Finding:
    bad = {svc: v for svc, v in values.items()
           if v["vm.swappiness"] > swappiness_max or v["net.core.somaxconn"] < somaxconn_min}
    return Finding.check(bool(values) and not bad, values,
                         f"vm.swappiness <= {swappiness_max}, net.core.somaxconn >= {somaxconn_min}",
                         "/proc/sys inside each database task", otherwise="warn")


def decide_nofile(limits: dict[str, int], minimum: int) -> Finding:
    low = {svc: v for svc, v in limits.items() if v < minimum}
    return Finding.check(bool(limits) and not low, limits, f"nofile soft limit >= {minimum}",
                         "/proc/<postmaster>/limits inside each database task", otherwise="warn")


def decide_clock(offsets_ms: dict[str, float], max_ms: float) -> Finding:
    bad = {m: o for m, o in offsets_ms.items() if abs(o) >= max_ms}
    return Finding.check(bool(offsets_ms) and not bad, offsets_ms, f"|offset| < {max_ms:g} ms",
                         "clock_timestamp() vs operator clock (round-trip midpoint)")


# ---------------------------------------------------------------- checks


@check("INF-01")
def inf01(p: Probe) -> Finding:
    client = swarm.for_target(p.params.target.swarm)
    versions = {n.attrs["Description"]["Hostname"]: n.attrs["Description"]["Engine"]["EngineVersion"]
                for n in client.nodes.list()}
    return decide_engine_versions(versions)


@check("INF-02")
def inf02(p: Probe) -> Finding:
    docker = shutil.which("docker")
    if not docker:
        return Finding("fail", "docker CLI not found", "compose >= 2.0", "docker compose version")
    result = subprocess.run([docker, "compose", "version", "--short"], capture_output=True, text=True, timeout=20)
    if result.returncode != 0:
        return Finding("fail", "docker compose plugin not installed", "compose >= 2.0", "docker compose version")
    version = result.stdout.strip()
    files = p.settings.compose_files
    rendered = "no compose files configured"
    if files:
        args = [a for f in files for a in ("-f", str(p.params.path(f)))]
        render = subprocess.run([docker, "compose", *args, "config", "--quiet"], capture_output=True, text=True,
                                timeout=60)
        rendered = "renders" if render.returncode == 0 else render.stderr.strip()[:300]
    ok = _version(version) >= (2, 0) and rendered in ("renders", "no compose files configured")
    return Finding.check(ok, {"compose": version, "files": rendered}, "compose >= 2.0; base+overrides render",
                         "docker compose version / config", otherwise="warn")


def _nodes(p: Probe) -> list[dict[str, Any]]:
    client = swarm.for_target(p.params.target.swarm)
    return [{"name": n.attrs["Description"]["Hostname"], "state": n.attrs["Status"]["State"],
             "availability": n.attrs["Spec"]["Availability"], "manager": "ManagerStatus" in n.attrs,
             "reachable": n.attrs.get("ManagerStatus", {}).get("Reachability") == "reachable"}
            for n in client.nodes.list()]


@check("INF-03")
def inf03(p: Probe) -> Finding:
    client = swarm.for_target(p.params.target.swarm)
    state = client.info()["Swarm"]["LocalNodeState"]
    return decide_swarm(state, _nodes(p) if state == "active" else [], p.settings.min_swarm_nodes)


@check("INF-04")
def inf04(p: Probe) -> Finding:
    net = p.need(p.settings.network, "readiness.network")
    client = swarm.for_target(p.params.target.swarm)
    found = [n for n in client.networks.list(names=[net.name]) if n.name == net.name]
    if not found:
        return Finding("fail", f"network {net.name} not found", f"{net.name} ({net.driver})", "docker network ls")
    driver = found[0].attrs["Driver"]
    service = next((s for s in p.stack_services() if s.name == net.probe_from), None)
    if service is None:
        return Finding("error", reason=f"probe service {net.probe_from} not found", source="docker service ls")
    host, _, port = net.probe_to.rpartition(":")
    code, output = swarm.exec_in(p.params.target.swarm, service, [
        "python3", "-c", f"import socket; socket.create_connection(({host!r}, {int(port)}), timeout=5); print('ok')"])
    ok = driver == net.driver and code == 0
    return Finding.check(ok, {"driver": driver, "probe": output.strip()[-200:] or code},
                         {"driver": net.driver, "probe": f"{net.probe_from} -> {net.probe_to} connects"},
                         "docker network inspect; TCP connect from inside a task")


@check("INF-05")
def inf05(p: Probe) -> Finding:
    wanted = p.settings.database_services
    observed = {}
    for service in p.database_services():
        mounts = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Mounts", [])
        data = [m for m in mounts if "postgresql" in m.get("Target", "") and m.get("Type") in ("volume", "bind")]
        observed[service.name] = [f"{m['Type']}:{m.get('Source')}->{m['Target']}" for m in data]
    missing = [s for s in wanted if not observed.get(s)]
    return Finding.check(not missing, observed if not missing else {"without_persistent_data": missing, **observed},
                         "a named volume or bind path for every database data directory", "docker service inspect")


@check("INF-06")
def inf06(p: Probe) -> Finding:
    wanted = p.settings.database_services
    distributed = {}
    for service in p.database_services():
        spec = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
        names = [r.get("SecretName") or r.get("ConfigName") for r in spec.get("Secrets", []) + spec.get("Configs", [])]
        distributed[service.name] = [n for n in names if re.search(r"(crt|cert|tls|key)", n or "")]
    certs = {}
    for member in p.members():
        db = p.database(member)
        cert = tlsprobe.postgres_certificate(db.host, db.port, str(db.sslrootcert) if db.sslrootcert else None)
        certs[member] = {"verified": cert.verified, "days_left": round(cert.days_left, 1)}
    ok = all(distributed.get(s) for s in wanted) and all(
        c["verified"] and c["days_left"] > p.settings.cert_min_days for c in certs.values())
    return Finding.check(ok, {"distributed": distributed, "certificates": certs},
                         f"TLS material on every database service; chain verifies; > {p.settings.cert_min_days} days",
                         "docker service inspect; TLS handshake")


@check("INF-07")
def inf07(p: Probe) -> Finding:
    expected = p.settings.dns
    if not expected:
        return Finding("n/a", "no DNS names configured", "readiness.dns", "parameters")
    observed = {}
    for name in expected:
        try:
            observed[name] = sorted({ai[4][0] for ai in socket.getaddrinfo(name, None)})
        except socket.gaierror as exc:
            observed[name] = [f"does not resolve: {exc}"]
    bad = [n for n, a in expected.items() if a not in observed[n]]
    return Finding.check(not bad, observed, expected, "getaddrinfo", otherwise="warn")


def endpoint_ports(p: Probe) -> dict[str, tuple[str, int]]:
    """Every host:port the target names."""
    t = p.params.target
    ports = {f"db {n}": (d.host, d.port) for n, d in t.databases.items()}
    urls = {}
    if t.patroni:
        urls.update({f"patroni {m.name}": m.api_url for m in t.patroni.members})
    if t.etcd:
        urls.update({f"etcd {i}": e for i, e in enumerate(t.etcd.endpoints, 1)})
    for name, svc in (("prometheus", t.prometheus), ("alertmanager", t.alertmanager)):
        if svc:
            urls[name] = svc.url
    for name, url in urls.items():
        parsed = urlparse(url)
        ports[name] = (parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80))
    if t.pgbouncer:
        ports["pgbouncer"] = (t.pgbouncer.host, t.pgbouncer.port)
    return ports


@check("INF-08")
def inf08(p: Probe) -> Finding:
    closed = {}
    ports = endpoint_ports(p)
    for name, (host, port) in ports.items():
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as exc:
            closed[name] = f"{host}:{port} {exc.strerror or exc}"
    return Finding.check(not closed, closed or f"{len(ports)} endpoints accept TCP",
                         "TCP connect succeeds to every configured endpoint", "socket.connect", otherwise="warn")


@check("INF-09")
def inf09(p: Probe) -> Finding:
    observed = {}
    for name in p.endpoints("primary", "replica"):
        observed[name] = p.sql_one(name, "SELECT pg_is_in_recovery() AS in_recovery")["in_recovery"]
    rw = [n for n in p.endpoints("primary")]
    ro = [n for n in p.endpoints("replica")]
    ok = bool(rw) and all(observed[n] is False for n in rw) and all(observed[n] is True for n in ro)
    return Finding.check(ok, {n: ("replica" if v else "primary") for n, v in observed.items()},
                         {**{n: "primary" for n in rw}, **{n: "replica" for n in ro}}, "SELECT pg_is_in_recovery()")


@check("INF-12")
def inf12(p: Probe) -> Finding:
    offsets = {}
    for member in p.members():
        # NTP-style: several readings on one connection, the one with the shortest round trip decides
        with p.connect(member) as conn:
            samples = []
            for _ in range(5):
                before = time.time()
                server = float(postgres.scalar(conn, "SELECT extract(epoch FROM clock_timestamp())"))
                after = time.time()
                samples.append((after - before, server - (before + after) / 2))
        offsets[member] = round(min(samples)[1] * 1000, 2)
    return decide_clock(offsets, p.settings.clock_offset_max_ms)


@check("INF-13")
def inf13(p: Probe) -> Finding:
    values = {}
    for service in p.database_services():
        code, out = swarm.exec_in(p.params.target.swarm, service,
                                  ["cat", "/proc/sys/vm/swappiness", "/proc/sys/net/core/somaxconn"])
        swappiness, somaxconn = (int(x) for x in out.split()[:2])
        values[service.name] = {"vm.swappiness": swappiness, "net.core.somaxconn": somaxconn}
    return decide_kernel(values, p.settings.swappiness_max, p.settings.somaxconn_min)


@check("INF-14")
def inf14(p: Probe) -> Finding:
    limits = {}
    script = ("for d in /proc/[0-9]*; do if [ \"$(cat $d/comm 2>/dev/null)\" = postgres ]; then "
              "grep 'Max open files' $d/limits; break; fi; done")
    for service in p.database_services():
        code, out = swarm.exec_in(p.params.target.swarm, service, ["sh", "-c", script])
        match = re.search(r"Max open files\s+(\d+|unlimited)", out)
        if not match:
            raise RuntimeError(f"{service.name}: no postgres process found ({out.strip()[:100]})")
        limits[service.name] = 1 << 62 if match[1] == "unlimited" else int(match[1])
    return decide_nofile(limits, p.settings.nofile_min)


@check("INF-15")
def inf15(p: Probe) -> Finding:
    location = p.params.path(p.need(p.settings.backup_location, "readiness.backup_location"))
    location.mkdir(parents=True, exist_ok=True)
    sources = p.endpoints("legacy") or [p.write_endpoint]
    data = sum(int(p.sql_one(s, "SELECT sum(pg_database_size(oid))::bigint AS b FROM pg_database")["b"])
               for s in sources)
    stat = os.statvfs(location)
    free = stat.f_bavail * stat.f_frsize
    need = p.settings.backup_space_multiple * data
    return Finding.check(free >= need, {"free_bytes": free, "data_bytes": data, "location": str(location)},
                         f">= {p.settings.backup_space_multiple:g} x data ({int(need)} bytes)",
                         "statvfs; pg_database_size")
