"""The typed parameters of a run: the target, the policy, waivers and evidence.

Everything is validated here, before a kernel starts and before anything is
touched. Errors name the key path and what was expected. Overrides given as
`-p key.path=value` are coerced by the schema's own types, not guessed.
"""

from __future__ import annotations

import getpass
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from runbook_lib.config import http_access, redact, yamlsafe
from runbook_lib.config import policy as policy_mod
from runbook_lib.config.endpoints import Endpoints, PgBouncerSpec, PgSpec
from runbook_lib.config.policy import Duration
from runbook_lib.config.readiness_settings import ReadinessSettings
from runbook_lib.config.readiness_settings import figure as readiness_figure
from runbook_lib.config.readiness_settings import loosenings as readiness_loosenings
from runbook_lib.config.sandbox_spec import SandboxSpec
from runbook_lib.config.secrets import NEVER_READ, Secret, SecretError, SecretRef
from runbook_lib.errors import RunbookError

_SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_LITERAL_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|api_key|private_key)$", re.IGNORECASE)
_URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
_KV_PASSWORD = re.compile(r"\bpassword\s*=", re.IGNORECASE)
_TOO_WIDE_TO_ALLOW = {Path(p) for p in ("/", "/etc", "/root", "/home", "/var", "/usr", "/tmp", "/run", "/opt", "/srv")}


class ParamsError(RunbookError):
    """Bad input: one line per problem, each naming its key path and what was expected."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__("\n".join(f"{head}{path or '<top>'}: {msg}" for path, msg in problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _anchored(path: str | None, base_dir: Path) -> Path | None:
    """A file path from the parameters, relative ones anchored at the parameters file's folder."""
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def _no_embedded_password(value: str | None) -> str | None:
    if value and (_URL_WITH_PASSWORD.search(value) or _KV_PASSWORD.search(value)):
        raise ValueError("carries a literal password; put it in a secret reference field instead")
    return value


class Endpoint(_Model):
    host: str
    port: int = Field(ge=1, le=65535)


class Database(_Model):
    """A PostgreSQL endpoint the runbooks connect to."""

    host: str
    port: int = Field(5432, ge=1, le=65535)
    dbname: str = "postgres"
    user: str
    password: SecretRef | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    server_sslrootcert: str | None = Field(
        None, description="the CA file's path on the database servers: a subscriber that replicates from this "
                          "endpoint verifies it with that file (without it, verify-ca/verify-full become require)")
    role: Literal["legacy", "primary", "replica", "member", "pooler", "any"] = "any"
    connect_timeout: int = Field(5, ge=1, le=120)

    _check_host = field_validator("host")(_no_embedded_password)

    def spec(self, name: str, base_dir: Path) -> PgSpec:
        """This endpoint as a connection spec: CA path absolute, password a reference anchored at base_dir."""
        return PgSpec(name=name, host=self.host, port=self.port, dbname=self.dbname, user=self.user,
                      sslmode=self.sslmode, sslrootcert=_anchored(self.sslrootcert, base_dir),
                      password=self.password.absolute(base_dir) if self.password else None,
                      connect_timeout=self.connect_timeout, role=self.role,
                      server_sslrootcert=self.server_sslrootcert)


class HttpAccess(_Model):
    """How the runbooks reach one HTTP API: the CA that signed its certificate, a client certificate, credentials.
    Paths are relative to the parameters file; the password is a secret reference, resolved only when sent."""

    ca_file: str | None = Field(None, description="CA bundle that signed the API's server certificate (https)")
    cert_file: str | None = Field(None, description="client certificate (PEM) for APIs that ask for one (etcd)")
    key_file: str | None = Field(None, description="the client certificate's private key (PEM)")
    username: str | None = Field(None, pattern=r"^[^:\s]+$", description="basic auth user")
    password: SecretRef | None = Field(None, description="basic auth password (a secret reference)")
    timeout: float = Field(5.0, gt=0, le=120, description="seconds to connect and to read an answer")
    retries: int = Field(2, ge=0, le=10, description="retries of a refused connection (and of a GET's read)")

    @model_validator(mode="after")
    def _pairs(self) -> HttpAccess:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together (a client certificate and its key)")
        if bool(self.username) != bool(self.password):
            raise ValueError("username and password go together (basic auth)")
        return self

    def runtime(self, api: str, base_dir: Path, login: str = "basic") -> http_access.Access:
        return http_access.Access(api=api, login=login, ca_file=_anchored(self.ca_file, base_dir),
                                  cert_file=_anchored(self.cert_file, base_dir),
                                  key_file=_anchored(self.key_file, base_dir), username=self.username,
                                  password=self.password.absolute(base_dir) if self.password else None,
                                  timeout=self.timeout, retries=self.retries)


