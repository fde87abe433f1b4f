"""Security items (SEC-01 .. SEC-17): real probes where the item can be probed."""

from __future__ import annotations

import ipaddress
import re
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg

from runbook_lib.clients import etcd, http, swarm, tlsprobe
from runbook_lib.readiness.model import Finding
from runbook_lib.readiness.probe import Probe
from runbook_lib.readiness.registry import check

SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|KEY)", re.IGNORECASE)


def _server_rules(p: Probe) -> list[dict[str, Any]]:
    rules = []
    for member in p.members():
        rows: list[dict[str, Any]] = p.shared(f"hba:{member}", partial(p.sql, member, "SELECT * FROM pg_hba_file_rules"))
        rules += [{**r, "member": member} for r in rows]
    return rules


# ---------------------------------------------------------------- decisions (pure)


def decide_literal_env(services: dict[str, list[str]]) -> Finding:
    """Service name -> its env entries (NAME=value). Secret-like names may only point at files."""
    literal = []
    for service, env in services.items():
        for entry in env:
            name, _, value = entry.partition("=")
            if SECRET_NAME.search(name) and not name.upper().endswith("_FILE") and value \
                    and not value.startswith("/run/secrets/"):
                literal.append(f"{service}: {name}")
    return Finding.check(not literal, literal or "no literal secret in any service environment",
                         "secret-like variables absent or pointing at /run/secrets", "docker service inspect")


def decide_apparmor(profiles: dict[str, str]) -> Finding:
    bad = {c: prof or "none" for c, prof in profiles.items() if not prof or prof == "unconfined"}
    return Finding.check(bool(profiles) and not bad, profiles if not bad else bad,
                         "every database task under a confining AppArmor/SELinux profile",
                         "docker container inspect .AppArmorProfile", otherwise="warn")


def decide_log_rotation(collector: dict[str, str], drivers: dict[str, dict[str, str]]) -> Finding:
    collector_ok = collector.get("logging_collector") == "on" and (
        collector.get("log_rotation_age", "0") != "0" or collector.get("log_rotation_size", "0") != "0")
    driver_ok = bool(drivers) and all("max-size" in o and "max-file" in o for o in drivers.values())
    return Finding.check(collector_ok or driver_ok, {"collector": collector, "log_drivers": drivers},
                         "logging collector rotation, or log driver with max-size and max-file",
                         "pg_settings; service TaskTemplate.LogDriver", otherwise="warn")


# ---------------------------------------------------------------- checks


@check("SEC-01")
def sec01(p: Probe) -> Finding:
    accepted = []
    for member in p.members():
        db = p.database(member)
        for candidate in p.settings.default_passwords:
            try:
                psycopg.connect(host=db.host, port=db.port, dbname="postgres", user="postgres",
                                password=candidate, sslmode=db.sslmode if db.sslmode != "disable" else "prefer",
                                sslrootcert=str(db.sslrootcert) if db.sslrootcert else None,
                                connect_timeout=5).close()
                accepted.append(f"{member}: a default password")
            except psycopg.OperationalError:
                pass
    admin = [ipaddress.ip_network(c, strict=False) for c in p.settings.admin_cidrs]
    exposed = []
    for r in _server_rules(p):
        users = r.get("user_name") or []
        if not str(r.get("type", "")).startswith("host") or r.get("database") == ["replication"]:
            continue
        if "postgres" in users or "all" in users:
            address = str(r.get("address"))
            try:
                net = ipaddress.ip_network(f"{address}/{r.get('netmask')}" if r.get("netmask") else address,
                                           strict=False)
            except (TypeError, ValueError):
                exposed.append(f"{r['member']} line {r['line_number']}: {address}")
                continue
            if not any(net.version == a.version and net.subnet_of(a) for a in admin):  # type: ignore[arg-type]
                exposed.append(f"{r['member']} line {r['line_number']}: {net}")
    control_plane = control_plane_open(p)
    return Finding.check(not accepted and not exposed and not control_plane,
                         {"default_password_logins": accepted, "superuser_network_lines": exposed,
                          "control_plane_open": control_plane},
                         f"no default password works; superuser reachable only from {p.settings.admin_cidrs}; "
                         "the control plane refuses strangers (Patroni REST over TLS with auth, etcd over TLS with "
                         "client certificates and auth on, Prometheus' admin API off)",
                         "login attempts; pg_hba_file_rules; Patroni, etcd and Prometheus APIs")


