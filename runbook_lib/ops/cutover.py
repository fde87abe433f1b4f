"""The logical cutover as one critical section: pool paused, legacy's last write applied, switched, resumed.

Why one straight sequence: a write pause spread over notebook cells lasts as long as the kernel's round
trips plus every slow thing done inside it (a container exec to repoint PgBouncer, a replication slot
created while transactions run). So everything slow happens before the pause (`prepare`): PgBouncer's new
backend written to its config file but not reloaded, the reverse publication and slot on the new cluster,
the new side caught up. Inside (`cut`) only SQL on connections opened beforehand and admin-console commands
run, under a bound: past it the pool resumes on legacy with nothing switched. After the resume (`finish`)
reverse replication starts from the slot, which has kept every write the new cluster took since the cut.

Equality needs no recount inside the pause: every table's checksum was compared at a consistent cut before
it (phase 2's validate_cut), and the new cluster has applied legacy's final LSN here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.config import names
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.errors import first_line
from runbook_lib.ops import migration
from runbook_lib.ops.migration import MigrationError, Route


class CutoverAborted(MigrationError):
    """The critical section stopped before the switch: legacy serves, writable, the pool resumed."""


class UnattributedWrite(CutoverAborted):
    """Aborted because a transaction with an xid ended on the origin during the cut and no session holds one:
    a writer the stop missed, or the server's own (an autovacuum's ANALYZE takes an xid). Safe to try the cut
    once more: a real writer shows again."""


CUT_ATTEMPTS = 2  # a cut aborted by an UnattributedWrite is tried once more


class NotCut(CutoverAborted):
    """Every attempt at the cut was given back: the origin serves, writable, the pool resumed on it, and
    PgBouncer's config file names the origin again. `retried` says what each earlier attempt met."""

    def __init__(self, cause: CutoverAborted, retried: list[str]) -> None:
        super().__init__(str(cause))
        self.retried = retried


@dataclass
class Cut:
    """The critical section as it happened; times are epoch seconds, marks are seconds after PAUSE was sent."""

    lsn: str  # the origin's final LSN, applied on the destination
    reverse_from: str | None  # where the reverse slot starts: the destination's LSN at the cut
    pause_sent: float
    resumed_at: float
    apply_wait_s: float
    sequences: int
    large_objects: int
    sessions_ended: int
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def paused_s(self) -> float:
        """From PAUSE sent to RESUME answered: as long as the pool held the application's queries."""
        return self.resumed_at - self.pause_sent

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "paused_s": round(self.paused_s, 4)}


@dataclass(frozen=True)
class Leg:
    """One direction of the switch: writes stop on `origin`, `destination` applies its last write through
    `subscription` (which lives on the destination), then the pool leads to `backend`."""

    origin: PgSpec
    destination: PgSpec
    subscription: str
    backend: tuple[str, int]
    reverse_slot: str | None  # on the destination: moved to the cut, where the way back starts
    reopen: bool  # the destination was read-only for the application (legacy after a cutover)


def forward(r: Route) -> Leg:
    """The cutover: legacy -> the new cluster, the reverse slot on the new side moved to the cut."""
    return Leg(r.source, r.target, names.SUBSCRIPTION, r.new_backend, names.REVERSE_SLOT, reopen=False)


def back(r: Route) -> Leg:
    """The rollback: the new cluster -> legacy, made writable again inside the pause."""
    return Leg(r.target, r.source, names.REVERSE_SUBSCRIPTION, r.legacy_backend, None, reopen=True)


def serving(r: Route) -> tuple[str, int]:
    """Where PgBouncer sends the application now (its config file may already say otherwise)."""
    return pgbouncer.backend(r.pooler, r.pooler_database)


def prepare(r: Route, leg: Leg, apply_timeout: float) -> list[str]:
    """Everything slow, before the pause; safe to repeat. Returns what it did."""
    done = []
    pgbouncer.stage(r.pooler, r.swarm, r.pooler_database, *leg.backend)
    done.append(f"PgBouncer's config file says {leg.backend[0]}:{leg.backend[1]} (not reloaded: the application "
                "still goes where it went)")
    if leg.reverse_slot:
        migration.ensure_publication(leg.destination, names.REVERSE_PUBLICATION)
        # before any cut nothing written on the destination is for the way back: an invalidated slot (a
        # failover there promoted a synced copy that conflicted with recovery) is made again. After one
        # (reverse replication there, or the origin still read-only) it would skip the application's writes
        before_any_cut = not (migration.subscription_exists(leg.origin, names.REVERSE_SUBSCRIPTION)
                              or migration.read_only_for(leg.origin, r.app_role))
        if made := migration.ensure_failover_slot(leg.destination, leg.reverse_slot, replace_invalid=before_any_cut):
            done.append(f"reverse slot {leg.reverse_slot} {made} on {leg.destination.name}")
        # all the destination wrote so far is the origin's writes applied: skipped now, so the advance
        # inside the pause has only the last moment's WAL to read (a slot left by an earlier attempt, more)
        at = migration.advance_slot(leg.destination, leg.reverse_slot)
        done.append(f"reverse slot at {at}")
    # the subscriber reports an applied write once it is flushed there; with a subscription's default
    # (synchronous_commit off) that waits for the WAL writer (200 ms), inside the pause
    set_apply_commit(leg, "on")
    lsn, waited = migration.catch_up(leg.origin, leg.subscription, apply_timeout)
    done.append(f"{leg.destination.name} applied {leg.origin.name}'s LSN {lsn} ({waited:.2f} s)")
    return done


