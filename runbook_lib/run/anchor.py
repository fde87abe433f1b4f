"""The chain head kept outside the archive: a line per sealed run committed to a git repository.

Whoever can rewrite the archive can drop its newest runs and their chain lines; the anchor holds what was
sealed where that rewrite does not reach (a records repository the team pushes, writable by the runbooks'
host but kept by people). Verify reads the committed file (`git show HEAD:...`), never the work tree.
"""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from runbook_lib.errors import RunbookError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_GIT = ["git", "-c", "user.name=runbook", "-c", "user.email=runbook@localhost", "-c", "commit.gpgsign=false"]


class AnchorError(RunbookError):
    """The anchor repository cannot be read or written; names the repository."""


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run([*_GIT, "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AnchorError(f"anchor repository {repo}: git failed: {exc}") from None
    if done.returncode != 0:
        raise AnchorError(f"anchor repository {repo}: git {args[0]} failed: {done.stderr.strip()[:200]}")
    return done.stdout


def _name(campaign: str, first_run: str) -> str:
    """One file per campaign, named by its folder and its first run: a campaign name used again (a new
    rehearsal) starts a new file; a campaign whose first run was removed finds no anchor at all."""
    if not all(_SAFE.fullmatch(part) for part in (campaign, first_run)):
        raise AnchorError(f"campaign {campaign[:60]!r} / run {first_run[:60]!r}: not a plain name")
    return f"{campaign}/{first_run}.jsonl"


def record(repo: Path, campaign: str, first_run: str, entry: dict[str, Any]) -> None:
    """Append the sealed run's chain entry to the campaign's anchor file and commit it."""
    if not (repo / ".git").exists():
        raise AnchorError(f"anchor repository {repo} is not a git repository (signing.anchor_repo)")
    name = _name(campaign, first_run)
    (repo / campaign).mkdir(exist_ok=True)
    with (repo / ".git" / "runbook-anchor.lock").open("a") as guard:  # one repository, many campaigns sealing
        fcntl.flock(guard, fcntl.LOCK_EX)
        with (repo / name).open("a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
        _git(repo, "add", "--", name)
        _git(repo, "commit", "-q", "-m", f"{campaign}: sealed {entry.get('run_id')}", "--", name)


def entries(repo: Path, campaign: str, first_run: str) -> list[dict[str, Any]]:
    """The committed anchor lines of a campaign (empty when none was ever committed)."""
    if not (repo / ".git").exists():
        raise AnchorError(f"anchor repository {repo} is not a git repository")
    try:
        text = _git(repo, "show", f"HEAD:{_name(campaign, first_run)}")
    except AnchorError:
        return []
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            raise AnchorError(f"anchor repository {repo}: {campaign}.jsonl holds a line that is not JSON") from None
        if isinstance(item, dict):
            out.append(item)
    return out