def control_plane_open(p: Probe) -> dict[str, str]:
    """API -> what it lets a stranger do. Why in SEC-01: Patroni's REST API and etcd steer the cluster (a
    switchover, the leader key) and Prometheus' admin API deletes series: each is the superuser by another door."""
    t = p.params.target
    found: dict[str, str] = {}
    for member in t.patroni.members if t.patroni else []:
        found[f"patroni {member.name}"] = patroni_rest_open(member.api_url.rstrip("/"))
    for endpoint in t.etcd.endpoints if t.etcd else []:
        found[f"etcd {endpoint}"] = etcd_open(endpoint.rstrip("/"))
    if t.prometheus:
        found["prometheus"] = prometheus_admin_api(t.prometheus.url.rstrip("/"))
    return {api: what for api, what in found.items() if what}


def patroni_rest_open(api: str) -> str:
    """A failover without a candidate is refused (400) after the credential check: asked without credentials,
    a protected API says 401, an open one 400, and nothing happens either way."""
    if not api.lower().startswith("https://"):
        return "plain http (no TLS)"
    answer = http.call("POST", f"{api}/failover", json_body={"candidate": ""}, anonymous=True, expect_json=False,
                       ok_codes=http.ANY_STATUS)
    return "" if answer.status_code in (401, 403) else \
        f"POST /failover without credentials reached the handler (HTTP {answer.status_code})"


def etcd_open(endpoint: str) -> str:
    if not endpoint.lower().startswith("https://"):
        return "plain http (no TLS)"
    http.post(f"{endpoint}/v3/cluster/member/list")  # reachable with the parameters' access
    problems = []
    try:
        http.call("POST", f"{endpoint}/v3/cluster/member/list", json_body={}, anonymous=True)
        problems.append("answers without a client certificate")
    except http.HttpError:
        pass  # refused the stranger (it answered the runbooks a moment ago)
    if not etcd.auth_status_at(endpoint)["enabled"]:
        problems.append("auth off")
    return "; ".join(problems)


def prometheus_admin_api(url: str) -> str:
    """clean_tombstones is the admin API's harmless call: 204 when the API is on, an error naming it when off."""
    answer = http.call("POST", f"{url}/api/v1/admin/tsdb/clean_tombstones", expect_json=False, ok_codes=http.ANY_STATUS)
    if answer.status_code in (401, 403):
        raise http.HttpError(f"Prometheus refused the runbooks (HTTP {answer.status_code}): set "
                             "target.prometheus.access to ask whether its admin API is on")
    return "admin API on (--web.enable-admin-api)" if answer.status_code in (200, 204) else ""


@check("SEC-02")
def sec02(p: Probe) -> Finding:
    role = p.need(p.params.target.app, "target.app").role
    row = p.sql_one(p.app_endpoint, """SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls,
        has_schema_privilege('public', 'public', 'CREATE') AS public_create FROM pg_roles WHERE rolname = %s""", [role])
    if not row:
        return Finding("fail", f"role {role} does not exist", "the application role", "pg_roles")
    ok = not any(row.values())
    return Finding.check(ok, row, "all false", "pg_roles; has_schema_privilege")


