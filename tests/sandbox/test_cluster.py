"""The dpg cluster, HAProxy and PgBouncer against the real sandbox."""

from __future__ import annotations

import os

import docker.errors
import psycopg
import pytest

from runbook_lib.clients import http, swarm
from runbook_lib.sandbox import health, overview, stacks
from tests import sandboxes

pytestmark = pytest.mark.sandbox


def test_exactly_one_leader_and_two_streaming_replicas(sandbox):
    members = health.patroni_cluster(sandbox)["members"]
    roles = sorted((m["role"], m["state"]) for m in members)
    assert roles == [("leader", "running"), ("replica", "streaming"), ("replica", "streaming")], roles


def test_replicas_stream_from_the_leader_with_slots(sandbox):
    leader = health.leader_name(sandbox)
    with health.connect(sandbox, stacks.member_port(sandbox, leader)) as conn:
        rows = conn.execute("SELECT application_name, state FROM pg_stat_replication").fetchall()
        slots = conn.execute("SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'").fetchall()
    assert sorted(r[1] for r in rows) == ["streaming", "streaming"]
    assert len(slots) == 2 and all(active for _, active in slots)


def test_haproxy_rw_lands_on_leader_and_ro_on_a_replica(sandbox):
    name, in_recovery = sandboxes.rw_lands_on(sandbox)
    assert name == health.leader_name(sandbox) and in_recovery is False
    with health.connect(sandbox, sandbox.spec.ports.haproxy_ro) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def test_cluster_settings_are_production_shaped(sandbox):
    with health.connect(sandbox, sandbox.spec.ports.haproxy_rw) as conn:
        get = lambda n: conn.execute("SELECT current_setting(%s)", (n,)).fetchone()[0]  # noqa: E731
        assert get("data_checksums") == "on"
        assert get("wal_level") == "logical"
        assert get("archive_mode") == "on"
        assert get("ssl") == "on"
        assert get("password_encryption") == "scram-sha-256"
        assert get("log_connections") == "on" and get("log_disconnections") == "on"
        assert get("log_min_duration_statement") == "500ms"
        assert conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = %s", ("vector",)).fetchone()
        # other tests break archiving on purpose for a while: judge this switch only (each read a fresh snapshot)
        conn.commit()
        conn.autocommit = True
        archived, failed = conn.execute("SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
        conn.execute("SELECT pg_logical_emit_message(false, 'test', 'archive me'), pg_switch_wal()")
        health.wait_for("the archiver to archive a WAL segment", lambda: conn.execute(
            "SELECT archived_count > %s FROM pg_stat_archiver", (archived,)).fetchone()[0], 90)
        assert conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0] == failed


def test_pgbouncer_routes_the_app_to_legacy(sandbox):
    backend = overview.pgbouncer_backend(sandbox)
    assert backend.get("points_at") == "legacy", backend
    with health.connect(sandbox, sandbox.spec.ports.pgbouncer, dbname="app", user="app",
                        secret="app_password", prepare_threshold=None) as conn:
        port = conn.execute("SELECT inet_server_port()").fetchone()[0]
        assert port == sandbox.spec.ports.legacy
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] > 0


def test_legacy_is_seeded_with_the_application_schema(sandbox):
    with health.connect(sandbox, sandbox.spec.ports.legacy, dbname="app") as conn:
        assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'events'").fetchone()[0] == "p"
        assert conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass").fetchone()[0] >= 7
        assert conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
            "WHERE i.indrelid = 'entries'::regclass AND a.amname = 'hnsw'").fetchone()[0] == 1
        assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                            "WHERE attrelid = 'entries'::regclass AND attname = 'embedding'").fetchone()[0] == "vector(384)"
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone()[0] >= 6
        assert conn.execute("SELECT count(*) FROM pg_sequences WHERE sequencename = 'invoice_number_seq'").fetchone()[0] == 1
        assert conn.execute("SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = 'app'").fetchone()[0] is False


@pytest.mark.parametrize("port_name", ["legacy", "pgbouncer", "haproxy_rw"])
def test_plain_connection_of_the_app_role_is_refused(sandbox, port_name):
    from runbook_lib.sandbox import credentials
    port = getattr(sandbox.spec.ports, port_name)
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(host="127.0.0.1", port=port, dbname="app", user="app", sslmode="disable",
                        password=credentials.read(sandbox, "app_password"), connect_timeout=3)
    assert "SSL" in str(exc.value) or "no pg_hba.conf entry" in str(exc.value) or "ssl" in str(exc.value)
    # the same credentials over TLS work (so the refusal is about TLS, not the password)
    with health.connect(sandbox, port, dbname="app", user="app", secret="app_password", prepare_threshold=None) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_etcd_has_three_healthy_members_and_a_leader(sandbox):
    members = overview.etcd_members(sandbox)
    assert len(members) == 3 and all(m["healthy"] for m in members)
    assert sum(m["leader"] for m in members) == 1


def test_patroni_metrics_endpoint(sandbox):
    api = sandbox.params.target.patroni.members[0].api_url
    assert "patroni_postgres_running" in http.get(f"{api}/metrics", expect_json=False).text


@pytest.mark.parametrize("where", ["legacy", "leader"])
def test_a_parallel_hnsw_build_gets_its_shared_memory(sandbox, where):
    """A parallel HNSW build asks for maintenance_work_mem of dynamic shared memory at once (> Docker's 64 MB)."""
    port = sandbox.spec.ports.legacy if where == "legacy" else sandbox.spec.ports.haproxy_rw
    with health.connect(sandbox, port, dbname="app") as conn:
        conn.execute("CREATE TABLE shm_probe (v vector(3)) WITH (parallel_workers = 2)")
        conn.execute("INSERT INTO shm_probe SELECT ARRAY[random(), random(), random()]::vector(3) "
                     "FROM generate_series(1, 2000)")
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        conn.execute("SET LOCAL max_parallel_maintenance_workers = 2")
        conn.execute("CREATE INDEX ON shm_probe USING hnsw (v vector_l2_ops)")  # fails with "No space left" on 64 MB
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'shm_probe'").fetchone()[0] == 1
        conn.rollback()


def test_a_task_is_reached_through_the_engine_of_its_node(sandbox, sandbox_params):
    """target.swarm.node_engines: exec in a task goes through the engine named for the node that runs it
    (here the sandbox's one engine, by its socket); a wrong entry fails there, so the entry is what is used."""
    spec = sandbox_params.target.swarm
    manager = swarm.for_target(spec)
    service = manager.services.get(f"{sandbox.stack_name('edge')}_pgbouncer")
    node = manager.info()["Name"]  # the node's hostname, as Swarm lists it
    own = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    code, out = swarm.exec_in(spec.model_copy(update={"node_engines": {node: own}}), service, ["hostname"])
    assert code == 0 and out.strip()
    nowhere = spec.model_copy(update={"node_engines": {node: "unix:///run/runbook-test-no-engine.sock"}})
    with pytest.raises(docker.errors.DockerException):
        swarm.exec_in(nowhere, service, ["hostname"])
