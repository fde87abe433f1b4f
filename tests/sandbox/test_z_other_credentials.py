"""Runs after the failover test: a new clone (a new state directory, new passwords) meets the data
volumes of an older one, PostgreSQL's and etcd's, and every database task restarts, as after a reboot. `up` must
adopt them."""

from __future__ import annotations

import secrets

import psycopg
import pytest

from runbook_lib.clients import etcd
from runbook_lib.sandbox import credentials, docker_cli, etcd_auth, health, lifecycle, resync, stacks
from tests import sandboxes

pytestmark = pytest.mark.sandbox


def test_up_adopts_data_directories_initialised_with_other_passwords(sandbox):
    sandboxes.wait_cluster_healthy(sandbox)
    other = {role: secrets.token_urlsafe(18) for role in resync.ROLES}
    leader = health.leader_name(sandbox)
    dpg, legacy = sandbox.stack_name("dpg"), f"{sandbox.stack_name('legacy')}_postgres"
    spec = sandbox.params.target.etcd
    url = spec.endpoints[0].rstrip("/")

    def etcd_logins() -> dict[str, bool]:  # a fresh login each: a token taken earlier may outlive a new password
        return {user: etcd_auth.logs_in(url, user, credentials.read(sandbox, f"etcd_{user}_password"))
                for user in etcd_auth.USERS}

    try:  # whatever fails below, `up` runs: the tests after this one need the sandbox as its state has it
        resync.set_passwords(f"{dpg}_{leader}", stacks.member_port(sandbox, leader), other)
        resync.set_passwords(legacy, sandbox.spec.ports.legacy, other)
        for port in (sandbox.spec.ports.haproxy_rw, sandbox.spec.ports.legacy):
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                health.connect(sandbox, port).close()
        etcd1, etcd1_engine = docker_cli.task_container(f"{dpg}_etcd1")
        for user in etcd_auth.USERS:  # etcd's users as another clone made them (its state has etcd's auth on)
            docker_cli.run("exec", "-i", etcd1, "sh", "-c",
                           f"{etcd_auth.etcdctl(int(url.rsplit(':', 1)[1]))} user passwd {user} "
                           "--interactive=false >/dev/null", input=secrets.token_urlsafe(18), host=etcd1_engine)
        assert etcd_logins() == {user: False for user in etcd_auth.USERS}

        services = [legacy] + [f"{dpg}_{m['name']}" for m in stacks.members(sandbox)]
        by_engine: dict[str | None, list[str]] = {}
        for container, engine in (docker_cli.task_container(s) for s in services):
            by_engine.setdefault(engine, []).append(container)
        for engine, containers in by_engine.items():  # each engine stops its own at once
            docker_cli.run("stop", *containers, timeout=120, host=engine)
    finally:
        lifecycle.up(sandbox)

    sandboxes.wait_cluster_healthy(sandbox)
    for port in (sandbox.spec.ports.haproxy_rw, sandbox.spec.ports.legacy):
        with health.connect(sandbox, port) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert etcd_logins() == {user: True for user in etcd_auth.USERS}
    assert len(etcd.member_list(spec)["members"]) == 3
