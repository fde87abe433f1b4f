"""Which function decides which automated item: one registration per item id."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from runbook_lib.readiness.model import Finding
    from runbook_lib.readiness.probe import Probe

CheckFn = Callable[["Probe"], "Finding"]
CHECKS: dict[str, CheckFn] = {}


def check(item_id: str) -> Callable[[CheckFn], CheckFn]:
    def register(fn: CheckFn) -> CheckFn:
        known = CHECKS.get(item_id)
        if known is not None and (known.__module__, known.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"{item_id} is decided twice ({CHECKS[item_id].__name__}, {fn.__name__})")
        CHECKS[item_id] = fn
        return fn

    return register
