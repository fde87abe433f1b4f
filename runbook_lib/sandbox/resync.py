"""Re-align database passwords with the state directory's credentials.

Why: `down` keeps volumes, so a sandbox whose state directory was deleted (git clean, a new clone)
meets data directories initialised with older passwords. Passwords are reset over the local unix
socket (peer auth) inside the task, with the SQL on stdin: never on a command line or in an event log.
"""

from __future__ import annotations

from psycopg import sql

from runbook_lib.sandbox import credentials, docker_cli
from runbook_lib.sandbox.context import Sandbox, SandboxError

ROLES = {"postgres": "postgres_password", "replicator": "replication_password"}


def reset_passwords(sb: Sandbox, service: str, port: int) -> None:
    """ALTER ROLE ... PASSWORD for the superuser (and replicator where it exists) via the unix socket."""
    set_passwords(service, port, {role: credentials.read(sb, secret) for role, secret in ROLES.items()})


def set_passwords(service: str, port: int, passwords: dict[str, str]) -> None:
    """Set each existing role's password inside the task, the SQL on stdin (tests use it to age a volume)."""
    stmts = []
    for role, password in passwords.items():
        stmt = sql.SQL("DO $$BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {r}) THEN "
                       "EXECUTE format('ALTER ROLE %I PASSWORD %L', {r}, {p}); END IF; END$$;").format(
            r=sql.Literal(role), p=sql.Literal(password))
        stmts.append(stmt.as_string(None))
    container, engine = docker_cli.task_container(service)
    proc = docker_cli.run("exec", "-i", "-u", "postgres", container, "psql", "-X", "-q",
                          "-v", "ON_ERROR_STOP=1", "-h", "/tmp", "-p", str(port), "-d", "postgres",
                          input="\n".join(stmts) + "\n", check=False, host=engine)
    if proc.returncode != 0:
        raise SandboxError(f"resetting passwords in {service} failed: {proc.stderr.strip()[:300]}")
