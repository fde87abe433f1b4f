"""`runbook rehearse`: the whole rollout on one target, in the policy's order, one archived run per leg.

The legs: load test, failover drill, readiness, phase 1 (with a maintenance window opening now and as long
as the migration's budget), the sign-offs, phase 2, phase 3, a validation checkpoint, and, when asked, a
rollback drill. Each runbook leg is a full `runbook run` (papermill, target lock, journal, sealed archive) in
one campaign, so the rehearsal is itself the audit record. A leg that already succeeded in the campaign is
skipped: after a failure, the same command resumes where the rehearsal stopped.

On a target other than the sandbox the rehearsal never approves for anyone: it stops at the sign-off gate
and names the roles and the command each approver runs. On the sandbox the approvals are recorded as
rehearsal approvals (marked so in the sign-offs and on the campaign page), and the short phase 3 watch
is a recorded policy loosening.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

from runbook_lib.campaign import signoffs, window
from runbook_lib.clients import prometheus
from runbook_lib.config import signing
from runbook_lib.config.params import Params, load_params
from runbook_lib.errors import RunbookError
from runbook_lib.ops import fallback, migration
from runbook_lib.run import archive, runinfo, runner
from runbook_lib.run.journal import JOURNAL
from runbook_lib.run.lock import TargetLock

# stopped at the sign-off gate of a real target, before any change: people must approve
EXIT_AWAITING_SIGNOFF = runner.EXIT_BAD_INPUT

SIGNOFFS = "signoffs"
# on the sandbox the whole harness shares one small machine: a short watch, and its CPU and memory are not the
# cluster's own; each loosening is recorded in the runs that use it
SANDBOX_PHASE3 = [
    "policy.verification_watch.duration=20s", "policy.verification_watch.cpu_max=0.99",
    "policy.verification_watch.memory_trend_max=0.5", "target.workload.duration=5s",
    "policy_loosening=[{key: verification_watch.duration, reason: 'sandbox rehearsal: a short watch', "
    "approved_by: runbook rehearse}, {key: verification_watch.cpu_max, reason: 'sandbox rehearsal: a shared "
    "two-core machine', approved_by: runbook rehearse}, {key: verification_watch.memory_trend_max, reason: "
    "'sandbox rehearsal: host memory of a shared machine over a 20 s watch is noise', approved_by: runbook "
    "rehearse}]",
]
SANDBOX_LOAD = ["target.workload.duration=10s"]
SETTLE_S = 180.0  # how long to wait for monitoring to see every member again after a drill


@dataclass(frozen=True)
class Leg:
    name: str
    runbook: str | None  # None: not a runbook (the sign-offs)
    overrides: list[str] = field(default_factory=list)
    before: Callable[[Params], str | None] | None = None  # readies the target; returns what to tell


@dataclass
class LegResult:
    leg: str
    runbook: str | None
    status: str  # succeeded, done-before, failed, refused, awaiting-signoff, approved
    seconds: float = 0.0
    run_id: str | None = None
    message: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0  # the leg's run: runner.EXIT_*


@dataclass
class Rehearsal:
    campaign_dir: Path
    results: list[LegResult]
    exit_code: int
    resume: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def is_sandbox(params: Params) -> bool:
    return params.target.environment == "sandbox" and params.sandbox is not None


def window_now(params: Params, now: datetime | None = None) -> list[str]:
    """A maintenance window opening now and as long as the migration phase's budget."""
    start = (now or datetime.now(UTC)).replace(microsecond=0)
    end = start + timedelta(seconds=float(params.policy.phases["migration"].budget))
    return [f"window.start={start.isoformat()}", f"window.end={end.isoformat()}"]


def monitoring_sees_all(params: Params, timeout: float = SETTLE_S) -> list[str]:
    """After a drill restarted members: wait (bounded) until Prometheus scrapes every target again, which
    readiness (MON-01) and the phase 3 health checks judge. Returns the targets still not up."""
    if params.target.prometheus is None:
        return []
    url = params.target.prometheus.url
    deadline = time.monotonic() + timeout
    while True:
        try:
            down = [t.get("scrapeUrl", "?") for t in prometheus.targets(url) if t.get("health") != "up"]
        except Exception as exc:  # unreachable monitoring is readiness's finding to make, not the rehearsal's
            down = [f"{url} ({type(exc).__name__})"]
        if not down or time.monotonic() > deadline:
            return down
        time.sleep(2)


