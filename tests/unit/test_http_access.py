"""Each HTTP API's access (CA, client certificate, credentials): refused when unsafe or incomplete, registered per
origin when the parameters load, and a credential that does not resolve is named, never sent or shown."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from runbook_lib.clients import http
from runbook_lib.config import http_access
from runbook_lib.config.params import ParamsError, load_params
from tests.unit.test_params import BASE, errors, write


def with_patroni(url: str, **access: object) -> dict:
    data = copy.deepcopy(BASE)
    data["target"]["patroni"] = {"scope": "c", "members": [{"name": "m1", "api_url": url}], "access": access}
    return data


@pytest.mark.parametrize("access, message", [
    ({"username": "runbook", "password": "env:PATRONI_PW"}, "plain http: use https"),
    ({"cert_file": "client.crt", "key_file": "client.key"}, "plain http: use https"),
])
def test_credentials_over_plain_http_are_refused(tmp_path: Path, access: dict, message: str) -> None:
    text = errors(tmp_path, with_patroni("http://10.0.0.5:8008", **access))
    assert "target.patroni" in text and message in text and "http://10.0.0.5:8008" in text


@pytest.mark.parametrize("access, message", [
    ({"cert_file": "client.crt"}, "cert_file and key_file go together"),
    ({"username": "runbook"}, "username and password go together"),
    ({"password": "env:PATRONI_PW"}, "username and password go together"),
    ({"username": "runbook", "password": "hunter2"}, "secret reference"),
    ({"timeout": 0}, "target.patroni.access.timeout"),
])
def test_incomplete_or_literal_access_is_named(tmp_path: Path, access: dict, message: str) -> None:
    text = errors(tmp_path, with_patroni("https://10.0.0.5:8008", **access))
    assert message in text and "hunter2" not in text


def test_loading_registers_each_api_by_origin_with_paths_anchored(tmp_path: Path) -> None:
    data = with_patroni("https://Patroni.example:8008/", ca_file="tls/ca.crt", username="runbook",
                        password="env:PATRONI_PW")
    data["target"]["prometheus"] = {"url": "http://127.0.0.1:9090"}
    load_params(write(tmp_path, data))
    access = http_access.lookup("https://patroni.example:8008/cluster")
    assert access is not None and access.api == "target.patroni"
    assert access.ca_file == (tmp_path / "tls" / "ca.crt").resolve() and access.username == "runbook"
    prometheus = http_access.lookup("http://127.0.0.1:9090/api/v1/query")
    assert prometheus is not None and prometheus.api == "target.prometheus" and prometheus.password is None
    assert http_access.origin("https://h") == http_access.origin("https://h:443/x")


def test_a_credential_that_does_not_resolve_is_named_before_anything_is_sent(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNBOOK_TEST_NO_SUCH_VAR", raising=False)
    load_params(write(tmp_path, with_patroni("https://127.0.0.1:1", username="runbook",
                                             password="env:RUNBOOK_TEST_NO_SUCH_VAR")))
    with pytest.raises(http.HttpError, match=r"GET https://127\.0\.0\.1:1/cluster: .*RUNBOOK_TEST_NO_SUCH_VAR"):
        http.get("https://127.0.0.1:1/cluster")


def test_a_receiver_never_gets_the_api_credentials(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["target"]["alertmanager"] = {"url": "https://am.example:9093", "webhook_url": "https://receiver.example/hook",
                                      "access": {"username": "runbook", "password": "env:AM_PW"}}
    load_params(write(tmp_path, data))
    access = http_access.lookup("https://am.example:9093/api/v2/alerts")
    assert access is not None and access.username == "runbook"
    receiver = http_access.lookup("https://receiver.example/hook")
    assert receiver is None or receiver.password is None

    # the receiver's own login, given as webhook_access, is the one its URL gets
    data["target"]["alertmanager"]["webhook_access"] = {"username": "alerts", "password": "env:HOOK_PW"}
    load_params(write(tmp_path, data))
    receiver = http_access.lookup("https://receiver.example/hook")
    assert receiver is not None and receiver.username == "alerts" and receiver.api == "target.alertmanager.webhook"
    data["target"]["alertmanager"]["webhook_url"] = "http://receiver.example/hook"
    with pytest.raises(ParamsError, match="webhook_access carries credentials but http://receiver.example/hook"):
        load_params(write(tmp_path, data))


def test_an_unreadable_certificate_file_is_an_error_naming_the_access(tmp_path: Path) -> None:
    load_params(write(tmp_path, with_patroni("https://127.0.0.1:1", ca_file="no-such-ca.crt",
                                             cert_file="no-such.crt", key_file="no-such.key")))
    with pytest.raises(http.HttpError, match=r"target\.patroni\.access"):
        http.get("https://127.0.0.1:1/cluster")
