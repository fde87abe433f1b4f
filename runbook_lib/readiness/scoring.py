"""The verdict rule, as the seed's readiness script: 0 ready, 1 a blocker fails, 2 warnings or score low.

Score = passes / applicable items, where applicable excludes n/a and waived ones. A
waiver never counts as a pass; it is listed with the verdict. A blocker that fails,
errors or has no evidence blocks: it was not shown to hold. A warning-severity item
that does not pass keeps the verdict at 2; info items weigh only in the score.
"""

from __future__ import annotations

from collections import Counter

from runbook_lib.readiness.model import OUTCOMES, ItemResult, Verdict


def verdict(results: list[ItemResult], min_score: float = 0.90, blockers_allowed: int = 0) -> Verdict:
    counts = Counter(r.outcome for r in results)
    applicable = [r for r in results if r.outcome not in ("n/a", "waived")]
    passed = sum(1 for r in applicable if r.outcome == "pass")
    score = passed / len(applicable) if applicable else 0.0
    blockers = [r.id for r in results if r.severity == "blocker" and r.outcome not in ("pass", "n/a", "waived")]
    warnings = [r.id for r in results if r.severity == "warning" and r.outcome not in ("pass", "n/a", "waived")]
    if len(blockers) > blockers_allowed:
        code = 1
    elif score < min_score or warnings:
        code = 2
    else:
        code = 0
    return Verdict(ready=code == 0, exit_code=code, score=round(score, 4), applicable=len(applicable),
                   passed=passed, failing_blockers=blockers, warnings=warnings,
                   waived=[r.id for r in results if r.outcome == "waived"],
                   counts={o: counts.get(o, 0) for o in OUTCOMES})
