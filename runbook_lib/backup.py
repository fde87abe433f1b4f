"""Physical backups of the legacy database, their verification, and a restore test.

The client programs run through `pgtools` (a container of an image whose PostgreSQL
binaries match the server, by default), with the backup folder mounted.

A backup is written to `<id>.partial` and renamed only when pg_basebackup succeeded, so
an interrupted backup is never mistaken for a good one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from runbook_lib import pgtools
from runbook_lib.clients import postgres, swarm
from runbook_lib.params import Params
from runbook_lib.steps import now

MOUNT = "/backup"


# the restored server runs amcheck and parallel queries: Docker's 64 MB /dev/shm is too small for them
RESTORE_SHM = "1g"


class BackupError(Exception):
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
    verified: bool | None = None
    schema_dump: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0


def location(params: Params) -> Path:
    return params.path(params.backup.location)


def table_counts(params: Params) -> dict[str, int]:
    """Exact row counts of every user table of the source's database."""
    src = params.backup.source
    with postgres.connect(params, src) as conn:
        tables = postgres.query(conn, "SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY 1, 2")
        return {f"{r['schemaname']}.{r['relname']}": postgres.scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(r["schemaname"], r["relname"]))) for r in tables}


def data_bytes(params: Params) -> int:
    with postgres.connect(params, params.backup.source) as conn:
        return int(postgres.scalar(conn, "SELECT sum(pg_database_size(oid))::bigint FROM pg_database"))


def check_space(params: Params) -> dict[str, Any]:
    folder = location(params)
    folder.mkdir(parents=True, exist_ok=True)
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    data = data_bytes(params)
    need = params.backup.space_multiple * data
    return {"free_bytes": free, "data_bytes": data, "needed_bytes": int(need), "enough": free >= need,
            "location": str(folder)}


def take(params: Params) -> BackupResult:
    """pg_basebackup (plain format, WAL streamed, manifest with SHA256) plus a schema-only dump."""
    space = check_space(params)
    if not space["enough"]:
        raise BackupError(f"not enough space at {space['location']}: {space['free_bytes']} bytes free, "
                          f"{params.backup.space_multiple:g} x {space['data_bytes']} needed; nothing was started")
    uid, gid = pgtools.postgres_ids(params)
    backup_id = now().strftime("%Y%m%dT%H%M%SZ")
    root = location(params)
    partial = root / f"{backup_id}.partial"
    partial.mkdir(parents=True)
    os.chown(partial, uid, gid)
    source = params.backup.source
    target_dir = f"{MOUNT}/{partial.name}" if pgtools.in_container(params) else str(partial)
    mounts = {str(root): MOUNT}
    before = table_counts(params)
    started = time.monotonic()
    try:
        pgtools.run(params, ["pg_basebackup", *pgtools.conn_args(params, source)[:-2], "-D", f"{target_dir}/data",
                             "-X", "stream", "-c", "fast", "--manifest-checksums=SHA256", "-l", f"runbook {backup_id}"],
                    endpoints=[source], mounts=mounts)
        pgtools.run(params, ["pg_dump", *pgtools.conn_args(params, source), "--schema-only",
                             "-f", f"{target_dir}/schema.sql"], endpoints=[source], mounts=mounts)
    except BaseException:
        (partial / "FAILED").write_text(f"interrupted or failed at {now().isoformat()}; never use this backup\n")
        raise
    seconds = time.monotonic() - started
    after = table_counts(params)
    final = root / backup_id
    partial.rename(final)
    manifest = json.loads((final / "data" / "backup_manifest").read_text())
    wal = manifest["WAL-Ranges"][0]
    size = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
    return BackupResult(backup_id, str(final), size, round(seconds, 2), wal["Start-LSN"], wal["End-LSN"], before,
                        after, schema_dump=str(final / "schema.sql"))


