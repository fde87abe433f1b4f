"""Step and StepResult: the unit every runbook cell runs, with plan mode and guards.

A step is a named function of the run context. Running it through
`Session.run` times it, checks its guards, records it in the journal, skips it
on resume when it already completed, and in plan mode asks a mutating step what
it would change instead of changing it.
"""

from __future__ import annotations

import inspect
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import pandas as pd

from runbook_lib.config import redact
from runbook_lib.errors import RunbookError
from runbook_lib.values import json_safe, now

Status = Literal["ok", "failed", "skipped", "waived", "planned"]
COMPLETED: tuple[Status, ...] = ("ok", "waived")


class Context(Protocol):
    """What a step sees of its run (the session implements it): the step model knows no caller."""

    @property
    def plan_mode(self) -> bool: ...


@dataclass
class Outcome:
    """What a step function returns: the facts it found, before bookkeeping is added."""

    summary: str
    evidence: pd.DataFrame | list[dict[str, Any]] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: list[Any] = field(default_factory=list)
    failed: bool = False
    state: dict[str, Any] = field(default_factory=dict)  # facts later steps need, restored on resume


@dataclass
class StepResult:
    """The recorded result of one step, rendered the same way in every notebook."""

    name: str
    status: Status
    started: datetime
    finished: datetime
    summary: str
    evidence: pd.DataFrame | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    figures: list[Any] = field(default_factory=list)
    title: str = ""
    mutating: bool = False
    recorded_in: str | None = None  # run id whose result was reused on resume
    state: dict[str, Any] = field(default_factory=dict)
    refusal: bool = False  # failed as a gate or by a guard: it changed nothing

    @property
    def seconds(self) -> float:
        return (self.finished - self.started).total_seconds()

    @property
    def ok(self) -> bool:
        return self.status in COMPLETED or self.status in ("skipped", "planned")

    def to_record(self, max_rows: int = 200) -> dict[str, Any]:
        """Journal form: JSON-ready, redacted, evidence capped at max_rows."""
        evidence = None
        if self.evidence is not None:
            evidence = json_safe(self.evidence.head(max_rows).to_dict(orient="records"))
        return redact.obj({
            "name": self.name, "title": self.title, "status": self.status,
            "started": self.started.isoformat(), "finished": self.finished.isoformat(),
            "seconds": round(self.seconds, 3), "summary": self.summary, "metrics": json_safe(self.metrics),
            "error": self.error, "evidence": evidence, "mutating": self.mutating,
            "figures": [f.to_json() for f in self.figures if hasattr(f, "to_json")],
            "recorded_in": self.recorded_in, "state": json_safe(self.state), "refusal": self.refusal,
        })

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StepResult:
        import plotly.io as pio

        evidence = pd.DataFrame(record["evidence"]) if record.get("evidence") is not None else None
        return cls(
            name=record["name"], title=record.get("title", ""), status=record["status"],
            started=datetime.fromisoformat(record["started"]), finished=datetime.fromisoformat(record["finished"]),
            summary=record["summary"], evidence=evidence, metrics=record.get("metrics", {}),
            error=record.get("error"), mutating=record.get("mutating", False),
            figures=[pio.from_json(f) for f in record.get("figures", [])], state=record.get("state") or {},
            refusal=record.get("refusal", False),
        )



@dataclass(frozen=True)
class Guard:
    """A precondition: `check` returns None when it holds, else the reason it does not."""

    description: str
    check: Callable[[Any], str | None]
    section: str | None = None  # the parameters section it asks for (requires()), for `params check --for`


@dataclass(frozen=True)
class Clock:
    """A phase's time budget from the policy: started by the first step that completes (or by `start_on`),
    kept in the run state across resumes, shown on every step, and refusing further steps once spent."""

    phase: str  # the policy's `phases` key
    key: str  # the run state entry holding the start time
    spent: str  # what the operator does once the budget is spent
    start_on: str | None = None  # only this step starts the clock (phase 2: the sign-off gate)

    def budget(self, ctx: Any) -> float:
        return float(ctx.params.policy.phases[self.phase].budget)

    def overrun(self, ctx: Any) -> str | None:
        started = ctx.state.get(self.key)
        if started is None:
            return None
        elapsed, budget = time.time() - started, self.budget(ctx)
        return None if elapsed < budget else (f"{_span(elapsed)} used of the {_span(budget)} {self.phase} budget; "
                                              + self.spent)

    @property
    def guard(self) -> Guard:
        return Guard(f"inside the {self.phase} time budget", self.overrun)

    def stamp(self, ctx: Any, outcome: Outcome, step_name: str, started: float) -> Outcome:
        """The step's elapsed/remaining minutes; the first completed step (or `start_on`) starts the clock."""
        begun = ctx.state.get(self.key)
        if begun is None and not outcome.failed and self.start_on in (None, step_name):
            begun = started
            outcome.state = {**outcome.state, self.key: begun}
        return on_the_clock(outcome, begun, self.budget(ctx), self.phase) if begun is not None else outcome


