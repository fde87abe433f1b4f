"""Physical backups of the legacy database, their verification, and a restore test.

The client programs run through `ops.tools` (a container of an image whose PostgreSQL
binaries match the server, by default), with the backup folder mounted.

A backup is written to `<id>.partial` and renamed only when pg_basebackup succeeded, so
an interrupted backup is never mistaken for a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from runbook_lib.clients import postgres
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.params import Params
from runbook_lib.config.readiness_settings import VectorExtension
from runbook_lib.errors import RunbookError
from runbook_lib.ops import catalog
from runbook_lib.ops import tools as tools_mod
from runbook_lib.ops.tools import ToolError, Tools
from runbook_lib.values import now

# the restored server runs amcheck and parallel queries: Docker's 64 MB /dev/shm is too small for them
RESTORE_SHM = "1g"


class BackupError(RunbookError):
    pass


@dataclass
class BackupResult:
    id: str
    path: str
    bytes: int
    seconds: float
    start_lsn: str
    end_lsn: str
    counts_before: dict[str, int] = field(default_factory=dict)
    counts_after: dict[str, int] = field(default_factory=dict)
    unlogged: list[str] = field(default_factory=list)  # their data is in no physical backup, by design
    extensions: dict[str, str] = field(default_factory=dict)
    verified: bool | None = None
    schema_dump: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Plan:
    """The `backup:` section resolved: what is backed up, where to, and the restore test's port."""

    source: PgSpec
    location: Path
    space_multiple: float
    restore_port: int


def plan(params: Params) -> Plan:
    if params.backup is None:
        raise BackupError("backup is not set in the parameters (source, location)")
    b = params.backup
    return Plan(params.endpoints.db(b.source), params.path(b.location), b.space_multiple, b.restore_port)


def table_counts(source: PgSpec) -> dict[str, int]:
    """Exact row counts of every user table of the source's database."""
    with postgres.connect(source) as conn:
        tables = postgres.query(conn, "SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY 1, 2")
        return {f"{r['schemaname']}.{r['relname']}": postgres.scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(r["schemaname"], r["relname"]))) for r in tables}


def data_bytes(source: PgSpec) -> int:
    with postgres.connect(source) as conn:
        return int(postgres.scalar(conn, "SELECT sum(pg_database_size(oid))::bigint FROM pg_database"))


def check_space(p: Plan) -> dict[str, Any]:
    folder = p.location
    folder.mkdir(parents=True, exist_ok=True)
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    data = data_bytes(p.source)
    need = p.space_multiple * data
    return {"free_bytes": free, "data_bytes": data, "needed_bytes": int(need), "enough": free >= need,
            "location": str(folder)}


def take(tools: Tools, p: Plan) -> BackupResult:
    """pg_basebackup (plain format, WAL streamed, manifest with SHA256) plus a schema-only dump."""
    space = check_space(p)
    if not space["enough"]:
        raise BackupError(f"not enough space at {space['location']}: {space['free_bytes']} bytes free, "
                          f"{p.space_multiple:g} x {space['data_bytes']} needed; nothing was started")
    uid, gid = tools.ids
    backup_id = _new_id(p.location)
    partial = p.location / f"{backup_id}.partial"
    partial.mkdir(parents=True)
    os.chown(partial, uid, gid)
    before = table_counts(p.source)
    with postgres.connect(p.source) as conn:
        unlogged = [t.qualified for t in catalog.tables(conn) if t.unlogged]
        extensions = catalog.extensions(conn)
    started = time.monotonic()
    try:
        tools.run(["pg_basebackup", "-d", tools_mod.dsn(p.source), "-D", str(partial / "data"), "-X", "stream",
                   "-c", "fast", "--manifest-checksums=SHA256", "-l", f"runbook {backup_id}"],
                  endpoints=[p.source], folders=[p.location])
        tools.run(["pg_dump", "-d", tools_mod.dsn(p.source), "--schema-only", "-f", str(partial / "schema.sql")],
                  endpoints=[p.source], folders=[p.location])
    except BaseException as exc:
        left = _abandon(partial, exc)
        if isinstance(exc, ToolError) and "No space left on device" in str(exc):
            raise BackupError(f"the backup location {p.location} filled up during the backup: {left}; the source "
                              "was only read. Free space there (or set backup.location to a larger filesystem) and "
                              "run this step again") from exc
        raise
    seconds = time.monotonic() - started
    after = table_counts(p.source)
    final = p.location / backup_id
    partial.rename(final)
    manifest = json.loads((final / "data" / "backup_manifest").read_text())
    wal = manifest["WAL-Ranges"][0]
    size = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
    return BackupResult(backup_id, str(final), size, round(seconds, 2), wal["Start-LSN"], wal["End-LSN"], before,
                        after, schema_dump=str(final / "schema.sql"), unlogged=unlogged, extensions=extensions)


