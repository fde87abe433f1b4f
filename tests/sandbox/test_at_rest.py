"""A sandbox used before (a rehearsal that cut over, a pool left paused, data on the new cluster, legacy left
read-only) is brought back to legacy serving and an empty new cluster before a test session uses it."""

from __future__ import annotations

import pytest

from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.ops import fallback, migration
from tests import sandboxes

pytestmark = pytest.mark.sandbox


def test_a_used_sandbox_is_brought_to_rest(sandbox, sandbox_params) -> None:  # noqa: ANN001
    route = migration.route(sandbox_params)
    sandboxes.at_rest(sandbox)  # whatever the tests before left
    assert fallback.left_behind(route) == []
    try:
        leave_behind(route)
        found = fallback.left_behind(route)
        assert len(found) == 4 and any("not legacy" in f for f in found) and any("paused" in f for f in found), found
        assert any("read-only" in f for f in found) and any("tables on" in f for f in found), found
        sandboxes.at_rest(sandbox)
        assert fallback.left_behind(route) == []
    finally:
        sandboxes.at_rest(sandbox)  # never leave the next tests a cut-over, paused sandbox
    with postgres.connect(sandbox_params.endpoints.db("app-pool")) as conn:  # legacy takes writes again
        assert postgres.scalar(conn, "SELECT inet_server_port()") == route.legacy_backend[1]
        assert postgres.scalar(conn, "SELECT NOT current_setting('transaction_read_only')::bool") is True


def leave_behind(route: migration.Route) -> None:
    """What a rehearsal cut short leaves: the pool on the new cluster and paused, legacy read-only, data there."""
    pgbouncer.repoint(route.pooler, route.swarm, route.pooler_database, *route.new_backend)  # as after a cutover
    pgbouncer.pause(route.pooler, route.pooler_database)
    migration.set_read_only(route.source, route.app_role, True)
    with postgres.connect(route.target) as conn:
        postgres.query(conn, "CREATE TABLE left_by_a_rehearsal (id int PRIMARY KEY); "
                             "INSERT INTO left_by_a_rehearsal VALUES (1)")
