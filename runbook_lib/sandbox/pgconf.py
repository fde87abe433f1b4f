"""PostgreSQL settings shared by legacy and the Patroni members, and their pg_hba lines.

One list, so legacy and the new cluster are configured alike and the readiness checks (TLS, scram,
connection logging, slow-query logging, archiving, logical decoding) pass on both.
"""

from __future__ import annotations

from runbook_lib.config.sandbox_spec import SandboxSpec

ARCHIVE_DIR = "/var/lib/pgarchive"


def settings(spec: SandboxSpec) -> dict[str, str | int | float]:
    return {
        "max_connections": spec.max_connections,
        "shared_buffers": spec.shared_buffers,
        "effective_cache_size": "512MB",
        "password_encryption": "scram-sha-256",
        "ssl": "on",
        "ssl_cert_file": "/run/sandbox/server.crt",
        "ssl_key_file": "/run/sandbox/server.key",
        "ssl_ca_file": "/run/sandbox/ca.crt",
        "ssl_min_protocol_version": "TLSv1.2",
        "wal_level": "logical",
        "hot_standby": "on",
        # PostgreSQL 17 failover slots: standbys keep a copy of every logical slot created with
        # failover = true (the way back's reverse replication), so the slot outlives a failover
        "hot_standby_feedback": "on",
        "sync_replication_slots": "on",
        "max_wal_senders": 10,
        "max_replication_slots": 10,
        "wal_keep_size": "256MB",
        "max_slot_wal_keep_size": "2GB",
        "wal_log_hints": "on",
        "archive_mode": "on",
        # Never overwrite. An identical file already there (a segment or history file a former leader
        # archived into the shared archive) is success. A different one is a former leader's copy of an
        # old timeline's segment (left .ready by pg_rewind or a kill): only one leader writes each
        # timeline, so the copies agree up to the timeline switch, which is all recovery reads. It is
        # kept beside the first as %f.conflict.PID rather than refused, or the archiver would retry
        # it forever and archive nothing newer.
        "archive_command": (f"if test -f {ARCHIVE_DIR}/%f; then cmp -s %p {ARCHIVE_DIR}/%f || "
                            f"{{ cp %p {ARCHIVE_DIR}/%f.conflict.$$.tmp && "
                            f"mv {ARCHIVE_DIR}/%f.conflict.$$.tmp {ARCHIVE_DIR}/%f.conflict.$$; }}; "
                            f"else cp %p {ARCHIVE_DIR}/%f.tmp && mv {ARCHIVE_DIR}/%f.tmp {ARCHIVE_DIR}/%f; fi"),
        "archive_timeout": 60,
        "shared_preload_libraries": "pg_stat_statements",
        "log_connections": "on",
        "log_disconnections": "on",
        "log_min_duration_statement": 500,
        "log_parameter_max_length": 0,
        "log_parameter_max_length_on_error": 0,
        "log_line_prefix": "%m [%p] %q%u@%d ",
        "autovacuum": "on",
        "autovacuum_vacuum_scale_factor": 0.05,
        "autovacuum_analyze_scale_factor": 0.02,
        # small tables under a busy mix (the app, a load test) go stale within a minute: look often
        "autovacuum_naptime": "5s",
    }


def postgresql_conf(spec: SandboxSpec, port: int, listen: str = "127.0.0.1") -> str:
    """sandbox.conf for the legacy server (included from its postgresql.conf)."""
    lines = ["# Written by the sandbox at every start; ALTER SYSTEM (postgresql.auto.conf) still wins.",
             f"listen_addresses = '{listen}'", f"port = {port}", "unix_socket_directories = '/tmp'"]
    for key, value in settings(spec).items():
        lines.append(f"{key} = {value}" if isinstance(value, (int, float)) else f"{key} = '{value}'")
    return "\n".join(lines) + "\n"


def hba_lines(app_db: str, app_role: str, network: str | None = None) -> list[str]:
    """TLS + scram on every network line; the application role only over TLS (plain is refused).
    `network`: the nodes' network of a multi-node sandbox, allowed beside loopback."""
    lines = ["local all all peer"]
    for cidr in ["127.0.0.1/32", *([network] if network else [])]:
        lines += [
            f"hostssl replication replicator {cidr} scram-sha-256",
            # the standbys' slot-sync worker: an ordinary connection to primary_conninfo's dbname (postgres)
            f"hostssl postgres replicator {cidr} scram-sha-256",
            f"hostssl replication postgres {cidr} scram-sha-256",  # pg_basebackup for phase 1 backups
            f"hostssl all postgres {cidr} scram-sha-256",
            f"hostssl all monitor {cidr} scram-sha-256",
            f"hostssl {app_db} {app_role} {cidr} scram-sha-256",
        ]
    return lines
