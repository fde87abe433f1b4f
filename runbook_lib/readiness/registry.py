"""Which function decides which automated item: one registration per item id."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from runbook_lib.readiness.model import Finding
    from runbook_lib.readiness.probe import Probe

CheckFn = Callable[["Probe"], "Finding"]
CHECKS: dict[str, CheckFn] = {}
ALONE: set[str] = set()  # items that time the target: decided after the others, with nothing else running


def check(item_id: str, *, alone: bool = False) -> Callable[[CheckFn], CheckFn]:
    """Register `fn` as the decider of `item_id`; `alone` for a check whose figure is a latency, which the other
    checks (threads of this process and queries on the same servers) would otherwise add to."""
    def register(fn: CheckFn) -> CheckFn:
        known = CHECKS.get(item_id)
        if known is not None and (known.__module__, known.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"{item_id} is decided twice ({CHECKS[item_id].__name__}, {fn.__name__})")
        CHECKS[item_id] = fn
        if alone:
            ALONE.add(item_id)
        return fn

    return register