def unstage(r: Route, leg: Leg, backend: tuple[str, int]) -> None:
    """After an aborted cut: PgBouncer's config file back to the backend it serves, the subscription's
    commits asynchronous again."""
    pgbouncer.stage(r.pooler, r.swarm, r.pooler_database, *backend)
    set_apply_commit(leg, "off")


def unstage_after(r: Route, leg: Leg, backend: tuple[str, int], exc: BaseException) -> None:
    """unstage while another error is on its way up: its own failure is added to that error, not raised."""
    try:
        unstage(r, leg, backend)
    except Exception as undo_exc:  # noqa: BLE001 - the first failure is the one to raise
        exc.add_note(f"PgBouncer's config file may still name {leg.backend[0]}:{leg.backend[1]} (not loaded): "
                     f"put {backend[0]}:{backend[1]} back before any RELOAD ({undo_exc})")


def set_apply_commit(leg: Leg, value: str) -> None:
    """synchronous_commit of the subscription's apply worker (it rereads it without a restart)."""
    with postgres.connect(leg.destination) as conn:
        postgres.query(conn, sql.SQL("ALTER SUBSCRIPTION {} SET (synchronous_commit = {})").format(
            sql.Identifier(leg.subscription), sql.Literal(value)))


def cut(r: Route, leg: Leg, budget: float, large_objects: bool = False,
        at_cut: Callable[[], None] | None = None) -> Cut:
    """PAUSE; the origin read-only for the application and drained; its last LSN applied on the destination;
    sequences (and large objects) copied; `at_cut` run with both sides level and still; the reverse slot
    moved to the cut; the destination writable if it was not; RELOAD; RESUME.

    Past `budget` seconds (or on any error) before the switch, the origin is made writable again and the
    pool resumed on it, and CutoverAborted says why. After the switch only RESUME remains; should it fail,
    the error says so and a re-run resumes the pool.
    """
    with postgres.connect(leg.origin) as origin, postgres.connect(leg.destination) as destination, \
            pgbouncer.console(r.pooler) as admin:
        for conn in (origin, destination):
            _bound_statements(conn, budget)
        pause_sent = time.time()
        started = time.monotonic()
        deadline = started + budget
        marks: dict[str, float] = {}

        def mark(name: str) -> None:
            marks[name] = round(time.monotonic() - started, 4)
            if time.monotonic() > deadline:
                raise CutoverAborted(f"the critical section passed its bound of {budget:g} s at '{name}'")

        reopened: psycopg.Connection[Any] | None = None  # the destination, once made writable inside
        try:
            try:  # PAUSE waits for the transactions in flight through the pool: bounded too
                admin.pause(r.pooler_database, within=budget)
            except pgbouncer.PauseTimeout as exc:
                raise CutoverAborted(str(exc)) from exc
            mark("paused")
            ended = migration.set_read_only_on(origin, r.app_role, True) + migration.drain_on(origin)
            if writers := migration.writers_on(origin):
                raise CutoverAborted(f"sessions the write stop does not cover are in a transaction on "
                                     f"{leg.origin.name}: {', '.join(writers)}; stop them before the cutover")
            mark(f"{leg.origin.name} read-only")
            lsn, xmax = migration.flushed_lsn_on(origin)
            waited = migration.wait_applied_on(origin, leg.subscription, lsn, deadline)
            mark("last write applied")
            sequences = migration.set_sequences(destination, migration.sequence_values(origin))
            objects = 0
            if large_objects:  # not replicated: copied here from the origin, still now, and compared
                objects = migration.copy_large_objects_on(origin, destination)
                if not migration.large_object_check(origin, destination).equal:
                    raise CutoverAborted("the large objects differ after the copy")
            mark("sequences copied")
            if at_cut:
                at_cut()
                mark("both sides held at the cut")
            reverse_from = None
            if leg.reverse_slot:
                reverse_from = migration.advance_slot_on(destination, leg.reverse_slot)
                mark("reverse slot at the cut")
            if later := migration.writes_since(origin, xmax):
                kind = UnattributedWrite if not migration.writers_on(origin, idle_too=False) else CutoverAborted
                raise kind(f"something wrote on {leg.origin.name} during the cut, which the write stop "
                           f"does not cover: {', '.join(later)}")
            if leg.reopen:
                migration.set_read_only_on(destination, r.app_role, False)
                reopened = destination
                mark(f"{leg.destination.name} writable")
        except BaseException as exc:
            _give_back(origin, reopened, admin, r, leg, exc)
            if isinstance(exc, CutoverAborted):
                raise
            if isinstance(exc, MigrationError | psycopg.Error):
                raise CutoverAborted(f"the critical section stopped before the switch: {first_line(exc)}") from exc
            raise
        try:  # RELOAD takes the staged backend; until it has, the origin can be given back
            admin.run("RELOAD")
            now_at = admin.backend(r.pooler_database)
            if now_at != leg.backend:
                raise CutoverAborted(f"PgBouncer reloaded {now_at[0]}:{now_at[1]}, not the staged "
                                     f"{leg.backend[0]}:{leg.backend[1]} (its task restarted with its deployed "
                                     "config?)")
        except BaseException as exc:
            if isinstance(exc, CutoverAborted) or switched(r, leg) is False:
                _give_back(origin, reopened, admin, r, leg, exc)
                if isinstance(exc, CutoverAborted):
                    raise
                raise CutoverAborted(f"the critical section stopped at the switch: {first_line(exc)}") from exc
            # the RELOAD took (or it cannot be told): giving the origin back could leave both sides writable, so
            # the switch goes on; a RESUME that fails below says to re-run the step, which asks again
        # the point of no return: the pool leads to the destination
        try:
            admin.run("RECONNECT", r.pooler_database)
        except psycopg.Error:
            pass  # its server connections to the origin were ended with the application's sessions there
        marks["switched"] = round(time.monotonic() - started, 4)
        try:
            admin.resume(r.pooler_database)
        except BaseException as exc:
            raise MigrationError(f"the switch is done (PgBouncer leads to {leg.destination.name}) but RESUME failed: "
                                 f"{first_line(exc)}; run the step again: it resumes the pool") from exc
        resumed_at = time.time()
        marks["resumed"] = round(time.monotonic() - started, 4)
    return Cut(lsn=lsn, reverse_from=reverse_from, pause_sent=pause_sent, resumed_at=resumed_at,
               apply_wait_s=round(waited, 4), sequences=sequences, large_objects=objects, sessions_ended=ended,
               marks=marks)