@check("SEC-03")
def sec03(p: Probe) -> Finding:
    observed, bad = {}, []
    for member in p.members():
        db = p.database(member)
        try:
            ssl = p.setting(member, "ssl")
        except psycopg.OperationalError as exc:
            if "certificate verify failed" not in str(exc):
                raise
            bad.append(f"{member}: its certificate does not verify against {db.sslrootcert}")
            continue
        if ssl != "on":
            bad.append(f"{member}: ssl off")
            continue
        cert = tlsprobe.postgres_certificate(db.host, db.port, str(db.sslrootcert) if db.sslrootcert else None)
        observed[member] = {"subject": cert.subject, "issuer": cert.issuer, "days_left": round(cert.days_left, 1),
                            "verified": cert.verified}
        if cert.days_left <= 0 or not cert.verified or cert.self_signed:
            bad.append(member)
    return Finding.check(not bad and bool(observed), observed if not bad else {"failing": bad, **observed},
                         "ssl on; unexpired; verifies against the configured CA; leaf not self-signed",
                         "TLS handshake with each member")


def _app_credentials(p: Probe) -> tuple[str, str]:
    app = p.need(p.params.target.app, "target.app")
    pooled = [d for d in p.params.endpoints.by_role() if d.user == app.role and d.password]
    db = p.need(pooled, f"a database endpoint with user {app.role} and a password reference")[0]
    assert db.password is not None
    return app.role, db.password.resolve().reveal()


@check("SEC-04")
def sec04(p: Probe) -> Finding:
    user, password = _app_credentials(p)
    app_db = p.need(p.params.target.app, "target.app").database
    accepted = {}
    for name in p.members() + p.endpoints("pooler"):
        db = p.database(name)
        try:
            psycopg.connect(host=db.host, port=db.port, dbname=app_db, user=user, password=password,
                            sslmode="disable", connect_timeout=5).close()
            accepted[name] = "plain connection accepted"
        except psycopg.OperationalError as exc:
            accepted[name] = f"refused: {str(exc).strip().splitlines()[-1][:120]}"
    leaks = [n for n, v in accepted.items() if not v.startswith("refused")]
    return Finding.check(not leaks, accepted, "every non-TLS connection of the application role refused",
                         "psycopg.connect(sslmode=disable) as the application role")


@check("SEC-05")
def sec05(p: Probe) -> Finding:
    encryption = p.setting(p.write_endpoint, "password_encryption")
    md5_lines = [f"{r['member']} line {r['line_number']}" for r in _server_rules(p) if r.get("auth_method") == "md5"]
    md5_roles = [r["rolname"] for r in p.sql(p.write_endpoint,
                                             "SELECT rolname FROM pg_authid WHERE rolpassword LIKE 'md5%%'")]
    ok = encryption == "scram-sha-256" and not md5_lines and not md5_roles
    return Finding.check(ok, {"password_encryption": encryption, "md5_hba_lines": md5_lines, "md5_roles": md5_roles},
                         "scram-sha-256; no md5 anywhere", "pg_settings, pg_hba_file_rules, pg_authid")


