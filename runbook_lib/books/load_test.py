"""Runs the application's own query mix (point reads, inserts, updates, k-NN vector searches) through the
endpoint named in `target.workload`, from that many concurrent clients, for that long. It writes rows (the mix's
inserts and updates) like the application does, so it changes the target: it takes the target's lock like
every other changing runbook, and `--plan` says what it would run without running it.

The figures are saved in the campaign as the load test record (readiness PERF-01..03) and the baseline
(MON-09).
"""

from __future__ import annotations

from runbook_lib.campaign import records
from runbook_lib.ops import workload
from runbook_lib.run.book import Book
from runbook_lib.run.session import Session
from runbook_lib.run.step import Outcome, step


def _measure(session: Session) -> Outcome:
    """TPS, p50/p95/p99 over all operations, and the vector search p95.
    """
    return workload.load_test(session.target.workload, session.endpoints, session.progress,
                                session.params.readiness.vector)


def _record(session: Session) -> Outcome:
    """Saved as `records/load_test.json` and `records/baseline.json` in the campaign."""
    if session.plan_mode:
        return Outcome(summary="would save records/load_test.json and records/baseline.json")
    figures = session.state.get("load_test")
    if not figures:
        return Outcome(summary="no load test figures in this run", failed=True)
    campaign = session.run_dir.parent
    load = records.save(campaign, "load_test", figures, session.info.run_id)
    base = records.save(campaign, "baseline", {**figures, "recorded_on": session.target.name}, session.info.run_id)
    return Outcome(summary=f"records/load_test.json and records/baseline.json saved ({load['sha256'][:12]}, "
                           f"{base['sha256'][:12]})", metrics={"tps": figures["tps"]})


def _plan(session: Session) -> Outcome:
    w = session.target.workload
    if w is None:
        return Outcome(summary="would run nothing: target.workload is not set", failed=True)
    return Outcome(summary=f"would run the query mix through {w.endpoint} from {w.concurrency} clients for "
                           f"{w.duration:g} s, writing rows as the application does")


load_test = step("load_test", "Load test with the application's query mix", mutating=True, plan=_plan)(_measure)
record = step("record_baseline", "Record the load test and the baseline in the campaign")(_record)


BOOK = Book("load_test", "Load test and performance baseline", mutating=True, steps=(
    load_test, record,
))
