"""Shared-sandbox helpers for test sessions (tests/sandbox, system tests, benchmarks).

The sandbox is started once per session and reused; it is taken down at the end unless
RUNBOOK_KEEP_SANDBOX=1 (RUNBOOK_RESET_SANDBOX=1 also removes its volumes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from runbook_lib.clients import patroni
from runbook_lib.ops import fallback, migration
from runbook_lib.sandbox import docker_cli, health, lifecycle, stacks
from runbook_lib.sandbox.context import Sandbox, load


def session_sandbox(params_path: str | None = None) -> Iterator[Sandbox]:
    """Generator for a session-scoped fixture: `up` once, yield, then down unless asked to keep it."""
    sb = load(params_path)
    lifecycle.up(sb, settle=lambda: at_rest(sb))  # before up's own query through the pool
    try:
        yield sb
    finally:
        if os.environ.get("RUNBOOK_KEEP_SANDBOX") != "1":
            lifecycle.down(sb, volumes=os.environ.get("RUNBOOK_RESET_SANDBOX") == "1")


def at_rest(sb: Sandbox) -> None:
    """A sandbox used before (a rehearsal's cutover, a refused rollback's replication, data on the new
    cluster, a paused pool) is brought back to legacy serving and an empty new cluster, as the rollback and
    a fresh attempt do it, and the suite says so; if that cannot be done it stops at once, saying what to run."""
    route = migration.route(sb.params)
    found = fallback.left_behind(route)
    if not found:
        return
    warnings.warn(f"sandbox: an earlier run left {'; '.join(found)}; brought back to legacy serving and an empty "
                  "new cluster", stacklevel=2)  # in pytest's warnings summary: output is captured
    try:
        fallback.to_legacy(route, accept_loss=True)
        fallback.clear_new(route)
        still = fallback.left_behind(route)
    except Exception as exc:  # noqa: BLE001 - said with what to run instead
        still = [f"{type(exc).__name__}: {exc}"]
    if still:
        raise RuntimeError(f"the sandbox is not at rest ({'; '.join(still)}): run `runbook sandbox reset` and "
                           "`runbook sandbox up`, then the tests again")


def rw_lands_on(sb: Sandbox) -> tuple[str, bool]:
    """(inet_server_port-derived member name, in_recovery) of a connection through HAProxy rw."""
    with health.connect(sb, sb.spec.ports.haproxy_rw, timeout=2) as conn:
        port, rec = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
    name = next(m["name"] for m in stacks.members(sb) if m["pg"] == port)
    return name, rec


def stop_leader_task(sb: Sandbox, frozen: bool = False) -> list[str]:
    """`docker stop` the container of the current leader's task (Swarm then starts a new task); its ids.

    With `frozen`, `docker pause` instead: every process stops where it is, none finishes what a fast
    shutdown's ended sessions and released locks would let it; the caller kills it once another member
    leads (killed at once, Swarm would restart it within the leader key's TTL and it would lead again)."""
    leader = health.leader_name(sb)
    assert leader, "no Patroni leader to stop"
    service = f"{sb.stack_name('dpg')}_{leader}"
    ids = docker_cli.lines("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}")
    assert ids, f"no running container for {service}"
    docker_cli.run("pause" if frozen else "stop", *ids, timeout=60)
    return ids


def failover(sb: Sandbox, timeout: float = 60, frozen: bool = False) -> dict[str, object]:
    """Stop the leader's task (or freeze it, then kill it once another member leads); return old/new leader
    and seconds until HAProxy rw reaches a new primary."""
    old = health.leader_name(sb)
    if frozen:  # asynchronous replication: the last commits would stay with the leader, the state under test too
        replicas_replayed(sb)
    start = time.monotonic()
    ids = stop_leader_task(sb, frozen=frozen)

    def moved() -> str | None:
        try:
            name, rec = rw_lands_on(sb)
        except (psycopg.Error, OSError):
            return None
        return name if name != old and not rec else None

    try:
        new = health.wait_for("HAProxy rw to reach a new primary", moved, timeout, interval=0.2)
    finally:
        if frozen:
            kill_frozen(ids)
    seconds = time.monotonic() - start
    return {"old_leader": old, "new_leader": new, "patroni_leader": health.leader_name(sb), "seconds": seconds}


def kill_frozen(ids: list[str]) -> None:
    """SIGKILL every process of each paused container, then thaw it: a fatal signal pending at the thaw ends
    a process before it runs again. (`docker kill` signals PID 1 only: the others would run between the thaw
    and the end of their namespace — a table-sync worker finished its table in that moment once.)"""
    for cid in ids:
        for pid in docker_cli.lines("top", cid, "-eo", "pid")[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        docker_cli.run("unpause", cid, check=False, timeout=60)


def replicas_replayed(sb: Sandbox, timeout: float = 60) -> None:
    """Every streaming replica has replayed the leader's WAL as flushed now (at least one streams)."""
    with health.connect(sb, sb.spec.ports.haproxy_rw) as conn:
        flushed = conn.execute("SELECT pg_current_wal_flush_lsn()").fetchone()[0]

    def replayed() -> bool:
        with health.connect(sb, sb.spec.ports.haproxy_rw) as conn:
            return bool(conn.execute("SELECT count(*) > 0 AND bool_and(replay_lsn >= %s) FROM pg_stat_replication "
                                     "WHERE state = 'streaming'", [flushed]).fetchone()[0])

    health.wait_for("every replica to replay the leader's WAL", replayed, timeout)


def wait_cluster_healthy(sb: Sandbox, timeout: float = 120) -> None:
    health.wait_for("one leader and two streaming replicas", lambda: health.patroni_ready(sb), timeout)


@contextmanager
def app_fault(sb: Sandbox, **fault: object) -> Iterator[Path]:
    """The sandbox application fails on purpose while inside: e.g. error_rate=0.5, kind="injected", latency_ms=800."""
    path = stacks.fault_dir(sb) / "app-fault.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(fault))
    os.chmod(tmp, 0o644)
    tmp.replace(path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _in_effect(sb: Sandbox, settings: dict[str, object], everywhere: bool) -> bool:
    """Each setting as given (None: the server's default) on the leader, or on every member that answers."""
    ports = [m["pg"] for m in stacks.members(sb)] if everywhere else [sb.spec.ports.haproxy_rw]
    answered = 0
    for port in ports:
        try:
            with health.connect(sb, port, timeout=2) as conn:
                rows = conn.execute("SELECT name, setting, boot_val FROM pg_settings WHERE name = ANY(%s)",
                                    [list(settings)]).fetchall()
        except psycopg.OperationalError:
            continue  # a member down (stopped by the test, or starting again)
        answered += 1
        if any(setting != (boot if settings[name] is None else str(settings[name])) for name, setting, boot in rows):
            return False
    return answered > 0


@contextmanager
def patroni_parameters(sb: Sandbox, everywhere: bool = False, **settings: object) -> Iterator[None]:
    """A dynamic configuration change through Patroni's REST API (each member reloads on its next loop), in
    effect on the leader (or on every member that answers) inside, undone afterwards — the undo tried again
    while no leader answers (a test failing over meanwhile), since a later test would inherit the change. A
    setting the dynamic configuration did not hold is removed and awaited at the server's default."""
    spec = sb.params.target.patroni
    before = patroni.config(spec)["postgresql"].get("parameters", {})
    patroni.patch_config(spec, {"postgresql": {"parameters": settings}})
    health.wait_for(f"{settings} to take effect", lambda: _in_effect(sb, settings, everywhere), 60)
    try:
        yield
    finally:
        undone = {k: before.get(k) for k in settings}
        health.wait_for(f"Patroni to take {undone}",
                        lambda: patroni.patch_config(spec, {"postgresql": {"parameters": undone}}) or True, 120)
        health.wait_for(f"{undone} to take effect again", lambda: _in_effect(sb, undone, False), 60)
