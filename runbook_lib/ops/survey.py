"""What a real schema holds that the move must carry or refuse, found before any change.

Logical replication carries rows of tables with a key. It does not carry large objects, the rows of
unlogged tables, roles, or the contents of materialized views; it cannot replay UPDATE and DELETE on a
table without a key or replica identity; and it fails on a target that already holds rows. Each such
object is listed here with what happens to it (carried, and how) or why it is refused and what to do,
so phase 2's preflight can stop before anything changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from runbook_lib.clients import postgres
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.names import SUBSCRIPTION
from runbook_lib.config.params import Migration
from runbook_lib.ops import catalog
from runbook_lib.ops.migration import subscribed_on


@dataclass
class Item:
    object: str
    kind: str
    verdict: str  # carried | refused
    how: str  # how it is carried, or what to do

    @property
    def refused(self) -> bool:
        return self.verdict == "refused"


def survey(source: PgSpec, target: PgSpec, m: Migration) -> list[Item]:
    """Every object of legacy the move must think about, and what happens to it under `m`'s strategy."""
    excluded = {e.table: e for e in m.exclude}
    logical = m.strategy == "logical"
    with postgres.connect(source) as src, postgres.connect(target) as dst:
        items = _tables(catalog.tables(src), excluded, logical)
        items += _extensions(catalog.extensions(src), dst)
        items += _large_objects(catalog.large_objects(src), m, logical)
        items += _roles(catalog.roles_in_use(src), dst)
        items += [Item(v, "materialized view", "carried", "refreshed on the new cluster after its data is moved")
                  for v in catalog.materialized_views(src)]
        items += _target_rows(dst, excluded)
    unknown = sorted(set(excluded) - {i.object for i in items})
    items += [Item(t, "exclusion", "refused", "migration.exclude names a table legacy does not have") for t in unknown]
    return items


def _tables(tables: list[catalog.Table], excluded: dict[str, Any], logical: bool) -> list[Item]:
    items = []
    for t in tables:
        if t.qualified in excluded:
            e = excluded[t.qualified]
            items.append(Item(t.qualified, "excluded table", "carried", f"left behind on purpose: {e.reason} "
                                                                          f"(approved by {e.approved_by})"))
        elif t.unlogged:
            items.append(Item(t.qualified, "unlogged table", "refused" if logical else "carried",
                              "unlogged table, its rows are not in WAL: make it logged (ALTER TABLE ... SET LOGGED), "
                              "or exclude it with a reason (migration.exclude)" if logical else
                              "dump-restore copies its rows"))
        elif logical and t.kind == "r" and not t.primary_key and t.replica_identity in ("d", "n"):
            items.append(Item(t.qualified, "table without a key", "refused",
                              "no primary key and no replica identity, so UPDATE and DELETE cannot replicate: add a "
                              "primary key, set REPLICA IDENTITY FULL, or exclude it with a reason (migration.exclude)"))
    return items


def _extensions(installed: dict[str, str], dst: psycopg.Connection[Any]) -> list[Item]:
    available = postgres.query(dst, "SELECT name, version, installed FROM pg_available_extension_versions "
                                    "WHERE name = ANY(%s)", [list(installed)])
    items = []
    for name, version in sorted(installed.items()):
        versions = [r for r in available if r["name"] == name]
        if any(r["version"] == version for r in versions):
            items.append(Item(name, "extension", "carried", f"version {version} on both sides"))
        else:
            offered = ", ".join(sorted(r["version"] for r in versions)) or "none"
            items.append(Item(name, "extension", "refused", f"legacy has {version}; the new cluster offers {offered}: "
                                                            "install the same version there first"))
    return items


def _large_objects(count: int, m: Migration, logical: bool) -> list[Item]:
    if not count:
        return []
    if not logical:
        return [Item(f"{count} large objects", "large objects", "carried", "dump-restore copies them")]
    if m.large_objects == "copy":
        return [Item(f"{count} large objects", "large objects", "carried",
                     "copied at the cut (inside the write pause) and compared")]
    return [Item(f"{count} large objects", "large objects", "refused",
                 "logical replication does not carry them: set migration.large_objects: copy (copied and compared at "
                 "the cut, the pause grows with their size), or use the dump-restore strategy")]


def _roles(in_use: list[str], dst: psycopg.Connection[Any]) -> list[Item]:
    present = {r["rolname"] for r in postgres.query(dst, "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                                    [in_use])}
    return [Item(r, "role", "carried" if r in present else "refused",
                 "present on the new cluster (its grants come with the schema)" if r in present else
                 "owns or is granted objects on legacy but does not exist on the new cluster: create it there first "
                 "(CREATE ROLE, with the same attributes)") for r in in_use]


def _target_rows(dst: psycopg.Connection[Any], excluded: dict[str, Any]) -> list[Item]:
    """A target that already holds rows would fail the copy (duplicate keys) unless this campaign is resuming."""
    if subscribed_on(dst, SUBSCRIPTION):
        return []  # the same campaign's copy is under way: a re-run resumes it
    items = []
    for t in catalog.tables(dst):
        if t.partition or t.qualified in excluded:
            continue
        if postgres.scalar(dst, sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(t.ident)):
            items.append(Item(t.qualified, "rows on the new cluster", "refused",
                              "the new cluster already holds rows here: empty it (or choose another target) before "
                              "the copy, or the copy fails on duplicate keys"))
    return items


def rows(items: list[Item]) -> list[dict[str, Any]]:
    return [asdict(i) for i in items]
