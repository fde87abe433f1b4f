"""Checklist items, what a check finds, and the per-item result with its evidence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml

Outcome = Literal["pass", "fail", "warn", "missing", "waived", "n/a", "error"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "warn", "missing", "waived", "n/a", "error")
CATEGORIES = ("infrastructure", "database", "security", "monitoring", "performance", "high_availability")


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    category: str
    verify: str
    severity: Literal["blocker", "warning", "info"]
    rule: str = ""

    @property
    def source(self) -> str:
        return self.verify.split(":", 1)[1] if self.verify.startswith("auto:") else "evidence"

    @property
    def automated(self) -> bool:
        return self.verify.startswith("auto:")


@lru_cache(maxsize=1)
def checklist() -> tuple[Item, ...]:
    """The 77 items, from the project's copy of the readiness checklist."""
    data = yaml.safe_load(resources.files("runbook_lib").joinpath("data/readiness-checklist.yaml").read_text())
    return tuple(Item(id=row["id"], title=row["title"], category=category, verify=row["verify"],
                      severity=row["severity"], rule=row.get("pass", ""))
                 for category in CATEGORIES for row in data[category])


def item(item_id: str) -> Item:
    for it in checklist():
        if it.id == item_id:
            return it
    raise KeyError(f"no readiness item {item_id}")


@dataclass
class Finding:
    """What a check decided, with the evidence that decided it."""

    outcome: Outcome
    observed: Any = None
    expected: Any = None
    source: str = ""      # the query, API call or file that was read
    reason: str = ""

    @classmethod
    def check(cls, ok: bool, observed: Any, expected: Any, source: str = "", reason: str = "",
              otherwise: Outcome = "fail") -> Finding:
        return cls("pass" if ok else otherwise, observed, expected, source, reason)


@dataclass
class ItemResult:
    id: str
    title: str
    category: str
    severity: str
    outcome: Outcome
    observed: Any = None
    expected: Any = None
    source: str = ""
    reason: str = ""
    seconds: float = 0.0
    waiver: dict[str, str] | None = None
    evidence_ref: str | None = None
    checked_outcome: Outcome | None = None  # what the check found under a waiver

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    ready: bool
    exit_code: int
    score: float
    applicable: int
    passed: int
    failing_blockers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    waived: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return {0: "READY", 1: "BLOCKED", 2: "NOT READY (warnings or score)"}[self.exit_code]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}
