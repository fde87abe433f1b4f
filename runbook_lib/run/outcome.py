"""The outcome panel: the first cell of every executed notebook (and so of its HTML) says how the run ended.

A reader opening an archived run sees the status, the step that failed and why, the time it took, and the
exact command that resumes it, before any step's output; the rest of the notebook is the evidence.
"""

from __future__ import annotations

import html
import json
import secrets
import shlex
from pathlib import Path

from runbook_lib.run import runinfo
from runbook_lib.run.journal import JOURNAL, step_records

TAG = "outcome-panel"
COLOURS = {"succeeded": "#1a7f37", "planned": "#0969da"}


def text(*, runbook: str, run_id: str, campaign: str, outcome: str, message: str, seconds: float,
         params_path: str, run_dir: Path, overrides: list[str] | None = None) -> str:
    steps = step_records(run_dir / JOURNAL)
    failed = next((s for s in steps if s.get("status") == "failed"), None)
    done = sum(s.get("status") in ("ok", "skipped", "waived") for s in steps)
    colour = COLOURS.get(outcome, "#cf222e")
    lines = [f"<div style='border-left:6px solid {colour};padding:6px 12px'>",
             f"<b style='color:{colour};font-size:1.2em'>{outcome.upper()}</b> &nbsp; {runbook}, run "
             f"<code>{run_id}</code>, campaign <code>{campaign}</code>, {seconds:.1f} s, "
             f"{done} of {len(steps)} steps completed<br>"]
    if failed:
        lines.append(f"failed step: <b>{failed.get('name')}</b>: {_escape(failed.get('summary') or failed.get('error') or '')}<br>")
    if message and outcome not in COLOURS:
        lines.append(f"cause: {_escape(message)}<br>")
    if outcome not in COLOURS:
        resume = shlex.join(["runbook", "run", runbook, "--params", params_path, "--campaign", campaign,
                             *[a for o in overrides or [] for a in ("-p", o)],
                             *(["--outputs", str(run_dir.parent.parent)]
                               if run_dir.parent.parent != runinfo.outputs_root() else []),
                             "--resume", run_id])
        lines.append(f"resume (completed steps are not repeated): <code>{_escape(resume)}</code>")
    lines.append("</div>")
    return "\n".join(lines)


def _escape(value: str) -> str:
    return html.escape(value[:1000])


def insert(notebook: Path, panel: str) -> None:
    """Put the panel first (replacing an earlier one), so the executed notebook and its HTML open with it."""
    if not notebook.exists():
        return
    nb = json.loads(notebook.read_text())
    nb["cells"] = [c for c in nb.get("cells", []) if TAG not in c.get("metadata", {}).get("tags", [])]
    nb["cells"].insert(0, {"cell_type": "markdown", "id": secrets.token_hex(4), "metadata": {"tags": [TAG]},
                           "source": panel})
    notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
