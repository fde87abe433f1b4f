"""The rollout policy: every threshold the runbooks enforce.

Defaults come from the policy file shipped with the package (a copy of the
project's shared spec, kept in step by a test). A parameters file may tighten
any figure; loosening one is accepted only with a recorded reason and approver.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: Any) -> float:
    """'500ms', '30m', '2d' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 30s, 5m, 4h or 2d")
    seconds: float | None = None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            seconds = float(match[1]) * _UNITS[match[2]]
    if seconds is None:
        raise ValueError(f"expected a duration such as 500ms, 30s, 5m, 4h or 2d, got {str(value)[:40]!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected a positive, finite duration (such as 500ms, 30s, 5m), got {str(value)[:40]!r}")
    return seconds


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m", "s"):
        if seconds >= _UNITS[unit] and (seconds / _UNITS[unit]).is_integer():
            return f"{int(seconds / _UNITS[unit])}{unit}"
    return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]


def _parse_threshold(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    return value


_BOUND_RE = re.compile(r"^\s*(<=|>=|<|>)\s*(\d+(?:\.\d+)?)\s*(%|ms|s|m|h)?\s*$")


def parse_bound(value: Any) -> Bound:
    if isinstance(value, Bound):
        return value
    match = _BOUND_RE.match(str(value))
    if not match:
        raise ValueError(f"expected a bound such as '< 0.1%', '> 1s' or '< 500ms', got {value!r}")
    number, unit = float(match[2]), match[3] or ""
    scaled = number / 100 if unit == "%" else number * _UNITS.get(unit, 1.0)
    return Bound(op=match[1], value=scaled, text=f"{match[1]} {match[2]}{unit}")


@dataclass(frozen=True)
class Bound:
    """A comparison such as '< 500ms', kept with its original text."""

    op: str
    value: float
    text: str

    def holds(self, observed: float) -> bool:
        return {"<": observed < self.value, "<=": observed <= self.value,
                ">": observed > self.value, ">=": observed >= self.value}[self.op]


BoundField = Annotated[Bound, BeforeValidator(parse_bound), PlainSerializer(lambda b: b.text, return_type=str)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Phase(_Model):
    budget: Duration
    steps: list[str]


class VerificationWatch(_Model):
    duration: Duration
    error_rate_max: float = Field(ge=0, le=1)
    latency_p95_max: Duration
    cpu_max: float = Field(ge=0, le=1)
    memory: Literal["stable"]
    # what "stable" allows: the rise of memory use over the watch along a least-squares line
    memory_trend_max: float = Field(0.05, ge=0, le=1)


class Trigger(_Model):
    metric: str
    op: Literal[">", ">=", "<", "<=", "=="]
    threshold: Annotated[bool | float, BeforeValidator(_parse_threshold)]
    for_: Duration | None = Field(default=None, alias="for")
    within: Duration | None = None


class SuccessCriteria(_Model):
    window: Duration
    error_rate_max: float = Field(ge=0, le=1)
    latency_p95_max: Duration
    unplanned_failovers: int = Field(ge=0)
    replication_lag_max: Duration
    monitoring_active_and_alerting: bool
    backup_automation_succeeding: bool
    dr_procedures_tested: bool
    security_incidents: int = Field(ge=0)
    cost_within_projection: float = Field(ge=0)


class MatrixRow(_Model):
    metric: str
    target: BoundField
    alert: BoundField
    every: Duration


class ResponseRow(_Model):
    issue: str
    severity: Literal["critical", "high", "medium", "low"]
    timeout: Annotated[float | None, BeforeValidator(lambda v: None if v in (None, "none") else parse_duration(v))]
    action: str


class Drill(_Model):
    day: int = Field(ge=1)
    drill: str


class ReadinessGate(_Model):
    min_score: float = Field(ge=0, le=1)
    blockers_allowed: int = Field(ge=0)


class Policy(_Model):
    phases: dict[str, Phase]
    verification_watch: VerificationWatch
    rollback_triggers: list[Trigger]
    rollback_completion_max: Duration
    success_criteria: SuccessCriteria
    monitoring_matrix: list[MatrixRow]
    issues_response_matrix: list[ResponseRow]
    week_one_drills: list[Drill]
    signoffs_required_before_migration: list[str]
    readiness_gate: ReadinessGate


@lru_cache(maxsize=1)
def default_policy_dict() -> dict[str, Any]:
    text = resources.files("runbook_lib").joinpath("data/rollout-policy.yaml").read_text()
    return yaml.safe_load(text)


def default_policy() -> Policy:
    return Policy.model_validate(default_policy_dict())


# Keyed lists merge row by row, so a parameters file can change one trigger.
LIST_KEYS = {"rollback_triggers": "metric", "monitoring_matrix": "metric",
             "issues_response_matrix": "issue", "week_one_drills": "day"}


def merge_policy(defaults: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge a partial policy from a parameters file onto the defaults."""
    merged = dict(defaults)
    for key, value in override.items():
        base = merged.get(key)
        if key in LIST_KEYS and isinstance(base, list) and isinstance(value, list):
            merged[key] = _merge_rows(base, value, LIST_KEYS[key])
        elif isinstance(base, dict) and isinstance(value, dict):
            merged[key] = merge_policy(base, value)
        else:
            merged[key] = value
    return merged


def _merge_rows(base: list[dict[str, Any]], rows: list[Any], key: str) -> list[Any]:
    out = [dict(r) for r in base]
    index = {r.get(key): i for i, r in enumerate(out)}
    for row in rows:
        if isinstance(row, dict) and row.get(key) in index:
            out[index[row[key]]].update(row)
        else:
            out.append(row)
    return out


@dataclass(frozen=True)
class Change:
    """One figure that differs from the rollout policy."""

    key: str
    default: Any
    value: Any
    looser: bool


_LOWER_IS_TIGHTER = re.compile(r"(_max|budget|timeout|every|\.for|rollback_completion_max|blockers_allowed"
                               r"|unplanned_failovers|security_incidents|cost_within_projection|\.target|\.alert)$")
_HIGHER_IS_TIGHTER = re.compile(r"(\.duration|\.window|\.within|min_score)$")


def compare(default: Policy, effective: Policy) -> list[Change]:
    """Every figure of `effective` that differs from `default`, marked looser or tighter."""
    changes: list[Change] = []
    _walk(_flatten(default), _flatten(effective), changes)
    return changes


def _flatten(policy: Policy) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                field = type(value).model_fields[name]
                visit(f"{prefix}.{field.alias or name}" if prefix else (field.alias or name), getattr(value, name))
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(f"{prefix}.{k}", v)
        elif isinstance(value, list) and prefix.split(".")[-1] in LIST_KEYS:
            key = LIST_KEYS[prefix.split(".")[-1]]
            for row in value:
                visit(f"{prefix}[{getattr(row, key)}]", row)
        else:
            flat[prefix] = value

    visit("", policy)
    return flat


def _walk(default: dict[str, Any], effective: dict[str, Any], out: list[Change]) -> None:
    for key in sorted(set(default) | set(effective)):
        old, new = default.get(key), effective.get(key)
        if key not in default:
            out.append(Change(key, None, new, looser=False))  # a new trigger or row only adds checks
        elif old != new:
            out.append(Change(key, old, new, looser=_is_looser(key, old, new, effective)))


def _is_looser(key: str, old: Any, new: Any, flat: dict[str, Any]) -> bool:
    if key.endswith("signoffs_required_before_migration"):
        return not set(old) <= set(new or [])
    if isinstance(old, bool) or isinstance(new, bool):
        return bool(old) and not bool(new)
    if isinstance(old, Bound) and isinstance(new, Bound):
        return new.op != old.op or new.value > old.value
    if key.endswith(".threshold"):
        op = flat.get(key.rsplit(".", 1)[0] + ".op", ">")
        lower_tighter = op in (">", ">=")
        return (new > old) if lower_tighter else (new < old)
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        if _HIGHER_IS_TIGHTER.search(key):
            return new < old
        if _LOWER_IS_TIGHTER.search(key):
            return new > old
    return True  # a change of unknown direction needs a recorded reason, like any loosening