def _new_id(location: Path) -> str:
    """The time, and a suffix when a backup (or a failed one's marker) of the same second is already there."""
    stamp = now().strftime("%Y%m%dT%H%M%SZ")
    taken = lambda name: (location / name).exists() or (location / f"{name}.partial").exists()  # noqa: E731
    return next(name for name in (stamp, *(f"{stamp}-{n}" for n in range(2, 1000))) if not taken(name))


def _abandon(partial: Path, exc: BaseException) -> str:
    """A failed backup: its files removed (a full disk is freed for the next try), marked FAILED. Says what
    is left of it."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    reason = next((line for line in lines if "No space left" in line), lines[0])[:300]
    shutil.rmtree(partial / "data", ignore_errors=True)
    with contextlib.suppress(OSError):
        (partial / "schema.sql").unlink(missing_ok=True)
    leftover = [str(f) for f in partial.rglob("*") if f.is_file()]
    try:  # written after the removal: on a full disk the marker needs the space it frees
        (partial / "FAILED").write_text(f"interrupted or failed at {now().isoformat()}: {reason}\n"
                                        "its files were removed; never use this backup\n")
    except OSError as marker_error:
        leftover.append(f"(no FAILED marker: {marker_error})")
    return (f"{partial} kept as a marker, its files removed" if not leftover else
            f"{partial} could not be emptied ({', '.join(leftover[:3])}): remove it by hand")


def verify(tools: Tools, backup_path: str) -> str:
    """pg_verifybackup over the backup's manifest; raises with the tool's complaint when it fails."""
    path = Path(backup_path)
    if (path / "FAILED").exists() or path.name.endswith(".partial"):
        raise BackupError(f"{path} is marked failed: an interrupted backup is never used")
    try:
        return tools.run(["pg_verifybackup", "-n", str(path / "data")], folders=[path.parent]).strip()
    except ToolError as exc:
        raise BackupError(str(exc)) from None


COUNTS = """SELECT json_object_agg(t, n) FROM (
  SELECT schemaname || '.' || relname AS t,
         (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, relname),
                                              false, true, '')))[1]::text::bigint AS n
  FROM pg_stat_user_tables) s"""
AMCHECK = """SELECT count(*) FROM (SELECT bt_index_check(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'btree' AND c.relkind = 'i' AND c.relpersistence = 'p'
  AND i.indisvalid) s"""
EXTENSIONS = "SELECT coalesce(json_object_agg(extname, extversion), '{}') FROM pg_extension WHERE extname <> 'plpgsql'"


def restore_test(tools: Tools, p: Plan, result: BackupResult, vector: VectorExtension,
                 timeout: float = 120) -> dict[str, Any]:
    """Start a scratch server from a copy of the backup, check it, and always remove it."""
    img = tools.need_image()
    uid, gid = tools.ids
    scratch = Path(tempfile.mkdtemp(prefix="runbook-restore-", dir=p.location))
    os.chmod(scratch, 0o755)
    container = None
    try:
        shutil.copytree(Path(result.path) / "data", scratch / "data", symlinks=True)
        for path in [scratch / "data", *(scratch / "data").rglob("*")]:
            os.lchown(path, uid, gid)
        os.chmod(scratch / "data", 0o700)
        port = p.restore_port
        container = tools.docker.containers.run(
            img, ["postgres", "-D", "/scratch/data", "-c", f"port={port}", "-c", "listen_addresses=127.0.0.1",
                  "-c", "unix_socket_directories=/tmp", "-c", "ssl=off", "-c", "archive_mode=off",
                  # a DDL freeze (an event trigger) in the backup must not stop the checks (PostgreSQL 17)
                  "-c", "event_triggers=off"],
            user=str(uid), network_mode="host", volumes={str(scratch): {"bind": "/scratch", "mode": "rw"}},
            detach=True, name=f"runbook-restore-test-{result.id.lower()}", labels={"runbook": "restore-test"},
            shm_size=RESTORE_SHM)
        started = time.monotonic()
        while True:
            code, out = container.exec_run(["pg_isready", "-h", "/tmp", "-p", str(port)], user=str(uid))
            if code == 0:
                break
            container.reload()
            if container.status != "running" or time.monotonic() - started > timeout:
                raise BackupError(f"the restored server did not accept connections: "
                                  f"{container.logs(tail=20).decode(errors='replace')}")
            time.sleep(0.5)
        ready_s = time.monotonic() - started

        def psql(statement: str) -> str:
            code, out = container.exec_run(["psql", "-h", "/tmp", "-p", str(port), "-U", "postgres", "-d",
                                            p.source.dbname, "-v", "ON_ERROR_STOP=1", "-At", "-c", statement],
                                           user=str(uid))
            text = out.decode(errors="replace").strip()
            if code != 0:
                raise BackupError(f"restore checks failed: {text[-800:]}")
            return text

        return _judge(_checks(psql, vector), result, ready_s)
    finally:
        if container is not None:
            container.remove(force=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _checks(psql: Callable[[str], str], vector: VectorExtension) -> dict[str, Any]:
    """What the restored server holds, from its own catalog: counts, amcheck, extensions, k-NN per HNSW index."""
    facts: dict[str, Any] = {"counts": json.loads(psql(COUNTS) or "{}") or {}}
    psql("CREATE EXTENSION IF NOT EXISTS amcheck")
    facts["amcheck"] = int(psql(AMCHECK) or 0)
    facts["extensions"] = {k: v for k, v in json.loads(psql(EXTENSIONS)).items() if k != "amcheck"}
    columns = sql.SQL("SELECT coalesce(json_agg(v), '[]') FROM ({}) v").format(
        catalog.vector_columns_query(vector.hnsw_methods, vector.types)).as_string(None)
    facts["knn"] = []
    for col in json.loads(psql(columns)):
        name = f"{col['schema']}.{col['table']}.{col['column']}"
        if not col["hnsw_indexes"]:
            facts["knn"].append({"column": name, "rows": 0, "index_used": False, "note": "no HNSW index"})
            continue
        table, column = sql.Identifier(col["schema"], col["table"]), sql.Identifier(col["column"])
        query = sql.SQL("SELECT 1 FROM {t} ORDER BY {c} {op} (SELECT {c} FROM {t} WHERE {c} IS NOT NULL LIMIT 1) "
                        "LIMIT 10").format(t=table, c=column, op=sql.SQL(catalog.distance_operator(
                            (col["opclasses"] or [""])[0])))
        rows = psql(sql.SQL("SET enable_seqscan = off; SELECT count(*) FROM ({}) s").format(query).as_string(None))
        plan = psql(sql.SQL("SET enable_seqscan = off; EXPLAIN (FORMAT JSON) {}").format(query).as_string(None))
        facts["knn"].append({"column": name, "rows": int(rows.splitlines()[-1] or 0),
                             "index_used": any(i in plan for i in col["hnsw_indexes"])})
    return facts


def _judge(facts: dict[str, Any], result: BackupResult, ready_s: float) -> dict[str, Any]:
    """Row counts as the source had them (between its counts at the backup's start and end); an unlogged table
    is empty by design (its data is in no physical backup); every extension back; every k-NN through its index."""
    restored = facts["counts"]
    mismatched = {}
    for table, before in result.counts_before.items():
        after = result.counts_after.get(table, before)
        got = restored.get(table)
        if table in result.unlogged:
            if got not in (0, None):
                mismatched[table] = {"restored": got, "note": "an unlogged table should come back empty"}
            continue
        if got is None or not (min(before, after) <= got <= max(before, after)):
            mismatched[table] = {"restored": got, "source_at_start": before, "source_at_end": after}
    missing_extensions = sorted(set(result.extensions) - set(facts["extensions"]))
    knn_failing = [k["column"] for k in facts["knn"] if not (k["index_used"] and k["rows"] > 0)]
    return {"ready_seconds": round(ready_s, 2), "tables": len(restored), "mismatched": mismatched,
            "unlogged_not_in_backup": list(result.unlogged), "amcheck_indexes": facts["amcheck"],
            "extensions": facts["extensions"], "missing_extensions": missing_extensions,
            "knn_columns": len(facts["knn"]), "knn_failing": knn_failing,
            "hnsw_used": bool(facts["knn"]) and not knn_failing,
            "passed": not mismatched and not missing_extensions and not knn_failing}
