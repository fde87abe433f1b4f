"""After the cutover, the policy's **success criteria** must hold for 72 hours: error rate, p95 latency, no
unplanned failover, replication lag, monitoring active and alerting, backup (WAL archiving) succeeding, DR
procedures tested, no security incident, cost within projection.

Run it on a schedule; every run is a full papermill run archived in the campaign:

```sh .venv/bin/runbook run validation --params parameters/FILE.yaml --every 6h --until 72h ```

(or one run per cron entry). Each run measures every criterion over the window so far (from the campaign's
cutover record, or `validation.started`) and saves a checkpoint; the checkpoints are plotted together; the run
that finds the window complete gives the verdict: **PASS**, **FAIL**, or **INCOMPLETE** when a criterion could
not be measured or was not stated. Before that the verdict is **IN PROGRESS**, with what is breached so far.

Stated by the operator (absent: missing): `validation.security_incidents`, `validation.cost_projected`,
`validation.cost_actual`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from runbook_lib.campaign import records
from runbook_lib.clients import prometheus
from runbook_lib.config.names import REVERSE_SLOT
from runbook_lib.config.policy import format_duration
from runbook_lib.ops import drills, migration, wayback
from runbook_lib.promql.expressions import (
    SUBQUERY_STEP,
    unplanned_failovers,
    way_back_active,
    worst_error_rate,
    worst_p95,
)
from runbook_lib.run.book import Book
from runbook_lib.run.session import Session
from runbook_lib.run.step import Outcome, step

RECORD = "validation"
MONITORED_MIN = 0.99  # share of the window every scrape target was up and the watchdog alert fired
FINAL = ("PASS", "FAIL", "INCOMPLETE")


@dataclass
class Criterion:
    name: str
    observed: float | bool | None
    limit: str
    ok: bool | None  # None: missing (not measured, not stated)
    source: str

    @property
    def status(self) -> str:
        return "missing" if self.ok is None else ("pass" if self.ok else "fail")


def verdict(criteria: list[Criterion], elapsed_s: float, window_s: float) -> tuple[str, str]:
    """(PASS | FAIL | INCOMPLETE | IN PROGRESS, why); only a complete window gives a final verdict."""
    failing = [c.name for c in criteria if c.ok is False]
    missing = [c.name for c in criteria if not isinstance(c.ok, bool)] or ([] if criteria else ["(no criteria)"])
    progress = f"{elapsed_s / 3600:.1f} h of {window_s / 3600:.0f} h"
    if elapsed_s < window_s:
        state = f"breached so far: {', '.join(failing)}" if failing else "on track"
        return "IN PROGRESS", f"{progress}; {state}" + (f"; missing: {', '.join(missing)}" if missing else "")
    if failing:
        return "FAIL", f"{progress}; failing: {', '.join(failing)}"
    if missing:
        return "INCOMPLETE", f"{progress}; not measured or not stated: {', '.join(missing)}"
    return "PASS", f"{progress}; every success criterion held"


def window_start(session: Session) -> datetime:
    stated = session.params.validation.started
    if stated:
        return stated if stated.tzinfo else stated.replace(tzinfo=UTC)
    cutover = records.latest(session.run_dir.parent, "cutover")
    if cutover is None:
        raise ValueError("no cutover is recorded in this campaign (phase 2 records it): set validation.started")
    return datetime.fromisoformat(cutover["data"]["at"])


def within(observed: float, limit: float, *, most: bool = True, strict: bool = False) -> bool:
    """Whether `observed` keeps to `limit` (an upper bound when `most`); a strict bound fails at the limit."""
    if not most:
        return observed >= limit
    return observed < limit if strict else observed <= limit


def _measured(url: str | None, at: float, name: str, expr: str, limit: float, text: str, most: bool = True,
              note: str = "", strict: bool = False) -> Criterion:
    """One criterion read from Prometheus at `at`; `strict` for the policy's "<" limits (the limit itself fails)."""
    if url is None:
        return Criterion(name, None, text, None, "target.prometheus is not set")
    try:
        observed = prometheus.scalar(url, expr, at)
    except Exception as exc:  # noqa: BLE001 - an unreadable criterion is missing, never a pass
        return Criterion(name, None, text, None, f"unreadable: {exc}")
    if observed is None:
        return Criterion(name, None, text, None, f"no data: {expr}")
    ok = within(observed, limit, most=most, strict=strict)
    return Criterion(name, round(observed, 6), text, ok, f"{expr}{note}")


