"""Parameters schema: every class of bad input is named by its key path; overrides coerce by type."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from runbook_lib.config.params import ParamsError, load_params

BASE = {
    "campaign": "c1",
    "target": {"name": "t1", "environment": "sandbox", "databases": {
        "main": {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": "env:PGPW"}}},
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def errors(tmp_path: Path, data: dict, overrides: list[str] | None = None) -> str:
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, data), overrides)
    return str(info.value)


def test_valid_file_loads_with_policy_defaults(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, BASE))
    assert params.target.databases["main"].port == 5432
    assert params.policy.readiness_gate.min_score == 0.90
    assert params.policy.verification_watch.duration == 1800
    assert params.policy.rollback_completion_max == 1800
    assert len(params.policy.signoffs_required_before_migration) == 5


def test_unknown_key_named(tmp_path: Path) -> None:
    data = {**BASE, "target": {**BASE["target"], "databse": {}}}
    assert "target.databse: unknown key" in errors(tmp_path, data)


def test_wrong_type_named(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["target"]["databases"]["main"]["port"] = "fivefour"
    message = errors(tmp_path, data)
    assert "target.databases.main.port" in message and "integer" in message


def test_missing_required_named(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    del data["target"]["databases"]["main"]["user"]
    assert "target.databases.main.user: required field is missing" in errors(tmp_path, data)


def test_literal_secret_rejected_without_echoing_it(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["target"]["databases"]["main"]["password"] = "hunter2-literal"
    message = errors(tmp_path, data)
    assert "target.databases.main.password" in message and "secret reference" in message
    assert "hunter2-literal" not in message


def test_literal_secret_in_unexpected_key_and_dsn_rejected(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["evidence"] = {"api_token": "abcd1234"}
    assert "evidence.api_token" in errors(tmp_path, data)
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["target"]["etcd"] = {"endpoints": ["http://root:pw1234@127.0.0.1:2379"]}
    assert "target.etcd.endpoints" in errors(tmp_path, data)


def test_overrides_coerce_by_schema_type(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    params = load_params(path, ["target.databases.main.port=6543", "run.cell_timeout=30",
                                "policy.readiness_gate.min_score=0.95", "target.databases.main.host=10"])
    assert params.target.databases["main"].port == 6543
    assert params.run.cell_timeout == 30
    assert params.policy.readiness_gate.min_score == 0.95
    assert params.target.databases["main"].host == "10"  # a str field keeps the text, nothing guessed
    params = load_params(path, ["target.swarm={stacks: [a, b]}"])
    assert params.target.swarm.stacks == ["a", "b"]
    params = load_params(path, ["policy.verification_watch.latency_p95_max=250ms"])
    assert params.policy.verification_watch.latency_p95_max == 0.25


def test_override_errors_name_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    with pytest.raises(ParamsError, match=r"target\.nosuch: unknown key"):
        load_params(path, ["target.nosuch=1"])
    with pytest.raises(ParamsError, match=r"run\.cell_timeout"):
        load_params(path, ["run.cell_timeout=soon"])
    with pytest.raises(ParamsError, match="expected key.path=value"):
        load_params(path, ["justakey"])


def test_tightening_allowed_loosening_needs_recorded_reason(tmp_path: Path) -> None:
    tight = {**BASE, "policy": {"verification_watch": {"error_rate_max": 0.0005},
                                "rollback_triggers": [{"metric": "error_rate", "threshold": 0.01}]}}
    params = load_params(write(tmp_path, tight))
    assert params.policy.rollback_triggers[0].threshold == 0.01
    assert all(not c.looser for c in params.policy_changes)
    loose = {**BASE, "policy": {"verification_watch": {"duration": "2m"}}}
    message = errors(tmp_path, loose)
    assert "policy.verification_watch.duration" in message and "looser" in message
    loose["policy_loosening"] = [{"key": "verification_watch.duration", "reason": "rehearsal on the sandbox",
                                  "approved_by": "DB team lead"}]
    params = load_params(write(tmp_path, loose))
    assert [c.key for c in params.policy_changes if c.looser] == ["verification_watch.duration"]


@pytest.mark.parametrize("override, key", [
    ("policy.readiness_gate.min_score=0.5", "readiness_gate.min_score"),
    ("policy.rollback_completion_max=1h", "rollback_completion_max"),
    ("policy.success_criteria.dr_procedures_tested=false", "success_criteria.dr_procedures_tested"),
    ("policy.signoffs_required_before_migration=[Database Team Lead]", "signoffs_required_before_migration"),
])
def test_each_kind_of_loosening_detected(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        load_params(write(tmp_path, BASE), [override])


def test_stale_loosening_record_rejected(tmp_path: Path) -> None:
    data = {**BASE, "policy_loosening": [{"key": "readiness_gate.min_score", "reason": "no longer loosened",
                                          "approved_by": "x y"}]}
    assert "policy_loosening[0].key" in errors(tmp_path, data)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("target: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_shipped_policy_matches_shared_spec() -> None:
    shared = Path(__file__).resolve().parents[3] / "shared" / "spec" / "rollout-policy.yaml"
    if not shared.exists():
        pytest.skip("no shared/spec beside this checkout")
    shipped = Path(__file__).resolve().parents[2] / "runbook_lib" / "data" / "rollout-policy.yaml"
    assert yaml.safe_load(shipped.read_text()) == yaml.safe_load(shared.read_text())


def test_repository_parameter_files_validate() -> None:
    root = Path(__file__).resolve().parents[2] / "parameters"
    files = sorted(root.glob("*.yaml"))
    assert files, "no parameters files in parameters/"
    for path in files:
        load_params(path)


def test_a_variant_extends_a_parameters_file_and_states_only_what_differs() -> None:
    root = Path(__file__).resolve().parents[2] / "parameters"
    base, ledger = load_params(root / "sandbox.yaml"), load_params(root / "sandbox-ledger.yaml")
    assert ledger.sandbox is not None and ledger.sandbox.profile == "ledger"
    assert ledger.target.workload is not None and ledger.target.workload.mix is None  # replaced, not merged
    assert ledger.checks.smoke == [] and ledger.migration is not None and ledger.migration.large_objects == "copy"
    assert ledger.target.databases == base.target.databases and ledger.campaign == "sandbox-ledger"
    # relative paths of the base resolve from the same folder
    assert ledger.endpoints.db("legacy").sslrootcert == base.endpoints.db("legacy").sslrootcert


@pytest.mark.parametrize(("extends", "error"), [
    ("../sandbox.yaml", "a parameters file in the same folder"),
    ("/etc/hostname", "a parameters file in the same folder"),
    ("self.yaml", "a circle"),
    ("missing.yaml", "parameters file not found"),
])
def test_extends_is_confined_and_bounded(tmp_path: Path, extends: str, error: str) -> None:
    (tmp_path / "self.yaml").write_text(f"extends: {extends}\ncampaign: x\n")
    with pytest.raises(ParamsError, match=error):
        load_params(tmp_path / "self.yaml")


def test_extends_refuses_an_empty_name_and_a_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for value in ('""', "sub"):
        (tmp_path / "p.yaml").write_text(f"extends: {value}\n")
        with pytest.raises(ParamsError, match="a parameters file in the same folder"):
            load_params(tmp_path / "p.yaml")


def test_a_secret_file_that_is_not_text_is_named_without_its_bytes(tmp_path: Path) -> None:
    from runbook_lib.config.secrets import SecretError, SecretRef

    (tmp_path / "s").write_bytes(b"\xff\xfe\xfa secret-bytes")
    with pytest.raises(SecretError, match="is not UTF-8 text") as err:
        SecretRef(f"file:{tmp_path / 's'}").resolve()
    assert "secret-bytes" not in str(err.value) and "\\xff" not in str(err.value)


def test_a_subscription_verifies_its_publisher_with_the_servers_ca() -> None:
    """The subscriber's server checks the publisher with the CA path on the servers; without one it can only
    ask for encryption (require), never with the operator's path."""
    from runbook_lib.config.endpoints import PgSpec
    from runbook_lib.ops.migration import subscription_conninfo

    publisher = PgSpec(name="legacy", host="10.0.0.5", port=5432, dbname="app", user="rollout",
                       sslmode="verify-full", sslrootcert=Path("/home/op/ca.crt"))
    assert "sslmode=require" in subscription_conninfo(publisher)
    assert "/home/op/ca.crt" not in subscription_conninfo(publisher)
    verified = subscription_conninfo(dataclasses.replace(publisher, server_sslrootcert="/etc/ssl/db-ca.crt"))
    assert "sslmode=verify-full" in verified and "sslrootcert=/etc/ssl/db-ca.crt" in verified
