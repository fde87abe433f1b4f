"""Bad input and faults, checked before anything is deployed (no running sandbox needed)."""

from __future__ import annotations

import os
import socket

import pytest

from runbook_lib.sandbox import dockerd, lifecycle, ports
from runbook_lib.sandbox.context import SandboxError, load


@pytest.fixture
def sb():
    return load(None)


def test_port_in_use_is_reported_with_port_and_owner(sb):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        sb.spec.ports.alert_webhook = port
        found = [c for c in ports.conflicts(sb) if c.port == port]
        assert found, "the occupied port was not reported"
        assert found[0].name == "alert_webhook" and found[0].pid == os.getpid()
        with pytest.raises(SandboxError) as exc:
            lifecycle.check_ports(sb)
        msg = str(exc.value)
        assert str(port) in msg and f"pid {os.getpid()}" in msg and "Nothing was deployed" in msg


def test_duplicate_ports_in_the_spec_are_reported(sb):
    sb.spec.ports.alertmanager = sb.spec.ports.prometheus
    assert any("also configured as prometheus" in c.describe() for c in ports.conflicts(sb))


def test_unreachable_docker_host_is_a_clear_error(sb, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxError, match="no Docker engine answers at DOCKER_HOST=unix:///nonexistent"):
        dockerd.ensure_engine(sb)


def test_no_engine_and_not_root_says_what_to_do(sb, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock.absent")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(dockerd, "server_version", lambda: None)
    monkeypatch.delenv("DOCKER_HOST")
    with pytest.raises(SandboxError) as exc:
        dockerd.ensure_engine(sb)
    assert "not root" in str(exc.value) and "DOCKER_HOST" in str(exc.value)


def test_patroni_timings_are_validated():
    from pydantic import ValidationError

    from runbook_lib.config.sandbox_spec import PatroniTimings
    with pytest.raises(ValidationError, match="loop_wait"):
        PatroniTimings(ttl=10, loop_wait=5, retry_timeout=5)