def _span(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 7200 else f"{seconds / 60:.0f} min"


@dataclass(frozen=True)
class Step:
    """A runbook step. Mutating steps must say what they would change (plan)."""

    name: str
    title: str
    run: Callable[[Any], Outcome]
    mutating: bool = False
    plan: Callable[[Any], Outcome] | None = None
    guards: tuple[Guard, ...] = ()
    always_run: bool = False  # decided afresh on resume, never taken from an earlier run
    gate: bool = False  # a go/no-go before any change: its failure is a refusal (exit 2 when nothing changed)
    doc: str = ""  # what the operator reads above the step's cell (the function's docstring)
    clock: Clock | None = None  # the phase budget this step runs on

    def __post_init__(self) -> None:
        if self.mutating and self.plan is None:
            raise ValueError(f"step {self.name}: a mutating step needs a plan function")


def step(name: str, title: str, *, mutating: bool = False, plan: Callable[[Any], Outcome] | None = None,
         guards: tuple[Guard, ...] = (), always_run: bool | None = None, gate: bool = False,
         clock: Clock | None = None) -> Callable[[Callable[[Any], Outcome]], Step]:
    """Decorator form: `@step("backup", "Take the backup", mutating=True, plan=...)`. A book whose steps all run
    on one phase budget binds it once: `step = functools.partial(step, clock=CLOCK)`. A gate is decided afresh
    on resume unless always_run=False says otherwise (a decision that a half-done rollback must not retake)."""

    def wrap(fn: Callable[[Any], Outcome]) -> Step:
        return Step(name=name, title=title, run=fn, mutating=mutating, plan=plan, guards=guards,
                    always_run=gate if always_run is None else always_run, gate=gate, doc=inspect.cleandoc(fn.__doc__ or ""), clock=clock)

    return wrap


def would(text: str) -> Callable[[Any], Outcome]:
    """A mutating step's plan that only says what it would do."""
    return lambda session: Outcome(summary=f"would {text}")


def on_the_clock(outcome: Outcome, started: float, budget: float, prefix: str) -> Outcome:
    """Add the elapsed and remaining minutes of a phase's time budget to a step's metrics."""
    elapsed = time.time() - started
    outcome.metrics = {**outcome.metrics, f"{prefix}_elapsed_min": round(elapsed / 60, 2),
                       f"{prefix}_remaining_min": round((budget - elapsed) / 60, 2)}
    return outcome


def requires(attr: str, what: str) -> Guard:
    """A guard that the parameters carry a section (e.g. `requires("backup", "the backup source")`)."""
    return Guard(f"parameters name {what}", lambda ctx: None if getattr(ctx.params, attr) else f"{attr} is not set",
                 section=attr)


class StepFailed(RunbookError):
    """Raised in the notebook cell after a failed step is shown, so the run stops there."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a Python traceback: the operator needs the step, not our stack."""
        return [f"\x1b[31mStepFailed\x1b[0m: {self}",
                "The run stops here. Fix the cause, then re-run with `runbook run NAME --resume RUN_ID`: "
                "completed steps are not repeated."]


def execute(session: Context, spec: Step) -> StepResult:
    """Run one step: guards, then plan or apply, with errors captured as a failed result."""
    started = now()
    kind: Status = "ok"
    error = None
    guards = spec.guards + ((spec.clock.guard,) if spec.clock else ())
    try:
        refusals = [f"{g.description}: {reason}" for g in guards if (reason := g.check(session))]
        if refusals:
            outcome, kind = Outcome(summary="refused: " + "; ".join(refusals), failed=True), "failed"
            error = "guard refused"
        elif spec.mutating and session.plan_mode:
            outcome, kind = spec.plan(session), "planned"  # type: ignore[misc]
        else:
            outcome = spec.run(session)
            kind = "failed" if outcome.failed else "ok"
    except Exception as exc:  # the step's own failure becomes its result
        outcome = Outcome(summary=f"{type(exc).__name__}: {redact.text(str(exc))}")
        kind, error = "failed", redact.text("".join(traceback.format_exception_only(type(exc), exc)).strip())
    if spec.clock and kind in ("ok", "failed") and not error:
        outcome = spec.clock.stamp(session, outcome, spec.name, started.timestamp())
    evidence = outcome.evidence
    if evidence is not None and not isinstance(evidence, pd.DataFrame):
        evidence = pd.DataFrame(evidence)
    return StepResult(
        name=spec.name, title=spec.title, status=kind, started=started, finished=now(),
        summary=redact.text(outcome.summary), evidence=evidence, metrics=outcome.metrics,
        figures=outcome.figures, error=error, mutating=spec.mutating, state=outcome.state,
        refusal=kind == "failed" and (error == "guard refused" or (spec.gate and error is None)),
    )
