"""Steps of phase 2 (the maintenance window). The gates come first: nothing is changed without
every sign-off bound to the current readiness and phase 1 records, or outside the locked window."""

from __future__ import annotations

from runbook_lib import signoffs, window
from runbook_lib.session import Session
from runbook_lib.steps import Outcome, step


@step("signoff_gate", "Sign-off gate", always_run=True)
def signoff_gate(session: Session) -> Outcome:
    campaign = session.run_dir.parent
    rows = signoffs.status(campaign, session.params.policy)
    missing = [r.role for r in rows if not r.present]
    stale = [r.role for r in rows if r.stale and not r.present]
    evidence = [{"role": r.role, "approved": r.present, "by": r.name, "at": r.at,
                 "stale_approvals": len(r.stale or [])} for r in rows]
    if missing:
        detail = f"missing sign-offs: {', '.join(missing)}"
        if stale:
            detail += f" (approvals of an older readiness or phase 1 record do not count: {', '.join(stale)})"
        return Outcome(summary=f"refused: {detail}", evidence=evidence, failed=True)
    return Outcome(summary=f"all {len(rows)} sign-offs present and bound to the current records", evidence=evidence)


@step("window_check", "Inside the maintenance window", always_run=True)
def window_check(session: Session) -> Outcome:
    reason = window.outside(session.run_dir.parent)
    return Outcome(summary=f"refused: {reason}" if reason else "inside the locked window", failed=bool(reason))
