"""Runs last (it changes the leader): stopping the leader's task elects another and rw follows."""

from __future__ import annotations

import pytest

from runbook_lib.sandbox import health
from tests import sandboxes

pytestmark = pytest.mark.sandbox


def test_stopping_the_leader_task_fails_over_and_rw_follows(sandbox):
    sandboxes.wait_cluster_healthy(sandbox)
    result = sandboxes.failover(sandbox, timeout=60)
    assert result["new_leader"] != result["old_leader"]
    assert result["patroni_leader"] == result["new_leader"]
    name, in_recovery = sandboxes.rw_lands_on(sandbox)
    assert name == result["new_leader"] and in_recovery is False
    # Swarm restarts the stopped task; it rejoins as a streaming replica
    sandboxes.wait_cluster_healthy(sandbox, timeout=120)
    assert health.leader_name(sandbox) == result["new_leader"]
    print(f"failover {result['old_leader']} -> {result['new_leader']} in {result['seconds']:.1f}s")
