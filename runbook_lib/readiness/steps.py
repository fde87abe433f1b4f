"""Steps of the readiness runbook: decide the 77 items, show the verdict, categories and details, save."""

from __future__ import annotations

from runbook_lib.readiness import engine, report, scoring
from runbook_lib.readiness.model import ItemResult
from runbook_lib.session import Session
from runbook_lib.steps import Outcome, step


def _results(session: Session) -> list[ItemResult]:
    return [ItemResult(**r) for r in session.state["readiness_results"]]


def _verdict(session: Session) -> scoring.Verdict:
    gate = session.params.policy.readiness_gate
    return scoring.verdict(_results(session), gate.min_score, gate.blockers_allowed)


@step("check_items", "Decide every checklist item against the target")
def check_items(session: Session) -> Outcome:
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
    results = _results(session)
    return Outcome(summary=f"{len(results)} items in 6 categories", evidence=report.by_category(results),
                   figures=[report.chart(results)])


@step("details", "Every item with its evidence")
def details(session: Session) -> Outcome:
    results = _results(session)
    not_passing = [r for r in results if r.outcome != "pass"]
    return Outcome(summary=f"{len(not_passing)} items not passing (listed first)",
                   evidence=report.frame(sorted(results, key=lambda r: (r.outcome == "pass", r.id))))


@step("save_record", "Save the readiness record in the campaign")
def save_record(session: Session) -> Outcome:
    record = report.save_record(session.run_dir.parent, _results(session), _verdict(session), session.info.run_id,
                                session.params.target.name)
    return Outcome(summary=f"records/readiness.json sha256 {record['sha256'][:16]}…",
                   metrics={"record_sha256": record["sha256"]}, state={"readiness_sha256": record["sha256"]})


@step("gate", "Readiness gate", always_run=True)
def gate(session: Session) -> Outcome:
    verdict = _verdict(session)
    return Outcome(summary=f"{verdict.label} (exit code {verdict.exit_code})", failed=not verdict.ready,
                   metrics={"ready": verdict.ready})
