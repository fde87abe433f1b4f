"""Per-sandbox credentials: random, generated once at `up`, 0600 files outside git, handed to
services only as Docker secrets (never environment values)."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import tempfile
from pathlib import Path

import bcrypt
import yaml

from runbook_lib.config import signing
from runbook_lib.sandbox.context import Sandbox

# secret name -> what it is for
NAMES = {
    "postgres_password": "PostgreSQL superuser (legacy and dpg)",
    "replication_password": "Patroni streaming replication role",
    "app_password": "least-privilege application role",
    "monitor_password": "pg_monitor role used by the exporters",
    "pgbouncer_admin_password": "PgBouncer admin console user",
    "patroni_api_password": "Patroni REST API basic auth (its unsafe methods: switchover, config)",
    "monitoring_password": "Prometheus, Alertmanager and Pushgateway web basic auth",
    "etcd_root_password": "etcd's root user (the runbooks; auth is on)",
    "webhook_password": "the alert webhook receiver's basic auth (Alertmanager posts, the runbooks read)",
    "etcd_patroni_password": "etcd's patroni user (Patroni's namespace only)",
}
PATRONI_API_USER = "patroni"
MONITORING_USER = "runbook"
WEBHOOK_USER = "alerts"
# derived from a password above, handed to the services as Docker secrets too
WEB_CONFIG = "monitoring_web_yml"  # Prometheus/Alertmanager/Pushgateway web config: TLS and a bcrypt hash


def ensure(sb: Sandbox) -> dict[str, Path]:
    """Create missing secret files (0600, dir 0700); keep existing ones. Return name -> path."""
    sb.secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(sb.state_dir, 0o700)
    os.chmod(sb.secrets_dir, 0o700)
    out: dict[str, Path] = {}
    for name in NAMES:
        path = sb.secrets_dir / name
        if not path.exists() or not path.read_text().strip():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        os.chmod(path, 0o600)
        out[name] = path
    out[WEB_CONFIG] = _web_config(sb, out["monitoring_password"])
    return out


def _web_config(sb: Sandbox, password_file: Path) -> Path:
    """The exporter-toolkit web config: TLS with the sandbox's server certificate, one basic-auth user.

    The bcrypt hash is salted at random, so it is kept and remade only when the password changed: an unchanged
    file keeps its Docker secret name and an `up` does not restart the monitoring services."""
    path = sb.secrets_dir / WEB_CONFIG
    password = password_file.read_text().strip().encode()
    if path.exists():
        current = yaml.safe_load(path.read_text()) or {}
        hashed = (current.get("basic_auth_users") or {}).get(MONITORING_USER, "")
        if hashed and bcrypt.checkpw(password, hashed.encode()):
            return path
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=10)).decode()
    text = yaml.safe_dump({"tls_server_config": {"cert_file": "/run/secrets/tls_server_crt",
                                                 "key_file": "/run/secrets/tls_server_key"},
                           "basic_auth_users": {MONITORING_USER: hashed}}, sort_keys=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


SIGNING_KEY = "operator_signing_key"  # not a Docker secret: the runbooks' own key, for sealing runs
OPERATOR = "sandbox-operator"


def ensure_signing(sb: Sandbox) -> None:
    """The sandbox's operator key (signs its runs and rehearsal approvals), the team's keys file listing it,
    and the anchor repository: so every seal on the sandbox is signed and anchored like production's."""
    key = sb.secrets_dir / SIGNING_KEY
    team = sb.state_dir / "keys" / "team.pub"
    if not key.exists():
        with tempfile.TemporaryDirectory() as tmp:
            private, line = signing.init(OPERATOR, Path(tmp))
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(private.read_bytes())
        team.parent.mkdir(parents=True, exist_ok=True)
        team.write_text(f"# the sandbox's team: its operator key (runbook keys init NAME adds a person)\n{line}\n")
    repo = sb.state_dir / "anchor"
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", str(repo)], check=True, capture_output=True, timeout=60)


def read(sb: Sandbox, name: str) -> str:
    """A secret's value, for handing to a client; never print it."""
    return (sb.secrets_dir / name).read_text().strip()


def content_hash(path: Path) -> str:
    """Short content hash: Docker secrets are immutable, so a new value gets a new secret name."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]
