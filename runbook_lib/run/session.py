"""The run as seen from inside the kernel: parameters, journal, resume, plan mode.

A notebook's first cell calls `start(...)`; every step cell calls
`rb.run(step)`. The same code serves a papermill run (the runner made the run
folder and passed its id) and an interactive JupyterLab run (a run folder is
made here, and `runbook archive add` seals it afterwards).

The session owns the run's live resources (a write probe's thread, snapshot
connections held between steps, the tools): `resource()` and `hold()` register
them, and `finish()` or `release()` close every one. Nothing lives at module level.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tqdm.std import tqdm

from runbook_lib.config import redact
from runbook_lib.config.endpoints import Endpoints
from runbook_lib.config.params import Params, Target, load_params
from runbook_lib.run import display, runinfo
from runbook_lib.run.journal import Journal, completed_steps
from runbook_lib.run.lock import TargetLock
from runbook_lib.run.step import Step, StepFailed, StepResult, execute

T = TypeVar("T")
log = logging.getLogger("runbook")


class Session:
    """One run of one runbook against one target."""

    def __init__(self, params: Params, info: runinfo.RunInfo, run_dir: Path, interactive: bool) -> None:
        self.params = params
        self.info = info
        self.run_dir = run_dir
        self.interactive = interactive
        self.journal = Journal(run_dir)
        self.state: dict[str, Any] = {}
        self.results: list[StepResult] = []
        self._resumed = completed_steps(run_dir.parent / info.resumed_from / "journal.jsonl") \
            if info.resumed_from else {}
        self._lock: TargetLock | None = None
        self._resources: dict[str, tuple[Any, Callable[[], None] | None]] = {}

    @property
    def plan_mode(self) -> bool:
        return self.info.plan

    @property
    def target(self) -> Target:
        return self.params.target

    @property
    def endpoints(self) -> Endpoints:
        return self.params.endpoints

    @property
    def campaign_dir(self) -> Path:
        return self.run_dir.parent

    # ------------------------------------------------------------ live resources of the run

    def resource(self, key: str, make: Callable[[], T], close: Callable[[T], None] | None = None) -> T:
        """The run's one `key` resource, made on first use and closed when the run ends."""
        if key not in self._resources:
            value = make()
            self._resources[key] = (value, (lambda: close(value)) if close else None)
        return self._resources[key][0]

    def hold(self, key: str, value: T, close: Callable[[], None] | None = None) -> T:
        """Keep a live resource across steps (replacing and closing an earlier one under that key)."""
        self.drop(key)
        self._resources[key] = (value, close)
        return value

    def held(self, key: str) -> Any | None:
        entry = self._resources.get(key)
        return entry[0] if entry else None

    def drop(self, key: str) -> None:
        """Close and forget one resource (no-op when absent)."""
        entry = self._resources.pop(key, None)
        if entry and entry[1]:
            entry[1]()

    def run(self, spec: Step) -> StepResult:
        """Run a step (or reuse its recorded result on resume), journal it, show it; stop on failure."""
        recorded = None if spec.always_run else self._resumed.get(spec.name)
        if recorded is not None and not self.plan_mode:
            result = StepResult.from_record(recorded)
            result.recorded_in = recorded.get("recorded_in") or self.info.resumed_from
            result.status = "skipped"
            result.summary = f"already completed: {recorded['summary']}"
            self.state.update(recorded.get("state") or {})
        else:
            self.journal.append("step_start", name=spec.name, mutating=spec.mutating, plan=self.plan_mode)
            result = execute(self, spec)
            self.state.update(result.state)
        self.results.append(result)
        self.journal.record_step(result)
        runinfo.write_draft_manifest(self.run_dir, self.info, self.params, status="running")
        if result.status == "failed":
            display.show(result) if _in_ipython() else print(result.summary, file=sys.stderr)
            raise StepFailed(f"step {spec.name} failed: {result.summary}")
        return result

    def progress(self, iterable: Iterable[T] | None, total: int | None = None, desc: str = "") -> tqdm:
        """Progress for long steps, shown in the notebook and in the terminal running papermill.

        Iterate over it, or pass None with a total and call `.update()` as work completes.
        """
        return tqdm(iterable, total=total, desc=desc, file=sys.stderr, mininterval=0.5, delay=0.5, ascii=True,
                    dynamic_ncols=False, ncols=100)

    def finish(self) -> RunSummary:
        """Close the run: journal its outcome and tell an interactive operator how to seal it."""
        failed = [r.name for r in self.results if r.status == "failed"]
        outcome = "failed" if failed else ("planned" if self.plan_mode else "succeeded")
        self.journal.append("run_end", outcome=outcome, failed_steps=failed)
        runinfo.write_draft_manifest(self.run_dir, self.info, self.params, status=outcome)
        self.release()
        hint = (f"save the notebook, then seal it into the archive: runbook archive add "
                f"PATH/TO/{self.info.runbook}.ipynb" if self.interactive else "")
        return RunSummary(self.info.run_id, self.info.runbook, outcome, len(self.results), failed, hint)

    def release(self) -> None:
        """Close the run's live resources, then give the target back (an interactive mutating run holds it)."""
        errors = []
        for key in reversed(list(self._resources)):
            try:
                self.drop(key)
            except Exception as exc:  # every resource is closed even when one fails to
                errors.append(f"{key}: {exc}")
        if errors:
            self.journal.append("release_errors", errors=errors)
        if self._lock:
            self._lock.release()
            self._lock = None

    def _ipython_display_(self) -> None:
        from IPython.display import display

        bundle = {runinfo.RUN_MIME: self.info.public(), "text/html": runinfo.header_html(self.info, self.params),
                  "text/plain": f"run {self.info.run_id} of {self.info.runbook} on {self.params.target.name}"}
        display(bundle, raw=True)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class RunSummary:
    """How a run ended, shown readably as the notebook's last output."""

    run_id: str
    runbook: str
    outcome: str
    steps: int
    failed: list[str]
    next: str = ""

    def __repr__(self) -> str:
        failed = f"; failed: {', '.join(self.failed)}" if self.failed else ""
        hint = f"\n{self.next}" if self.next else ""
        return f"{self.runbook} {self.outcome}: run {self.run_id}, {self.steps} steps{failed}{hint}"

    def _repr_html_(self) -> str:
        return display.outcome_html(self.outcome, self.runbook, self.run_id, self.steps, self.failed, self.next)


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    return get_ipython() is not None


def start(params_path: str, runbook: str, run_id: str | None = None, campaign: str | None = None,
          plan: bool = False, resume_from: str | None = None, overrides: list[str] | None = None,
          outputs_dir: str | None = None) -> Session:
    """Open the run: load and validate parameters, make or join the run folder, journal the start."""
    redact.install_logging_filter()
    display.register()
    params = load_params(params_path, overrides)
    interactive = run_id is None
    info = runinfo.RunInfo.create(
        params=params, runbook=runbook, run_id=run_id, campaign=campaign, plan=plan,
        resumed_from=resume_from, interactive=interactive, overrides=overrides or [],
    )
    root = Path(outputs_dir) if outputs_dir else runinfo.outputs_root()
    run_dir = root / info.campaign / info.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    session = Session(params, info, run_dir, interactive)
    if interactive and runinfo.runbook_meta(runbook).get("mutating") and not plan:
        session._lock = TargetLock(params.target.name, params.lock_spec())
        session._lock.acquire(info.holder())
    session.journal.append("run_start", pid=os.getpid(), **info.public())
    runinfo.write_draft_manifest(run_dir, info, params, status="running")
    (run_dir / "params.json").write_text(json.dumps(params.redacted(), indent=2, sort_keys=True))
    return session
