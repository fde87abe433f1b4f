"""Database items (DB-01 .. DB-18): decided by SQL on the new cluster's members."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from runbook_lib.clients import pgbouncer, swarm
from runbook_lib.ops import catalog
from runbook_lib.readiness import in_task
from runbook_lib.readiness.model import Finding
from runbook_lib.readiness.probe import Probe
from runbook_lib.readiness.registry import check

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"expected a size such as 512MB or 64GB, got {text!r}")
    return int(float(match[1]) * _UNITS[(match[2] or "").upper()])


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


# ---------------------------------------------------------------- decisions (pure)


def decide_versions(versions: dict[str, int]) -> Finding:
    majors = {name: v // 10000 for name, v in versions.items()}
    ok = bool(versions) and all(v >= 150000 for v in versions.values()) and len(set(majors.values())) == 1
    return Finding.check(ok, versions, ">= 150000 on every member, one major version", "server_version_num")


def decide_tablespaces(placement: dict[str, dict[str, str]]) -> Finding:
    """Per member, each tablespace "own" or on the data directory's filesystem (which defeats the tablespace)."""
    shared = [f"{member}: {name}" for member, spaces in placement.items() for name, where in spaces.items()
              if where != "own"]
    return Finding.check(bool(placement) and not shared, shared or placement,
                         "each tablespace on a filesystem other than the data directory's, on every member",
                         "pg_tablespace; stat in each member's task", otherwise="warn")


def decide_hba(rules: list[dict[str, Any]], allowed: list[str]) -> Finding:
    """pg_hba_file_rules rows: no trust on network lines, no open-world address, all within allowed CIDRs."""
    nets = [ipaddress.ip_network(c, strict=False) for c in allowed]
    problems = []
    for r in rules:
        if not str(r.get("type", "")).startswith("host"):
            continue
        if r.get("error"):
            problems.append(f"line {r.get('line_number')}: {r['error']}")
            continue
        address, mask = r.get("address"), r.get("netmask")
        line = f"line {r.get('line_number')}"
        if r.get("auth_method") == "trust":
            problems.append(f"{line}: trust on a network line")
        if address in (None, "all", "samehost", "samenet"):
            problems.append(f"{line}: address {address or 'all'}")
            continue
        try:
            net = ipaddress.ip_network(f"{address}/{mask}" if mask else address, strict=False)
        except ValueError:
            problems.append(f"{line}: unparsable address {address}")
            continue
        if net.prefixlen == 0:
            problems.append(f"{line}: {net} is open to the world")
        elif not any(net.version == a.version and net.subnet_of(a) for a in nets):  # type: ignore[arg-type]
            problems.append(f"{line}: {net} is outside the allowed CIDRs")
    return Finding.check(not problems, problems or "all network lines restricted",
                         f"no trust, no /0, within {allowed}", "pg_hba_file_rules")


# ---------------------------------------------------------------- checks


@check("DB-01")
def db01(p: Probe) -> Finding:
    versions = {m: int(p.setting(m, "server_version_num")) for m in p.need(p.members(), "database members")}
    return decide_versions(versions)


@check("DB-02")
def db02(p: Probe) -> Finding:
    accepted = p.settings.vector.accepted
    rows = p.sql(p.app_endpoint, "SELECT extname, extversion FROM pg_extension WHERE extname = ANY(%s)", [accepted])
    found = {r["extname"]: r["extversion"] for r in rows}
    ok = any(_version_tuple(v) >= _version_tuple(p.settings.vector.min_version.get(name, "0"))
             for name, v in found.items())
    return Finding.check(ok, found or "none installed",
                         {n: f">= {p.settings.vector.min_version.get(n, 'any')}" for n in accepted},
                         f"pg_extension in {p.database(p.app_endpoint).dbname}")


