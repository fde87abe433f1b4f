"""Every item of the checklist is decided live against the target: automated items really probe (a non-TLS login
that must be refused, default passwords that must fail, a test alert that must arrive, k-NN queries through
the HNSW index compared with exact search, ...); evidence items take a reference from the parameters. Waivers
name the item, the reason and the approver and are shown as waived, never as pass.

Verdict rule: **ready** when no blocker fails and the score (passes over applicable items) is at least the
readiness gate (90 %) with no warning left; a blocker that fails, errors or lacks evidence **blocks**. The
same engine runs from the terminal: `runbook check readiness --params FILE`.

The readiness record saved at the end is what phase 1's gate and the sign-offs bind to.
"""

from __future__ import annotations

from runbook_lib.readiness import engine, report, scoring
from runbook_lib.readiness.model import ItemResult
from runbook_lib.run.book import Book
from runbook_lib.run.session import Session
from runbook_lib.run.step import Outcome, step


def _results(session: Session) -> list[ItemResult]:
    return [ItemResult(**r) for r in session.state["readiness_results"]]


def _verdict(session: Session) -> scoring.Verdict:
    gate = session.params.policy.readiness_gate
    return scoring.verdict(_results(session), gate.min_score, gate.blockers_allowed)


@step("check_items", "Decide every checklist item against the target")
def check_items(session: Session) -> Outcome:
    """All items are decided concurrently (bounded by `readiness.concurrency`, each within
    `readiness.item_timeout_s`). The summary line is the verdict; waivers are listed below it.
    """
    with session.progress(None, total=len(engine.checklist()), desc="readiness items") as bar:
        results = engine.run(session.params, campaign_dir=session.run_dir.parent, on_done=lambda _: bar.update())
    gate = session.params.policy.readiness_gate
    verdict = scoring.verdict(results, gate.min_score, gate.blockers_allowed)
    waivers = [{"item": r.id, "checked": r.checked_outcome, **(r.waiver or {})} for r in results if r.waiver]
    return Outcome(summary=report.summary(verdict, results), evidence=waivers or None,
                   metrics={"score": verdict.score, "exit_code": verdict.exit_code, **verdict.counts},
                   state={"readiness_results": [r.to_dict() for r in results]})


@step("by_category", "Outcomes by category")
def by_category(session: Session) -> Outcome:
    """How many items passed, failed, warned, were waived or missing, per category of the checklist."""
    results = _results(session)
    return Outcome(summary=f"{len(results)} items in 6 categories", evidence=report.by_category(results),
                   figures=[report.chart(results)])


@step("details", "Every item with its evidence")
def details(session: Session) -> Outcome:
    """Every item with what decided it: the source (query, API call, file), the observed value and the
    expected one. Items not passing come first.
    """
    results = _results(session)
    not_passing = [r for r in results if r.outcome != "pass"]
    return Outcome(summary=f"{len(not_passing)} items not passing (listed first)",
                   evidence=report.frame(sorted(results, key=lambda r: (r.outcome == "pass", r.id))))


@step("save_record", "Save the readiness record in the campaign")
def save_record(session: Session) -> Outcome:
    """Stored as `records/readiness.json` in the campaign, with its hash."""
    record = report.save_record(session.run_dir.parent, _results(session), _verdict(session), session.info.run_id,
                                session.params.target.name)
    return Outcome(summary=f"records/readiness.json sha256 {record['sha256'][:16]}…",
                   metrics={"record_sha256": record["sha256"]}, state={"readiness_sha256": record["sha256"]})


@step("gate", "Readiness gate", always_run=True)
def gate(session: Session) -> Outcome:
    """Fails the run when the target is not ready, so a scheduled run reports it."""
    verdict = _verdict(session)
    return Outcome(summary=f"{verdict.label} (exit code {verdict.exit_code})", failed=not verdict.ready,
                   metrics={"ready": verdict.ready})


BOOK = Book("readiness", "Production readiness: the 77-item checklist", mutating=False, steps=(
    check_items, by_category, details, save_record, gate,
))
