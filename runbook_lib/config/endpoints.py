"""Connection specs: the target resolved once per run into what each client needs, and nothing else.

A spec names one endpoint: host, port, database, user, TLS mode, the CA file as an absolute path,
and the password as a reference that is resolved only when a connection opens (inside the kernel).
Clients take specs, never the whole parameters, so they cannot work out endpoints again each call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runbook_lib.config.secrets import SecretRef
from runbook_lib.errors import RunbookError


class EndpointError(RunbookError, KeyError):
    """An endpoint name the parameters do not define, or a role no endpoint has."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class PgSpec:
    """One PostgreSQL endpoint (a server, the write endpoint, or a pooler's database)."""

    name: str
    host: str
    port: int
    dbname: str
    user: str
    sslmode: str = "prefer"
    sslrootcert: Path | None = None
    password: SecretRef | None = field(default=None, repr=False)
    connect_timeout: int = 5
    role: str = "any"
    server_sslrootcert: str | None = None  # the CA's path on the servers (a subscriber's, verifying this publisher)

    def conninfo(self) -> str:
        """A displayable connection string (libpq keywords, TLS included, never the password)."""
        parts = [f"host={self.host}", f"port={self.port}", f"dbname={self.dbname}", f"user={self.user}",
                 f"sslmode={self.sslmode}"]
        if self.sslrootcert:
            parts.append(f"sslrootcert={self.sslrootcert}")
        return " ".join(parts)

    def connect_kwargs(self) -> dict[str, Any]:
        """psycopg/libpq keyword arguments; the password is read here, at connect time."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.dbname, "user": self.user,
                                  "sslmode": self.sslmode, "connect_timeout": self.connect_timeout}
        if self.sslrootcert:
            kwargs["sslrootcert"] = str(self.sslrootcert)
        if self.password:
            kwargs["password"] = self.password.resolve().reveal()
        return kwargs

    def with_dbname(self, dbname: str) -> PgSpec:
        return replace(self, dbname=dbname)


@dataclass(frozen=True)
class PgBouncerSpec:
    """PgBouncer's admin console, and where its configuration lives (the cutover rewrites it)."""

    admin: PgSpec
    service: str | None = None
    config_path: str = "/etc/pgbouncer/pgbouncer.ini"


@dataclass(frozen=True)
class Endpoints:
    """Every endpoint of a target, resolved once: look them up by name or role."""

    databases: Mapping[str, PgSpec]
    pgbouncer: PgBouncerSpec | None = None

    def db(self, name: str) -> PgSpec:
        try:
            return self.databases[name]
        except KeyError:
            raise EndpointError(f"target.databases has no endpoint {name!r} (known: "
                                f"{', '.join(self.databases) or 'none'})") from None

    def by_role(self, *roles: str) -> list[PgSpec]:
        return [spec for spec in self.databases.values() if not roles or spec.role in roles]

    def pooler(self) -> PgSpec:
        """The application's entry point: the endpoint with role pooler."""
        poolers = self.by_role("pooler")
        if not poolers:
            raise EndpointError("no database endpoint with role pooler (the application's entry point)")
        return poolers[0]

    def admin(self) -> PgBouncerSpec:
        if self.pgbouncer is None:
            raise EndpointError("target.pgbouncer is not configured")
        return self.pgbouncer
