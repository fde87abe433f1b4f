"""Every automated readiness item shown able to fail, on the real sandbox.

Each test creates the failing state for real where one machine allows it (a trust line in
pg_hba, a dropped HNSW index, a stopped replica, a stopped exporter, a literal password in
a service's environment, log_connections off, ...) and restores it afterwards. Where the
state is a configuration of the target (a misrouted endpoint, a missing contact), the
parameters are changed, not the code (those tests are marked `by_parameters`). Waived items
are decided on the state their waivers describe (one node, an untuned host kernel). States
one machine cannot create are decided from recorded answers in
tests/unit/test_readiness_logic.py and explained in tests/failing_states.py, which prints
the table of how each item was shown failing at the end of the session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from psycopg import sql

from runbook_lib.campaign import records
from runbook_lib.clients import http, patroni, pgbouncer, postgres, swarm
from runbook_lib.config.endpoints import PgBouncerSpec
from runbook_lib.config.params import Params, load_params
from runbook_lib.readiness import engine, security
from tests.campaign import application_settled, cluster_healthy, decide, prometheus_sees_all_up, wait_until
from tests.sandboxes import patroni_parameters

pytestmark = pytest.mark.sandbox


def with_overrides(sandbox_params_file: Path, *overrides: str) -> Params:
    return load_params(sandbox_params_file, list(overrides))


def leader_service(params: Params) -> object:
    name = patroni.leader(params.target.patroni)
    service = next(m.service for m in params.target.patroni.members if m.name == name)
    return swarm.for_target(params.target.swarm).services.get(service)


def replica_service(params: Params) -> object:
    leader = patroni.leader(params.target.patroni)
    member = next(m for m in params.target.patroni.members if m.name != leader)
    return swarm.for_target(params.target.swarm).services.get(member.service)


@contextmanager
def scaled_down(params: Params, service) -> Iterator[None]:  # noqa: ANN001
    swarm.scale(params.target.swarm, service.name, 0)
    try:
        yield
    finally:
        swarm.scale(params.target.swarm, service.name, 1)
        wait_until("the cluster to heal", lambda: cluster_healthy(params), timeout=180)


def exec_leader(params: Params, script: str) -> str:
    code, out = swarm.exec_in(params.target.swarm, leader_service(params), ["sh", "-c", script])
    assert code == 0, out
    return out


@contextmanager
def extra_hba_lines(params: Params, lines: list[str]) -> Iterator[None]:
    """Append lines to the leader's pg_hba.conf and reload; restore the file afterwards."""
    path = "/var/lib/postgresql/data/pg/pg_hba.conf"
    original = exec_leader(params, f"cat {path}")
    block = "\\n".join(lines)
    exec_leader(params, f"printf '{block}\\n' | cat - {path} > /tmp/hba.new && cat /tmp/hba.new > {path}")
    with postgres.connect(params.endpoints.db("dpg-rw")) as conn:
        postgres.query(conn, "SELECT pg_reload_conf()")
    try:
        yield
    finally:
        exec_leader(params, f"cat > {path} <<'EOF'\n{original}EOF")
        with postgres.connect(params.endpoints.db("dpg-rw")) as conn:
            postgres.query(conn, "SELECT pg_reload_conf()")


@contextmanager
def maintenance_mode(params: Params) -> Iterator[None]:
    """Patroni paused: it resumes a paused WAL replay on its next loop otherwise."""
    def every_member_sees(paused: bool) -> bool:
        return all(bool(http.get(f"{m.api_url}/patroni").get("pause")) == paused for m in params.target.patroni.members)

    patroni.patch_config(params.target.patroni, {"pause": True})
    try:
        wait_until("every member to enter maintenance mode", lambda: every_member_sees(True), timeout=60)
        yield
    finally:
        patroni.patch_config(params.target.patroni, {"pause": False})
        wait_until("every member to leave maintenance mode", lambda: every_member_sees(False), timeout=60)


def legacy_sql(params: Params, statement: str) -> None:
    with postgres.connect(params.endpoints.db("legacy")) as conn:
        postgres.query(conn, statement)


# ---------------------------------------------------------------- the healthy sandbox