def _bound_statements(conn: psycopg.Connection[Any], budget: float) -> None:
    """No statement inside the pause may wait on a lock or run for longer than the whole bound, and the
    session's commits are durable at once (the final LSN is read after one)."""
    ms = f"{max(int(budget * 1000), 1)}ms"
    postgres.query(conn, "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false), "
                         "set_config('synchronous_commit', 'on', false)", [ms, ms])


def _give_back(origin: psycopg.Connection[Any], reopened: psycopg.Connection[Any] | None, admin: pgbouncer.Console,
               r: Route, leg: Leg, exc: BaseException) -> None:
    """Undo the critical section's first half: the destination read-only again if it was opened, the origin
    writable, the pool resumed (still leading to the origin). Should any of it fail, the error raised is no
    longer "nothing changed" but names what is left and how to finish it by hand or by a re-run."""
    actions: list[tuple[str, Callable[[], object]]] = []
    if reopened is not None:
        actions.append((f"ALTER ROLE {r.app_role} SET default_transaction_read_only = on on {leg.destination.name}",
                        lambda: _on(reopened, leg.destination,
                                    lambda conn: migration.set_read_only_on(conn, r.app_role, True))))
    actions += [(f"ALTER ROLE {r.app_role} RESET default_transaction_read_only on {leg.origin.name}",
                 lambda: _on(origin, leg.origin, lambda conn: migration.set_read_only_on(conn, r.app_role, False))),
                (f"RESUME {r.pooler_database} on PgBouncer's console", lambda: _resume(admin, r))]
    left = []
    for what, action in actions:
        try:
            action()
        except Exception as undo_exc:  # noqa: BLE001 - every undo is tried; what failed is reported below
            left.append(f"{what} ({first_line(undo_exc)})")
    if left:
        raise migration.MigrationError(
            f"the critical section stopped before the switch ({first_line(exc)}) and undoing it failed: "
            f"{leg.origin.name} may be read-only for the application and the pool paused. Still to do: "
            f"{'; '.join(left)} (or run the step again: it goes on with the switch)") from exc


