"""`runbook rehearse` on the sandbox: a rehearsal made to fail at phase 2 stops there with legacy serving and
prints its resume command; the same command then completes the campaign (rollback drill included), every
run sealed and verified, the records present and the campaign page listing them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from psycopg import sql
from rich.console import Console

from runbook_lib import rehearse
from runbook_lib.campaign import records, signoffs
from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.config import signing
from runbook_lib.config.params import Params
from runbook_lib.ops import fallback, migration
from runbook_lib.run import archive
from tests.conftest import ARTIFACTS
from tests.system.test_html_export import CHROMIUM, chromium

pytestmark = pytest.mark.sandbox

LEGACY = ("127.0.0.1", 25432)
FAULT = "rehearsal_unlogged_scratch"
FAULT_TABLE = sql.Identifier(FAULT)


def test_a_rehearsal_stops_at_phase2_then_resumes_to_a_complete_campaign(sandbox_params_file: Path,
                                                                          sandbox_params: Params,
                                                                          tmp_path: Path) -> None:
    legacy = sandbox_params.endpoints.db("legacy")
    terminal = io.StringIO()
    console = Console(file=terminal, width=240, soft_wrap=True)

    def unlogged_table_before_phase2(runbook: str) -> None:  # logical replication cannot carry it: refused
        if runbook == "phase2_migration":
            with postgres.connect(legacy) as conn:
                postgres.query(conn, sql.SQL("CREATE UNLOGGED TABLE {} (id int PRIMARY KEY)").format(FAULT_TABLE))

    try:
        first = rehearse.rehearse(str(sandbox_params_file), campaign="rehearsal", outputs_dir=tmp_path,
                                  with_rollback=True, console=console, before_leg=unlogged_table_before_phase2)
        printed = terminal.getvalue()
        assert first.exit_code == 2, printed  # phase 2's preflight refused it before any change
        assert [(r.leg, r.status) for r in first.results] == [
            ("load test", "succeeded"), ("failover drill", "succeeded"), ("readiness", "succeeded"),
            ("phase 1", "succeeded"), ("sign-offs", "approved"), ("phase 2", "refused")], printed
        assert f"public.{FAULT} (unlogged" in first.results[-1].message
        assert f"resume with: {first.resume}" in printed and "--campaign rehearsal" in first.resume
        # stopped with legacy serving and the new cluster untouched
        assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY
        assert migration.user_tables(sandbox_params.endpoints.db("dpg-rw")) == []
    finally:
        with postgres.connect(legacy) as conn:
            postgres.query(conn, sql.SQL("DROP TABLE IF EXISTS {}").format(FAULT_TABLE))

    try:
        again = rehearse.rehearse(str(sandbox_params_file), campaign="rehearsal", outputs_dir=tmp_path,
                                  with_rollback=True, console=console)
        printed = terminal.getvalue()
        assert again.exit_code == 0, printed
        assert [(r.leg, r.status) for r in again.results] == [
            ("load test", "done-before"), ("failover drill", "done-before"), ("readiness", "done-before"),
            ("phase 1", "done-before"), ("sign-offs", "done-before"), ("phase 2", "succeeded"),
            ("phase 3", "succeeded"), ("validation checkpoint", "succeeded"), ("rollback drill", "succeeded")], printed
        figures = {r.leg: r.figures for r in again.results}
        assert figures["readiness"]["readiness score"] >= 0.9 and figures["phase 1"]["backup verified"] is True
        assert figures["phase 2"]["write-unavailable s"] < 5 and figures["phase 2"]["tables compared"] > 0
        assert figures["rollback drill"]["rollback min"] < 30 and figures["rollback drill"]["tables differing"] == 0
        # the rollback drill put legacy back
        assert pgbouncer.backend(sandbox_params.endpoints.admin(), "app") == LEGACY
    finally:
        fallback.to_legacy(migration.route(sandbox_params), accept_loss=True)
        fallback.clear_new(migration.route(sandbox_params))

    campaign = tmp_path / "rehearsal"
    # every run signed by the sandbox operator's key and anchored outside the archive
    assert archive.verify(campaign, signing.trusted_for(sandbox_params), signing.anchor_for(sandbox_params)) == []
    # no secret of the sandbox (those the parameters name and the others in its secrets folder: replication,
    # monitoring, the signing key) in any archived byte, in any encoding the scan knows
    values, unresolved = archive.secret_values([str(r) for r in sandbox_params.scan_refs()])
    assert len(values) >= 6 and not unresolved, unresolved
    forms = archive.secret_forms(values)
    leaks = []
    for path in (p for p in campaign.rglob("*") if p.is_file()):
        data = path.read_bytes()
        leaks += [(path.name, len(f)) for f in forms if f.encode() in data]
    assert leaks == [], leaks
    sealed = archive.manifests(campaign)
    assert all(m["sealed"] for m in sealed)
    assert [m["runbook"] for m in sealed if m["status"] == "succeeded"] == [
        "load_test", "failover_drill", "readiness", "phase1_pre_migration", "phase2_migration",
        "phase3_verification", "validation", "rollback"]
    for kind in ("load_test", "failover_drill", "readiness", "phase1", "window", "cutover", "rollback"):
        assert records.latest(campaign, kind), f"no {kind} record"
    approvals = signoffs.entries(campaign)
    assert approvals and all(e.get("rehearsal") for e in approvals)
    phase3 = next(m for m in sealed if m["runbook"] == "phase3_verification")
    assert {c["key"] for c in phase3["policy_loosening"]} >= {"verification_watch.duration"}
    page = (campaign / archive.INDEX).read_text()
    for m in sealed:
        assert m["run_id"] in page
    assert page.count("rehearsal approval (sandbox)") == len(approvals)
    assert f"public.{FAULT} (unlogged" in page  # the failed attempt shows its reason
    assert json.loads((campaign / sealed[-1]["run_id"] / "manifest.json").read_text())["status"] == "succeeded"

    # opened in a real browser: the page's timeline (a bar per run, the failed attempt red, both moves of
    # traffic marked) and each run's outcome panel; screenshots kept under tests/artifacts
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (.ci/run and make demo install it)")
    dom = chromium("--dump-dom", (campaign / archive.INDEX).as_uri()).stdout
    assert dom.count('class="run-bar"') == len(sealed), dom[:2000]
    assert "#cf222e" in dom and 'class="mark-cutover"' in dom and 'class="mark-rollback"' in dom
    trend = dom.split('class="validation-trend"', 1)[-1].split("</table>", 1)[0]  # the checkpoint's criteria
    assert 'class="validation-trend"' in dom and trend.count("<tr>") >= 5 and 'class="pass"' in trend, trend[:1000]
    failed = next(m for m in sealed if m["status"] != "succeeded")
    succeeded = next(m for m in sealed if m["runbook"] == "phase2_migration" and m["status"] == "succeeded")
    for m, words in ((failed, ("FAILED", "--resume", "preflight")), (succeeded, ("SUCCEEDED",))):
        run_page = (campaign / m["run_id"] / f"{m['runbook']}.html").as_uri()
        shown = chromium("--dump-dom", run_page).stdout
        assert all(w in shown for w in words), (m["run_id"], words)
    ARTIFACTS.mkdir(exist_ok=True)
    for name, uri in (("campaign-page.png", (campaign / archive.INDEX).as_uri()),
                      ("run-failed.png", (campaign / failed["run_id"] / "phase2_migration.html").as_uri()),
                      ("run-succeeded.png", (campaign / succeeded["run_id"] / "phase2_migration.html").as_uri())):
        chromium(f"--screenshot={ARTIFACTS / name}", "--window-size=1300,1400", uri)
        assert (ARTIFACTS / name).stat().st_size > 10_000, name

