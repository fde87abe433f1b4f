"""Run the checklist: every item decided concurrently (latencies alone, after), with per-item timeouts, waivers and evidence."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from runbook_lib.config import redact
from runbook_lib.config.params import Params
from runbook_lib.readiness import (  # noqa: F401 - each category module registers its checks
    database,
    high_availability,
    infrastructure,
    monitoring,
    performance,
    registry,
    security,
)
from runbook_lib.readiness.model import Finding, Item, ItemResult, checklist  # noqa: F401 (checklist re-exported)
from runbook_lib.readiness.probe import NotConfigured, Probe


def decide(item: Item, probe: Probe) -> Finding:
    """One item's finding; a check that cannot reach its source reports error, never pass."""
    fn = registry.CHECKS.get(item.id)
    if fn is None:
        if item.automated:
            return Finding("error", reason="no check is implemented for this automated item")
        ref = probe.params.evidence.get(item.id)
        return Finding("pass", observed=ref, expected="an evidence reference", source="parameters.evidence") \
            if ref else Finding("missing", expected="an evidence reference in parameters.evidence",
                                source="parameters.evidence", reason="no evidence recorded")
    try:
        return fn(probe)
    except NotConfigured as exc:
        return Finding("error", reason=str(exc), source="parameters")
    except Exception as exc:  # unreachable source, refused connection, unexpected answer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Finding("error", reason=redact.text(f"{type(exc).__name__}: {first}"))


def _result(item: Item, finding: Finding, seconds: float, params: Params) -> ItemResult:
    result = ItemResult(id=item.id, title=item.title, category=item.category, severity=item.severity,
                        outcome=finding.outcome, observed=finding.observed, expected=finding.expected,
                        source=finding.source, reason=finding.reason, seconds=round(seconds, 3),
                        evidence_ref=params.evidence.get(item.id))
    waiver = next((w for w in params.waivers if w.item == item.id), None)
    if waiver is not None:
        result.checked_outcome, result.outcome = result.outcome, "waived"
        result.waiver = {"reason": waiver.reason, "approved_by": waiver.approved_by}
    return result


def run(params: Params, *, only: list[str] | None = None, campaign_dir: Path | None = None,
        on_done: Callable[[ItemResult], None] | None = None) -> list[ItemResult]:
    """Decide every item (or `only` these ids); results come back in checklist order. Items registered `alone`
    (latencies) are decided one at a time after the others, so no other check's load is in their figure."""
    items = [it for it in checklist() if only is None or it.id in only]
    unknown = sorted(set(only or []) - {it.id for it in items})
    if unknown:
        raise ValueError(f"unknown readiness items: {', '.join(unknown)}")
    probe = Probe(params, campaign_dir)
    results: dict[str, ItemResult] = {}
    together = [it for it in items if it.id not in registry.ALONE]
    results.update(_decide_all(together, probe, params, params.readiness.concurrency, on_done))
    results.update(_decide_all([it for it in items if it.id in registry.ALONE], probe, params, 1, on_done))
    return [results[it.id] for it in items]


def _decide_all(items: list[Item], probe: Probe, params: Params, concurrency: int,
                on_done: Callable[[ItemResult], None] | None) -> dict[str, ItemResult]:
    """Decide `items` on at most `concurrency` threads, each bounded by the item timeout."""
    settings = params.readiness
    slots = threading.BoundedSemaphore(concurrency)
    started: dict[str, float] = {}
    finished: dict[str, ItemResult] = {}
    lock = threading.Lock()

    def work(item: Item) -> None:
        with slots:
            with lock:
                started[item.id] = time.monotonic()
            t0 = time.monotonic()
            result = _result(item, decide(item, probe), time.monotonic() - t0, params)
            with lock:
                finished.setdefault(item.id, result)

    # daemon threads: a check that hangs past its timeout is reported and abandoned, never waited for
    for item in items:
        threading.Thread(target=work, args=(item,), name=f"readiness-{item.id}", daemon=True).start()
    # items queued behind hung ones still end: nothing waits longer than every slot timing out in turn
    overall = time.monotonic() + settings.item_timeout_s * (len(items) / concurrency + 1)
    results: dict[str, ItemResult] = {}
    while len(results) < len(items):
        now = time.monotonic()
        for item in items:
            if item.id in results:
                continue
            with lock:
                done = finished.get(item.id)
                began = started.get(item.id)
            if done is not None:
                results[item.id] = done
            elif (began is not None and now - began > settings.item_timeout_s) or now > overall:
                reason = (f"timed out after {settings.item_timeout_s:g} s" if began is not None
                          else "not started: every check slot was held by checks that hung")
                results[item.id] = _result(item, Finding("error", reason=reason), settings.item_timeout_s, params)
                with lock:
                    finished.setdefault(item.id, results[item.id])
            else:
                continue
            if on_done:
                on_done(results[item.id])
        time.sleep(0.02)
    return results
