"""A campaign's runs for the terminal: `runbook runs list` and `runbook runs show`.

Why: during the window an operator asks "what ran, what failed and why" from a shell, often over SSH,
where the campaign's HTML page is out of reach. Both read the sealed manifests only (what the archive
verifies), never a notebook.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runbook_lib.errors import RunbookError
from runbook_lib.run import archive, runinfo


class NoSuchRun(RunbookError):
    pass


def rows(campaign_dir: Path) -> list[dict[str, Any]]:
    """One row per sealed run, oldest first: id, runbook, status, start, seconds, headline or failure reason."""
    if not campaign_dir.is_dir():
        raise NoSuchRun(f"no campaign at {campaign_dir}")
    out = []
    for manifest in archive.manifests(campaign_dir):
        failed = manifest.get("status") not in ("succeeded", "planned")
        out.append({"run_id": manifest["run_id"], "runbook": manifest.get("runbook", ""),
                    "status": manifest.get("status", ""), "started": (manifest.get("started") or "")[:19],
                    "seconds": manifest.get("wall_seconds"),
                    "figures": (manifest.get("message") or "") if failed else
                    archive.figures_text(archive.headline(manifest))})
    return out


def find(root: Path, run_id: str, campaign: str | None = None) -> Path:
    """The folder of a sealed run, in one campaign or in any campaign under the archive root."""
    if campaign:
        places = [root / campaign]
    else:
        places = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for campaign_dir in places:
        if (campaign_dir / run_id / runinfo.MANIFEST).is_file():
            return campaign_dir / run_id
    where = f"campaign {campaign}" if campaign else f"any campaign under {root}"
    raise NoSuchRun(f"no sealed run {run_id} in {where} (runbook runs list CAMPAIGN lists them)")


def detail(run_dir: Path) -> dict[str, Any]:
    """A run's manifest reduced to what an operator reads: outcome, why, and each step."""
    manifest = json.loads((run_dir / runinfo.MANIFEST).read_text())
    return {"run_id": manifest["run_id"], "runbook": manifest.get("runbook"), "campaign": manifest.get("campaign"),
            "status": manifest.get("status"), "message": manifest.get("message"),
            "started": manifest.get("started"), "seconds": manifest.get("wall_seconds"),
            "operator": manifest.get("operator"), "overrides": manifest.get("overrides") or [],
            "resumed_from": manifest.get("resumed_from"), "figures": archive.headline(manifest),
            "steps": [{"name": s["name"], "status": s.get("status"), "seconds": s.get("seconds"),
                       "summary": s.get("error") or s.get("summary") or ""} for s in manifest.get("steps", [])]}
