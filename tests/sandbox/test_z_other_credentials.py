"""Runs after the failover test: a new clone (a new state directory, new passwords) meets the data
volumes of an older one, and every database task restarts, as after a reboot. `up` must adopt them."""

from __future__ import annotations

import secrets

import psycopg
import pytest

from runbook_lib.sandbox import docker_cli, health, lifecycle, resync, stacks
from tests import sandboxes

pytestmark = pytest.mark.sandbox


def test_up_adopts_data_directories_initialised_with_other_passwords(sandbox):
    sandboxes.wait_cluster_healthy(sandbox)
    other = {role: secrets.token_urlsafe(18) for role in resync.ROLES}
    leader = health.leader_name(sandbox)
    dpg, legacy = sandbox.stack_name("dpg"), f"{sandbox.stack_name('legacy')}_postgres"
    resync.set_passwords(f"{dpg}_{leader}", stacks.member_port(sandbox, leader), other)
    resync.set_passwords(legacy, sandbox.spec.ports.legacy, other)
    for port in (sandbox.spec.ports.haproxy_rw, sandbox.spec.ports.legacy):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            health.connect(sandbox, port).close()

    services = [legacy] + [f"{dpg}_{m['name']}" for m in stacks.members(sandbox)]
    containers = [resync.container_of(s) for s in services]
    docker_cli.run("stop", *containers, timeout=120)

    lifecycle.up(sandbox)

    sandboxes.wait_cluster_healthy(sandbox)
    for port in (sandbox.spec.ports.haproxy_rw, sandbox.spec.ports.legacy):
        with health.connect(sandbox, port) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