@check("DB-03")
def db03(p: Probe) -> Finding:
    node = parse_size(p.need(p.settings.node_memory, "readiness.node_memory"))
    rows = p.sql(p.write_endpoint, "SELECT name, pg_size_bytes(current_setting(name)) AS bytes FROM pg_settings "
                                   "WHERE name IN ('shared_buffers', 'effective_cache_size')")
    share = {r["name"]: round(r["bytes"] / node, 3) for r in rows}
    ok = 0.15 <= share.get("shared_buffers", 0) <= 0.40 and 0.50 <= share.get("effective_cache_size", 0) <= 0.75
    return Finding.check(ok, share, {"shared_buffers": "15-40%", "effective_cache_size": "50-75%"},
                         "pg_settings vs readiness.node_memory", otherwise="warn")


@check("DB-04")
def db04(p: Probe) -> Finding:
    allowed = p.need(p.settings.allowed_cidrs, "readiness.allowed_cidrs")
    rules = []
    for member in p.members():
        rules += [{**r, "member": member} for r in p.sql(member, "SELECT * FROM pg_hba_file_rules")]
    return decide_hba(rules, allowed)


@check("DB-05")
def db05(p: Probe) -> Finding:
    slots = p.sql(p.write_endpoint, "SELECT slot_name, slot_type, active, "
                  "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained FROM pg_replication_slots")
    streaming = p.sql(p.write_endpoint, "SELECT application_name FROM pg_stat_replication")
    # the cluster's replicas are its configured members but the leader, whether or not they stream right now
    replicas = len(p.params.target.patroni.members) - 1 if p.params.target.patroni else len(streaming)
    physical_active = [s for s in slots if s["slot_type"] == "physical" and s["active"]]
    limit = p.settings.wal_retention_limit_mb * 1024 * 1024
    hoarding = [s["slot_name"] for s in slots if not s["active"] and (s["retained"] or 0) > limit]
    ok = len(physical_active) >= replicas > 0 and not hoarding
    return Finding.check(ok, {"replicas": replicas, "streaming": len(streaming),
                              "active_physical_slots": len(physical_active),
                              "inactive_over_limit": hoarding},
                         f"a slot per replica, active; no inactive slot over {p.settings.wal_retention_limit_mb} MB",
                         "pg_replication_slots, pg_stat_replication")


