"""No secret in any service spec of the sandbox; TLS material distributed as secrets."""

from __future__ import annotations

import json
import re

import pytest

from runbook_lib.sandbox import credentials, docker_cli, stacks
from runbook_lib.sandbox.context import STACKS

pytestmark = pytest.mark.sandbox
SECRETISH = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|KEY)", re.I)


def _specs(sandbox):
    ids = []
    for s in STACKS:
        ids += docker_cli.lines("service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={sandbox.stack_name(s)}")
    return docker_cli.inspect("service", *ids)


def test_no_service_spec_carries_a_secret(sandbox):
    specs = _specs(sandbox)
    assert len(specs) >= 18
    values = [credentials.read(sandbox, n) for n in credentials.NAMES]
    for svc in specs:
        cs = svc["Spec"]["TaskTemplate"]["ContainerSpec"]
        dump = json.dumps(svc["Spec"])
        for v in values:
            assert v not in dump, f"a secret value appears in the spec of {svc['Spec']['Name']}"
        for env in cs.get("Env") or []:
            name, _, value = env.partition("=")
            if SECRETISH.search(name):
                assert value.startswith("/run/secrets/"), f"{svc['Spec']['Name']}: {name} is a literal"


def test_database_services_get_tls_and_passwords_as_docker_secrets(sandbox):
    by_name = {s["Spec"]["Name"]: s for s in _specs(sandbox)}
    for name in ["legacy_postgres", "dpg_pg1", "dpg_pg2", "dpg_pg3", "edge_pgbouncer"]:
        secrets = {x["SecretName"] for x in by_name[sandbox.spec.stack_prefix + name]["Spec"]["TaskTemplate"]
                   ["ContainerSpec"].get("Secrets", [])}
        assert any("tls_server_key" in s for s in secrets), name
        assert any("tls_ca_crt" in s for s in secrets), name


def test_data_directories_are_named_volumes(sandbox):
    by_name = {s["Spec"]["Name"]: s for s in _specs(sandbox)}
    for name in ["legacy_postgres", "dpg_pg1", "dpg_pg2", "dpg_pg3"]:
        mounts = by_name[name]["Spec"]["TaskTemplate"]["ContainerSpec"].get("Mounts", [])
        assert any(m["Type"] == "volume" and m["Target"] == "/var/lib/postgresql/data" for m in mounts), name


def test_credential_files_are_private(sandbox):
    for path in list(sandbox.secrets_dir.iterdir()) + [sandbox.tls_dir / "ca.key", sandbox.tls_dir / "server.key"]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_server_certificate_is_signed_by_the_sandbox_ca(sandbox):
    import subprocess
    tls = sandbox.tls_dir
    out = subprocess.run(["openssl", "verify", "-CAfile", str(tls / "ca.crt"), str(tls / "server.crt")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    subj = subprocess.run(["openssl", "x509", "-noout", "-subject", "-issuer", "-in", str(tls / "server.crt")],
                          capture_output=True, text=True).stdout
    assert "CA" in subj.split("issuer")[1] and "OU = server" in subj.split("issuer")[0]
    names = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tls / "server.crt")],
                           capture_output=True, text=True, check=True).stdout
    assert "DNS:localhost" in names and "IP Address:127.0.0.1" in names
    assert stacks.secret_names(sandbox)["tls_ca_crt"][0].startswith(sandbox.spec.stack_prefix + "sbx_tls_ca_crt_")
