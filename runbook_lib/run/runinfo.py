"""Who ran what, where and from which revision: the identity every run records."""

from __future__ import annotations

import html
import json
import os
import secrets
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from runbook_lib.config.params import Params
from runbook_lib.errors import RunbookError
from runbook_lib.run import journal as journal_mod
from runbook_lib.values import now

RUN_MIME = "application/vnd.runbook.run+json"
MANIFEST = "manifest.json"


def project_root() -> Path:
    """The checkout this package lives in (runbooks/, parameters/, outputs/ sit beside it)."""
    return Path(__file__).resolve().parents[2]


def outputs_root() -> Path:
    return Path(os.environ.get("RUNBOOK_OUTPUTS", project_root() / "outputs")).resolve()


def runbooks_dir() -> Path:
    return Path(os.environ.get("RUNBOOK_RUNBOOKS", project_root() / "runbooks")).resolve()


def runbook_path(name: str) -> Path:
    """A runbook by name (runbooks/NAME.ipynb) or by path."""
    candidate = Path(name)
    if candidate.suffix == ".ipynb":
        return candidate.resolve()
    return runbooks_dir() / f"{name}.ipynb"


def runbook_meta(name_or_path: str) -> dict[str, Any]:
    """The runbook's own metadata (`metadata.runbook` in the notebook): e.g. whether it mutates."""
    path = runbook_path(name_or_path)
    if not path.exists():
        return {}
    return json.loads(path.read_text()).get("metadata", {}).get("runbook", {})


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The project's revision, marked '-dirty' when the working tree has changes."""
    root = project_root()
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def new_run_id(runbook: str) -> str:
    return f"{now().strftime('%Y%m%dT%H%M%SZ')}-{Path(runbook).stem}-{secrets.token_hex(3)}"


@dataclass
class RunInfo:
    run_id: str
    campaign: str
    runbook: str
    target: str
    environment: str
    operator: str
    git_revision: str
    plan: bool
    interactive: bool
    resumed_from: str | None
    overrides: list[str] = field(default_factory=list)
    started: str = field(default_factory=lambda: now().isoformat())
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def create(cls, params: Params, runbook: str, run_id: str | None, campaign: str | None, plan: bool,
               resumed_from: str | None, interactive: bool, overrides: list[str]) -> RunInfo:
        name = Path(runbook).stem
        return cls(
            run_id=run_id or new_run_id(name), campaign=campaign or params.campaign, runbook=name,
            target=params.target.name, environment=params.target.environment, operator=params.operator_name,
            git_revision=git_revision(), plan=plan, interactive=interactive, resumed_from=resumed_from,
            overrides=list(overrides),
        )

    def public(self) -> dict[str, Any]:
        return asdict(self)

    def holder(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "runbook": self.runbook, "operator": self.operator, "host": self.host,
                "pid": os.getpid(), "since": now().isoformat()}


def header_html(info: RunInfo, params: Params) -> str:
    rows = {"run": info.run_id, "campaign": info.campaign, "runbook": info.runbook,
            "target": f"{info.target} ({info.environment})", "operator": info.operator,
            "revision": info.git_revision, "mode": "PLAN (no changes)" if info.plan else "apply",
            "resumed from": info.resumed_from or "-",
            "policy loosened": ", ".join(c.key for c in params.policy_changes if c.looser) or "none"}
    cells = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in rows.items())
    return f"<table class='runbook-run'>{cells}</table>"


def draft_manifest(run_dir: Path, info: RunInfo, params: Params | None, status: str) -> dict[str, Any]:
    """The manifest as known so far; sealing adds hashes and the chain link."""
    steps = journal_mod.step_records(run_dir / journal_mod.JOURNAL)
    return {
        "schema": 1, **info.public(), "status": status, "sealed": False,
        "parameters": params.redacted() if params else None,
        "policy_loosening": [c.__dict__ for c in params.policy_changes if c.looser] if params else [],
        "secret_refs": [str(r) for r in params.scan_refs()] if params else [],
        "steps": [{k: s.get(k) for k in ("name", "title", "status", "seconds", "summary", "metrics", "error",
                                         "recorded_in")} for s in steps],
        "updated": now().isoformat(),
    }


class RunSealed(RunbookError):
    """The run folder was sealed into the archive; nothing may be added to it."""


def is_sealed(run_dir: Path) -> bool:
    try:
        return bool(json.loads((run_dir / MANIFEST).read_text()).get("sealed"))
    except (OSError, json.JSONDecodeError):
        return False


def write_draft_manifest(run_dir: Path, info: RunInfo, params: Params | None, status: str) -> None:
    if is_sealed(run_dir):
        raise RunSealed(f"run {run_dir.name} is sealed in the archive; start a new run instead of adding to it")
    manifest = draft_manifest(run_dir, info, params, status)
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    tmp.replace(run_dir / MANIFEST)
