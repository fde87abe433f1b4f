"""Prometheus and Alertmanager HTTP APIs."""

from __future__ import annotations

import time
from typing import Any

from runbook_lib.clients import http


def targets(url: str) -> list[dict[str, Any]]:
    return http.get(f"{url.rstrip('/')}/api/v1/targets", params={"state": "active"})["data"]["activeTargets"]


def rules(url: str) -> list[dict[str, Any]]:
    groups = http.get(f"{url.rstrip('/')}/api/v1/rules")["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def query(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """An instant query, now or at `at` (epoch seconds)."""
    params: dict[str, Any] = {"query": expr} if at is None else {"query": expr, "time": at}
    return http.get(f"{url.rstrip('/')}/api/v1/query", params=params)["data"]["result"]


def scalar(url: str, expr: str, at: float | None = None) -> float | None:
    """The largest finite value the query answers (None: no data), now or at `at`."""
    values = [float(r["value"][1]) for r in query(url, expr, at) if r["value"][1] not in ("NaN", "+Inf", "-Inf")]
    return max(values) if values else None


def query_range(url: str, expr: str, seconds: float, step: float) -> list[dict[str, Any]]:
    end = time.time()
    return http.get(f"{url.rstrip('/')}/api/v1/query_range",
                    params={"query": expr, "start": end - seconds, "end": end, "step": step})["data"]["result"]


def series_names(url: str, match: str) -> list[str]:
    return http.get(f"{url.rstrip('/')}/api/v1/label/__name__/values", params={"match[]": match})["data"]
