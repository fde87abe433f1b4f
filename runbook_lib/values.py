"""Plain values every layer shares: the UTC clock and JSON-ready conversion."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now() -> datetime:
    return datetime.now(UTC)


def json_safe(value: Any) -> Any:
    """Turn timestamps, decimals and numpy scalars into JSON-ready values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        if isinstance(value, float) and value != value:
            return None
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return json_safe(value.item())
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