def measure(session: Session, started: datetime, elapsed_s: float) -> list[Criterion]:
    """Every success criterion of the policy over the window so far (at least a minute).

    Once the window is complete it is measured as it was at its end, over exactly its length: a
    later run gives the same figures, and the first hours after the cutover stay in.
    """
    sc = session.params.policy.success_criteria
    url = session.target.prometheus.url if session.target.prometheus else None
    at = started.timestamp() + min(elapsed_s, sc.window)
    w = format_duration(max(round(min(elapsed_s, sc.window)), 60))
    names = session.params.readiness.app_metrics
    # held throughout, not on average: the worst hour (or the whole window, while it is shorter) decides
    hour_s = min(3600, max(round(min(elapsed_s, sc.window)), 60))
    hour = format_duration(hour_s)
    watchdog = 'max(ALERTS{alertname=~".*Watchdog", alertstate="firing"}) or vector(0)'
    return [
        _measured(url, at, "error_rate", worst_error_rate(names["errors"], names["requests"], hour_s, w),
                  sc.error_rate_max, f"< {sc.error_rate_max:g} in every {hour} of the window", strict=True),
        _measured(url, at, "latency_p95", worst_p95(names["latency"], hour_s, w), sc.latency_p95_max,
                  f"< {format_duration(sc.latency_p95_max)} in every {hour} of the window", strict=True),
        _measured(url, at, "unplanned_failovers", unplanned_failovers(w), sc.unplanned_failovers,
                  f"<= {sc.unplanned_failovers}", note=" (promotions less those the failover drills announced)"),
        _measured(url, at, "replication_lag", f"max_over_time(max(pg_replication_lag_seconds)[{w}:{SUBQUERY_STEP}])",
                  sc.replication_lag_max, f"< {format_duration(sc.replication_lag_max)}", strict=True),
        _measured(url, at, "backup_automation_succeeding", f"(sum(increase(pg_stat_archiver_failed_count[{w}])) "
                  "== bool 0) * (min(pg_stat_archiver_last_archive_age) < bool 3600)", 1,
                  "1 = WAL archiving without failures in the window, last archive < 1 h ago", most=False),
        _measured(url, at, "monitoring_active_and_alerting", f"min(avg_over_time(up[{w}])) * clamp_max("
                  f"avg_over_time(({watchdog})[{w}:{SUBQUERY_STEP}]), 1)", MONITORED_MIN,
                  f">= {MONITORED_MIN:g}: every target up and the watchdog alert firing that share of the window",
                  most=False),
        *_way_back(session, url, at, w, elapsed_s),
        _drills(session),
        _stated("security_incidents", session.params.validation.security_incidents, sc.security_incidents,
                "validation.security_incidents"),
        _cost(session, sc.cost_within_projection),
    ]


def _way_back(session: Session, url: str | None, at: float, w: str, elapsed_s: float) -> list[Criterion]:
    """After a logical cutover: reverse replication (the way back) held through the window, and holds now."""
    cutover = records.latest(session.campaign_dir, "cutover")
    if not cutover or cutover["data"].get("strategy") != "logical":
        return []
    expr = f"avg_over_time(({way_back_active(REVERSE_SLOT)})[{w}:{SUBQUERY_STEP}])"
    criterion = _measured(url, at, "way_back", expr, MONITORED_MIN, f">= {MONITORED_MIN:g} of the window the reverse "
                          "slot was active on the leader; the subscription runs and every standby has the slot now",
                          most=False)
    if elapsed_s < session.params.policy.success_criteria.window:  # inside the window, the way back must hold now too
        way = wayback.state(migration.route_of(session), session.endpoints.by_role("member"))
        if not way.ok:
            criterion.ok, criterion.source = False, criterion.source + "; now: " + "; ".join(way.problems)
    return [criterion]


def _drills(session: Session) -> Criterion:
    """DR procedures tested: both failover drills (as HA-02 wants them) and the restore test passed."""
    campaign = session.run_dir.parent
    drill, phase1 = records.latest(campaign, "failover_drill"), records.latest(campaign, "phase1")
    failover_ok = drills.DRILL_KINDS <= drills.passed_kinds(drill)
    restore_ok = bool(((phase1 or {}).get("data", {}).get("restore_test") or {}).get("passed"))
    ok = failover_ok and restore_ok
    note = f"failover drill {'passed' if failover_ok else 'missing or failed'}; restore test " + \
        ("passed" if restore_ok else "missing or failed") + " (campaign records)"
    return Criterion("dr_procedures_tested", ok, "failover drill and restore test passed", ok, note)


