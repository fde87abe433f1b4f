"""Secrets never show: repr, str, f-strings, DataFrames, JSON and logs all mask them."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pandas as pd
import pytest

from runbook_lib.config import redact
from runbook_lib.config.params import load_params
from runbook_lib.config.secrets import Secret, SecretError, SecretRef

VALUE = "s3cr3t-Value-42"


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> Secret:
    monkeypatch.setenv("RB_TEST_SECRET", VALUE)
    return SecretRef.parse("env:RB_TEST_SECRET").resolve()


def test_secret_does_not_print(secret: Secret) -> None:
    assert secret.reveal() == VALUE
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret):  # noqa: UP031 - the %-form is what is tested
        assert VALUE not in shown and "env:RB_TEST_SECRET" in shown
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_dataframe_and_json_mask(secret: Secret) -> None:
    frame = pd.DataFrame([{"name": "db", "password": secret}])
    assert VALUE not in frame.to_string() and VALUE not in frame.to_html()
    assert VALUE not in json.dumps({"p": secret}, default=str)
    assert VALUE not in json.dumps(redact.obj({"text": f"value={VALUE}"}))


def test_redaction_of_text_and_dsns(secret: Secret) -> None:
    assert redact.text(f"got {VALUE} here") == "got *** here"
    assert redact.text("postgresql://app:pa55word@db:5432/app") == "postgresql://app:***@db:5432/app"
    assert redact.text("host=db password=pa55word user=x") == "host=db password=*** user=x"


def test_log_lines_masked(secret: Secret, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("runbook.test")
    logger.addFilter(redact.RedactingFilter())
    with caplog.at_level(logging.INFO, logger="runbook.test"):
        logger.info("connecting with %s", VALUE)
    assert VALUE not in caplog.text and "***" in caplog.text


def test_references_resolve_lazily_with_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    assert SecretRef.parse(f"file:{tmp_path / 'pw'}").resolve().reveal() == "from-a-file"
    monkeypatch.setenv("RUNBOOK_DOCKER_SECRETS_DIR", str(tmp_path))
    assert SecretRef.parse("docker-secret:pw").resolve().reveal() == "from-a-file"
    with pytest.raises(SecretError, match="env:NOPE_NOT_SET: environment variable NOPE_NOT_SET is not set"):
        SecretRef.parse("env:NOPE_NOT_SET").resolve()
    with pytest.raises(SecretError, match="cannot read"):
        SecretRef.parse(f"file:{tmp_path / 'missing'}").resolve()


def test_relative_file_reference_anchored_at_params_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pw").write_text("anchored")
    (tmp_path / "p.yaml").write_text(
        "target:\n  name: t\n  environment: sandbox\n  databases:\n"
        "    m: {host: h, user: u, password: 'file:sub/pw'}\n")
    params = load_params(tmp_path / "p.yaml")
    assert params.resolve(params.target.databases["m"].password).reveal() == "anchored"
    assert params.redacted()["target"]["databases"]["m"]["password"] == "file:sub/pw"
    assert "anchored" not in json.dumps(params.redacted())
