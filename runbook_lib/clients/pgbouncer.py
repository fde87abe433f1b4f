"""PgBouncer's admin console (simple query protocol only, hence a client-side cursor)."""

from __future__ import annotations

import re
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.rows import dict_row

from runbook_lib.clients import swarm
from runbook_lib.config.endpoints import PgBouncerSpec
from runbook_lib.config.params import Swarm
from runbook_lib.errors import RunbookError

SHOWABLE = frozenset({"POOLS", "DATABASES", "CLIENTS", "SERVERS", "CONFIG", "STATS", "LISTS", "VERSION"})
COMMANDS = frozenset({"PAUSE", "RESUME", "RELOAD", "RECONNECT"})
# PgBouncer's refusal of every login for server_login_retry (15 s by default) after one server login failed
CACHED_LOGIN_ERROR = "server login has been failing"
PAUSE_WAIT_S = 30.0  # how long a PAUSE outside a critical section waits for transactions in flight


class PgBouncerError(RunbookError):
    pass


class PauseTimeout(PgBouncerError):
    """PAUSE did not complete in time (a transaction through the pool stayed open); the pool was resumed."""


def connect(spec: PgBouncerSpec) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(autocommit=True, cursor_factory=psycopg.ClientCursor, row_factory=dict_row,
                           **spec.admin.connect_kwargs())


def show(conn: psycopg.Connection[Any], what: str) -> list[dict[str, Any]]:
    """SHOW POOLS / DATABASES / CLIENTS / CONFIG ... (what is checked against a fixed list)."""
    if what.upper() not in SHOWABLE:
        raise ValueError(f"SHOW {what}: not one of {sorted(SHOWABLE)}")
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SHOW {}").format(sql.SQL(what.upper())))
        return list(cur.fetchall())


def command(spec: PgBouncerSpec, verb: str, database: str | None = None) -> None:
    """PAUSE / RESUME / RELOAD / RECONNECT on the admin console, for one database or all."""
    with console(spec) as admin:
        admin.run(verb, database)


