"""What a check may ask of the target: SQL on an endpoint, Patroni, etcd, Swarm, Prometheus, the campaign.

Answers that several checks share (the Patroni cluster, the Swarm services) are fetched
once per readiness run, under a lock, since checks run concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from runbook_lib.campaign import records
from runbook_lib.clients import postgres
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.params import Params
from runbook_lib.config.policy import parse_duration
from runbook_lib.config.readiness_settings import ReadinessSettings
from runbook_lib.errors import RunbookError
from runbook_lib.readiness.model import Finding


class NotConfigured(RunbookError):
    """The target lacks what an item needs; the item reports error, naming the missing parameter."""


class Probe:
    def __init__(self, params: Params, campaign_dir: Path | None = None) -> None:
        self.params = params
        self.settings: ReadinessSettings = params.readiness
        self.campaign_dir = campaign_dir
        self._cache: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # ------------------------------------------------------------ shared answers

    def shared(self, key: str, fetch: Callable[[], Any]) -> Any:
        """Fetch once per run; concurrent callers wait for the first. Errors are re-raised to each."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._cache:
                try:
                    self._cache[key] = ("ok", fetch())
                except Exception as exc:  # remembered, so every check that needs it reports the same cause
                    self._cache[key] = ("error", exc)
            kind, value = self._cache[key]
        if kind == "error":
            raise value
        return value

    # ------------------------------------------------------------ targets

    def need(self, value: Any, what: str) -> Any:
        if value is None or value == [] or value == {}:
            raise NotConfigured(f"{what} is not set in the parameters")
        return value

    def endpoints(self, *roles: str) -> list[str]:
        return [spec.name for spec in self.params.endpoints.by_role(*roles)]

    def database(self, name: str) -> PgSpec:
        return self.params.endpoints.db(name)

    def connect(self, endpoint: str, **connect: Any) -> psycopg.Connection[dict[str, Any]]:
        return postgres.connect(self.database(endpoint), **connect)

    def prometheus_url(self) -> str:
        return str(self.need(self.params.target.prometheus, "target.prometheus").url)

    def record_finding(self, kind: str, max_age: str, decide: Callable[[dict[str, Any]], Finding]) -> Finding:
        """Decide from the campaign's latest `kind` record, failing when it is missing or older than max_age."""
        record = records.latest(self.campaign_dir, kind)
        if record is None:
            return Finding("fail", f"no {kind} record in this campaign", f"a {kind} record younger than {max_age}",
                           f"records/{kind}.json")
        age = records.age_seconds(record)
        if age > self.seconds(max_age):
            return Finding("fail", f"{kind} record is {age / 86400:.1f} days old", f"younger than {max_age}",
                           f"records/{kind}.json")
        return decide(record["data"])

    @property
    def app_endpoint(self) -> str:
        """The endpoint holding the application schema on the new cluster (the write endpoint)."""
        if self.settings.app_database:
            return self.settings.app_database
        return self.write_endpoint

    @property
    def write_endpoint(self) -> str:
        if self.settings.primary:
            return self.settings.primary
        primaries = self.endpoints("primary")
        return self.need(primaries, "a database endpoint with role primary (or readiness.primary)")[0]

    def members(self) -> list[str]:
        """Every PostgreSQL server of the new cluster: Patroni members, else the primary and replicas."""
        return self.endpoints("member") or self.endpoints("primary", "replica")

    def sql(self, endpoint: str, statement: Any, args: Any = None, **connect: Any) -> list[dict]:
        with self.connect(endpoint, **connect) as conn:
            return postgres.query(conn, statement, args)

    def sql_one(self, endpoint: str, statement: Any, args: Any = None) -> dict:
        rows = self.sql(endpoint, statement, args)
        return rows[0] if rows else {}

    def setting(self, endpoint: str, name: str) -> str:
        return self.shared(f"settings:{endpoint}", lambda: {
            r["name"]: r["setting"] for r in self.sql(endpoint, "SELECT name, setting FROM pg_settings")})[name]

    def stack_services(self) -> list[Any]:
        """The services of the target's stacks, listed once per run for every check that reads them."""
        from runbook_lib.clients import swarm

        return list(self.shared("stack-services", lambda: swarm.stack_services(self.params.target.swarm)))

    def database_services(self) -> list[Any]:
        """The Swarm services that run PostgreSQL (readiness.database_services)."""
        wanted = self.need(self.settings.database_services, "readiness.database_services")
        return [s for s in self.stack_services() if s.name in wanted]

    def seconds(self, text: str) -> float:
        return parse_duration(text)