def settle_monitoring(params: Params) -> str | None:
    down = monitoring_sees_all(params)
    return f"still not scraped after {SETTLE_S:.0f} s: {', '.join(down)} (the leg judges it)" if down else None


def fresh_new_cluster(params: Params) -> str | None:
    """The sandbox only: a new cluster left holding an earlier rehearsal's data (legacy serving) is emptied for
    this attempt. On any other target the phase 2 preflight names such rows and refuses instead."""
    r = migration.route(params)
    if not fallback.on_legacy(r) or not migration.user_tables(r.target):
        return None
    done = fallback.clear_new(r)
    return "sandbox: the new cluster held an earlier attempt's data, emptied for this one: " + "; ".join(done)


def _before(leg: Leg, params: Params) -> str | None:
    """A leg's preparation holds the target's lock, as a mutating run does: another operator's run is not
    changed under it (and this one is refused while theirs runs)."""
    assert leg.before is not None
    lock = TargetLock(params.target.name, params.lock_spec())
    lock.acquire({"run_id": f"rehearse-before-{leg.runbook}", "runbook": "rehearse", "operator": params.operator_name,
                  "host": socket.gethostname(), "pid": os.getpid(), "since": datetime.now(UTC).isoformat()})
    try:
        return leg.before(params)
    finally:
        lock.release()


def legs(params: Params, strategy: str | None = None, with_rollback: bool = False) -> list[Leg]:
    sandbox = is_sandbox(params)
    return [
        Leg("load test", "load_test", SANDBOX_LOAD if sandbox else []),
        Leg("failover drill", "failover_drill"),
        Leg("readiness", "readiness", before=settle_monitoring),
        Leg("phase 1", "phase1_pre_migration", window_now(params)),
        Leg("sign-offs", None),
        Leg("phase 2", "phase2_migration", [f"migration.strategy={strategy}"] if strategy else [],
            before=fresh_new_cluster if sandbox else None),
        Leg("phase 3", "phase3_verification", SANDBOX_PHASE3 if sandbox else [], before=settle_monitoring),
        Leg("validation checkpoint", "validation"),
        *([Leg("rollback drill", "rollback", ["rollback.reason=rehearsal: the rollback drill that ends it"])]
          if with_rollback else []),
    ]


AFTER_CUTOVER = ("phase2_migration", "phase3_verification", "validation")


def done_before(campaign_dir: Path, runbook: str) -> dict[str, Any] | None:
    """The latest succeeded run of this runbook in the campaign, when it still stands: not for phase 1 once
    its window has closed before a cutover, and not for the cutover and what follows it once a rollback
    succeeded after it (legacy serves again: the migration must run again)."""
    sealed = [m for m in archive.manifests(campaign_dir) if m.get("status") != "planned"]
    found = [i for i, m in enumerate(sealed) if m.get("runbook") == runbook]
    if not found or sealed[found[-1]].get("status") != "succeeded":
        return None
    at = found[-1]
    cutovers = [i for i, m in enumerate(sealed) if m.get("runbook") == "phase2_migration"
                and m.get("status") == "succeeded"]
    rolled_back = [i for i, m in enumerate(sealed) if m.get("runbook") == "rollback" and m.get("status") == "succeeded"]
    if runbook == "phase1_pre_migration" and not cutovers and window.outside(campaign_dir):
        return None
    if runbook in AFTER_CUTOVER and any(r > at for r in rolled_back):
        return None
    if runbook == "rollback" and any(c > at for c in cutovers):
        return None  # a later cutover: its rollback drill has not run
    return sealed[at]


def approve_as_rehearsal(campaign_dir: Path, params: Params) -> list[str]:
    """Record a rehearsal approval for every role still missing one (the sandbox only)."""
    trusted = signing.trusted_for(params)
    roles = signoffs.missing(campaign_dir, params.policy, accept_rehearsal=True, trusted=trusted)
    signer = signing.signer_for(params)  # the operator's key: a rehearsal approval is signed like any other
    for role in roles:
        signoffs.record(campaign_dir, params.policy, role, "runbook rehearse (no person approved)",
                        note="sandbox rehearsal approval", rehearsal=True, signer=signer, trusted=trusted)
    archive.refresh(campaign_dir, signer)
    return roles


