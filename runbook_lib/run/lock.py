"""One mutating run per target at a time: per machine, and across every operator's machine.

Per machine, an exclusive flock on <lock dir>/<target>.lock (~/.cache/runbook/locks), held for the run;
the file names the holder. Across machines, a session-level advisory lock on one of the target's own
databases (`target.lock_endpoint`), held by a connection whose application_name names the holder: a
second operator anywhere is refused, naming the first; when a run dies its connection closes and the
lock goes with it. The kernel holds nothing of its own when the runner already holds the lock for it.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import psycopg

from runbook_lib.config.endpoints import PgSpec
from runbook_lib.errors import RunbookError

LOCK_CLASS = 0x52424B  # 'RBK': the advisory lock's first key; the second is hashtext of the target name
KEEPALIVE_S = 20 + 10 * 4  # tcp_keepalives_idle + interval x count, set on the lock's session


class TargetLocked(RunbookError):
    """Another mutating run holds the target."""

    def __init__(self, target: str, holder: dict[str, Any]) -> None:
        self.holder = holder
        who = ", ".join(f"{k} {v}" for k, v in holder.items()) or "unknown holder"
        super().__init__(f"target {target} is locked by another mutating run ({who}); "
                         "wait for it to finish or stop it before starting another")


def lock_dir() -> Path:
    """One place per machine, whatever archive folder a run writes to."""
    return Path(os.environ.get("RUNBOOK_LOCK_DIR", Path.home() / ".cache" / "runbook" / "locks"))


class TargetLock:
    def __init__(self, target: str, endpoint: PgSpec | None = None) -> None:
        self.target = target
        self.endpoint = endpoint
        self.path = lock_dir() / f"{target}.lock"
        self._fd: int | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self, holder: dict[str, Any]) -> None:
        if os.environ.get("RUNBOOK_LOCK_HELD") == f"{self.target}:{holder.get('run_id')}":
            return  # the runner holds it on this run's behalf
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TargetLocked(self.target, self.holder()) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        os.fsync(fd)
        self._fd = fd
        if self.endpoint is not None:
            try:
                self._take_cluster_lock(holder)
            except BaseException:
                self.release()
                raise

    def _take_cluster_lock(self, holder: dict[str, Any]) -> None:
        """The advisory lock on the target's database; refused naming whoever holds it (any machine)."""
        assert self.endpoint is not None
        name = f"runbook {holder.get('operator')}@{holder.get('host')} {holder.get('run_id')}"[:63]
        try:
            conn = psycopg.connect(**self.endpoint.connect_kwargs(), autocommit=True, application_name=name)
        except psycopg.OperationalError as exc:
            raise TargetLocked(self.target, {"cluster lock": f"cannot take it on {self.endpoint.name}: "
                                             f"{str(exc).strip().splitlines()[0]} (set target.lock_endpoint to a "
                                             "database every operator reaches)"}) from None
        # the expiry: when the holder's machine vanishes without closing, the server drops the session (and the
        # lock) after KEEPALIVE_S of silence; a holder that only crashed releases it at once
        conn.execute("SET tcp_keepalives_idle = 20; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 4")
        row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [LOCK_CLASS, self.target]).fetchone()
        if not (row and row[0]):
            held = conn.execute("""SELECT a.application_name, a.client_addr::text, a.backend_start::text
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid::bigint = %s
                  AND l.objid::bigint = (hashtext(%s)::bigint & 4294967295)""", [LOCK_CLASS, self.target]).fetchone()
            conn.close()
            who = {"held by": held[0], "from": held[1] or "local socket", "since": held[2]} if held else {}
            raise TargetLocked(self.target, {**who, "cluster lock": f"on {self.endpoint.name}",
                                             "expires": f"with that session (a vanished machine's within {KEEPALIVE_S} s)"})
        self._conn = conn

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # a session-level advisory lock ends with its session
            finally:
                self._conn = None
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> TargetLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