class _HttpApi(_Model):
    """An HTTP API of the target: its URLs, and the access the runbooks reach them with."""

    access: HttpAccess | None = Field(None, description="TLS, client certificate and credentials of this API")

    def urls(self) -> list[str]:
        raise NotImplementedError

    @model_validator(mode="after")
    def _no_plaintext_credentials(self) -> _HttpApi:
        """Credentials or a client key sent over http:// would cross the network in the clear."""
        if self.access and (self.access.password or self.access.key_file):
            plain = [u for u in self.urls() if u.lower().startswith("http://")]
            if plain:
                raise ValueError(f"access carries credentials but {plain[0]} is plain http: use https")
        return self


class PatroniMember(_Model):
    name: str
    api_url: str
    service: str | None = Field(None, description="the Swarm service running this member (failover drills)")

    _check = field_validator("api_url")(_no_embedded_password)


class Patroni(_HttpApi):
    scope: str
    members: list[PatroniMember] = Field(min_length=1)

    def urls(self) -> list[str]:
        return [m.api_url for m in self.members]


class Etcd(_HttpApi):
    endpoints: list[str] = Field(min_length=1)

    _check = field_validator("endpoints")(lambda v: [_no_embedded_password(e) for e in v])

    def urls(self) -> list[str]:
        return list(self.endpoints)


class HAProxy(_Model):
    rw: Endpoint
    ro: Endpoint | None = None
    stats_url: str | None = None

    _check = field_validator("stats_url")(_no_embedded_password)


class PgBouncer(_Model):
    host: str
    port: int = Field(6432, ge=1, le=65535)
    admin_user: str
    admin_password: SecretRef | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    service: str | None = Field(None, description="the Swarm service running PgBouncer (cutover rewrites its config)")
    config_path: str = Field("/etc/pgbouncer/pgbouncer.ini", pattern=r"^/[A-Za-z0-9_./-]+$",
                             description="pgbouncer.ini inside that service's task (an absolute path)")

    def spec(self, base_dir: Path) -> PgBouncerSpec:
        admin = PgSpec(name="pgbouncer-admin", host=self.host, port=self.port, dbname="pgbouncer", user=self.admin_user,
                       sslmode=self.sslmode, sslrootcert=_anchored(self.sslrootcert, base_dir),
                       password=self.admin_password.absolute(base_dir) if self.admin_password else None)
        return PgBouncerSpec(admin=admin, service=self.service, config_path=self.config_path)


class HttpService(_HttpApi):
    url: str
    webhook_url: str | None = None
    receivers: list[str] | None = Field(None, description="Alertmanager: the receivers a test alert must reach "
                                                          "(default: every receiver it has)")
    test_labels: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Alertmanager: extra labels that route the test alert to a receiver "
                                          "(receiver -> labels); every test alert also carries test_receiver=<name>")

    webhook_access: HttpAccess | None = Field(
        None, description="Alertmanager: how the runbooks read webhook_url (a receiver's own TLS and credentials)")

    _check = field_validator("url", "webhook_url")(_no_embedded_password)

    def urls(self) -> list[str]:
        """The API's own URL; webhook_url is a receiver's, which must never get this API's credentials."""
        return [self.url]

    @model_validator(mode="after")
    def _webhook_access_over_tls(self) -> HttpService:
        access = self.webhook_access
        if access and (access.password or access.key_file):
            if not self.webhook_url:
                raise ValueError("webhook_access is set but webhook_url is not")
            if self.webhook_url.lower().startswith("http://"):
                raise ValueError(f"webhook_access carries credentials but {self.webhook_url} is plain http: use https")
        return self