@check("SEC-06")
def sec06(p: Probe) -> Finding:
    if p.params.evidence.get("SEC-06"):
        return Finding("pass", p.params.evidence["SEC-06"], "rotation evidence", "parameters.evidence")
    limit = p.seconds(p.settings.secret_rotation)
    client = swarm.for_target(p.params.target.swarm)
    used = {ref["SecretName"] for s in p.stack_services()
            for ref in s.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets", [])}
    now = datetime.now(UTC)
    seconds = {}
    for secret in client.secrets.list():
        if secret.name in used:
            created = datetime.fromisoformat(secret.attrs["CreatedAt"][:19]).replace(tzinfo=UTC)
            seconds[secret.name] = (now - created).total_seconds()
    old = [n for n, age in seconds.items() if age > limit]
    ages = {n: round(age / 86400, 1) for n, age in seconds.items()}
    return Finding.check(bool(ages) and not old, {"age_days": ages, "older_than_limit": old},
                         f"every credential secret younger than {p.settings.secret_rotation}", "docker secret inspect",
                         otherwise="warn")


@check("SEC-07")
def sec07(p: Probe) -> Finding:
    services = {s.name: s.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env", []) or []
                for s in p.stack_services()}
    if not services:
        return Finding("error", reason="no services found in the target's stacks", source="docker service ls")
    return decide_literal_env(services)


@check("SEC-08")
def sec08(p: Probe) -> Finding:
    observed = {m: {k: p.setting(m, k) for k in ("log_connections", "log_disconnections")} for m in p.members()}
    ok = all(v == "on" for row in observed.values() for v in row.values())
    return Finding.check(ok, observed, "both on everywhere", "pg_settings", otherwise="warn")


@check("SEC-09")
def sec09(p: Probe) -> Finding:
    observed = {m: int(p.setting(m, "log_min_duration_statement")) for m in p.members()}
    ok = all(0 < v <= 1000 for v in observed.values())
    return Finding.check(ok, observed, "0 < log_min_duration_statement <= 1000 ms", "pg_settings", otherwise="warn")


@check("SEC-10")
def sec10(p: Probe) -> Finding:
    endpoint = p.write_endpoint
    collector = {k: p.setting(endpoint, k) for k in ("logging_collector", "log_rotation_age", "log_rotation_size")}
    drivers = {s.name: (s.attrs["Spec"]["TaskTemplate"].get("LogDriver") or {}).get("Options") or {}
               for s in p.database_services()}
    return decide_log_rotation(collector, drivers)


@check("SEC-11")
def sec11(p: Probe) -> Finding:
    profiles = {}
    for service in p.database_services():
        container = swarm.running_container(p.params.target.swarm, service)
        profiles[service.name] = container.attrs.get("AppArmorProfile", "") or \
            ",".join(container.attrs.get("HostConfig", {}).get("SecurityOpt") or [])
    return decide_apparmor(profiles)


@check("SEC-15")
def sec15(p: Probe) -> Finding:
    observed = {m: {k: p.setting(m, k) for k in ("log_statement", "log_parameter_max_length",
                                                 "log_parameter_max_length_on_error")} for m in p.members()}
    ok = all(r["log_statement"] not in ("all", "mod") and r["log_parameter_max_length"] == "0"
             and r["log_parameter_max_length_on_error"] == "0" for r in observed.values())
    return Finding.check(ok, observed, "log_statement none/ddl; bind parameters not logged", "pg_settings",
                         otherwise="warn")


@check("SEC-16")
def sec16(p: Probe) -> Finding:
    if not p.settings.https_endpoints:
        return Finding("n/a", "no HTTPS endpoint configured", "readiness.https_endpoints", "parameters")
    missing = {}
    for url in p.settings.https_endpoints:
        headers = http.call("GET", url, expect_json=False, ok_codes=http.ANY_STATUS).headers  # any answer
        lacking = [h for h in ("Strict-Transport-Security", "Content-Security-Policy") if h not in headers]
        if lacking:
            missing[url] = lacking
    return Finding.check(not missing, missing or "HSTS and CSP everywhere", "HSTS and CSP headers", "HTTP GET",
                         otherwise="warn")


@check("SEC-17")
def sec17(p: Probe) -> Finding:
    """Evidence item with teeth: the referenced report must be a scanner JSON without critical findings."""
    import json

    ref = p.params.evidence.get("SEC-17")
    if not ref:
        return Finding("missing", None, "a Trivy/Grype JSON report per image", "parameters.evidence",
                       "no scanner report recorded")
    path = p.params.path(ref)
    report = json.loads(path.read_text())
    age_days = (time.time() - path.stat().st_mtime) / 86400
    text = json.dumps(report)
    critical = text.count('"Severity": "CRITICAL"') + text.count('"severity": "Critical"')
    return Finding.check(critical == 0 and age_days <= 30, {"report": ref, "critical": critical,
                                                            "age_days": round(age_days, 1)},
                         "no critical finding, report younger than 30 days", str(path), otherwise="warn")
