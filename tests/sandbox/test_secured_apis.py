"""The runbooks' HTTP client against secured APIs (issue 12): a real Prometheus behind its web config (TLS and
basic auth) and a real etcd asking for client certificates, both from the sandbox image. Each refuses the
runbooks without the parameters' access (401, or a failed TLS handshake) and answers with it; no error carries
the password."""

from __future__ import annotations

import base64
import copy
import os
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
import yaml

from runbook_lib.clients import etcd, http, prometheus
from runbook_lib.config.params import Params, load_params
from runbook_lib.readiness import security
from tests.campaign import wait_until
from tests.conftest import free_port
from tests.unit.test_params import BASE

pytestmark = pytest.mark.sandbox
PASSWORD_VAR = "RUNBOOK_TEST_PROMETHEUS_PASSWORD"


@contextmanager
def _serving(sandbox, folder: Path, url: str, *command: str) -> Iterator[str]:  # noqa: ANN001
    """A container of the sandbox image running `command` (host network, `folder` at /t), yielding `url` once
    its port accepts connections; removed afterwards."""
    name = f"runbook-secured-{secrets.token_hex(4)}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", "host", "-v", f"{folder}:/t:ro",
                    "--entrypoint", command[0], sandbox.spec.image_tag(), *command[1:]],
                   check=True, capture_output=True, timeout=120, env=sandbox.docker_env())
    try:
        port = int(url.rsplit(":", 1)[1])
        wait_until(f"{url} to accept connections", lambda: socket.create_connection(("127.0.0.1", port), 2).close()
                   is None, 90)
        yield url
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, env=sandbox.docker_env())


def _tls(sandbox, folder: Path) -> None:  # noqa: ANN001
    """The sandbox CA's server certificate (127.0.0.1), one for etcd (whose gateway also presents it as a
    client), and a client certificate for the runbooks, all signed by the sandbox's CA."""
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(sandbox.tls_dir / name, folder / name)
    _sign(sandbox, folder, "client", "extendedKeyUsage=clientAuth\n")
    _sign(sandbox, folder, "etcd", "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n")
    for key in folder.glob("*.key"):
        key.chmod(0o644)  # read by the server inside its container (a throwaway key of a test)


def _sign(sandbox, folder: Path, name: str, extensions: str) -> None:  # noqa: ANN001
    (folder / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + extensions)
    for args in (["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=runbook {name}"],
                 ["x509", "-req", "-in", f"{name}.csr", "-CA", str(sandbox.tls_dir / "ca.crt"), "-CAkey",
                  str(sandbox.tls_dir / "ca.key"), "-CAcreateserial", "-CAserial", f"{name}.srl",
                  "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext"]):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def _params(tmp_path: Path, section: str, spec: dict) -> Params:
    data = copy.deepcopy(BASE)
    data["target"][section] = spec
    path = tmp_path / f"{section}-{secrets.token_hex(3)}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_params(path)