def verify(params: Params, backup_path: str) -> str:
    """pg_verifybackup over the backup's manifest; raises with the tool's complaint when it fails."""
    path = Path(backup_path)
    if (path / "FAILED").exists() or path.name.endswith(".partial"):
        raise BackupError(f"{path} is marked failed: an interrupted backup is never used")
    data = f"{MOUNT}/{path.name}/data" if pgtools.in_container(params) else str(path / "data")
    try:
        return pgtools.run(params, ["pg_verifybackup", "-n", data], endpoints=[],
                           mounts={str(path.parent): MOUNT}).strip()
    except pgtools.ToolError as exc:
        raise BackupError(str(exc)) from None


RESTORE_CHECKS = """
\\pset format unaligned
\\pset tuples_only on
SELECT 'counts', json_object_agg(t, n) FROM (
  SELECT schemaname || '.' || relname AS t,
         (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, relname),
                                              false, true, '')))[1]::text::bigint AS n
  FROM pg_stat_user_tables) s;
CREATE EXTENSION IF NOT EXISTS amcheck;
SELECT 'amcheck', count(*) FROM (SELECT bt_index_check(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'btree' AND c.relkind = 'i' AND c.relpersistence = 'p' AND i.indisvalid) s;
SELECT 'vector', extversion FROM pg_extension WHERE extname = 'vector';
SET enable_seqscan = off;
SELECT 'knn', count(*) FROM (SELECT id FROM entries ORDER BY embedding <=> (SELECT embedding FROM entries LIMIT 1)
  LIMIT 10) s;
EXPLAIN (FORMAT JSON) SELECT id FROM entries ORDER BY embedding <=> (SELECT embedding FROM entries LIMIT 1) LIMIT 10;
"""


def restore_test(params: Params, result: BackupResult, timeout: float = 120) -> dict[str, Any]:
    """Start a scratch server from a copy of the backup, check it, and always remove it."""
    img = pgtools.image(params)
    uid, gid = pgtools.postgres_ids(params)
    scratch = Path(tempfile.mkdtemp(prefix="runbook-restore-", dir=location(params)))
    os.chmod(scratch, 0o755)
    container = None
    try:
        shutil.copytree(Path(result.path) / "data", scratch / "data", symlinks=True)
        for p in [scratch / "data", *(scratch / "data").rglob("*")]:
            os.lchown(p, uid, gid)
        os.chmod(scratch / "data", 0o700)
        (scratch / "checks.sql").write_text(RESTORE_CHECKS)
        port = params.backup.restore_port
        container = swarm.for_target(params.target.swarm).containers.run(
            img, ["postgres", "-D", "/scratch/data", "-c", f"port={port}", "-c", "listen_addresses=127.0.0.1",
                  "-c", "unix_socket_directories=/tmp", "-c", "ssl=off", "-c", "archive_mode=off"],
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
        code, out = container.exec_run(["psql", "-h", "/tmp", "-p", str(port), "-U", "postgres", "-d",
                                        params.target.databases[params.backup.source].dbname, "-v",
                                        "ON_ERROR_STOP=1", "-f", "/scratch/checks.sql"], user=str(uid))
        text = out.decode(errors="replace")
        if code != 0:
            raise BackupError(f"restore checks failed: {text[-800:]}")
        return _judge(text, result, ready_s)
    finally:
        if container is not None:
            container.remove(force=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _judge(output: str, result: BackupResult, ready_s: float) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.strip()]
    facts = {line.split("|", 1)[0]: line.split("|", 1)[1] for line in lines if "|" in line and not line.startswith("[")}
    restored = json.loads(facts.get("counts", "{}"))
    plan = output[output.find("["):] if "[" in output else ""
    mismatched = {}
    for table, before in result.counts_before.items():
        after = result.counts_after.get(table, before)
        got = restored.get(table)
        if got is None or not (min(before, after) <= got <= max(before, after)):
            mismatched[table] = {"restored": got, "source_at_start": before, "source_at_end": after}
    return {"ready_seconds": round(ready_s, 2), "tables": len(restored), "mismatched": mismatched,
            "amcheck_indexes": int(facts.get("amcheck", 0)), "vector_extension": facts.get("vector"),
            "knn_rows": int(facts.get("knn", 0)), "hnsw_used": "hnsw" in plan.lower(),
            "passed": not mismatched and facts.get("vector") is not None and int(facts.get("knn", 0)) == 10
            and "hnsw" in plan.lower()}
