"""The whole campaign on an application the runbooks were not written against: the sandbox's `ledger` profile
(schemas beyond public, enum and domain types, identity columns, a shared sequence, partitions, large
objects, a materialized view, a vector(64) column under another name). Logical with the rollback drill,
then dump-restore; after the logical cutover legacy and the new cluster are compared with queries of this
test's own, per table, per sequence and over the large objects, and one changed row is shown to differ.

Runs last among the sandbox tests (it swaps the sandbox's application) and puts the default one back."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from psycopg import sql
from rich.console import Console

from runbook_lib import rehearse
from runbook_lib.clients import pgbouncer, postgres
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.params import Params, load_params
from runbook_lib.ops import fallback, migration
from runbook_lib.run import archive
from runbook_lib.sandbox import context, lifecycle

pytestmark = pytest.mark.sandbox

LEDGER = Path(__file__).resolve().parents[2] / "parameters" / "sandbox-ledger.yaml"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


def tables(spec: PgSpec) -> list[tuple[str, str]]:
    with postgres.connect(spec) as conn:
        return [(r["s"], r["t"]) for r in postgres.query(conn, """
            SELECT n.nspname AS s, c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg_toast%%'
            ORDER BY 1, 2""", [list(SYSTEM_SCHEMAS)])]


def fingerprint(spec: PgSpec) -> dict[str, object]:
    """Every table's row count and a hash of all its rows, every sequence's value, every large object's hash."""
    out: dict[str, object] = {}
    with postgres.connect(spec) as conn:
        for schema, table in tables(spec):
            name = sql.Identifier(schema, table)
            row = postgres.query(conn, sql.SQL("SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY "
                                               "t::text), '')) AS h FROM {} AS t").format(name))[0]
            out[f"{schema}.{table}"] = (row["n"], row["h"])
        for r in postgres.query(conn, "SELECT schemaname || '.' || sequencename AS s, last_value AS v "
                                      "FROM pg_sequences"):
            out[f"sequence {r['s']}"] = r["v"]
        out["large objects"] = [(r["oid"], r["h"]) for r in postgres.query(
            conn, "SELECT oid::bigint AS oid, md5(lo_get(oid)) AS h FROM pg_largeobject_metadata ORDER BY oid")]
    return out


def differences(legacy: dict[str, object], new: dict[str, object]) -> list[str]:
    found = []
    for key in sorted(set(legacy) | set(new)):
        a, b = legacy.get(key), new.get(key)
        if key.startswith("sequence "):
            if a is not None and (b is None or b < a):  # type: ignore[operator]
                found.append(f"{key}: new {b} behind legacy {a}")
        elif a != b:
            found.append(f"{key}: legacy {a} != new {b}")
    return found


def quiesced_comparison(params: Params) -> tuple[list[str], list[str]]:
    """With writes held at the pool and the way back caught up: the differences between both sides, then
    the differences once one legacy row is changed (changed back before the pool resumes)."""
    route = migration.route(params)
    pgbouncer.pause(route.pooler, route.pooler_database)
    try:
        deadline = time.monotonic() + 60
        while True:
            equal = differences(fingerprint(route.source), fingerprint(route.target))
            if not equal or time.monotonic() > deadline:
                break
            time.sleep(1)  # reverse replication still applying the last writes before the pause
        with postgres.connect(route.source) as conn:
            postgres.query(conn, "UPDATE ledger.customers SET legal_name = legal_name || ' (changed)' "
                                 "WHERE customer_no = 1")
        try:
            changed = differences(fingerprint(route.source), fingerprint(route.target))
        finally:
            with postgres.connect(route.source) as conn:
                postgres.query(conn, "UPDATE ledger.customers SET legal_name = "
                                     "replace(legal_name, ' (changed)', '') WHERE customer_no = 1")
        return equal, changed
    finally:
        pgbouncer.resume(route.pooler, route.pooler_database)


def test_the_whole_campaign_on_the_ledger_application(sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    params = load_params(LEDGER)
    ledger_sb = context.load(str(LEDGER))
    lifecycle.down(sandbox, volumes=True)
    try:
        lifecycle.up(ledger_sb)
        terminal = io.StringIO()
        console = Console(file=terminal, width=240, soft_wrap=True)
        compared: list[tuple[list[str], list[str]]] = []

        def compare_after_the_cutover(runbook: str) -> None:
            if runbook == "phase3_verification":
                compared.append(quiesced_comparison(params))

        logical = rehearse.rehearse(str(LEDGER), campaign="ledger", outputs_dir=tmp_path, with_rollback=True,
                                    console=console, before_leg=compare_after_the_cutover)
        assert logical.exit_code == 0, terminal.getvalue()[-6000:]
        equal, changed = compared[0]
        assert equal == [], equal  # equal in every table, sequence and large object
        assert len(changed) == 1 and changed[0].startswith("ledger.customers:"), changed  # one row, found
        figures = {r.leg: r.figures for r in logical.results}
        assert figures["phase 2"]["tables compared"] >= 6 and figures["rollback drill"]["tables differing"] == 0
        assert archive.verify(tmp_path / "ledger") == []

        fallback.clear_new(migration.route(params))  # the rollback drill left legacy serving
        dump = rehearse.rehearse(str(LEDGER), campaign="ledger-dump", outputs_dir=tmp_path,
                                 strategy="dump-restore", console=console)
        assert dump.exit_code == 0, terminal.getvalue()[-6000:]
        phase2 = next(m for m in archive.manifests(tmp_path / "ledger-dump") if m["runbook"] == "phase2_migration")
        assert archive.headline(phase2)["strategy"] == "dump-restore"
    finally:
        route = migration.route(params)
        fallback.to_legacy(route, accept_loss=True)
        lifecycle.down(ledger_sb, volumes=True)
        lifecycle.up(sandbox)  # the default application back for whatever runs next
