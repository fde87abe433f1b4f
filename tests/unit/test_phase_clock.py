"""The phase budgets of the policy: started by the first completed step, shown on each, refusing once spent."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from runbook_lib.config.policy import default_policy
from runbook_lib.run.step import Clock, Outcome, execute, step

CLOCK = Clock("verification", "phase3_started", "decide with the incident lead")


def context(**state: Any) -> SimpleNamespace:
    return SimpleNamespace(params=SimpleNamespace(policy=default_policy()), state=dict(state), plan_mode=False)


@step("check", "A check", clock=CLOCK)
def check(ctx: Any) -> Outcome:
    return Outcome(summary="fine")


@step("broken", "A failing check", clock=CLOCK)
def broken(ctx: Any) -> Outcome:
    return Outcome(summary="no", failed=True)


def test_the_first_completed_step_starts_the_clock_and_every_step_shows_it() -> None:
    ctx = context()
    assert "phase3_started" not in execute(ctx, broken).state  # a failed step does not start it
    result = execute(ctx, check)
    assert result.status == "ok" and abs(result.state["phase3_started"] - time.time()) < 60
    assert result.metrics["verification_remaining_min"] == 60.0
    ctx.state.update(result.state)
    again = execute(ctx, check)
    assert "phase3_started" not in again.state and again.metrics["verification_elapsed_min"] >= 0


def test_a_spent_budget_refuses_the_next_step_and_the_boundary_itself_is_spent() -> None:
    budget = default_policy().phases["verification"].budget
    just_inside = execute(context(phase3_started=time.time() - budget + 120), check)
    assert just_inside.status == "ok"
    spent = execute(context(phase3_started=time.time() - budget), check)
    assert spent.status == "failed" and "60 min used of the 60 min verification budget" in spent.summary
    assert "decide with the incident lead" in spent.summary


def test_phase_two_starts_only_at_its_gate() -> None:
    gate = Clock("migration", "window_started", "roll back", start_on="signoff_gate")
    ctx = context()
    assert gate.stamp(ctx, Outcome(summary="x"), "preflight", time.time()).state == {}
    assert "window_started" in gate.stamp(ctx, Outcome(summary="x"), "signoff_gate", time.time()).state
