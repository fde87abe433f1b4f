"""Each metric the policy names, as the PromQL that measures it on the target's exporters.

One table, used by the generated alert rules, the metrics watch and the rollback triggers,
so a metric means the same thing everywhere.
"""

from __future__ import annotations

from runbook_lib.config.policy import format_duration

SUBQUERY_STEP = "15s"
PLANNED_PROMOTIONS = "runbook_planned_promotions_total"  # pushed by the failover drills before each promotion
WAY_BACK_EXPECTED = "runbook_way_back_expected"  # 1 from a logical cutover until the rollback or the finalize


def promotions(window: str) -> str:
    """Promotions within `window`: each starts a new timeline (a planned switchover counts too);
    a member whose PostgreSQL is down reports timeline 0, which is left out."""
    return (f"max(patroni_postgres_timeline) - min(min_over_time((patroni_postgres_timeline > 0)"
            f"[{window}:{SUBQUERY_STEP}]))")


def planned_promotions(window: str) -> str:
    """How far the drills' running count of planned promotions rose within `window` (0 when never pushed)."""
    return (f"(clamp_min(max(max_over_time({PLANNED_PROMOTIONS}[{window}])) - max(min_over_time("
            f"{PLANNED_PROMOTIONS}[{window}])), 0) or vector(0))")


def unplanned_failovers(window: str) -> str:
    """Promotions within `window` less the ones the drills announced: one rule for the trigger, its alert
    and the 72-hour validation."""
    return f"({promotions(window)}) - {planned_promotions(window)}"


EXPRESSIONS: dict[str, str] = {
    "error_rate": "sum(rate(app_errors_total[1m])) / clamp_min(sum(rate(app_requests_total[1m])), 1e-9)",
    "latency_p95": "histogram_quantile(0.95, sum by (le) (rate(app_request_duration_seconds_bucket[1m])))",
    # per node, the hottest deciding: a cluster average hides one node at its limit behind idle ones
    "cpu_usage": "max(1 - avg by (instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[5m])))",
    "memory_usage": "max(1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    "db_connections": "max by (instance) (sum by (instance) (pg_stat_activity_count)"
                      " / on (instance) max by (instance) (pg_settings_max_connections))",
    "replication_lag": "max(pg_replication_lag_seconds)",
    "disk_io": "max(rate(node_disk_io_time_seconds_total[5m]))",
    "wal_flush_time": "max(rate(pg_stat_wal_wal_sync_time[10m]) / clamp_min(rate(pg_stat_wal_wal_sync[10m]), 1e-9))"
                      " / 1000",
    "db_connection_errors": "sum(rate(app_errors_total{kind=\"connection\"}[1m]))"
                            " / clamp_min(sum(rate(app_requests_total[1m])), 1e-9)",
    "oom_events": "sum(increase(node_vmstat_oom_kill[5m]))",
    "unplanned_failovers": unplanned_failovers("1h"),
}


def way_back_active(slot: str) -> str:
    """1 while the reverse slot is active on some member of the new cluster (its leader), else 0."""
    return f'max(pg_replication_slot_slot_is_active{{slot_name="{slot}"}}) or vector(0)'


def worst_error_rate(errors: str, requests: str, hour_s: float, window: str) -> str:
    """The application's error ratio in its worst `hour_s` within `window`: held throughout, not on average."""
    hour, step = _sliding(hour_s)
    return (f"max_over_time((sum(increase({errors}[{hour}])) / clamp_min(sum(increase({requests}[{hour}])), 1))"
            f"[{window}:{step}])")


def worst_p95(latency_buckets: str, hour_s: float, window: str) -> str:
    """The application's p95 latency in its worst `hour_s` within `window`."""
    hour, step = _sliding(hour_s)
    return f"max_over_time(histogram_quantile(0.95, sum by (le) (increase({latency_buckets}[{hour}])))[{window}:{step}])"


def _sliding(span_s: float) -> tuple[str, str]:
    """A sliding window and its step: twelve looks per window keep a 72-hour query within Prometheus's sample
    limit while no breach of a whole window can fall between two looks. Both in whole seconds: PromQL
    durations take no fractions."""
    return format_duration(round(span_s)), format_duration(max(15, round(span_s / 12)))


WINDOWED = {"unplanned_failovers": unplanned_failovers}  # counted within a window the trigger names


def expression(metric: str, within: str | None = None) -> str:
    if within and metric in WINDOWED:
        return WINDOWED[metric](within)
    try:
        return EXPRESSIONS[metric]
    except KeyError:
        raise KeyError(f"no PromQL is defined for metric {metric!r}; known: {sorted(EXPRESSIONS)}") from None
