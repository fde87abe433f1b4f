"""The rollout's Grafana dashboard, built with grafanalib from the same metric definitions as the alert rules.

Why one source: a panel that plots other PromQL than the alert it belongs to shows the operator a calm line
while the alert fires. Every matrix metric and every measured rollback trigger gets a panel whose query is
`expression(metric)` (the trigger's own windowed form where it has one) and whose threshold lines are the
policy's target, alert threshold or trigger threshold. MON-02 reads the file this writes.
"""

from __future__ import annotations

import json
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import Dashboard, GridPos, RowPanel, Stat, Target, Templating, Time, TimeSeries

from runbook_lib.config.names import REVERSE_SLOT
from runbook_lib.config.policy import Policy
from runbook_lib.promql.expressions import expression, way_back_active
from runbook_lib.promql.triggers import RAISED_BY_OPERATOR, measure

UID = "rollout-watch"
TITLE = "Rollout watch"
_SECONDS = {"latency_p95", "replication_lag", "wal_flush_time"}  # the rest are ratios (0..1)
_COUNTS = {"oom_events", "unplanned_failovers"}
_WIDTH, _HEIGHT = 8, 7  # three panels a row on Grafana's 24-column grid
# a point per 15 s (the scrape interval) up to 1,500 points: a breach the alert sees is not averaged away
_RESOLUTION = {"interval": "15s", "maxDataPoints": 1500}


def _unit(metric: str) -> str:
    return "s" if metric in _SECONDS else "short" if metric in _COUNTS else "percentunit"


def _steps(*lines: tuple[str, float], base: str = "green") -> list[dict[str, Any]]:
    """Grafana threshold steps: `base` below the lowest line, then each line's colour from its value up."""
    return [{"color": base, "value": None}] + [{"color": c, "value": v} for c, v in sorted(lines, key=lambda x: x[1])]


def _bands(target: float, alert: float, op: str) -> list[dict[str, Any]]:
    """Green where the target holds, orange past it, red past the alert threshold, whichever way is worse."""
    if op in (">", ">="):
        return _steps(("orange", target), ("red", alert))
    return _steps(("orange", alert), ("green", target), base="red")


def _line(threshold: float, op: str) -> list[dict[str, Any]]:
    """Red on the side of a trigger's threshold where the rollback runs."""
    return _steps(("red", threshold)) if op in (">", ">=") else _steps(("green", threshold), base="red")


def _series(title: str, expr: str, unit: str, steps: list[dict[str, Any]], description: str) -> TimeSeries:
    return TimeSeries(title=title, description=description, dataSource="${datasource}", unit=unit,
                      targets=[_target(expr, title)], thresholds=steps, thresholdsStyleMode="line",
                      gridPos=GridPos(h=_HEIGHT, w=_WIDTH, x=0, y=0), **_RESOLUTION)


def _target(expr: str, legend: str = "") -> Target:
    return Target(expr=expr, legendFormat=legend, refId="A", intervalFactor=1)


def _placed(panels: list[Any]) -> list[Any]:
    """Rows full width, other panels three abreast below them."""
    y, x = 0, 0
    for panel in panels:
        if isinstance(panel, RowPanel):
            y, x = y + (_HEIGHT if x else 0), 0
            panel.gridPos = GridPos(h=1, w=24, x=0, y=y)
            y += 1
            continue
        panel.gridPos = GridPos(h=_HEIGHT, w=_WIDTH, x=x, y=y)
        x += _WIDTH
        if x >= 24:
            x, y = 0, y + _HEIGHT
    return panels


def build(policy: Policy) -> Dashboard:
    panels: list[Any] = [RowPanel(title="Monitoring matrix: target (orange) and alert threshold (red)")]
    for row in policy.monitoring_matrix:
        panels.append(_series(row.metric, expression(row.metric), _unit(row.metric),
                              _bands(row.target.value, row.alert.value, row.alert.op),
                              f"target {row.target.text}, alert {row.alert.text}, checked every {row.every:g} s"))
    panels.append(RowPanel(title="Rollback triggers: the rollback runbook runs when one holds"))
    for trigger in policy.rollback_triggers:
        if trigger.metric in RAISED_BY_OPERATOR:
            continue
        panels.append(_series(f"trigger {trigger.metric}", measure(trigger), _unit(trigger.metric),
                              _line(float(trigger.threshold), trigger.op),
                              f"rollback when {trigger.metric} {trigger.op} {trigger.threshold:g}"
                              + (f" for {trigger.for_:g} s" if trigger.for_ else "")
                              + (f" within {trigger.within:g} s" if trigger.within else "")))
    panels += [
        RowPanel(title="Alerts and the way back"),
        Stat(title="rollback triggers firing", dataSource="${datasource}", reduceCalc="lastNotNull",
             targets=[_target('count(ALERTS{alertstate="firing", action="rollback"}) or vector(0)')],
             thresholds=_steps(("red", 1))),
        Stat(title="critical alerts firing", dataSource="${datasource}", reduceCalc="lastNotNull",
             targets=[_target('count(ALERTS{alertstate="firing", severity="critical"}) or vector(0)')],
             thresholds=_steps(("red", 1))),
        Stat(title="way back (reverse replication) active", dataSource="${datasource}", reduceCalc="lastNotNull",
             targets=[_target(way_back_active(REVERSE_SLOT))],
             thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        _series("application requests per second", "sum(rate(app_requests_total[1m]))", "reqps", _steps(),
                "the load the watch judges: no requests means no evidence"),
    ]
    return Dashboard(title=TITLE, uid=UID, tags=["rollout", "generated"], timezone="utc", refresh="30s",
                     time=Time("now-6h", "now"), panels=_placed(panels),
                     templating=Templating(list=[{"name": "datasource", "type": "datasource", "query": "prometheus",
                                                  "label": "Prometheus"}])).auto_panel_ids()


def render(policy: Policy) -> str:
    """The dashboard as Grafana's JSON model (for provisioning or POST /api/dashboards/db)."""
    return json.dumps(build(policy).to_json_data(), cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def queries(dashboard: dict[str, Any]) -> set[str]:
    """Every PromQL expression a dashboard's panels plot."""
    return {t["expr"] for p in dashboard.get("panels", []) for t in p.get("targets", []) if t.get("expr")}