def resume_command(params_file: str, campaign: str, strategy: str | None, with_rollback: bool,
                   overrides: list[str], outputs_dir: Path | None = None) -> str:
    cmd = ["runbook", "rehearse", "--params", params_file, "--campaign", campaign]
    cmd += ["--strategy", strategy] if strategy else []
    cmd += ["--with-rollback"] if with_rollback else []
    cmd += ["--outputs", str(outputs_dir)] if outputs_dir else []
    for o in overrides:
        cmd += ["-p", o]
    return shlex.join(cmd)


@contextmanager
def follow_steps(run_dir: Path, show: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Show each step of a run as its journal records it (progress while papermill runs the notebook)."""
    stop = threading.Event()

    def tail() -> None:
        offset = 0
        path = run_dir / JOURNAL
        while True:
            stopping = stop.is_set()
            if path.exists():
                data = path.read_bytes()[offset:]
                complete = data[: data.rfind(b"\n") + 1]
                offset += len(complete)
                for line in complete.decode(errors="replace").splitlines():
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("event") == "step" and event.get("status") != "running":
                        show(event)
            if stopping:
                return
            stop.wait(0.5)

    thread = threading.Thread(target=tail, name="rehearse-follow", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def rehearse(params_file: str, *, campaign: str | None = None, strategy: str | None = None,
             with_rollback: bool = False, overrides: list[str] | None = None, outputs_dir: Path | None = None,
             console: Console | None = None,
             before_leg: Callable[[str], None] | None = None) -> Rehearsal:
    """Run every leg not already done in the campaign, in order; stop at the first that does not succeed.

    `before_leg(runbook)` is called just before a runbook leg starts (tests use it to inject a fault)."""
    out = console or Console(stderr=True, soft_wrap=True, highlight=False)
    overrides = list(overrides or [])
    params = load_params(params_file, overrides)  # bad input: refused here, before any leg runs
    campaign = campaign or params.campaign
    root = (outputs_dir or runinfo.outputs_root()).resolve()
    campaign_dir = root / campaign
    resume = resume_command(params_file, campaign, strategy, with_rollback, overrides, outputs_dir)
    plan = legs(params, strategy, with_rollback)
    out.print(f"[bold]Rehearsal of the rollout on {params.target.name} ({params.target.environment})[/bold], "
              f"campaign {campaign}: {len(plan)} legs -> {campaign_dir}")
    results: list[LegResult] = []
    for number, leg in enumerate(plan, 1):
        label = f"[{number}/{len(plan)}] {leg.name}"
        if leg.runbook is None:
            result = _signoffs(campaign_dir, params, params_file, campaign, out, label)
            results.append(result)
            if result.status == "awaiting-signoff":
                return Rehearsal(campaign_dir, results, EXIT_AWAITING_SIGNOFF, resume)
            continue
        earlier = done_before(campaign_dir, leg.runbook)
        if earlier:
            out.print(f"{label}: already succeeded in this campaign ({earlier['run_id']}), skipped")
            results.append(LegResult(leg.name, leg.runbook, "done-before", earlier.get("wall_seconds") or 0.0,
                                     earlier["run_id"], figures=archive.headline(earlier)))
            continue
        try:
            note = _before(leg, params) if leg.before else None
        except (RunbookError, psycopg.Error, OSError) as exc:
            results.append(LegResult(leg.name, leg.runbook, "failed", message=f"before the leg: {exc}"))
            out.print(f"[red]rehearsal stopped before {leg.name}[/red]: {exc}\n  resume with: {resume}")
            return Rehearsal(campaign_dir, results, runner.EXIT_FAILED, resume)
        if note:
            out.print(f"[yellow]{label}: {note}[/yellow]")
        if before_leg:
            before_leg(leg.runbook)
        result = _run_leg(leg, label, params_file, campaign, root, overrides, out)
        results.append(result)
        if result.status != "succeeded":
            out.print(f"[red]rehearsal stopped at {leg.name}[/red]: {result.message}\n"
                      f"  the failed run: {campaign_dir / (result.run_id or '')}\n"
                      f"  fix the cause, then resume with: {resume}")
            return Rehearsal(campaign_dir, results, result.exit_code, resume)
    archive.refresh(campaign_dir, signing.signer_for(params))  # the sign-offs recorded after the last seal appear
    # in the index, and the campaign's seal covers them
    return Rehearsal(campaign_dir, results, 0, resume)


def _run_leg(leg: Leg, label: str, params_file: str, campaign: str, root: Path, overrides: list[str],
             out: Console) -> LegResult:
    assert leg.runbook is not None
    run_id = runinfo.new_run_id(leg.runbook)
    out.print(f"{label}: runbook {leg.runbook}, run {run_id}")

    def show(event: dict[str, Any]) -> None:
        colour = {"ok": "green", "skipped": "dim", "waived": "yellow"}.get(event.get("status", ""), "red")
        out.print(f"    [{colour}]{event.get('status')}[/{colour}] {event.get('name')} "
                  f"({event.get('seconds') or 0:.1f} s) {event.get('summary') or ''}"[:220])

    with follow_steps(root / campaign / run_id, show):
        report = runner.run(leg.runbook, params_file, campaign=campaign, overrides=[*overrides, *leg.overrides],
                            outputs_dir=root, run_id=run_id, echo=False)
    figures: dict[str, Any] = {}
    if report.run_dir and (report.run_dir / runinfo.MANIFEST).exists():
        figures = archive.headline(json.loads((report.run_dir / runinfo.MANIFEST).read_text()))
    status = {runner.EXIT_OK: "succeeded", runner.EXIT_BAD_INPUT: "refused",
              runner.EXIT_KERNEL: "kernel-died"}.get(report.exit_code, "failed")
    colour = "green" if status == "succeeded" else "red"
    out.print(f"{label}: [{colour}]{status}[/{colour}] in {clock(report.seconds)}"
              + (f" ({archive.figures_text(figures)})" if figures else ""))
    return LegResult(leg.name, leg.runbook, status, report.seconds, report.run_id, report.message, figures,
                     report.exit_code)


def _signoffs(campaign_dir: Path, params: Params, params_file: str, campaign: str, out: Console,
              label: str) -> LegResult:
    sandbox = is_sandbox(params)
    missing = signoffs.missing(campaign_dir, params.policy, accept_rehearsal=sandbox, trusted=signing.trusted_for(params))
    if not missing:
        out.print(f"{label}: every sign-off is present and bound to the current records")
        return LegResult("sign-offs", None, "done-before")
    if not sandbox:
        commands = "\n".join(f"  runbook signoff --params {shlex.quote(params_file)} --campaign "
                             f"{shlex.quote(campaign)} --role {role} --name 'NAME'" for role in missing)
        out.print(f"[yellow]{label}: the rehearsal stops here[/yellow]: {params.target.name} is a "
                  f"{params.target.environment} target and only people approve its migration. Missing: "
                  f"{', '.join(missing)}. Each approver runs:\n{commands}\nthen run the rehearsal again to go on.")
        return LegResult("sign-offs", None, "awaiting-signoff",
                         message=f"awaiting sign-offs: {', '.join(missing)}")
    roles = approve_as_rehearsal(campaign_dir, params)
    out.print(f"{label}: [yellow]recorded {len(roles)} rehearsal approvals[/yellow] (sandbox; marked so in "
              f"{campaign_dir / signoffs.FILE} and on the campaign page): {', '.join(roles)}")
    return LegResult("sign-offs", None, "approved", figures={"rehearsal approvals": len(roles)})


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s" if seconds >= 60 else f"{seconds:.1f}s"


def summary(rehearsal: Rehearsal) -> str:
    """One line per leg (outcome, duration, headline figures): readable at any terminal width and in a log."""
    width = max((len(r.leg) for r in rehearsal.results), default=0)
    lines = ["Rehearsal summary:"]
    for r in rehearsal.results:
        colour = {"succeeded": "green", "done-before": "green", "approved": "yellow"}.get(r.status, "red")
        lines.append(f"  {r.leg:<{width}}  [{colour}]{r.status:<16}[/{colour}] {clock(r.seconds) if r.seconds else '-':>8}"
                     f"  {archive.figures_text(r.figures)}" + (f"  ({r.run_id})" if r.run_id else ""))
    return "\n".join(lines)
