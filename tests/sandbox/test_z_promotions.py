"""One rule for planned and unplanned promotions, on the real sandbox: the failover drill runbook's two
promotions leave the unplanned count (the rollback trigger's PromQL) where it was; a failover nobody
announced raises it by one."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runbook_lib.clients import prometheus
from runbook_lib.config.params import Params
from runbook_lib.promql.expressions import PLANNED_PROMOTIONS, promotions, unplanned_failovers
from runbook_lib.run import runner
from tests import sandboxes

pytestmark = pytest.mark.sandbox


def settled(url: str, expr: Callable[[str], str], since: float, timeout: float = 60) -> float:
    """The count over the window since `since` (so nothing older slides out meanwhile), once two readings
    12 s apart (beyond two scrapes) agree."""
    def read() -> float:
        return float(prometheus.scalar(url, expr(f"{int(time.time() - since) + 20}s")) or 0)

    deadline = time.monotonic() + timeout
    last = read()
    while True:
        time.sleep(12)
        now = read()
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def test_drills_are_planned_and_a_failover_nobody_announced_is_not(sandbox, sandbox_params: Params,
                                                                   sandbox_params_file: Path, tmp_path: Path) -> None:
    url = sandbox_params.target.prometheus.url
    sandboxes.wait_cluster_healthy(sandbox, 180)
    since = time.time()
    before_all, before = settled(url, promotions, since), settled(url, unplanned_failovers, since)
    drill = runner.run("failover_drill", str(sandbox_params_file), outputs_dir=tmp_path, echo=False,
                       campaign="promotions")
    assert drill.exit_code == 0, drill.message
    assert prometheus.scalar(url, f"max({PLANNED_PROMOTIONS})") is not None
    assert settled(url, promotions, since) >= before_all + 2  # the drills did promote twice
    assert settled(url, unplanned_failovers, since) == before  # and both were announced
    sandboxes.failover(sandbox, timeout=90)  # nobody announces this one
    sandboxes.wait_cluster_healthy(sandbox, 180)
    assert settled(url, unplanned_failovers, since) == before + 1