class Swarm(_Model):
    docker_host: str | None = None
    stacks: list[str] = Field(default_factory=list)
    node_engines: dict[str, str] = Field(
        default_factory=dict, description="each node's own Docker engine (ssh://, tcp:// or unix://), by node "
        "hostname or ID: a task on a node other than docker_host's is reached (exec, its files) through it")

    _check = field_validator("docker_host")(_no_embedded_password)

    @field_validator("node_engines")
    @classmethod
    def _engines(cls, value: dict[str, str]) -> dict[str, str]:
        for node, endpoint in value.items():
            if not re.match(r"(ssh|tcp|unix)://", endpoint):
                raise ValueError(f"{node}: {endpoint!r} is not a Docker engine endpoint (ssh://, tcp:// or unix://)")
            _no_embedded_password(endpoint)
        return value


class App(_Model):
    database: str
    role: str


class WorkloadOp(_Model):
    """One operation of the application's query mix: its SQL, how often, and where its arguments come from."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    sql: str = Field(min_length=1, description="the statement; named arguments as %(name)s")
    weight: float = Field(1.0, gt=0)
    sample: str | None = Field(None, description="a query whose rows supply the arguments (column = argument "
                                                 "name); each request takes a random row of up to 10,000")
    vector: bool = Field(False, description="a vector search: counted in the vector p95")


class Workload(_Model):
    """The synthetic load used by load tests and baselines."""

    endpoint: str = Field(description="database endpoint the application uses (usually the pooler)")
    concurrency: int = Field(8, ge=1, le=5000, description="concurrent clients, each with its own connection "
                                                            "(the policy's capacity is 1,000 users)")
    duration: Duration = 30.0
    ramp: Duration | None = Field(None, description="time over which the clients connect, evenly spread "
                                                      "(default: 20 ms per client, at most half the duration)")
    max_requests: int = Field(2_000_000, ge=1)
    mix: list[WorkloadOp] | None = Field(None, description="the application's query mix (default: derived from "
                                                           "the catalog: primary-key reads, k-NN searches)")

    @property
    def ramp_s(self) -> float:
        """Users arrive over time: a thousand TLS and SCRAM handshakes at one instant measure the handshake
        storm, not the cluster."""
        return self.ramp if self.ramp is not None else min(0.02 * self.concurrency, self.duration / 2)


class Target(_Model):
    """The system the runbooks act on."""

    name: str = Field(pattern=_SLUG)
    environment: Literal["sandbox", "staging", "production"]
    databases: dict[str, Database] = Field(min_length=1)
    patroni: Patroni | None = None
    etcd: Etcd | None = None
    haproxy: HAProxy | None = None
    pgbouncer: PgBouncer | None = None
    prometheus: HttpService | None = None
    alertmanager: HttpService | None = None
    pushgateway: HttpService | None = Field(None, description="where the runbooks push facts Prometheus cannot "
                                                              "see (the promotions a drill planned)")
    swarm: Swarm | None = None
    app: App | None = None
    workload: Workload | None = None
    lock_endpoint: str | None = Field(None, description="the database endpoint holding the cluster-wide lock of "
                                                        "mutating runs (default: the migration's source, else the "
                                                        "first endpoint)")


class Backup(_Model):
    """Where and how phase 1 backs up the legacy database."""

    source: str = Field(description="database endpoint to back up (the legacy database)")
    location: str = Field(description="backup folder on the operator host")
    space_multiple: float = Field(3.0, ge=1.0, description="free space needed, as a multiple of the data size")
    restore_port: int = Field(25499, ge=1, le=65535, description="127.0.0.1 port of the scratch restore-test server")


class Tools(_Model):
    """Where PostgreSQL client programs run: in a container of an image matching the servers, or on the host."""

    mode: Literal["image", "host"] = "image"
    image: str | None = Field(None, description="image with the servers' PostgreSQL binaries (default: the sandbox's)")
    docker_host: str | None = Field(
        None, description="the Docker engine on the operator's host that runs the tools' containers and the restore "
        "test, with the operator's folders bind-mounted (unix://, or tcp:// on 127.0.0.1/localhost); default: "
        "DOCKER_HOST or the local socket. Never the Swarm's manager: a remote engine would bind its own disk")

    @field_validator("docker_host")
    @classmethod
    def _local(cls, value: str | None) -> str | None:
        _no_embedded_password(value)
        if value is not None and not local_engine(value):
            raise ValueError(f"{value!r} is not an engine on this host (unix://... or tcp://127.0.0.1:PORT): the "
                             "tools bind the operator's folders into their containers; for a host without an "
                             "engine set tools.mode: host")
        return value


def local_engine(endpoint: str) -> bool:
    """Whether a Docker endpoint is an engine on this host (whose bind mounts are this host's folders)."""
    return bool(re.match(r"(unix://|tcp://(127\.0\.0\.1|localhost)(:|/|$))", endpoint))


class Exclusion(_Model):
    """A table the migration leaves behind on purpose (no key, unlogged scratch data...), and why."""

    table: str = Field(pattern=r"^[^.]+\.[^.]+$", description="schema.table, as the catalog names it")
    reason: str = Field(min_length=10)
    approved_by: str = Field(min_length=2)


class Migration(_Model):
    """How phase 2 moves the data and switches the traffic."""

    strategy: Literal["logical", "dump-restore"] = "logical"
    source: str = Field(description="database endpoint of the legacy database")
    target: str = Field(description="database endpoint of the new cluster's write endpoint")
    pooler_database: str = Field(pattern=r"^[A-Za-z0-9_-]+$",
                                 description="the PgBouncer [databases] entry the applications use")
    new_backend: Endpoint = Field(description="where PgBouncer points after the cutover (the write endpoint)")
    app_service: str | None = Field(None, description="Swarm service of the application (dump-restore scales it)")
    copy_timeout: Duration = 1800.0
    apply_timeout: Duration = 60.0
    critical_section_max: Duration = Field(2.0, gt=0, description="bound on the logical cutover's write pause: "
                                                                  "past it the pool resumes on legacy, nothing "
                                                                  "switched")
    probe_interval: Duration = 0.05
    probe_endpoint: str | None = Field(None, description="endpoint the write probe uses (default: the pooler)")
    exclude: list[Exclusion] = Field(default_factory=list, description="tables left out of the move, each with "
                                                                       "a recorded reason")
    large_objects: Literal["refuse", "copy"] = Field("refuse", description="large objects (not carried by logical "
                                                                            "replication): refuse, or copy them at "
                                                                            "the cut and compare")


class SmokeCheck(_Model):
    """One smoke test as the application does it: a statement and what its answer must be."""

    name: str
    sql: str = Field(min_length=1)
    rows: int | None = Field(None, ge=0, description="exactly this many rows back")
    min_rows: int | None = Field(None, ge=0)
    max_rows: int | None = Field(None, ge=0)
    writes: bool = Field(False, description="it changes data: run in a transaction that is always rolled back")


class Checks(_Model):
    """Smoke tests: the ones the parameters declare, and the ones derived from the catalog."""

    smoke: list[SmokeCheck] = Field(default_factory=list)
    derived: bool = Field(True, description="also a primary-key read per table and a k-NN search through each "
                                            "vector column's HNSW index, found in the catalog")


class Rollback(_Model):
    """What the rollback runbook acts on besides the policy's triggers: an operator's decision and its terms."""

    reason: str | None = Field(None, description="roll back by decision (recorded) even when no trigger holds")
    security_issue: bool = Field(False, description="a critical security issue is open (the policy's trigger)")
    accept_loss: bool = Field(False, description="roll back even though writes made on the new cluster would be lost")
    automatic: bool = Field(False, description="a rollback trigger's alert starts the rollback runbook by itself "
                                               "inside the 72-hour window (`runbook autorollback` receives it)")
    automatic_only: list[str] | None = Field(None, description="only these triggers (metric names) roll back by "
                                                               "themselves; the others page people (default: all)")


class Finalize(_Model):
    """Ending the campaign before a PASS verdict needs a recorded reason and who approved it."""

    override: str | None = Field(None, min_length=10, description="finalize without a PASS verdict: why")
    approved_by: str | None = Field(None, min_length=2)

    @model_validator(mode="after")
    def _approved(self) -> Finalize:
        if self.override and not self.approved_by:
            raise ValueError("finalize.override needs finalize.approved_by (who accepts ending without a PASS)")
        return self


class Validation(_Model):
    """Facts the 72-hour validation cannot measure, stated by the operator (absent: the criterion is missing)."""

    started: datetime | None = Field(None, description="start of the window (default: the campaign's cutover record)")
    security_incidents: int | None = Field(None, ge=0, description="security incidents since the cutover")
    cost_projected: float | None = Field(None, gt=0, description="projected running cost for the period")
    cost_actual: float | None = Field(None, ge=0, description="actual running cost for the period")


class Drills(_Model):
    """Bounds a failover drill keeps to pass; a drill past one fails and names it."""

    rto_max: Duration = Field(60.0, description="from the leader stopped (or the switchover asked) to writes "
                                                "accepted through the write endpoint")
    rejoin_max: Duration = Field(180.0, description="until every member, the old leader included, streams again")
    rpo_max_rows: int = Field(0, ge=0, description="writes acknowledged during the drill and then missing from the "
                                                   "new leader: more than this fails the drill")
    write_database: str = Field("postgres", description="database on the write endpoint where the drill's writes "
                                                        "go (its own table, dropped after; never the application's "
                                                        "database, which the way back may publish whole)")
    write_interval: Duration = Field(0.02, description="time between two of the drill's writes")


class Phase1(_Model):
    readiness_max_age: Duration = Field(86400.0, description="a readiness record older than this is re-checked")


class Window(_Model):
    """The maintenance window; the migration refuses to change anything outside it."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("window.end must be after window.start")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window start and end need a time zone (e.g. 2026-12-05T22:00:00Z)")
        return self


class Smtp(_Model):
    host: str
    port: int = Field(25, ge=1, le=65535)
    sender: str
    recipients: list[str] = Field(min_length=1)
    starttls: bool = False
    username: str | None = None
    password: SecretRef | None = None


class Notifications(_Model):
    """Where stakeholder notices go; a file in the campaign's outbox is always written too."""

    webhook_url: SecretRef | None = Field(None, description="Slack-compatible incoming webhook (a secret URL)")
    smtp: Smtp | None = None
    audience: str = "application owners, support, on-call"


class Loosening(_Model):
    """A recorded exception to the rollout policy."""

    key: str
    reason: str = Field(min_length=10)
    approved_by: str = Field(min_length=2)


class Waiver(_Model):
    item: str
    reason: str = Field(min_length=10)
    approved_by: str = Field(min_length=2)


class Signing(_Model):
    """Who seals the runs, whom a verifier trusts, and where the chain head is kept outside the archive."""

    key: SecretRef | None = Field(None, description="the operator's Ed25519 private key (PEM; `runbook keys init`) "
                                                   "that signs each sealed run and the campaign's own files")
    trusted_keys: str | None = Field(None, description="the team's public keys file, one `ed25519 <key> <name>` "
                                                       "line per operator and approver; verify checks against it")
    anchor_repo: str | None = Field(None, description="a git repository outside the archive: each seal commits the "
                                                      "chain head there, and verify checks the archive against it")


class RunSettings(_Model):
    """How runs execute: timeouts that bound a hung kernel or a slow step."""

    cell_timeout: int = Field(900, ge=10, description="seconds one cell may run before the kernel is stopped")
    kernel_start_timeout: int = Field(60, ge=5)
    kernel_name: str = "python3"


class Params(_Model):
    """One parameters file, validated."""

    campaign: str = Field("default", pattern=_SLUG)
    operator: str | None = None
    target: Target
    policy: policy_mod.Policy = Field(default_factory=policy_mod.default_policy)
    policy_loosening: list[Loosening] = Field(default_factory=list)
    signing: Signing = Field(default_factory=Signing)
    secret_dirs: list[str] = Field(default_factory=list, description="folders besides the parameters' own where "
                                   "file: secret references may point (relative to this file)")
    readiness_loosening: list[Loosening] = Field(default_factory=list, description="readiness figures made looser "
                                                 "than the checklist's (key: the readiness field), each with why")
    waivers: list[Waiver] = Field(default_factory=list)
    evidence: dict[str, str] = Field(default_factory=dict)
    run: RunSettings = Field(default_factory=RunSettings)
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)
    notifications: Notifications = Field(default_factory=Notifications)
    backup: Backup | None = None
    window: Window | None = None
    phase1: Phase1 = Field(default_factory=Phase1)
    drills: Drills = Field(default_factory=Drills)
    tools: Tools = Field(default_factory=Tools)
    migration: Migration | None = None
    rollback: Rollback = Field(default_factory=Rollback)
    validation: Validation = Field(default_factory=Validation)
    finalize: Finalize = Field(default_factory=Finalize)
    checks: Checks = Field(default_factory=Checks)
    sandbox: SandboxSpec | None = None

    _source: Path | None = PrivateAttr(default=None)
    _changes: list[policy_mod.Change] = PrivateAttr(default_factory=list)
    _endpoints: Endpoints | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _policy_changes_are_recorded(self) -> Params:
        changes = policy_mod.compare(policy_mod.default_policy(), self.policy)
        loose_checks = [policy_mod.Change(f"readiness.{key}", old, new, looser=True)
                        for key, old, new in readiness_loosenings(self.readiness)]
        problems = _unrecorded(changes, {e.key for e in self.policy_loosening}, "policy.", "the rollout policy",
                               "policy_loosening")
        problems += _unrecorded(loose_checks, {f"readiness.{e.key}" for e in self.readiness_loosening}, "",
                                "the checklist", "readiness_loosening")
        loosened = {c.key for c in changes if c.looser}
        problems += [(f"policy_loosening[{i}].key", f"{e.key!r} names no loosened policy figure")
                     for i, e in enumerate(self.policy_loosening) if e.key not in loosened]
        # a readiness record of a figure tightened since (say by -p) is merely unused; a typo is refused
        problems += [(f"readiness_loosening[{i}].key", f"{e.key!r} names no readiness figure")
                     for i, e in enumerate(self.readiness_loosening) if not readiness_figure(e.key)]
        if problems:
            raise _Problems(problems)
        self._changes = changes + loose_checks
        return self

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def base_dir(self) -> Path:
        return self._source.parent if self._source else Path.cwd()

    @property
    def policy_changes(self) -> list[policy_mod.Change]:
        return list(self._changes)

    @property
    def operator_name(self) -> str:
        return self.operator or getpass.getuser()

    def secret_refs(self) -> list[SecretRef]:
        """Every secret reference in these parameters, anchored at the file's directory."""
        return [ref for _, ref in self.secret_fields()]

    def secret_fields(self) -> list[tuple[str, SecretRef]]:
        """(field path, reference) for every secret reference, anchored at the file's directory."""
        found: list[tuple[str, SecretRef]] = []
        _collect_refs(self, found)
        return [(path, ref.absolute(self.base_dir)) for path, ref in found]

    def scan_refs(self) -> list[SecretRef]:
        """Every secret a run could know, for the archive's scan: the references, and each file in the
        secret_dirs (a sandbox's replication and monitoring passwords are there though no field names them)."""
        refs = self.secret_refs()
        for folder in self._secret_dirs():
            files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()) if folder.is_dir() else []
            refs += [SecretRef(f"file:{p}") for p in files if p.stat().st_size < 65536]
        return list(dict.fromkeys(refs))

    def _secret_dirs(self) -> list[Path]:
        return [self.path(folder).resolve() for folder in self.secret_dirs]

    def confinement_problems(self) -> list[tuple[str, str]]:
        """(field, why) for each file: reference a run may not read (see SecretRef.outside)."""
        listed = self._secret_dirs()
        problems = [(f"secret_dirs[{i}]", f"{folder} is a system folder or a pseudo-filesystem; list the folder "
                                          "that holds the secrets")
                    for i, folder in enumerate(listed)
                    if folder in _TOO_WIDE_TO_ALLOW or any(folder.is_relative_to(p) for p in NEVER_READ)]
        allowed = [self.base_dir, *listed]
        found = [(path, ref.outside(allowed)) for path, ref in self.secret_fields()]
        return problems + [(path, why) for path, why in found if why]

    def unresolved(self) -> list[str]:
        """'field: why' for each secret reference that does not resolve now (never the value)."""
        problems = []
        for path, ref in self.secret_fields():
            try:
                ref.resolve()
            except SecretError as exc:
                problems.append(f"{path}: {exc}")
        return problems

    def http_apis(self) -> dict[str, tuple[list[str], HttpAccess | None]]:
        """Every HTTP API of the target: its key path, its URLs and how to reach them."""
        t = self.target
        apis: dict[str, tuple[list[str], HttpAccess | None]] = {}
        for key, api in (("target.patroni", t.patroni), ("target.etcd", t.etcd), ("target.prometheus", t.prometheus),
                         ("target.alertmanager", t.alertmanager), ("target.pushgateway", t.pushgateway)):
            if api is not None:
                apis[key] = (api.urls(), api.access)
        if t.alertmanager and t.alertmanager.webhook_url:  # the receiver's own access, never the API's
            apis["target.alertmanager.webhook"] = ([t.alertmanager.webhook_url], t.alertmanager.webhook_access)
        return apis

    def register_http_access(self) -> None:
        """Make each API's TLS trust and credentials the ones the HTTP client uses for its URLs."""
        for key, (urls, access) in self.http_apis().items():
            login = "etcd" if key == "target.etcd" else "basic"
            http_access.register(urls, access.runtime(key, self.base_dir, login) if access
                                 else http_access.Access(api=key))

    def resolve(self, ref: SecretRef) -> Secret:
        """Resolve a reference from these parameters (file: paths anchored at the file's directory)."""
        return ref.absolute(self.base_dir).resolve()

    def path(self, value: str) -> Path:
        """A path from the parameters, relative ones anchored at the parameters file."""
        anchored = _anchored(value, self.base_dir)
        assert anchored is not None, "an empty path"
        return anchored

    def lock_spec(self) -> PgSpec:
        """Where mutating runs take their cluster-wide lock: one database every operator reaches."""
        name = self.target.lock_endpoint or (self.migration.source if self.migration else None)
        return self.endpoints.db(name) if name else next(iter(self.endpoints.databases.values()))

    @property
    def endpoints(self) -> Endpoints:
        """The target's endpoints as connection specs, resolved once for this run."""
        if self._endpoints is None:
            t = self.target
            self._endpoints = Endpoints(
                databases={name: db.spec(name, self.base_dir) for name, db in t.databases.items()},
                pgbouncer=t.pgbouncer.spec(self.base_dir) if t.pgbouncer else None)
        return self._endpoints

    def redacted(self) -> dict[str, Any]:
        """JSON-ready parameters: secrets appear only as their references, and a credential written into a
        free-text field (evidence, a URL with user:password@) is masked."""
        return redact.obj(self.model_dump(mode="json", by_alias=True))


