"""Sign-offs: approvals bound to the exact readiness record and phase 1 outcome they approved.

An approval names a role from the policy, a person and optional note, and carries the
sha256 of the campaign's current readiness record and phase 1 record. When either
record changes, earlier approvals no longer count: the migration's gate asks again.

A rehearsal on the sandbox records its own approvals, marked `rehearsal`; they count only where the
caller accepts them (the sandbox), never on a staging or production target.
"""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook_lib.campaign import records
from runbook_lib.config import signing
from runbook_lib.config.policy import Policy
from runbook_lib.errors import RunbookError
from runbook_lib.values import now

FILE = "signoffs.jsonl"


class SignoffError(RunbookError):
    pass


@dataclass
class SignoffStatus:
    role: str
    present: bool
    name: str | None = None
    at: str | None = None
    stale: list[dict[str, Any]] | None = None  # approvals of an older readiness or phase 1 record
    rehearsal: bool = False  # approved by a sandbox rehearsal, not a person


def binding(campaign_dir: Path) -> dict[str, str | None]:
    """The hashes an approval binds to right now."""
    readiness = records.latest(campaign_dir, "readiness")
    phase1 = records.latest(campaign_dir, "phase1")
    return {"readiness_sha256": readiness["sha256"] if readiness else None,
            "phase1_sha256": phase1["sha256"] if phase1 else None}


def record(campaign_dir: Path, policy: Policy, role: str, name: str, note: str = "",
           rehearsal: bool = False, signer: signing.Signer | None = None,
           trusted: signing.TrustedKeys | None = None) -> dict[str, Any]:
    """Append an approval; signed with the approver's own key when one is given. Where the team's keys are
    known (`trusted`), an approval must be signed by the key listed under the approver's name."""
    roles = policy.signoffs_required_before_migration
    if role not in roles:
        raise SignoffError(f"unknown role {role!r}; the valid roles are: {', '.join(roles)}")
    if not name.strip():
        raise SignoffError("--name must name the person approving")
    bound = binding(campaign_dir)
    if bound["readiness_sha256"] is None:
        raise SignoffError(f"no readiness record in {campaign_dir}: run the readiness runbook first")
    if bound["phase1_sha256"] is None:
        raise SignoffError(f"no phase 1 record in {campaign_dir}: run phase 1 (pre-migration) first")
    entry: dict[str, Any] = {"role": role, "name": name.strip(), "note": note, "at": now().isoformat(), **bound}
    if rehearsal:
        entry["rehearsal"] = True
    if trusted is not None and signer is None:
        raise SignoffError(f"the team's keys are listed ({trusted.source}): an approval must be signed with the "
                           "approver's own key (--key FILE, made by `runbook keys init NAME`)")
    if signer is not None:
        entry.update(signer.sign(entry))
        if trusted is not None and not _signed_by_approver(entry, trusted):
            raise SignoffError(f"that key is not listed under {entry['name']!r} in {trusted.source}; an approval is "
                               "signed by the approver's own key (its name in the keys file is the --name)")
    campaign_dir.mkdir(parents=True, exist_ok=True)
    with (campaign_dir / FILE).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def entries(campaign_dir: Path) -> list[dict[str, Any]]:
    path = campaign_dir / FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _signed_by_approver(entry: dict[str, Any], trusted: signing.TrustedKeys) -> bool:
    """A person's approval is signed by the key listed under their name; a rehearsal's by any team key."""
    fields = {k: v for k, v in entry.items() if k not in ("key_id", "signature")}
    signer = trusted.signer_of(fields, entry)
    return signer is not None and (signer == entry.get("name") or bool(entry.get("rehearsal")))


def status(campaign_dir: Path, policy: Policy, accept_rehearsal: bool = False,
           trusted: signing.TrustedKeys | None = None) -> list[SignoffStatus]:
    """Each required role's approval; rehearsal approvals count only when accepted (the sandbox). With the
    team's keys (`trusted`), an approval counts only when its approver's own key signed it: free text that
    anyone can append to the file does not."""
    bound = binding(campaign_dir)
    out = []
    valid = [e for e in entries(campaign_dir) if trusted is None or _signed_by_approver(e, trusted)]
    for role in policy.signoffs_required_before_migration:
        mine = [e for e in valid if e["role"] == role and (accept_rehearsal or not e.get("rehearsal"))]
        current = [e for e in mine if bound["readiness_sha256"] and e["readiness_sha256"] == bound["readiness_sha256"]
                   and e["phase1_sha256"] == bound["phase1_sha256"]]
        stale = [e for e in mine if e not in current]
        last = current[-1] if current else None
        out.append(SignoffStatus(role, bool(current), last["name"] if last else None, last["at"] if last else None,
                                 stale or None, bool(last and last.get("rehearsal"))))
    return out


def missing(campaign_dir: Path, policy: Policy, accept_rehearsal: bool = False,
            trusted: signing.TrustedKeys | None = None) -> list[str]:
    """Roles without a current (and, with the team's keys, signed) approval: what the migration refuses on."""
    return [s.role for s in status(campaign_dir, policy, accept_rehearsal, trusted) if not s.present]