def _web_prometheus(sandbox, folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: ANN001
    """A web config (TLS with the sandbox CA's certificate, bcrypt basic auth) and a config in `folder`; the URL
    a Prometheus started with _prometheus_command will answer on."""
    _tls(sandbox, folder)
    password = secrets.token_urlsafe(18)
    monkeypatch.setenv(PASSWORD_VAR, password)
    (folder / "web.yml").write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": "/t/server.crt", "key_file": "/t/server.key"},
        "basic_auth_users": {"runbook": bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=8)).decode()}}))
    (folder / "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
    return f"https://127.0.0.1:{free_port()}"


def _prometheus_command(url: str) -> list[str]:
    return ["prometheus", "--config.file=/t/prometheus.yml", "--web.config.file=/t/web.yml",
            f"--web.listen-address=127.0.0.1:{url.rsplit(':', 1)[1]}", "--storage.tsdb.path=/tmp/prometheus"]


@pytest.fixture
def secured_prometheus(sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # noqa: ANN001
    folder = tmp_path / "prometheus"
    folder.mkdir()
    url = _web_prometheus(sandbox, folder, monkeypatch)
    with _serving(sandbox, folder, url, *_prometheus_command(url)):
        yield url


def test_prometheus_refuses_the_runbooks_without_credentials_and_answers_with_them(
        secured_prometheus: str, tmp_path: Path) -> None:
    url, password = secured_prometheus, os.environ[PASSWORD_VAR]
    ca = str(tmp_path / "prometheus" / "ca.crt")
    _params(tmp_path, "prometheus", {"url": url, "access": {"ca_file": ca, "username": "runbook",
                                                            "password": f"env:{PASSWORD_VAR}"}})
    assert prometheus.scalar(url, "vector(7)") == 7.0  # TLS verified against the CA, basic auth accepted

    _params(tmp_path, "prometheus", {"url": url, "access": {"ca_file": ca}})  # the CA, no credentials
    with pytest.raises(http.HttpError, match="HTTP 401: the API refuses these credentials; set "
                                             "target.prometheus.access") as refused:
        prometheus.scalar(url, "vector(7)")
    _params(tmp_path, "prometheus", {"url": url})  # not even the CA: the handshake fails, nothing is sent
    with pytest.raises(http.HttpError, match="TLS failed .*target.prometheus.access.ca_file") as untrusted:
        prometheus.scalar(url, "vector(7)")
    assert password not in str(refused.value) + str(untrusted.value)


def _etcd(sandbox, folder: Path, *protection: str):  # noqa: ANN001
    """A one-member etcd over TLS from the sandbox image; `protection` adds its flags (client certificates)."""
    client, peer = free_port(), free_port()
    url = f"https://127.0.0.1:{client}"
    return _serving(
        sandbox, folder, url, "etcd", "--name", "t", "--data-dir", "/tmp/etcd", "--listen-client-urls", url,
        "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}", "--initial-cluster", f"t=http://127.0.0.1:{peer}",
        "--cert-file", "/t/etcd.crt", "--key-file", "/t/etcd.key", *protection)


@pytest.fixture
def secured_etcd(sandbox, tmp_path: Path) -> Iterator[str]:  # noqa: ANN001
    folder = tmp_path / "etcd"
    folder.mkdir()
    _tls(sandbox, folder)
    with _etcd(sandbox, folder, "--client-cert-auth", "--trusted-ca-file", "/t/ca.crt") as url:
        yield url


def test_etcd_refuses_the_runbooks_without_a_client_certificate_and_answers_with_one(
        secured_etcd: str, tmp_path: Path) -> None:
    folder = tmp_path / "etcd"
    params = _params(tmp_path, "etcd", {"endpoints": [secured_etcd], "access": {
        "ca_file": str(folder / "ca.crt"), "cert_file": str(folder / "client.crt"), "key_file": str(folder / "client.key")}})
    assert params.target.etcd is not None
    members = etcd.member_list(params.target.etcd)["members"]
    assert [m["name"] for m in members] == ["t"]
    params = _params(tmp_path, "etcd", {"endpoints": [secured_etcd], "access": {"ca_file": str(folder / "ca.crt")}})
    assert params.target.etcd is not None
    with pytest.raises(http.HttpError, match="no endpoint answered etcd member/list: POST https://127.0.0.1:[0-9]+"):
        etcd.member_list(params.target.etcd)


def test_readiness_names_an_etcd_that_takes_strangers(sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    """SEC-01's etcd probe: the sandbox's etcd (client certificates, auth on) passes; one over TLS without
    --client-cert-auth and without auth is named for both."""
    for endpoint in sandbox.params.target.etcd.endpoints:
        assert security.etcd_open(endpoint) == ""
    folder = tmp_path / "etcd"
    folder.mkdir()
    _tls(sandbox, folder)
    with _etcd(sandbox, folder) as url:
        params = _params(tmp_path, "etcd", {"endpoints": [url], "access": {"ca_file": str(folder / "ca.crt")}})
        wait_until("the open etcd to answer", lambda: etcd.member_list(params.target.etcd), 60)
        assert security.etcd_open(url) == "answers without a client certificate; auth off"


def test_readiness_names_a_prometheus_whose_admin_api_is_on(sandbox, tmp_path: Path,  # noqa: ANN001
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """SEC-01's Prometheus probe: the sandbox's (no admin API) passes; one started with --web.enable-admin-api
    behind the same web config is named."""
    assert security.prometheus_admin_api(sandbox.params.target.prometheus.url) == ""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    url = _web_prometheus(sandbox, folder, monkeypatch)
    with _serving(sandbox, folder, url, *_prometheus_command(url), "--web.enable-admin-api"):
        _params(tmp_path, "prometheus", {"url": url, "access": {
            "ca_file": str(folder / "ca.crt"), "username": "runbook", "password": f"env:{PASSWORD_VAR}"}})
        wait_until("the Prometheus to be ready", lambda: http.status(f"{url}/-/ready") == 200, 90)
        assert security.prometheus_admin_api(url) == "admin API on (--web.enable-admin-api)"


REFUSED = re.compile(r"HTTP 401|HTTP 403|TLS failed|SSLError|Connection aborted|reset by peer")


def test_every_api_of_the_sandbox_refuses_a_stranger_and_answers_the_runbooks(sandbox) -> None:  # noqa: ANN001
    """The sandbox's own control plane, secured like production's: each API, asked without the parameters'
    access (no credentials, no client certificate), is refused (401 or a failed handshake); asked with it,
    answers. The calls change nothing: reads, and a failover without a candidate (Patroni answers 400 "only to a
    specific candidate" once past its credential check)."""
    t = sandbox.params.target
    leader_key = base64.b64encode(f"/service/{t.patroni.scope}/leader".encode()).decode()
    calls = {  # API -> method, URL, body, the status that shows the request got past the API's protection
        "patroni": ("POST", f"{t.patroni.members[0].api_url}/failover", {"candidate": ""}, 400),
        "etcd": ("POST", f"{t.etcd.endpoints[0]}/v3/kv/range", {"key": leader_key}, 200),
        "prometheus": ("GET", f"{t.prometheus.url}/api/v1/query?query=vector(1)", None, 200),
        "alertmanager": ("GET", f"{t.alertmanager.url}/api/v2/status", None, 200),
        "pushgateway": ("GET", f"{t.pushgateway.url}/api/v1/status", None, 200),
        "alert webhook": ("GET", t.alertmanager.webhook_url, None, 200),
    }
    for api, (method, url, body, answered) in calls.items():
        assert url.startswith("https://"), api
        answer = http.call(method, url, json_body=body, expect_json=False, ok_codes=tuple(range(200, 600)))
        assert answer.status_code == answered, (api, answer.status_code, answer.text[:200])
        with pytest.raises(http.HttpError) as refused:
            http.call(method, url, json_body=body, expect_json=False, anonymous=True)
        assert REFUSED.search(str(refused.value)), (api, str(refused.value))
    leader = http.call("POST", f"{t.etcd.endpoints[0]}/v3/kv/range", json_body={"key": leader_key})
    assert leader.get("kvs"), "the runbooks' etcd user cannot read Patroni's leader key"
