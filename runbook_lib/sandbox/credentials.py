"""Per-sandbox credentials: random, generated once at `up`, 0600 files outside git, handed to
services only as Docker secrets (never environment values)."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from runbook_lib.sandbox.context import Sandbox

# secret name -> what it is for
NAMES = {
    "postgres_password": "PostgreSQL superuser (legacy and dpg)",
    "replication_password": "Patroni streaming replication role",
    "app_password": "least-privilege application role",
    "monitor_password": "pg_monitor role used by the exporters",
    "pgbouncer_admin_password": "PgBouncer admin console user",
}


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
    return out


def read(sb: Sandbox, name: str) -> str:
    """A secret's value, for handing to a client; never print it."""
    return (sb.secrets_dir / name).read_text().strip()


def content_hash(path: Path) -> str:
    """Short content hash: Docker secrets are immutable, so a new value gets a new secret name."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]