def _on(conn: psycopg.Connection[Any], spec: PgSpec, action: Callable[[psycopg.Connection[Any]], object]) -> object:
    """`action` on the cut's connection, or on a fresh one when that one was lost (the server restarted inside
    the cut: what it must be given back is on its disk, and a fresh session can undo it)."""
    try:
        return action(conn)
    except psycopg.OperationalError:
        if not conn.broken:
            raise
        with postgres.connect(spec) as fresh:
            return action(fresh)


def _resume(admin: pgbouncer.Console, r: Route) -> None:
    """RESUME on the console of the cut, or on a fresh one when that one broke (PgBouncer restarted?)."""
    try:
        admin.resume(r.pooler_database)
    except psycopg.Error:
        pgbouncer.resume(r.pooler, r.pooler_database)


def cut_retrying(r: Route, leg: Leg, serving: tuple[str, int], budget: float, *, large_objects: bool = False,
                 hold: Callable[[], Callable[[], None]] | None = None,
                 release: Callable[[], None] | None = None) -> tuple[Cut, list[str]]:
    """`cut`, tried once more after an UnattributedWrite (given back, still staged). `hold()` is called before
    each attempt and returns its `at_cut`; `release()` after each failed one (what `hold` opened must not stay
    open on a side that takes writes again). Returns the cut and what the attempts before it met. Raises NotCut
    once unstaged; any other error unstages too, unless the switch may have happened."""
    retried: list[str] = []
    for attempt in range(1, CUT_ATTEMPTS + 1):
        try:
            return cut(r, leg, budget, large_objects=large_objects, at_cut=hold() if hold else None), retried
        except BaseException as exc:
            if release:
                release()
            if isinstance(exc, UnattributedWrite) and attempt < CUT_ATTEMPTS:
                retried.append(f"attempt {attempt} given back: {exc}")
                continue
            if isinstance(exc, CutoverAborted):
                unstage(r, leg, serving)
                raise NotCut(exc, retried) from exc
            if switched(r, leg) is False:  # a later RELOAD must not find the destination staged
                unstage_after(r, leg, serving, exc)
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def evidence(prepared: list[str], retried: list[str], cut: Cut | None = None,
             after: list[str] | tuple[str, ...] = ()) -> list[dict[str, str]]:
    """A critical section's record in time order, as both ways (forward and back) show it."""
    rows = [{"when": "before the pause", "what": d} for d in prepared]
    rows += [{"when": "the cut", "what": d} for d in retried]
    rows += [{"when": f"+{t:.3f} s", "what": name} for name, t in (cut.marks.items() if cut else ())]
    return rows + [{"when": "after the resume", "what": d} for d in after]


def switched(r: Route, leg: Leg) -> bool | None:
    """Whether PgBouncer leads to the leg's destination now, asked on a fresh console (None: it cannot say)."""
    try:
        return serving(r) == leg.backend
    except Exception:  # noqa: BLE001 - unreachable or broken console: unknown, never taken as "not switched"
        return None


def finish_forward(r: Route, reverse_from: str | None = None) -> list[str]:
    """After the cutover's resume: legacy's schema may change again, the forward subscription goes, reverse
    replication starts at the slot's position (the cut, `reverse_from` when known), made durable first.
    It sends only the new cluster's own changes (origin = none, both sides on 16 or later), never legacy's
    writes that the forward subscription applied. Safe to repeat."""
    done = []
    if migration.thaw_ddl(r.source):
        done.append("DDL on legacy thawed")
    if migration.drop_subscription(r.target, names.SUBSCRIPTION):  # before the reverse: no loop between them
        done.append("forward subscription dropped")
    if not migration.subscription_exists(r.source, names.REVERSE_SUBSCRIPTION):
        filtered = min(migration.server_version(r.source), migration.server_version(r.target)) >= 160000
        at = migration.settle_slot(r.target, names.REVERSE_SLOT, reverse_from, required=not filtered)
        migration.ensure_subscription(r.source, r.target, names.REVERSE_SUBSCRIPTION, names.REVERSE_PUBLICATION,
                                      copy_data=False, failover=True, local_only=True)
        done.append(f"reverse replication new -> legacy started from the cut ({at})")
    return done


def finish_back(r: Route) -> list[str]:
    """After the rollback's resume: reverse replication dropped (legacy leads again), its DDL free. Safe to
    repeat."""
    done = ["DDL on legacy thawed"] if migration.thaw_ddl(r.source) else []
    if migration.drop_subscription(r.source, names.REVERSE_SUBSCRIPTION):
        done.append("reverse replication dropped")
    return done