def _unrecorded(changes: list[policy_mod.Change], recorded: set[str], shown: str, whose: str,
                records: str) -> list[tuple[str, str]]:
    """Each loosened figure without a record, named at its key path (`shown` + its key)."""
    return [(shown + c.key, f"{_show(c.value)} is looser than {whose}'s {_show(c.default)}; a loosening needs an "
                            f"entry in {records} with key, reason and approved_by")
            for c in changes if c.looser and c.key not in recorded]


class _Problems(ValueError):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))


def _show(value: Any) -> str:
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{value:g}"
    return str(getattr(value, "text", value))


def _collect_refs(value: Any, out: list[tuple[str, SecretRef]], path: str = "") -> None:
    if isinstance(value, SecretRef):
        out.append((path, value))
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect_refs(getattr(value, name), out, f"{path}.{name}" if path else name)
    elif isinstance(value, dict):
        for k, v in value.items():
            _collect_refs(v, out, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _collect_refs(v, out, f"{path}[{i}]")


# ---------------------------------------------------------------- loading


EXTENDS_DEPTH = 3


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """The overlay's values over the base's: mappings merged key by key, anything else (lists too) replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read(source: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One parameters file as a mapping; `extends: FILE` (a file in the same folder) is read first and this
    file's values laid over it, so a variant (another application, another environment) states only what
    differs."""
    try:
        raw = yamlsafe.load(yamlsafe.read_text(source)) or {}
    except yamlsafe.YamlLimit as exc:
        raise ParamsError([(exc.where, exc.what)], str(source)) from None
    except yaml.YAMLError as exc:
        raise ParamsError([("", f"not valid YAML: {exc}")], str(source)) from None
    if not isinstance(raw, dict):
        raise ParamsError([("", "expected a mapping at the top of the file")], str(source))
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    here = source.resolve()
    if not isinstance(base_name, str) or not base_name or Path(base_name).name != base_name \
            or (here.parent / base_name).is_dir():
        raise ParamsError([("extends", "expected the name of a parameters file in the same folder")], str(source))
    base = here.parent / base_name
    if base in (*chain, here) or len(chain) >= EXTENDS_DEPTH:
        raise ParamsError([("extends", f"{base_name}: a circle or more than {EXTENDS_DEPTH} files extending "
                                       "each other")], str(source))
    return merged(_read(base, (*chain, here)), raw)


def load_params(path: str | Path, overrides: list[str] | None = None) -> Params:
    """Read, override and validate a parameters file; raise ParamsError naming every problem."""
    source = Path(path)
    raw = _read(source)
    problems: list[tuple[str, str]] = []
    for item in overrides or []:
        try:
            apply_override(raw, item)
        except ParamsError as exc:
            problems += exc.problems
    if problems:
        raise ParamsError(problems, str(source))
    return validate(raw, source)


def validate(raw: dict[str, Any], source: Path | None = None) -> Params:
    """Validate a raw mapping; the policy section is merged onto the shipped defaults first."""
    data = dict(raw)
    name = str(source) if source else ""
    if "policy" in data:
        if not isinstance(data["policy"], dict):
            raise ParamsError([("policy", "expected a mapping of policy figures to tighten")], name)
        data["policy"] = policy_mod.merge_policy(policy_mod.default_policy_dict(), data["policy"])
    problems = _literal_secrets(data)
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        problems += [p for err in exc.errors() for p in _describe(err)]
        raise ParamsError(_unique(problems), name) from None
    if problems:
        raise ParamsError(problems, name)
    params._source = source.resolve() if source else None
    if source is not None:
        confined = params.confinement_problems()
        if confined:
            raise ParamsError(confined, name)
    params.register_http_access()
    return params


def _unique(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for p in problems:
        if p not in seen:
            seen.append(p)
    return seen


def _describe(err: Any) -> list[tuple[str, str]]:
    if err["type"] == "value_error" and isinstance(err.get("ctx", {}).get("error"), _Problems):
        return list(err["ctx"]["error"].problems)
    return [_describe_one(err)]


def _describe_one(err: Any) -> tuple[str, str]:
    path = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return path, "unknown key (not part of the parameters schema)"
    if err["type"] == "missing":
        return path, "required field is missing"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f", got {redact.text(repr(got))}"
    if err["type"] in ("secret_reference", "value_error"):
        shown = ""  # never echo what may carry a literal secret
    return path, f"{err['msg']}{shown}"


def _literal_secrets(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Secret-looking keys anywhere in the file must hold references, not values."""
    found: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if (isinstance(value, str) and _LITERAL_SECRET_KEYS.search(str(key))
                    and not re.match(r"^(env|file|docker-secret):.+$", value)):
                found.append((path, "expected a secret reference: env:NAME, file:PATH or docker-secret:NAME "
                                    "(never a literal value)"))
            else:
                found += _literal_secrets(value, path)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _literal_secrets(value, f"{prefix}[{i}]")
    return found


# ---------------------------------------------------------------- overrides


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply `key.path=value` to a raw mapping, converting by the schema's type at that path."""
    if "=" not in item:
        raise ParamsError([(item, "expected key.path=value")])
    path, _, text = item.partition("=")
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ParamsError([(path, "expected key.path=value")])
    annotation = _annotation_at(keys)
    value: Any = text
    if text.strip() in ("null", "~") and type(None) in get_args(annotation):
        value = None
    elif _is_structured(annotation):
        try:
            value = _as_text_where_text(yamlsafe.load(text), _unwrap_optional(annotation))
        except yamlsafe.YamlLimit as exc:
            raise ParamsError([(path, exc.what)]) from None
        except yaml.YAMLError:
            raise ParamsError([(path, "expected a YAML/JSON value for this structured field")]) from None
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node
        if not isinstance(node, dict):
            raise ParamsError([(path, f"cannot set below {key!r}: it is not a mapping")])
    node[keys[-1]] = value


def _as_text_where_text(value: Any, annotation: Any) -> Any:
    """YAML reads 1.0 as a number; where the schema wants text (a version, a name), keep what was typed."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _as_text_where_text(v, args[1]) for k, v in value.items()}
    if origin is list and isinstance(value, list) and args:
        return [_as_text_where_text(v, args[0]) for v in value]
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _annotation_at(keys: list[str]) -> Any:
    """The schema type at a key path; unknown paths are an error naming the path."""
    annotation: Any = Params
    walked: list[str] = []
    for key in keys:
        walked.append(key)
        annotation = _unwrap_optional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {f.alias or n: f for n, f in annotation.model_fields.items()}
            if key not in fields:
                raise ParamsError([(".".join(walked), "unknown key (not part of the parameters schema)")])
            annotation = fields[key].annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            raise ParamsError([(".".join(walked), "cannot override inside this field; give the whole value")])
    return annotation


def _unwrap_optional(annotation: Any) -> Any:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (None, list, dict, Literal) or len(args) != 1:
        return annotation
    return args[0]


def _is_structured(annotation: Any) -> bool:
    annotation = _unwrap_optional(annotation)
    if get_origin(annotation) in (list, dict):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