def test_sandbox_verdict_is_ready_with_waivers_listed(sandbox_params: Params, ready_campaign: Path) -> None:
    wait_until("the cluster to be whole (earlier tests stop members)", lambda: cluster_healthy(sandbox_params))
    prometheus_sees_all_up(sandbox_params)
    results = engine.run(sandbox_params, campaign_dir=ready_campaign)
    from runbook_lib.readiness.scoring import verdict

    gate = sandbox_params.policy.readiness_gate
    v = verdict(results, gate.min_score, gate.blockers_allowed)
    not_ok = {r.id: (r.outcome, r.reason or r.observed) for r in results if r.outcome not in ("pass", "n/a", "waived")}
    assert v.ready, f"sandbox not ready: {not_ok}"
    waived = {r.id for r in results if r.outcome == "waived"}
    assert waived == {w.item for w in sandbox_params.waivers}
    assert next(r for r in results if r.id == "MON-02").outcome == "pass"  # the exported dashboard (parameters/grafana)
    assert all(r.waiver and r.waiver["approved_by"] for r in results if r.outcome == "waived")


# ---------------------------------------------------------------- parameters describe a broken target


@pytest.mark.by_parameters
@pytest.mark.parametrize("item, overrides, expected", [
    ("INF-04", ["readiness.network.probe_to=127.0.0.1:1"], "fail"),
    ("INF-05", ["readiness.database_services=[dpg_haproxy]"], "fail"),
    ("INF-06", ["readiness.cert_min_days=100000"], "fail"),
    ("INF-07", ["readiness.dns={localhost: 10.255.255.1}"], "warn"),
    ("INF-08", ["target.prometheus.url=https://127.0.0.1:1"], "warn"),
    ("INF-15", ["readiness.backup_space_multiple=1000000000"], "fail"),
    ("DB-02", ["readiness.vector.min_version={vector: 99.0.0}"], "fail"),
    ("DB-03", ["readiness.node_memory=100GB"], "warn"),
    ("DB-11", ["readiness.analyse_max_age=1ms"], "warn"),
    ("DB-13", ["readiness.max_connections_floor=100000"], "warn"),
    ("DB-15", ["readiness.timeseries_tables=[accounts]"], "warn"),
    ("DB-16", ["readiness.citus_required=true"], "fail"),
    ("SEC-06", ["readiness.secret_rotation=1ms"], "warn"),
    ("MON-08", ["readiness.app_metrics={requests: no_such_metric_total}"], "fail"),
    ("MON-10", ["readiness.contacts={}"], "warn"),
    ("PERF-11", ["readiness.vector_recall_min=1.01"], "fail"),
    ("PERF-12", ["readiness.capacity_users=null"], "missing"),
])
def test_item_fails_when_the_target_is_misdescribed(sandbox_params_file: Path, item: str, overrides: list[str],
                                                    expected: str) -> None:
    params = with_overrides(sandbox_params_file, *overrides)
    assert decide(params, item)[item] == expected


@pytest.mark.by_parameters
def test_inf09_ha04_endpoint_landing_on_a_replica(sandbox_params: Params, sandbox_params_file: Path) -> None:
    leader = patroni.leader(sandbox_params.target.patroni)
    replica = next(m for m in patroni.members(sandbox_params.target.patroni) if m["name"] != leader)
    params = with_overrides(sandbox_params_file, f"target.databases.dpg-rw.port={replica['port']}")
    assert decide(params, "INF-09", "HA-04") == {"INF-09": "fail", "HA-04": "fail"}


@pytest.mark.by_parameters
def test_sec03_certificate_not_from_the_configured_ca(sandbox_params_file: Path, tmp_path: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(tmp_path / "k"), "-out", str(tmp_path / "other-ca.crt"), "-days", "2",
                    "-subj", "/CN=not the sandbox CA"], check=True, capture_output=True)
    params = with_overrides(sandbox_params_file, f"target.databases.pg1.sslrootcert={tmp_path / 'other-ca.crt'}",
                            "target.databases.pg1.sslmode=require")
    assert decide(params, "SEC-03")["SEC-03"] == "fail"


