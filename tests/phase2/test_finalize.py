"""The campaign has an end: `finalize` is refused before the 72-hour validation's PASS, and, once allowed, leaves
no replication slot or subscription on either side, legacy retired (read-only) and the campaign's table gone."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from runbook_lib.clients import postgres
from runbook_lib.config.params import Params
from runbook_lib.run import runner
from tests.phase2.conftest import manifest_steps

pytestmark = pytest.mark.sandbox


def replication_objects(params: Params) -> dict[str, list[str]]:
    """Every slot, subscription and publication on legacy and on each member of the new cluster."""
    found = {}
    for spec in [params.endpoints.db("legacy"), *params.endpoints.by_role("member")]:
        with postgres.connect(spec.with_dbname("app")) as conn:
            rows = postgres.query(conn, """SELECT 'slot ' || slot_name AS o FROM pg_replication_slots
                                           WHERE slot_type = 'logical'
                                           UNION ALL SELECT 'subscription ' || subname FROM pg_subscription
                                           UNION ALL SELECT 'publication ' || pubname FROM pg_publication""")
        found[spec.name] = [r["o"] for r in rows]
    return found


@pytest.fixture
def unretire(sandbox_params: Params):  # noqa: ANN201
    """Legacy writable again after the test (the rest of the suite migrates from it once more)."""
    yield
    with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:
        postgres.query(conn, "SET default_transaction_read_only = off")  # the retired database's default
        postgres.query(conn, "ALTER DATABASE app RESET default_transaction_read_only")


def test_finalize_is_refused_before_pass_then_ends_the_campaign(sandbox_params_file: Path, sandbox_params: Params,
                                                                 signed: Path, restore_legacy: None,
                                                                 unretire: None) -> None:
    assert runner.run("phase2_migration", str(sandbox_params_file), outputs_dir=signed.parent, echo=False,
                      campaign=signed.name).exit_code == 0
    assert any(o.startswith("slot rollout_reverse") for o in replication_objects(sandbox_params)["pg1"] +
               replication_objects(sandbox_params)["pg2"] + replication_objects(sandbox_params)["pg3"])
    refused = runner.run("finalize", str(sandbox_params_file), outputs_dir=signed.parent, echo=False,
                         campaign=signed.name)
    assert refused.exit_code == 2, refused.message  # a gate said no before any change
    steps = manifest_steps(refused.run_dir)
    assert list(steps) == ["verdict_gate"] and "has not passed" in steps["verdict_gate"]["summary"]
    assert any("subscription rollout_reverse" in o for o in replication_objects(sandbox_params)["legacy"])

    done = runner.run("finalize", str(sandbox_params_file), outputs_dir=signed.parent, echo=False,
                      campaign=signed.name, overrides=["finalize.override=test: the window is simulated here",
                                                       "finalize.approved_by=DB lead (test)"])
    assert done.exit_code == 0, done.message
    steps = manifest_steps(done.run_dir)
    assert all(s["status"] == "ok" for s in steps.values()), {k: s["summary"] for k, s in steps.items()}
    assert replication_objects(sandbox_params) == {n: [] for n in ("legacy", "pg1", "pg2", "pg3")}
    with postgres.connect(sandbox_params.endpoints.db("legacy")) as conn:  # a new session: legacy is retired
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            postgres.query(conn, "CREATE TABLE after_finalize (id int)")
        assert postgres.scalar(conn, "SELECT to_regclass('rollout_write_probe')") is None
    assert (signed / "records" / "finalized.json").exists()
    assert "no lossless way back" in (signed / "records" / "legacy_retired.json").read_text()
