"""Readiness results as tables and a chart, and the record saved in the campaign."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px

from runbook_lib.campaign import records
from runbook_lib.readiness.model import OUTCOMES, ItemResult, Verdict
from runbook_lib.values import json_safe

COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "warn": "#bf8700", "missing": "#8250df", "waived": "#0969da",
           "n/a": "#8c959f", "error": "#57606a"}


def frame(results: list[ItemResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        rows.append({"id": r.id, "category": r.category, "severity": r.severity, "outcome": r.outcome,
                     "title": r.title, "observed": _short(r.observed), "expected": _short(r.expected),
                     "source": r.source, "reason": r.reason or (f"waived by {r.waiver['approved_by']}: "
                                                                f"{r.waiver['reason']}" if r.waiver else ""),
                     "seconds": r.seconds})
    return pd.DataFrame(rows)


def _short(value: Any, limit: int = 240) -> str:
    text = value if isinstance(value, str) else json.dumps(json_safe(value), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def by_category(results: list[ItemResult]) -> pd.DataFrame:
    table = pd.crosstab(frame(results)["category"], frame(results)["outcome"])
    return table.reindex(columns=[o for o in OUTCOMES if o in table.columns]).reset_index()


def chart(results: list[ItemResult]) -> Any:
    counts = frame(results).groupby(["category", "outcome"]).size().reset_index(name="items")
    return px.bar(counts, x="category", y="items", color="outcome", color_discrete_map=COLOURS,
                  category_orders={"outcome": list(OUTCOMES)}, title="Readiness outcomes by category")


def summary(verdict: Verdict, results: list[ItemResult]) -> str:
    waived = ", ".join(f"{r.id} ({r.waiver['approved_by']})" for r in results if r.waiver) or "none"
    blockers = ", ".join(verdict.failing_blockers) or "none"
    return (f"{verdict.label}: score {verdict.score:.1%} of {verdict.applicable} applicable items; "
            f"failing blockers: {blockers}; waivers: {waived}")


def save_record(campaign_dir: Path, results: list[ItemResult], verdict: Verdict, run_id: str | None,
                target: str) -> dict[str, Any]:
    """The readiness record phase 1's gate and the sign-offs bind to (its sha256 is the binding)."""
    data = {"target": target, "verdict": verdict.to_dict(), "items": [json_safe(r.to_dict()) for r in results]}
    return records.save(campaign_dir, "readiness", data, run_id)