def test_sec01_fails_when_a_patroni_rest_api_takes_strangers(sandbox_params: Params) -> None:
    """Basic auth taken out of one replica's Patroni configuration (and reloaded): SEC-01 names that member; put
    back, it passes again. Patroni re-reads its REST API settings on a reload."""
    service = replica_service(sandbox_params)
    member = next(m for m in sandbox_params.target.patroni.members if m.service == service.name)
    config = "/run/sandbox/patroni.yml"
    edit = ("import yaml; p = '" + config + "'; c = yaml.safe_load(open(p)); c['restapi'].pop('authentication'); "
            "open(p, 'w').write(yaml.safe_dump(c))")

    def run(*cmd: str) -> None:
        code, out = swarm.exec_in(sandbox_params.target.swarm, service, list(cmd))
        assert code == 0, out

    def reload() -> None:
        http.call("POST", f"{member.api_url}/reload", expect_json=False, ok_codes=(200, 202))

    run("cp", "-p", config, "/tmp/patroni.yml.secured")
    try:
        run("python3", "-c", edit)
        reload()
        wait_until("the member to take POST without credentials",
                   lambda: security.patroni_rest_open(member.api_url) != "", timeout=60)
        result = next(r for r in engine.run(sandbox_params, only=["SEC-01"]))
        assert result.outcome == "fail"
        assert list(result.observed["control_plane_open"]) == [f"patroni {member.name}"], result.observed
    finally:
        run("cp", "-p", "/tmp/patroni.yml.secured", config)
        reload()
        wait_until("the member to want credentials again",
                   lambda: security.patroni_rest_open(member.api_url) == "", timeout=60)
    assert decide(sandbox_params, "SEC-01") == {"SEC-01": "pass"}