class Console:
    """One admin-console connection for several commands: inside a write pause a new connection per command
    (TLS, authentication) would cost more than the commands themselves."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]], spec: PgBouncerSpec) -> None:
        self.conn = conn
        self.spec = spec

    def run(self, verb: str, database: str | None = None) -> None:
        if verb not in COMMANDS:
            raise ValueError(f"{verb}: not an allowed admin command")
        with self.conn.cursor() as cur:
            if database:
                cur.execute(sql.SQL("{} {}").format(sql.SQL(verb), sql.Identifier(database)))
            else:
                cur.execute(sql.SQL(verb))

    def pause(self, database: str, within: float = PAUSE_WAIT_S) -> bool:
        """PAUSE a pool; False when it was paused already (so a caller undoes only its own pause).

        PAUSE answers once every server connection of the pool is released, that is after every transaction
        in flight through it, which an application can hold open for ever. So its answer is awaited for at
        most `within` seconds; past that RESUME is sent on a new connection (the first one's PAUSE never
        answers then, so that connection is closed and replaced) and PauseTimeout names what held the pool.
        """
        pg = self.conn.pgconn
        pg.send_query(sql.SQL("PAUSE {}").format(sql.Identifier(database)).as_bytes(self.conn))
        deadline = time.monotonic() + within
        try:
            while pg.flush():  # a non-blocking connection may not have sent it all
                select.select([], [pg.socket], [], max(deadline - time.monotonic(), 0))
            pg.consume_input()
            while pg.is_busy():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PauseTimeout(f"PAUSE {database} waited {within:g} s for the transactions in flight "
                                       "through the pool")
                select.select([pg.socket], [], [], remaining)
                pg.consume_input()
        except BaseException as exc:  # past the bound, interrupted, or the console broke: never left paused
            self._abandon_pause(database, exc)
            raise
        errors = []
        while (result := pg.get_result()) is not None:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                errors.append((result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode())
        if any("already" in e.lower() for e in errors):
            return False
        if errors:
            raise PgBouncerError(f"PAUSE {database}: {'; '.join(errors)}")
        return True

    def _abandon_pause(self, database: str, exc: BaseException) -> None:
        """RESUME on a new connection, which replaces this console's own (its PAUSE would never answer); what
        held the pool is counted first and told in `exc`. Should RESUME fail, `exc` says the pool may still
        be paused."""
        waiting = self.conn
        try:
            self.conn = connect(self.spec)
            busy = [row for row in show(self.conn, "SERVERS") if row.get("database") == database
                    and row.get("state") == "active"]
            self.resume(database)
        except Exception as undo_exc:  # noqa: BLE001 - the first failure is the one raised
            exc.add_note(f"RESUME {database} on a new admin connection failed ({undo_exc}): the pool may still be "
                         f"paused; send RESUME {database} on PgBouncer's console")
            return
        finally:
            waiting.close()
        if isinstance(exc, PauseTimeout):
            exc.args = (f"{exc.args[0]}, {len(busy)} server connection(s) still holding one (a transaction left open "
                        "by a client?); the pool was resumed, nothing else was done",)
    def resume(self, database: str) -> bool:
        """RESUME a pool; one that is not paused is already what was wanted (False)."""
        return self._unless_already("RESUME", database, "not paused")

    def _unless_already(self, verb: str, database: str, already: str) -> bool:
        try:
            self.run(verb, database)
        except psycopg.Error as exc:
            if already not in str(exc).lower():
                raise
            return False
        return True

    def entry(self, database: str) -> dict[str, Any]:
        row = next((r for r in show(self.conn, "DATABASES") if r["name"] == database), None)
        if row is None:
            raise PgBouncerError(f"PgBouncer has no database entry {database!r}")
        return row

    def backend(self, database: str) -> tuple[str, int]:
        """Where PgBouncer sends `database` right now (SHOW DATABASES)."""
        row = self.entry(database)
        return row["host"], int(row["port"])


@contextmanager
def console(spec: PgBouncerSpec) -> Iterator[Console]:
    admin = Console(connect(spec), spec)
    try:
        yield admin
    finally:
        admin.conn.close()  # the console's connection now (a PAUSE given up replaced the first)


def pause(spec: PgBouncerSpec, database: str, within: float = PAUSE_WAIT_S) -> bool:
    """PAUSE a pool (awaited at most `within` s); False when it was paused already."""
    with console(spec) as admin:
        return admin.pause(database, within)


def resume(spec: PgBouncerSpec, database: str) -> bool:
    """RESUME a pool; one that is not paused is already what was wanted (False)."""
    with console(spec) as admin:
        return admin.resume(database)


def backend(spec: PgBouncerSpec, database: str) -> tuple[str, int]:
    """Where PgBouncer sends `database` right now (SHOW DATABASES)."""
    with console(spec) as admin:
        return admin.backend(database)


def paused(spec: PgBouncerSpec, database: str) -> bool:
    with console(spec) as admin:
        return bool(admin.entry(database).get("paused"))


def stage(spec: PgBouncerSpec, swarm_spec: Swarm | None, database: str, host: str, port: int) -> None:
    """Rewrite the [databases] entry in the running PgBouncer's config file, without RELOAD: the running
    PgBouncer keeps its current backend until a RELOAD, so the slow part (a container exec) can happen
    before a write pause and only the RELOAD inside it.

    The config file lives in the PgBouncer task (target.pgbouncer.service, .config_path); the change
    holds until the task restarts (a restarted task reads its deployed config), so the stack definition
    must be updated as well.
    """
    if not spec.service:
        raise PgBouncerError("target.pgbouncer.service is not set: cannot reach PgBouncer's configuration")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", database) or not re.fullmatch(r"[A-Za-z0-9_.:-]+", host):
        raise PgBouncerError(f"refusing to write an unusual database or host name into pgbouncer.ini: "
                             f"{database!r} {host!r}")
    service = swarm.for_target(swarm_spec).services.get(spec.service)
    running = swarm.running_tasks(service)
    if len(running) > 1:
        raise PgBouncerError(f"PgBouncer service {spec.service} runs {len(running)} tasks: the switch rewrites and "
                             "reloads one of them, the others would keep sending the application to the old "
                             f"backend; scale it to one task for the window (docker service scale {spec.service}=1)")
    # argv only, no shell: the name and host were checked above to hold no character sed or a shell reads
    edit = f"s/^({database}[[:space:]]*=.*host=)[^ ]+( port=)[0-9]+/\\1{host}\\2{int(port)}/"
    code, out = swarm.exec_in(swarm_spec, service, ["sed", "-i", "-E", edit, spec.config_path])
    if code == 0:
        code, out = swarm.exec_in(swarm_spec, service, ["grep", "-E", f"^{database}[[:space:]]*=", spec.config_path])
    entries = [_target_of(line) for line in out.splitlines() if line.strip()]
    if code != 0 or not entries or any(entry != (host, int(port)) for entry in entries):
        raise PgBouncerError(f"could not rewrite the {database} entry of {spec.config_path} to host={host} "
                             f"port={int(port)} (it reads: {out.strip()[:200]!r})")


def _target_of(entry: str) -> tuple[str, int] | None:
    """host and port of a [databases] line ("app = host=h port=5432 dbname=app"), None when it lacks one."""
    host = re.search(r"(?:^|[\s=])host=(\S+)", entry)
    port = re.search(r"(?:^|[\s=])port=(\d+)", entry)
    return (host.group(1), int(port.group(1))) if host and port else None


def switch(admin: Console, database: str) -> None:
    """Apply a staged config: RELOAD, then RECONNECT so no server connection to the old backend is reused."""
    admin.run("RELOAD")
    admin.run("RECONNECT", database)


def repoint(spec: PgBouncerSpec, swarm_spec: Swarm | None, database: str, host: str, port: int) -> None:
    """Stage the new backend in the config file, then RELOAD and RECONNECT."""
    stage(spec, swarm_spec, database, host, port)
    with console(spec) as admin:
        switch(admin, database)
