"""Each metric the policy names, as the PromQL that measures it on the target's exporters.

One table, used by the generated alert rules, the metrics watch and the rollback triggers,
so a metric means the same thing everywhere.
"""

from __future__ import annotations

SUBQUERY_STEP = "15s"


def promotions(window: str) -> str:
    """Promotions within `window`: each starts a new timeline (a planned switchover counts too);
    a member whose PostgreSQL is down reports timeline 0, which is left out."""
    return (f"max(patroni_postgres_timeline) - min(min_over_time((patroni_postgres_timeline > 0)"
            f"[{window}:{SUBQUERY_STEP}]))")


EXPRESSIONS: dict[str, str] = {
    "error_rate": "sum(rate(app_errors_total[1m])) / clamp_min(sum(rate(app_requests_total[1m])), 1e-9)",
    "latency_p95": "histogram_quantile(0.95, sum by (le) (rate(app_request_duration_seconds_bucket[1m])))",
    "cpu_usage": "1 - avg(rate(node_cpu_seconds_total{mode=\"idle\"}[5m]))",
    "memory_usage": "1 - sum(node_memory_MemAvailable_bytes) / sum(node_memory_MemTotal_bytes)",
    "db_connections": "max by (instance) (sum by (instance) (pg_stat_activity_count)"
                      " / on (instance) max by (instance) (pg_settings_max_connections))",
    "replication_lag": "max(pg_replication_lag_seconds)",
    "disk_io": "max(rate(node_disk_io_time_seconds_total[5m]))",
    "wal_flush_time": "max(rate(pg_stat_wal_wal_sync_time[10m]) / clamp_min(rate(pg_stat_wal_wal_sync[10m]), 1e-9))"
                      " / 1000",
    "db_connection_errors": "sum(rate(app_errors_total{kind=\"connection\"}[1m]))"
                            " / clamp_min(sum(rate(app_requests_total[1m])), 1e-9)",
    "oom_events": "sum(increase(node_vmstat_oom_kill[5m]))",
    "unplanned_failovers": promotions("1h"),
}


def expression(metric: str) -> str:
    try:
        return EXPRESSIONS[metric]
    except KeyError:
        raise KeyError(f"no PromQL is defined for metric {metric!r}; known: {sorted(EXPRESSIONS)}") from None
