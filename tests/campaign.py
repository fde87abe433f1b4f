"""Helpers for tests that walk a campaign through its phases on the sandbox."""

from __future__ import annotations

import time
from pathlib import Path

from runbook_lib import rehearse
from runbook_lib.campaign import records
from runbook_lib.clients import patroni, prometheus
from runbook_lib.config.params import Params, load_params
from runbook_lib.readiness import engine
from runbook_lib.run import runner


def window_overrides(params_file: Path) -> list[str]:
    """A maintenance window opening now, as long as the migration's budget, as -p overrides."""
    return rehearse.window_now(load_params(params_file))


def signed(params_file: Path, campaign_dir: Path) -> Path:
    """Readiness and phase 1 records in the campaign (run here if missing), then every sign-off bound to them."""
    outputs, name = campaign_dir.parent, campaign_dir.name
    if not records.latest(campaign_dir, "readiness"):
        done = runner.run("readiness", str(params_file), outputs_dir=outputs, echo=False, campaign=name)
        assert done.exit_code == 0, done.message
    if not records.latest(campaign_dir, "phase1"):
        done = runner.run("phase1_pre_migration", str(params_file), outputs_dir=outputs, echo=False, campaign=name,
                          overrides=window_overrides(params_file))
        assert done.exit_code == 0, done.message
    # approvals signed by the sandbox operator's key and marked rehearsal: what the sandbox's gate accepts
    rehearse.approve_as_rehearsal(campaign_dir, load_params(params_file))
    return campaign_dir


def prometheus_sees_all_up(params: Params, timeout: float = 90) -> None:
    """After a test restarted members, wait for Prometheus to scrape them again (MON-01 reads `up`)."""
    down = rehearse.monitoring_sees_all(params, timeout)
    assert not down, f"Prometheus targets still down: {down}"


def application_settled(params: Params, timeout: float = 240) -> None:
    """After a test stopped or restarted the application: wait until it runs without errors again (the
    metrics watch of a later test judges its error rate over a 1 min rate window)."""
    expr = "sum(increase(app_errors_total[90s])) or vector(0)"
    deadline = time.monotonic() + timeout
    while (prometheus.scalar(params.target.prometheus.url, expr) or 0) > 0:
        assert time.monotonic() < deadline, "the application still reports errors"
        time.sleep(2)


def decide(params: Params, *ids: str, campaign: Path | None = None) -> dict[str, str]:
    """The outcome of these readiness items on the target now."""
    return {r.id: r.outcome for r in engine.run(params, only=list(ids), campaign_dir=campaign)}


def wait_until(what: str, check, timeout: float = 120, interval: float = 1.0) -> float:  # noqa: ANN001
    """Until check() is true (its errors count as not yet: the thing is down while we wait), bounded; returns
    the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            if check():
                return time.monotonic() - start
        except Exception:  # noqa: BLE001 - the thing is down while we wait
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def cluster_healthy(params: Params) -> bool:
    """Three members, one leader, every other one streaming."""
    members = patroni.members(params.target.patroni)
    return len(members) == 3 and sum(m["role"] == "leader" for m in members) == 1 and all(
        m["role"] == "leader" or m.get("state") == "streaming" for m in members)
