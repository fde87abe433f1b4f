"""The policy's rollback triggers, read from Prometheus with the PromQL the alert rules use.

A trigger with `for` holds when its condition held over the whole of that window (the least
favourable value in the window breaches); one with `within` counts inside its expression's own
range; the security trigger is raised by an operator or a scanner, not measured.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from runbook_lib.clients import prometheus
from runbook_lib.config.policy import Trigger, format_duration
from runbook_lib.promql.expressions import SUBQUERY_STEP, expression

RAISED_BY_OPERATOR = {"critical_security_issue"}
_OPS: dict[str, Callable[[Any, Any], bool]] = {">": operator.gt, ">=": operator.ge, "<": operator.lt,
                                               "<=": operator.le, "==": operator.eq}


@dataclass
class TriggerReading:
    metric: str
    condition: str
    observed: float | bool | None
    fired: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def condition(trigger: Trigger) -> str:
    text = f"{trigger.op} {trigger.threshold:g}" if not isinstance(trigger.threshold, bool) else \
        f"{trigger.op} {str(trigger.threshold).lower()}"
    if trigger.for_:
        text += f" for {format_duration(trigger.for_)}"
    if trigger.within:
        text += f" within {format_duration(trigger.within)}"
    return text


def promql(trigger: Trigger) -> str | None:
    """The value to compare with the threshold, or None for a trigger raised by an operator."""
    if trigger.metric in RAISED_BY_OPERATOR:
        return None
    expr = measure(trigger)
    if not trigger.for_:
        return expr
    worst = "min_over_time" if trigger.op in (">", ">=") else "max_over_time"
    return f"{worst}(({expr})[{format_duration(trigger.for_)}:{SUBQUERY_STEP}])"


def measure(trigger: Trigger) -> str:
    """The metric's PromQL, counted within the trigger's own window where it names one."""
    return expression(trigger.metric, format_duration(trigger.within) if trigger.within else None)


def fires(trigger: Trigger, observed: float | bool | None) -> bool:
    return observed is not None and _OPS[trigger.op](observed, trigger.threshold)


def read(url: str | None, triggers: list[Trigger], raised: set[str]) -> list[TriggerReading]:
    """Every trigger's current value and whether it holds; an unreadable one says why and does not fire."""
    readings = []
    for t in triggers:
        expr = promql(t)
        if expr is None:
            observed: float | bool | None = t.metric in raised
            readings.append(TriggerReading(t.metric, condition(t), observed, fires(t, observed),
                                           "raised by the operator (rollback.security_issue)" if observed else
                                           "not raised (rollback.security_issue)"))
            continue
        if url is None:
            readings.append(TriggerReading(t.metric, condition(t), None, False, "target.prometheus is not set"))
            continue
        try:
            observed = prometheus.scalar(url, expr)
        except Exception as exc:  # noqa: BLE001 - an unreadable trigger is reported, never taken as calm
            readings.append(TriggerReading(t.metric, condition(t), None, False, f"unreadable: {exc}"))
            continue
        readings.append(TriggerReading(t.metric, condition(t), observed, fires(t, observed),
                                       "" if observed is not None else "no data"))
    return readings


def alert_rules(triggers: list[Trigger]) -> list[dict[str, Any]]:
    """One critical alert per measured trigger, labelled action=rollback: the automatic half of the plan."""
    rules = []
    for t in triggers:
        if t.metric in RAISED_BY_OPERATOR:
            continue
        name = "".join(part.title() for part in t.metric.split("_"))
        rule: dict[str, Any] = {
            "alert": f"RollbackTrigger{name}", "expr": f"({measure(t)}) {t.op} {t.threshold:g}",
            "labels": {"severity": "critical", "metric": t.metric, "action": "rollback"},
            "annotations": {"summary": f"rollback trigger: {t.metric} {condition(t)}; run the rollback runbook"}}
        if t.for_:
            rule["for"] = format_duration(t.for_)
        rules.append(rule)
    return rules
