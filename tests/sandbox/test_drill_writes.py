"""The failover drills under the application's kind of writes, on the real sandbox: every write acknowledged
during a failover is on the new leader afterwards (the RPO, counted), and the writer saw the outage the
drill timed."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_lib.campaign import records
from runbook_lib.clients import postgres
from runbook_lib.config.names import DRILL_TABLE
from runbook_lib.config.params import Params

pytestmark = pytest.mark.sandbox


def test_each_drill_counts_the_writes_it_lost(ready_campaign: Path, sandbox_params: Params) -> None:
    drills = records.latest(ready_campaign, "failover_drill")["data"]["drills"]
    assert {d["kind"] for d in drills} == {"automatic", "manual"}
    for drill in drills:
        assert drill["passed"], drill
        # a write every 20 ms for the whole drill (the failover, then the old leader's rejoin)
        assert drill["writes_acknowledged"] > 100 and drill["writes_lost"] == 0, drill
        # the writer saw writes stop while there was no leader: the outage the drill timed, from its side
        assert 0 < drill["longest_write_gap_s"] <= drill["seconds_write_endpoint_back"] + 5, drill
    # the drill's table is gone: nothing of it stays on the new cluster
    with postgres.connect(sandbox_params.endpoints.db(sandbox_params.readiness.primary), dbname="postgres") as conn:
        assert postgres.scalar(conn, "SELECT to_regclass(%s)", [DRILL_TABLE]) is None