@check("DB-06")
def db06(p: Probe) -> Finding:
    import time

    endpoint = p.write_endpoint
    if p.setting(endpoint, "archive_mode") not in ("on", "always"):
        return Finding("fail", p.setting(endpoint, "archive_mode"), "on", "archive_mode")
    before = p.sql_one(endpoint, "SELECT failed_count, archived_count FROM pg_stat_archiver")
    # a switch with no WAL since the last one is a no-op: write a record first so a segment is closed
    p.sql(endpoint, "SELECT pg_logical_emit_message(false, 'runbook', 'DB-06 archive probe'), pg_switch_wal()")
    deadline = time.monotonic() + p.settings.archive_max_age_s
    while True:
        after = p.sql_one(endpoint, "SELECT failed_count, archived_count, "
                          "extract(epoch FROM now() - last_archived_time) AS age FROM pg_stat_archiver")
        if after["archived_count"] > before["archived_count"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    ok = after["archived_count"] > before["archived_count"] and after["failed_count"] == before["failed_count"]
    return Finding.check(ok, {"archived": after["archived_count"] - before["archived_count"],
                              "new_failures": after["failed_count"] - before["failed_count"],
                              "last_archive_age_s": round(float(after["age"] or -1), 1)},
                         f"a forced WAL switch archived within {p.settings.archive_max_age_s} s, no new failures",
                         "pg_switch_wal(); pg_stat_archiver")


@check("DB-07")
def db07(p: Probe) -> Finding:
    row = p.sql_one(p.write_endpoint, """
        SELECT current_setting('wal_level') AS wal_level,
               current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots) AS free_slots,
               current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication) AS free_senders""")
    ok = row["wal_level"] == "logical" and row["free_slots"] > 0 and row["free_senders"] > 0
    return Finding.check(ok, row, "wal_level logical, free slots and WAL senders", "pg_settings", otherwise="warn")


def vector_columns(p: Probe, endpoint: str) -> list[dict[str, Any]]:
    """Every column of a vector type and the valid HNSW indexes on it (shared with PERF-11)."""
    def fetch() -> list[dict[str, Any]]:
        with p.connect(endpoint) as conn:
            return catalog.vector_columns(conn, p.settings.vector.hnsw_methods, p.settings.vector.types)

    return p.shared(f"vector-columns:{endpoint}", fetch)


@check("DB-08")
def db08(p: Probe) -> Finding:
    columns = vector_columns(p, p.app_endpoint)
    uncovered = [f"{c['schema']}.{c['table']}.{c['column']}" for c in columns if not c["hnsw_indexes"]]
    observed = {f"{c['schema']}.{c['table']}.{c['column']}": c["hnsw_indexes"] for c in columns}
    if not columns:
        return Finding("fail", "no vector column found", "at least one vector column with an HNSW index",
                       "pg_attribute/pg_index")
    return Finding.check(not uncovered, observed if not uncovered else {"uncovered": uncovered},
                         f"every vector column covered by a valid index using {p.settings.vector.hnsw_methods}",
                         "pg_attribute, pg_index, pg_am")


@check("DB-09")
def db09(p: Probe) -> Finding:
    if p.params.evidence.get("DB-09"):
        return Finding("pass", p.params.evidence["DB-09"], "a scheduled vacuum job", "parameters.evidence")
    has_cron = p.sql(p.write_endpoint, "SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'")
    if has_cron:
        jobs = p.sql(p.write_endpoint, "SELECT jobname, schedule, command FROM cron.job WHERE command ILIKE '%%vacuum%%'")
        return Finding.check(bool(jobs), jobs or "no vacuum job", "a pg_cron job running VACUUM", "cron.job")
    return Finding("missing", None, "a pg_cron vacuum job or evidence", "pg_extension, parameters.evidence",
                   "no pg_cron and no evidence recorded")


@check("DB-10")
def db10(p: Probe) -> Finding:
    endpoint = p.app_endpoint
    if p.setting(endpoint, "autovacuum") != "on":
        return Finding("fail", "autovacuum off", "on", "autovacuum")
    global_sf = float(p.setting(endpoint, "autovacuum_vacuum_scale_factor"))
    rows = p.sql(endpoint, """SELECT c.oid::regclass::text AS table, c.reltuples::bigint AS rows,
        (SELECT option_value::float FROM pg_options_to_table(c.reloptions)
         WHERE option_name = 'autovacuum_vacuum_scale_factor') AS table_sf
        FROM pg_class c WHERE c.relkind = 'r' AND c.reltuples > %s
          AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)""",
                 [p.settings.autovacuum_large_table_rows])
    limit = p.settings.autovacuum_scale_factor_max
    loose = [r["table"] for r in rows if (r["table_sf"] if r["table_sf"] is not None else global_sf) > limit]
    return Finding.check(not loose, {"global_scale_factor": global_sf, "large_tables": len(rows), "too_loose": loose},
                         f"scale factor <= {limit} on tables above {p.settings.autovacuum_large_table_rows} rows",
                         "pg_settings, pg_class.reloptions", otherwise="warn")


@check("DB-11")
def db11(p: Probe) -> Finding:
    max_age = p.seconds(p.settings.analyse_max_age)
    rows = p.sql(p.app_endpoint, """SELECT relid::regclass::text AS table, n_live_tup, n_mod_since_analyze,
        extract(epoch FROM now() - greatest(last_analyze, last_autoanalyze)) AS age
        FROM pg_stat_user_tables WHERE n_live_tup > 0""")
    stale = [r["table"] for r in rows if r["age"] is None or r["age"] > max_age
             or r["n_mod_since_analyze"] > p.settings.analyse_modified_max * max(r["n_live_tup"], 1)]
    return Finding.check(not stale, {"tables": len(rows), "stale": stale},
                         f"analysed within {p.settings.analyse_max_age}, < {p.settings.analyse_modified_max:.0%} "
                         "modified since", "pg_stat_user_tables", otherwise="warn")


@check("DB-12")
def db12(p: Probe) -> Finding:
    with pgbouncer.connect(p.params.endpoints.admin()) as conn:
        databases = pgbouncer.show(conn, "DATABASES")
        config = {r["key"]: r["value"] for r in pgbouncer.show(conn, "CONFIG")}
    default = int(config.get("default_pool_size", 20))
    total = sum((int(d.get("pool_size") or default)) for d in databases if d["name"] != "pgbouncer")
    backend = p.sql_one(p.write_endpoint, "SELECT current_setting('max_connections')::int AS max, "
                        "current_setting('superuser_reserved_connections')::int AS reserved")
    capacity = backend["max"] - backend["reserved"]
    return Finding.check(total <= capacity, {"pool_total": total, "usable_connections": capacity},
                         "total pool size <= max_connections - superuser_reserved_connections",
                         "SHOW DATABASES / SHOW CONFIG; pg_settings")


@check("DB-13")
def db13(p: Probe) -> Finding:
    value = int(p.setting(p.write_endpoint, "max_connections"))
    return Finding.check(value >= p.settings.max_connections_floor, value,
                         f">= {p.settings.max_connections_floor}", "max_connections", otherwise="warn")


@check("DB-14")
def db14(p: Probe) -> Finding:
    rows = p.sql(p.write_endpoint, "SELECT spcname, pg_tablespace_location(oid) AS location FROM pg_tablespace "
                                   "WHERE spcname NOT IN ('pg_default', 'pg_global')")
    if not rows:
        return Finding("n/a", "only default tablespaces", "separate disks for extra tablespaces", "pg_tablespace")
    members = [m.service for m in p.params.target.patroni.members] if p.params.target.patroni else []
    if p.params.target.swarm is None or not members:
        return Finding("warn", rows, "each location on its own filesystem", "pg_tablespace",
                       "filesystem placement cannot be read over SQL and no Patroni member's task is known")
    # each member's own data directory, from its postmaster: an in-place location is relative to it
    locations = {r["spcname"]: r["location"] for r in rows}
    devices: dict[str, dict[str, str]] = {}
    for service in p.stack_services():
        if service.name in members:
            code, out = swarm.exec_in(p.params.target.swarm, service,
                                      ["python3", "-c", in_task.script("data_devices"), *locations.values()])
            if code != 0:
                raise RuntimeError(f"{service.name}: the data directory's and tablespaces' filesystems: "
                                   f"{out.strip()[-200:]}")
            _data_dir, data_dev, *space_devs = out.splitlines()  # a path may hold spaces
            devices[service.name] = {name: "shares the data directory's filesystem" if dev == data_dev else "own"
                                     for name, dev in zip(locations, space_devs, strict=True)}
    return decide_tablespaces(devices)


@check("DB-15")
def db15(p: Probe) -> Finding:
    wanted = p.settings.timeseries_tables
    if not wanted:
        return Finding("n/a", "no time-series tables named", "readiness.timeseries_tables", "parameters")
    # a name as the application writes it: schema-qualified, or found through the search path
    rows = p.sql(p.app_endpoint, "SELECT t AS wanted, c.relkind FROM unnest(%s::text[]) AS t "
                                 "LEFT JOIN pg_class c ON c.oid = to_regclass(t)", [wanted])
    kinds = {r["wanted"]: {"p": "partitioned", None: "missing"}.get(r["relkind"], "plain") for r in rows}
    bad = [t for t in wanted if kinds.get(t) != "partitioned"]
    return Finding.check(not bad, kinds, {t: "partitioned" for t in wanted}, "pg_class.relkind", otherwise="warn")


@check("DB-16")
def db16(p: Probe) -> Finding:
    if not p.settings.citus_required:
        return Finding("n/a", "Citus not required", "n/a unless readiness.citus_required", "parameters")
    rows = p.sql(p.app_endpoint, "SELECT extversion FROM pg_extension WHERE extname = 'citus'")
    return Finding.check(bool(rows), rows or "not installed", "citus installed", "pg_extension")


@check("DB-17")
def db17(p: Probe) -> Finding:
    rows = p.sql(p.app_endpoint, """
        SELECT c.conname, c.conrelid::regclass::text AS table, c.convalidated,
               EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid
                       AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] = c.conkey) AS indexed
        FROM pg_constraint c WHERE c.contype = 'f'""")
    invalid = [r["conname"] for r in rows if not r["convalidated"]]
    unindexed = [f"{r['table']}.{r['conname']}" for r in rows if not r["indexed"]]
    return Finding.check(not invalid and not unindexed, {"foreign_keys": len(rows), "not_valid": invalid,
                                                         "unindexed": unindexed},
                         "every foreign key validated and indexed by its leading columns", "pg_constraint, pg_index",
                         otherwise="warn")


# A btree index's size when freshly built, from the planner's statistics (its tuple count, the average
# width of its key columns): each entry a MAXALIGNed tuple header and key plus a line pointer, leaf pages
# filled to the index's fillfactor (90 by default), one metapage. An index much larger than that holds
# empty and half-empty pages (bloat) that only a REINDEX gives back. Expression keys have no statistics
# of their own and are left out, as are indexes never analysed (reltuples < 0).
BTREE_BLOAT = """
SELECT ic.oid::regclass::text AS index, pg_relation_size(ic.oid) AS bytes, ic.reltuples AS entries,
       (1 + ceil(ic.reltuples * (ceil((8 + w.width) / 8.0) * 8 + 4)
                 / ((current_setting('block_size')::int - 24 - 16)
                    * coalesce((SELECT split_part(o, '=', 2)::int FROM unnest(ic.reloptions) o
                                WHERE o LIKE 'fillfactor=%%'), 90) / 100.0)))
         * current_setting('block_size')::int AS expected_bytes
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
CROSS JOIN LATERAL (SELECT sum(s.avg_width) AS width, count(*) AS known FROM pg_attribute a
                    JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = t.relname AND s.attname = a.attname
                    WHERE a.attrelid = t.oid AND a.attnum = ANY (i.indkey)) w
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  AND NOT 0 = ANY (i.indkey) AND w.known = i.indnatts AND ic.reltuples >= 0
"""


def bloated(rows: list[dict[str, Any]], max_ratio: float, min_bytes: float) -> dict[str, float]:
    """Index -> its share of empty space, for the indexes above min_bytes whose share is over max_ratio."""
    found = {}
    for r in rows:
        if r["bytes"] > min_bytes and r["expected_bytes"] is not None:
            ratio = max(0.0, 1 - float(r["expected_bytes"]) / r["bytes"])
            if ratio > max_ratio:
                found[r["index"]] = round(ratio, 3)
    return found


@check("DB-18")
def db18(p: Probe) -> Finding:
    rows = p.sql(p.app_endpoint, """SELECT indexrelid::regclass::text AS index, idx_scan,
        pg_relation_size(indexrelid) AS bytes FROM pg_stat_user_indexes s JOIN pg_index i USING (indexrelid)
        WHERE NOT i.indisunique AND NOT i.indisprimary""")
    min_bytes = p.settings.unused_index_min_mb * 1024**2
    unused = [r["index"] for r in rows if r["idx_scan"] == 0 and r["bytes"] > min_bytes]
    estimates = p.sql(p.app_endpoint, BTREE_BLOAT)
    swollen = bloated(estimates, p.settings.bloat_max_ratio, min_bytes)
    return Finding.check(not unused and not swollen,
                         {"indexes": len(rows), "unused_above_limit": unused, "btree_estimated": len(estimates),
                          "bloated_above_limit": swollen},
                         f"no unused index and no btree index over {p.settings.bloat_max_ratio:.0%} empty space, "
                         f"above {p.settings.unused_index_min_mb} MB", "pg_stat_user_indexes, pg_stats (estimate)",
                         otherwise="warn")