def _stated(name: str, value: int | None, limit: int, key: str) -> Criterion:
    if value is None:
        return Criterion(name, None, f"<= {limit}", None, f"not stated ({key})")
    return Criterion(name, value, f"<= {limit}", value <= limit, f"stated ({key})")


def _cost(session: Session, limit: float) -> Criterion:
    v = session.params.validation
    if v.cost_projected is None or v.cost_actual is None:
        return Criterion("cost_within_projection", None, f"within {limit:.0%}", None,
                         "not stated (validation.cost_projected, validation.cost_actual)")
    deviation = abs(v.cost_actual - v.cost_projected) / v.cost_projected
    return Criterion("cost_within_projection", round(deviation, 4), f"within {limit:.0%}", deviation <= limit,
                     "stated: |actual - projected| / projected")


@step("checkpoint", "Success criteria over the window so far")
def checkpoint(session: Session) -> Outcome:
    """Every success criterion over the window so far, with the PromQL, record or statement that decided it;
    saved in the campaign.
    """
    started = window_start(session)
    given = [r for r in records.history(session.run_dir.parent, RECORD)
             if r["data"].get("started") == started.isoformat() and r["data"].get("verdict") in FINAL]
    if given:  # the verdict is given once; later runs show it, they do not measure a later window
        first = given[0]["data"]
        return Outcome(summary=f"final verdict already given by run {given[0]['run_id']} at {first['at']}",
                       evidence=first["criteria"], metrics={"verdict": first["verdict"]},
                       state={"validation_verdict": first["verdict"], "validation_why": first["why"]})
    now = datetime.now(UTC)
    elapsed = (now - started).total_seconds()
    window = session.params.policy.success_criteria.window
    criteria = measure(session, started, elapsed)
    final, why = verdict(criteria, elapsed, window)
    rows = [{**asdict(c), "status": c.status} for c in criteria]
    records.save(session.run_dir.parent, RECORD, {"at": now.isoformat(), "started": started.isoformat(),
                                                  "elapsed_h": round(elapsed / 3600, 3), "verdict": final,
                                                  "why": why, "criteria": rows}, session.info.run_id)
    return Outcome(summary=f"checkpoint at {elapsed / 3600:.2f} h: {final}", evidence=rows,
                   metrics={"verdict": final, "elapsed_h": round(elapsed / 3600, 3),
                            "failing": sum(c.ok is False for c in criteria),
                            "missing": sum(c.ok is None for c in criteria)},
                   state={"validation_verdict": final, "validation_why": why})


def history_frame(history: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"at": pd.Timestamp(r["data"]["at"]), "criterion": c["name"], "observed": c["observed"],
             "status": c["status"]} for r in history for c in r["data"]["criteria"]]
    return pd.DataFrame(rows, columns=["at", "criterion", "observed", "status"])


@step("trend", "Every checkpoint so far, plotted")
def trend(session: Session) -> Outcome:
    """Every checkpoint of this campaign so far: each measured criterion plotted over time, and the status of
    each at each checkpoint.
    """
    frame = history_frame(records.history(session.run_dir.parent, RECORD))
    numeric = frame[frame["observed"].map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))]
    figures = []
    for name, part in numeric.groupby("criterion"):
        fig = go.Figure(go.Scatter(x=part["at"], y=part["observed"].astype(float), mode="lines+markers", name=name))
        fig.update_layout(title=f"{name} at each checkpoint", height=280)
        figures.append(fig)
    checkpoints = frame["at"].nunique()
    return Outcome(summary=f"{checkpoints} checkpoint(s) in this campaign", figures=figures,
                   evidence=frame.pivot_table(index="at", columns="criterion", values="status", aggfunc="last")
                   .reset_index() if not frame.empty else None, metrics={"checkpoints": checkpoints})


@step("verdict", "Verdict on the success criteria", always_run=True)
def final_verdict(session: Session) -> Outcome:
    """Final only when the window is complete.

    PASS only after the whole window with every criterion held; FAIL and INCOMPLETE stop the run red.
    """
    final = session.state.get("validation_verdict")
    if final is None:
        return Outcome(summary="no checkpoint was taken in this run", failed=True)
    return Outcome(summary=f"{final}: {session.state.get('validation_why', '')}", metrics={"verdict": final},
                   failed=final in ("FAIL", "INCOMPLETE"))


BOOK = Book("validation", "The 72-hour validation", mutating=False, steps=(
    checkpoint, trend, final_verdict,
))