@pytest.mark.by_parameters
def test_sec16_mon02_mon05_sec17_with_bad_sources(sandbox_params_file: Path, tmp_path: Path) -> None:
    class Plain(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(503 if self.path == "/ready" else 200)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    (tmp_path / "dash.json").write_text(json.dumps({"panels": [{"type": "graph"}] * 3}))
    (tmp_path / "scan.json").write_text(json.dumps({"Results": [{"Vulnerabilities": [{"Severity": "CRITICAL"}]}]}))
    try:
        params = with_overrides(sandbox_params_file, f"readiness.https_endpoints=[{url}/]",
                                f"readiness.dashboard_json={tmp_path / 'dash.json'}",
                                f"readiness.log_aggregation_url={url}/ready",
                                f"evidence.SEC-17={tmp_path / 'scan.json'}")
        params.waivers = [w for w in params.waivers if w.item not in ("MON-02", "MON-05", "SEC-17")]
        assert decide(params, "SEC-16", "MON-02", "MON-05", "SEC-17") == {
            "SEC-16": "warn", "MON-02": "warn", "MON-05": "warn", "SEC-17": "warn"}
    finally:
        server.shutdown()


# ---------------------------------------------------------------- campaign records


def test_campaign_items_fail_without_or_with_poor_records(sandbox_params: Params, tmp_path: Path) -> None:
    empty = tmp_path / "empty-campaign"
    assert decide(sandbox_params, "MON-09", "PERF-01", "PERF-02", "PERF-03", "HA-02", campaign=empty) == {
        "MON-09": "fail", "PERF-01": "fail", "PERF-02": "fail", "PERF-03": "fail", "HA-02": "fail"}
    poor = tmp_path / "poor-campaign"
    records.save(poor, "load_test", {"concurrency": 1, "tps": 1.0, "p50_ms": 900, "p95_ms": 5000, "p99_ms": 9000})
    records.save(poor, "failover_drill", {"drills": [{"kind": "automatic", "passed": True},
                                                     {"kind": "manual", "passed": False}]})
    assert decide(sandbox_params, "PERF-01", "PERF-02", "PERF-03", "HA-02", campaign=poor) == {
        "PERF-01": "warn", "PERF-02": "fail", "PERF-03": "warn", "HA-02": "fail"}


# ---------------------------------------------------------------- real failing states, restored


def test_db04_sec01_sec04_sec05_hba_lines(sandbox_params: Params) -> None:
    lines = ["host all all 0.0.0.0/0 trust", "host app app 127.0.0.1/32 scram-sha-256",
             "hostssl all postgres 10.0.0.0/8 md5"]
    with extra_hba_lines(sandbox_params, lines):
        outcome = decide(sandbox_params, "DB-04", "SEC-01", "SEC-04", "SEC-05")
    assert outcome == {"DB-04": "fail", "SEC-01": "fail", "SEC-04": "fail", "SEC-05": "fail"}
    assert decide(sandbox_params, "DB-04", "SEC-01", "SEC-04", "SEC-05") == {
        "DB-04": "pass", "SEC-01": "pass", "SEC-04": "pass", "SEC-05": "pass"}


def test_logging_settings_through_patroni(sandbox, sandbox_params: Params) -> None:  # noqa: ANN001
    with patroni_parameters(sandbox, log_connections="off", log_min_duration_statement=-1,
                            log_statement="all"):
        assert decide(sandbox_params, "SEC-08", "SEC-09", "SEC-15") == {
            "SEC-08": "warn", "SEC-09": "warn", "SEC-15": "warn"}
    assert decide(sandbox_params, "SEC-08", "SEC-09", "SEC-15") == {
        "SEC-08": "pass", "SEC-09": "pass", "SEC-15": "pass"}


def test_db06_archiving_broken(sandbox, sandbox_params_file: Path, sandbox_params: Params) -> None:  # noqa: ANN001
    params = with_overrides(sandbox_params_file, "readiness.archive_max_age_s=8")
    with patroni_parameters(sandbox, archive_command="/bin/false"):
        assert decide(params, "DB-06")["DB-06"] == "fail"
    assert decide(sandbox_params, "DB-06")["DB-06"] == "pass"


def test_schema_states_on_legacy(sandbox_params: Params, sandbox_params_file: Path) -> None:
    legacy_sql(sandbox_params, "DROP TABLE IF EXISTS readiness_probe_child, readiness_probe_parent, "
                               "readiness_probe_vec")
    try:
        legacy_sql(sandbox_params, "CREATE TABLE readiness_probe_vec (id int PRIMARY KEY, v vector(3))")
        legacy_sql(sandbox_params, "CREATE TABLE readiness_probe_parent (id int PRIMARY KEY); "
                                   "CREATE TABLE readiness_probe_child (id int PRIMARY KEY, "
                                   "parent_id int); ALTER TABLE readiness_probe_child ADD FOREIGN KEY (parent_id) "
                                   "REFERENCES readiness_probe_parent(id) NOT VALID")
        legacy_sql(sandbox_params, "CREATE INDEX readiness_probe_unused ON invoices (amount_cents, issued_at)")
        legacy_sql(sandbox_params, "ALTER TABLE invoices SET (autovacuum_vacuum_scale_factor = 0.3)")
        params = with_overrides(sandbox_params_file, "readiness.unused_index_min_mb=0",
                                "readiness.autovacuum_large_table_rows=0")
        assert decide(params, "DB-08", "DB-10", "DB-17", "DB-18") == {
            "DB-08": "fail", "DB-10": "warn", "DB-17": "warn", "DB-18": "warn"}
    finally:
        legacy_sql(sandbox_params, "DROP TABLE IF EXISTS readiness_probe_child, readiness_probe_parent, "
                                   "readiness_probe_vec; DROP INDEX IF EXISTS readiness_probe_unused; "
                                   "ALTER TABLE invoices RESET (autovacuum_vacuum_scale_factor)")
    assert decide(sandbox_params, "DB-08", "DB-17") == {"DB-08": "pass", "DB-17": "pass"}


def test_db08_perf11_without_the_hnsw_index(sandbox_params: Params) -> None:
    legacy_sql(sandbox_params, "DROP INDEX IF EXISTS entries_embedding_hnsw_idx")
    try:
        assert decide(sandbox_params, "DB-08", "PERF-11") == {"DB-08": "fail", "PERF-11": "fail"}
    finally:
        legacy_sql(sandbox_params, "CREATE INDEX IF NOT EXISTS entries_embedding_hnsw_idx ON entries "
                                   "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
    assert decide(sandbox_params, "DB-08", "PERF-11") == {"DB-08": "pass", "PERF-11": "pass"}


def test_sec02_application_role_with_too_much_power(sandbox_params: Params) -> None:
    legacy_sql(sandbox_params, "ALTER ROLE app CREATEDB")
    try:
        assert decide(sandbox_params, "SEC-02")["SEC-02"] == "fail"
    finally:
        legacy_sql(sandbox_params, "ALTER ROLE app NOCREATEDB")
    assert decide(sandbox_params, "SEC-02")["SEC-02"] == "pass"


def test_sec07_literal_password_in_a_service_environment(sandbox_params: Params) -> None:
    service = swarm.for_target(sandbox_params.target.swarm).services.get("monitoring_webhook")
    # not --detach: each update restarts the receiver, and a restart landing in a later test's MON-04
    # (CI saw one) loses what the receiver had received and its refuse switch
    subprocess.run(["docker", "service", "update", "--env-add", "PROBE_PASSWORD=hunter2-literal", service.name],
                   check=True, capture_output=True, timeout=300)
    try:
        assert decide(sandbox_params, "SEC-07")["SEC-07"] == "fail"
    finally:
        subprocess.run(["docker", "service", "update", "--env-rm", "PROBE_PASSWORD", service.name],
                       check=True, capture_output=True, timeout=300)
    assert decide(sandbox_params, "SEC-07")["SEC-07"] == "pass"


def test_mon01_stopped_exporter_and_mon04_unreadable_receiver(sandbox_params: Params,
                                                               sandbox_params_file: Path) -> None:
    service = swarm.for_target(sandbox_params.target.swarm).services.get("edge_exporter")
    swarm.scale(sandbox_params.target.swarm, service.name, 0)
    try:
        wait_until("Prometheus to see the exporter down",
                   lambda: decide(sandbox_params, "MON-01")["MON-01"] == "fail", timeout=90, interval=3)
    finally:
        swarm.scale(sandbox_params.target.swarm, service.name, 1)
    wait_until("the exporter back up", lambda: decide(sandbox_params, "MON-01")["MON-01"] == "pass", timeout=120,
               interval=3)
    params = with_overrides(sandbox_params_file, "target.alertmanager.webhook_url=https://127.0.0.1:25094/elsewhere",
                            "readiness.item_timeout_s=12")
    unreadable = next(iter(engine.run(params, only=["MON-04"])))  # the read-back URL answers 404: undecided
    assert unreadable.outcome == "error" and "HTTP 404" in unreadable.reason and "/elsewhere" in unreadable.reason, \
        unreadable
    # a receiver the parameters name must be reached too: one the runbooks cannot read, or one not configured
    for named in ("[runbook-webhook, auto-rollback]", "[runbook-webhook, pager-nobody]"):
        params = with_overrides(sandbox_params_file, f"target.alertmanager.receivers={named}")
        assert decide(params, "MON-04")["MON-04"] == "fail", named
    assert decide(sandbox_params, "MON-04")["MON-04"] == "pass"


def mon04(params: Params) -> engine.ItemResult:
    return next(iter(engine.run(params, only=["MON-04"])))


def test_mon04_proves_an_email_receiver_and_fails_when_it_gets_nothing(sandbox_params: Params,
                                                                       sandbox_params_file: Path) -> None:
    am = sandbox_params.target.alertmanager
    assert am is not None and am.webhook_url is not None
    mailbox = am.webhook_url.rsplit("/", 1)[0] + "/mail"
    since = time.time() - 1
    result = mon04(sandbox_params)
    assert result.outcome == "pass", (result.observed, result.reason)
    assert result.observed["ops-email"] == "delivered"
    # its own mail, by its test id: until it is in, it may still be on its way (and land in the refusing part)
    marker = result.observed["test_ids"]["ops-email"]
    wait_until("the SMTP server to hold this check's test alert",
               lambda: any(marker in m["message"] for m in http.get(mailbox, params={"since": since})["notifications"]),
               timeout=60, interval=1)

    http.call("PUT", mailbox, params={"refuse": "1"})
    try:
        result = mon04(with_overrides(sandbox_params_file, "readiness.item_timeout_s=14"))
        assert http.get(mailbox)["refusing"], "the receiver restarted during the test (its refuse switch was reset)"
    finally:
        http.call("PUT", mailbox, params={"refuse": "0"})
    assert result.outcome == "fail"
    assert "email" in result.observed["ops-email"] and result.observed["runbook-webhook"] == "delivered", \
        result.observed

    # named, but the operator's routes send its test alert elsewhere
    result = mon04(with_overrides(sandbox_params_file, "target.alertmanager.test_labels={ops-email: "
                                  "{test_receiver: nobody}}", "readiness.item_timeout_s=14"))
    assert result.outcome == "fail" and "routed to runbook-webhook" in result.observed["ops-email"], result.observed
    assert mon04(sandbox_params).outcome == "pass"


def test_ha01_db05_with_a_replica_stopped(sandbox_params: Params) -> None:
    params = sandbox_params
    with scaled_down(sandbox_params, replica_service(sandbox_params)):
        wait_until("Patroni to notice", lambda: len(patroni.members(sandbox_params.target.patroni)) < 3 or any(
            m.get("state") != "streaming" and m["role"] != "leader"
            for m in patroni.members(sandbox_params.target.patroni)), timeout=60)
        outcome = decide(params, "HA-01", "DB-05")
    assert outcome == {"HA-01": "fail", "DB-05": "fail"}
    assert decide(sandbox_params, "HA-01", "DB-05") == {"HA-01": "pass", "DB-05": "pass"}


def ha03_reason(params: Params) -> str:
    """HA-03's reason when it fails ("" when it passes)."""
    result = engine.run(params, only=["HA-03"])[0]
    return result.reason if result.outcome == "fail" else ""


def a_replica(params: Params) -> str:
    leader = patroni.leader(params.target.patroni)
    return next(m.name for m in params.target.patroni.members if m.name != leader)


def test_ha03_with_replay_paused_on_a_replica(sandbox_params: Params) -> None:
    replica = a_replica(sandbox_params)
    with maintenance_mode(sandbox_params), postgres.connect(sandbox_params.endpoints.db(replica)) as conn:
        postgres.query(conn, "SELECT pg_wal_replay_pause()")
        try:
            with postgres.connect(sandbox_params.endpoints.db("dpg-rw")) as writer:  # WAL the paused replica cannot replay
                postgres.query(writer, "SELECT pg_logical_emit_message(false, 'test', repeat('x', 100000))")
            assert f"{replica}: WAL replay is paused" in ha03_reason(sandbox_params)
        finally:
            postgres.query(conn, "SELECT pg_wal_replay_resume()")
    wait_until("the replica to catch up", lambda: ha03_reason(sandbox_params) == "", timeout=60)


def test_ha03_with_replay_held_up_by_a_query_on_a_replica(sandbox_params: Params) -> None:
    """A standby query holding a lock that the leader's DROP needs stalls replay (up to
    max_standby_streaming_delay, 30 s) without pausing it: the leader may not have heard yet."""
    replica = a_replica(sandbox_params)
    with postgres.connect(sandbox_params.endpoints.db("dpg-rw"), dbname="postgres") as writer:
        postgres.query(writer, "CREATE TABLE IF NOT EXISTS ha03_stall (id int)")
        with postgres.connect(sandbox_params.endpoints.db(replica), autocommit=False) as reader:
            wait_until("the table on the replica", lambda: postgres.scalar(
                reader, "SELECT to_regclass('ha03_stall') IS NOT NULL") or reader.rollback(), timeout=30)
            postgres.query(reader, "SELECT count(*) FROM ha03_stall")  # holds its lock until rollback
            try:
                postgres.query(writer, "DROP TABLE ha03_stall")
                dropped_at = postgres.scalar(writer, "SELECT pg_current_wal_lsn()")
                wait_until("the replica to receive the DROP", lambda: postgres.scalar(
                    reader, "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", [dropped_at]), timeout=30, interval=0.05)
                assert f"{replica}: WAL received more than" in ha03_reason(sandbox_params)
            finally:
                reader.rollback()
    wait_until("the replica to catch up", lambda: ha03_reason(sandbox_params) == "", timeout=60)


def test_ha05_with_an_etcd_member_stopped(sandbox_params: Params) -> None:
    service = swarm.for_target(sandbox_params.target.swarm).services.get("dpg_etcd3")
    swarm.scale(sandbox_params.target.swarm, service.name, 0)
    try:
        wait_until("etcd3 down", lambda: decide(sandbox_params, "HA-05")["HA-05"] == "fail", timeout=60)
    finally:
        swarm.scale(sandbox_params.target.swarm, service.name, 1)
    wait_until("etcd healthy again", lambda: decide(sandbox_params, "HA-05")["HA-05"] == "pass", timeout=120)


def test_perf06_sequential_scan_among_top_queries(sandbox_params: Params, sandbox_params_file: Path) -> None:
    with postgres.connect(sandbox_params.endpoints.db("app-pool")) as conn:  # the application's own statements
        for _ in range(30):
            postgres.query(conn, "SELECT count(*) FROM events_default WHERE kind = 'nope' AND payload ? 'x'")
    params = with_overrides(sandbox_params_file, "readiness.large_table_rows=0")
    assert decide(params, "PERF-06")["PERF-06"] == "warn"


def test_readiness_cli_exit_codes(sandbox_params_file: Path, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "runbook_lib.cli", "check", "readiness", "--params", str(sandbox_params_file),
           "--outputs", str(tmp_path), "--no-record"]
    blocked = subprocess.run(cli + ["--only", "DB-16,DB-13", "-p", "readiness.citus_required=true"],
                             capture_output=True, text=True, timeout=120)
    # DB-16 (info) fails and DB-13 passes: no blocker, but a 50 % score is under the gate
    assert blocked.returncode == 2, blocked.stdout
    blocker = subprocess.run(cli + ["--only", "DB-02", "-p", "readiness.vector.min_version={vector: 99.0}"],
                             capture_output=True, text=True, timeout=120)
    assert blocker.returncode == 1 and "DB-02" in blocker.stdout
    bad = subprocess.run(cli + ["-p", "readiness.concurrency=zero"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 3 and "readiness.concurrency" in bad.stderr


def waiting(admin: PgBouncerSpec) -> bool:
    with pgbouncer.connect(admin) as conn:
        return any(int(r["cl_waiting"]) > 0 for r in pgbouncer.show(conn, "POOLS"))


def test_perf07_clients_waiting_on_a_paused_pool(sandbox_params: Params) -> None:
    """The application's pool paused while a client asks a query: it waits at every look, as behind a pool too
    small for its load. Resumed, the client gets its answer and no one waits."""
    admin, pool = sandbox_params.endpoints.admin(), sandbox_params.migration.pooler_database
    app = sandbox_params.endpoints.db("app-pool")
    answered: list[object] = []
    assert pgbouncer.pause(admin, pool)
    try:
        with postgres.connect(app) as conn:
            asking = threading.Thread(target=lambda: answered.append(postgres.query(conn, "SELECT 1 AS one")))
            asking.start()
            wait_until("the client to wait in PgBouncer", lambda: waiting(admin), timeout=30)
            assert decide(sandbox_params, "PERF-07") == {"PERF-07": "warn"}
            pgbouncer.resume(admin, pool)
            asking.join(timeout=30)
        assert answered == [[{"one": 1}]]
    finally:
        pgbouncer.resume(admin, pool)
    assert decide(sandbox_params, "PERF-07") == {"PERF-07": "pass"}
    application_settled(sandbox_params)


def test_waived_items_fail_on_the_sandbox_as_their_waivers_say(sandbox_params: Params) -> None:
    """A waiver stands for a state the target really has (one node, an untuned host kernel, no AppArmor, no
    Compose v2, no pg_cron): each waived automated item is decided, its finding kept beside the waiver."""
    automated = {i.id for i in engine.checklist() if i.automated}
    waived = sorted({w.item for w in sandbox_params.waivers} & automated)
    assert {"INF-03", "INF-13"} <= set(waived)
    results = engine.run(sandbox_params, only=waived)
    undecided = {r.id: r.reason for r in results if r.checked_outcome == "error"}
    assert not undecided, undecided
    assert all(r.outcome == "waived" and r.waiver for r in results)
    found = {r.id: r.checked_outcome for r in results}
    assert found["INF-03"] == "fail", found  # a single-node Swarm, whatever the machine


def test_db14_a_tablespace_on_the_data_directorys_filesystem_and_one_off_it(sandbox_params: Params) -> None:
    """An in-place tablespace (inside the data directory) defeats its purpose: DB-14 names it on every member.
    One in each task's /dev/shm (a tmpfs of its own) is on another filesystem: DB-14 passes."""
    target = sandbox_params.target
    members = [s for s in swarm.stack_services(target.swarm) if s.name in {m.service for m in target.patroni.members}]
    own = "/dev/shm/readiness_probe_ts"

    def on_leader(*statements: str | sql.Composable) -> None:
        with postgres.connect(sandbox_params.endpoints.db("dpg-rw")) as conn:
            for statement in statements:
                postgres.query(conn, statement)

    def drop() -> None:
        on_leader("DROP TABLESPACE IF EXISTS readiness_probe_inplace", "DROP TABLESPACE IF EXISTS readiness_probe_own")

    drop()
    try:
        on_leader("SET allow_in_place_tablespaces = on", "CREATE TABLESPACE readiness_probe_inplace LOCATION ''")
        found = next(iter(engine.run(sandbox_params, only=["DB-14"])))
        assert found.outcome == "warn"
        assert sorted(found.observed) == sorted(f"{s.name}: readiness_probe_inplace" for s in members)
        on_leader("DROP TABLESPACE readiness_probe_inplace")
        for service in members:  # the location must exist on every member before the leader creates it
            code, out = swarm.exec_in(target.swarm, service, ["sh", "-c", f"mkdir -p {own} && chown postgres: {own}"])
            assert code == 0, out
        on_leader(sql.SQL("CREATE TABLESPACE readiness_probe_own LOCATION {}").format(sql.Literal(own)))
        assert decide(sandbox_params, "DB-14") == {"DB-14": "pass"}
    finally:
        drop()
        past_the_tablespaces(sandbox_params)
        for service in members:
            swarm.exec_in(target.swarm, service, ["rm", "-rf", own])
    assert decide(sandbox_params, "DB-14") == {"DB-14": "n/a"}


def past_the_tablespaces(params: Params) -> None:
    """A checkpoint on the leader and a restartpoint on each replica once it has replayed it: a member that
    restarts later must not replay the CREATE TABLESPACE records, whose /dev/shm location a new task lacks
    (its startup would fail on every try: "directory ... does not exist")."""
    write = params.endpoints.db("dpg-rw")
    with postgres.connect(write) as conn:
        postgres.query(conn, "CHECKPOINT")
        lsn = postgres.scalar(conn, "SELECT pg_current_wal_lsn()::text")
    for member in patroni.members(params.target.patroni):
        if member.get("role") == "leader":
            continue
        with postgres.connect(write, host=member["host"], port=member["port"]) as conn:
            wait_until(f"{member['name']} to replay the checkpoint", lambda c=conn: postgres.scalar(
                c, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]), timeout=60)
            postgres.query(conn, "CHECKPOINT")  # on a standby: a restartpoint


def test_db12_pools_larger_than_the_cluster_takes(sandbox_params: Params) -> None:
    """PgBouncer's default pool size raised past the leader's usable connections in its task's config and
    reloaded: DB-12 fails; the file put back and reloaded, it passes."""
    admin = sandbox_params.endpoints.admin()
    service = swarm.for_target(sandbox_params.target.swarm).services.get(admin.service)
    kept = "/tmp/pgbouncer.ini.readiness"

    def run(*cmd: str) -> None:
        code, out = swarm.exec_in(sandbox_params.target.swarm, service, list(cmd))
        assert code == 0, out

    run("cp", "-p", admin.config_path, kept)
    try:
        run("sed", "-i", "-E", r"s/^(default_pool_size[[:space:]]*=).*/\1 100000/", admin.config_path)
        run("grep", "-qE", "^default_pool_size[[:space:]]*= 100000", admin.config_path)
        pgbouncer.command(admin, "RELOAD")
        found = next(iter(engine.run(sandbox_params, only=["DB-12"])))
        assert found.outcome == "fail" and found.observed["pool_total"] >= 100000, found.observed
    finally:
        run("cp", "-p", kept, admin.config_path)
        pgbouncer.command(admin, "RELOAD")
    assert decide(sandbox_params, "DB-12") == {"DB-12": "pass"}


def test_mon03_with_the_policy_rules_taken_out_of_prometheus(sandbox, sandbox_params: Params) -> None:  # noqa: ANN001
    """The policy's rule file taken out of Prometheus' rule directory and Prometheus reloaded: MON-03 names the
    metrics no rule covers; put back and reloaded, it passes."""
    from runbook_lib.sandbox import health, stacks

    rules = stacks.rules_dir(sandbox) / "monitoring-matrix.yml"
    kept = rules.read_text()
    rules.unlink()
    try:
        health.reload_prometheus(sandbox)
        wait_until("Prometheus to drop the policy's rules",
                   lambda: decide(sandbox_params, "MON-03") == {"MON-03": "fail"}, timeout=60, interval=2)
    finally:
        rules.write_text(kept)
        health.reload_prometheus(sandbox)
    wait_until("Prometheus to load them again", lambda: decide(sandbox_params, "MON-03") == {"MON-03": "pass"},
               timeout=60, interval=2)
