"""`runbook run`: validate, execute with papermill, archive.

Exit codes: 0 success, 1 a step failed (or the secret scan found a value),
2 bad input or refused before anything was touched, 3 the kernel died or timed out.
Whatever happens during execution, the partial notebook is kept and sealed
with a manifest that says how the run ended.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import papermill
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.exceptions import PapermillExecutionError

from runbook_lib.config import redact
from runbook_lib.config.params import ParamsError, load_params
from runbook_lib.errors import RunbookError, first_line
from runbook_lib.run import archive, runinfo
from runbook_lib.run import outcome as outcome_panel
from runbook_lib.run.journal import JOURNAL, read_events
from runbook_lib.run.lock import TargetLock, TargetLocked

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_KERNEL = 0, 1, 2, 3
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


class BadInput(RunbookError):
    """Input refused before anything was touched (exit code 2)."""


@dataclass
class RunReport:
    exit_code: int
    run_id: str | None = None
    run_dir: Path | None = None
    outcome: str = ""
    message: str = ""
    seconds: float = 0.0
    step_seconds: float = 0.0


def run(name: str, params_path: str, *, campaign: str | None = None, overrides: list[str] | None = None,
        plan: bool = False, resume: str | None = None, outputs_dir: Path | None = None,
        run_id: str | None = None, echo: bool = True) -> RunReport:
    """Execute one runbook end to end and archive it; never raises for an expected failure."""
    started = time.monotonic()
    try:
        params = load_params(params_path, overrides)
        notebook = runinfo.runbook_path(name)
        if not notebook.exists():
            raise BadInput(f"runbook {name!r} not found (looked for {notebook})")
        root = (outputs_dir or runinfo.outputs_root()).resolve()
        campaign = campaign or params.campaign
        if resume:
            _check_resumable(root / campaign / resume, name, params.target.name)
        _check_kernel(params.run.kernel_name)
        unresolved = params.unresolved()
        if unresolved:
            raise BadInput("secret references that do not resolve (nothing was started): " + "; ".join(unresolved))
    except (ParamsError, BadInput) as exc:
        return RunReport(EXIT_BAD_INPUT, message=str(exc))

    info = runinfo.RunInfo.create(params=params, runbook=name, run_id=run_id, campaign=campaign, plan=plan,
                                  resumed_from=resume, interactive=False, overrides=overrides or [])
    run_dir = root / info.campaign / info.run_id
    lock = TargetLock(params.target.name, params.lock_spec())
    if runinfo.runbook_meta(name).get("mutating") and not plan:
        try:
            lock.acquire(info.holder())
        except TargetLocked as exc:
            return RunReport(EXIT_BAD_INPUT, message=str(exc))
    run_dir.mkdir(parents=True, exist_ok=True)
    output = run_dir / f"{info.runbook}.ipynb"
    os.environ["RUNBOOK_LOCK_HELD"] = f"{params.target.name}:{info.run_id}"
    outcome, code, message = "succeeded", EXIT_OK, ""
    try:
        papermill.execute_notebook(
            str(notebook), str(output),
            parameters={"params_path": str(Path(params_path).resolve()), "run_id": info.run_id,
                        "campaign": info.campaign, "plan": plan, "resume_from": resume,
                        "overrides": list(overrides or []), "outputs_dir": str(root)},
            kernel_name=params.run.kernel_name, cwd=str(notebook.parent), progress_bar=False,
            stdout_file=sys.stdout if echo else None, stderr_file=sys.stderr if echo else None,
            execution_timeout=params.run.cell_timeout, start_timeout=params.run.kernel_start_timeout,
            request_save_on_cell_execute=True,
            # an unattended run's kernel logs only errors: not ipykernel's plain-TCP warning on every run (its
            # ports listen on the loopback interface only)
            extra_arguments=KERNEL_ARGS,
        )
        if plan:
            outcome = "planned"
    except PapermillExecutionError as exc:
        outcome, code, message = "failed", EXIT_FAILED, f"{exc.ename}: {exc.evalue}"
        if refused_before_any_change(run_dir, root / info.campaign / resume if resume else None):
            code = EXIT_BAD_INPUT
            message = message if "refused before any change" in message else f"refused before any change: {message}"
    except (DeadKernelError, CellTimeoutError, RuntimeError, TimeoutError) as exc:
        kind = "timed out" if isinstance(exc, (CellTimeoutError, TimeoutError)) else "kernel died"
        outcome, code, message = "kernel-died", EXIT_KERNEL, f"{kind}: {first_line(exc)}"
    except Exception as exc:  # anything else from the execution machinery: the run still gets sealed
        outcome, code, message = "kernel-died", EXIT_KERNEL, f"execution error: {type(exc).__name__}: {first_line(exc)}"
    finally:
        os.environ.pop("RUNBOOK_LOCK_HELD", None)
        lock.release()
    message = redact.text(message)
    try:
        outcome_panel.insert(output, outcome_panel.text(
            runbook=info.runbook, run_id=info.run_id, campaign=info.campaign, outcome=outcome, message=message,
            seconds=time.monotonic() - started, params_path=params_path, run_dir=run_dir,
            overrides=list(overrides or [])))
    except Exception as exc:  # noqa: BLE001 - a broken notebook file must not keep the run from being sealed
        message += f" (outcome panel not written: {type(exc).__name__})"
    sealed = archive.seal(run_dir, params=params, info=info, outcome=outcome, message=message,
                          wall_seconds=time.monotonic() - started)
    if sealed.secret_hits:
        outcome, code = "secret-leak", EXIT_FAILED
        message = "secret scan found resolved secret values in: " + ", ".join(sealed.secret_hits)
    return RunReport(code, info.run_id, run_dir, outcome, message, time.monotonic() - started,
                     sealed.step_seconds)


def refused_before_any_change(run_dir: Path, resumed_dir: Path | None = None) -> bool:
    """The run stopped at a gate or a guard, and no step that changes the target ran in it, nor began in the
    run it resumes: the target is as it was, so the exit code says refused (2), not failed (1)."""
    steps = [e for e in read_events(run_dir / JOURNAL) if e.get("event") == "step"]
    failed = [e for e in steps if e.get("status") == "failed"]
    changed = [e for e in steps if e.get("mutating") and e.get("status") in ("ok", "failed", "skipped")
               and not e.get("refusal")]
    if resumed_dir is not None:  # a change the earlier run began (its kernel may have died inside it)
        changed += [e for e in read_events(resumed_dir / JOURNAL) if e.get("event") == "step_start"
                    and e.get("mutating") and not e.get("plan")]
    return bool(failed) and bool(failed[-1].get("refusal")) and not changed


def _check_kernel(name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise BadInput(f"run.kernel_name: no Jupyter kernel named {name!r} is installed") from None


def _check_resumable(run_dir: Path, runbook: str, target: str) -> None:
    """Only a real (not planned) run of the same runbook on the same target can be resumed."""
    start = next((e for e in read_events(run_dir / "journal.jsonl") if e.get("event") == "run_start"), None)
    if start is None:
        raise BadInput(f"--resume {run_dir.name}: no journal at {run_dir}")
    if start.get("runbook") != Path(runbook).stem or start.get("target") != target:
        raise BadInput(f"--resume {run_dir.name}: that run was {start.get('runbook')} on {start.get('target')}, "
                       f"not {Path(runbook).stem} on {target}")
    if start.get("plan"):
        raise BadInput(f"--resume {run_dir.name}: that was a --plan run; nothing it did can be skipped")


def summary_line(report: RunReport) -> str:
    where = f" -> {report.run_dir}" if report.run_dir else ""
    detail = f": {report.message}" if report.message else ""
    return f"run {report.run_id or '-'} {report.outcome or 'refused'} (exit {report.exit_code}){detail}{where}"


def as_json(report: RunReport) -> dict[str, Any]:
    return json.loads(json.dumps(report.__dict__, default=str))
