"""A signed, anchored campaign and every way of rewriting it that a hash chain alone lets through.

Three real runs (the drill runbook against a throwaway PostgreSQL) are sealed with an operator's key and
anchored in a git repository; each test tampers with a copy the way someone with write access to the
archive (but not to the key or the anchor) would, recomputing every hash it can, and verify must name the
file or run. The first test shows the unsigned chain accepting the same rewrites: the signatures and the
anchor are what catch them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from runbook_lib import cli
from runbook_lib.campaign import records, signoffs
from runbook_lib.config import signing
from runbook_lib.config.params import load_params
from runbook_lib.run import archive, runner
from tests.conftest import write_params
from tests.integration.conftest import DRILL
from tests.keys import team


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory, local_pg) -> dict:  # noqa: ANN001
    base = tmp_path_factory.mktemp("tamper")
    params_file = write_params(base / "params.yaml", local_pg)
    overrides = team(base, "alice", secret_dirs=(str(local_pg.password_file.parent),))
    drill = base / "drill"
    drill.mkdir()
    (drill / "go").touch()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRILL_DIR", str(drill))
        runs = [runner.run(str(DRILL), str(params_file), outputs_dir=base / "outputs", overrides=overrides,
                           echo=False) for _ in range(3)]
    assert all(r.exit_code == 0 for r in runs), [r.message for r in runs]
    params = load_params(params_file, overrides)
    campaign = base / "outputs" / "test"
    records.save(campaign, "readiness", {"ready": False, "blockers": 3}, runs[-1].run_id)
    archive.refresh(campaign, signing.signer_for(params))  # a record written outside a run, then re-sealed
    return {"campaign": campaign, "params": params, "params_file": params_file, "overrides": overrides,
            "runs": [r.run_id for r in runs], "base": base}


@pytest.fixture
def copy(sealed: dict, tmp_path: Path) -> Path:
    """The sealed campaign copied under the same name (its anchor file is found by name and first run)."""
    target = tmp_path / "copy" / sealed["campaign"].name
    shutil.copytree(sealed["campaign"], target)
    return target


def check(sealed: dict, campaign: Path, keyed: bool = True) -> list[str]:
    params = sealed["params"]
    if not keyed:
        return archive.verify(campaign)
    return archive.verify(campaign, signing.trusted_for(params), signing.anchor_for(params))


def chain(campaign: Path) -> list[dict]:
    return [json.loads(x) for x in (campaign / "chain.jsonl").read_text().splitlines()]


def write_chain(campaign: Path, entries: list[dict]) -> None:
    (campaign / "chain.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))


def rehash(campaign: Path, run_id: str, edit: Callable[[dict], None]) -> None:
    """Edit a manifest, then recompute its hash in the chain and the campaign seal: all a rewrite can do
    without the key."""
    path = campaign / run_id / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    entries = chain(campaign)
    for e in entries:
        if e["run_id"] == run_id:
            e["manifest_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    write_chain(campaign, entries)
    reseal_unsigned(campaign)


def reseal_unsigned(campaign: Path) -> None:
    archive.refresh(campaign, None)


def test_the_signed_campaign_verifies_and_says_what_it_checked(sealed: dict, copy: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert check(sealed, copy) == []
    entries = chain(copy)
    assert all(e.get("signature") and e.get("key_id") for e in entries)
    params = sealed["params"]
    code = cli.main(["archive", "verify", copy.name, "--outputs", str(copy.parent),
                     "--keys", str(signing.trusted_for(params).source), "--anchor", str(signing.anchor_for(params))])
    err = capsys.readouterr().err
    assert code == 0 and "signatures: checked against" in err and "anchor: checked against" in err, err


def test_editing_the_last_manifest_and_its_chain_line(sealed: dict, copy: Path) -> None:
    last = sealed["runs"][-1]
    rehash(copy, last, lambda m: m.update(status="succeeded", operator="someone else"))
    assert check(sealed, copy, keyed=False) == []  # the unkeyed chain accepts it
    problems = check(sealed, copy)
    assert any(f"entry {last} carries a signature no key" in p for p in problems), problems
    assert any(f"run {last}'s manifest hash differs from the one anchored" in p for p in problems), problems


def test_rewriting_a_notebook_and_recomputing_every_hash(sealed: dict, copy: Path) -> None:
    last = sealed["runs"][-1]
    notebook = copy / last / "drill.ipynb"
    notebook.write_text(notebook.read_text().replace("drill", "DRILL"))
    rehash(copy, last, lambda m: m["files"].update({"drill.ipynb": archive.sha256_file(notebook)}))
    assert check(sealed, copy, keyed=False) == []
    assert any(f"entry {last} carries a signature no key" in p for p in check(sealed, copy))


def test_removing_the_last_run_and_its_chain_line(sealed: dict, copy: Path) -> None:
    last = sealed["runs"][-1]
    shutil.rmtree(copy / last)
    write_chain(copy, chain(copy)[:-1])
    reseal_unsigned(copy)
    assert check(sealed, copy, keyed=False) == []
    problems = check(sealed, copy)
    assert any(f"run {last} is anchored" in p and "missing from the chain" in p for p in problems), problems


def test_removing_the_first_run_and_relinking(sealed: dict, copy: Path) -> None:
    first, second = sealed["runs"][:2]
    shutil.rmtree(copy / first)
    entries = chain(copy)[1:]
    entries[0]["prev"] = None
    write_chain(copy, entries)
    rehash(copy, second, lambda m: m.update(prev_manifest_sha256=None))
    entries = chain(copy)
    entries[1]["prev"] = entries[0]["manifest_sha256"]
    write_chain(copy, entries)
    rehash(copy, entries[1]["run_id"], lambda m: m.update(prev_manifest_sha256=entries[0]["manifest_sha256"]))
    assert check(sealed, copy, keyed=False) == []
    problems = check(sealed, copy)
    assert any(f"entry {second} carries a signature no key" in p for p in problems), problems
    assert any(f"run {second} is not anchored" in p for p in problems), problems


def test_removing_a_file_with_its_manifest_entry(sealed: dict, copy: Path) -> None:
    last = sealed["runs"][-1]
    (copy / last / "journal.jsonl").unlink()
    rehash(copy, last, lambda m: m["files"].pop("journal.jsonl"))
    assert check(sealed, copy, keyed=False) == []
    assert any(f"entry {last} carries a signature no key" in p for p in check(sealed, copy))


def test_a_run_folder_added_without_a_manifest(sealed: dict, copy: Path) -> None:
    fake = copy / "20260101T000000Z-phase2_migration-abcdef"
    fake.mkdir()
    (fake / "phase2_migration.ipynb").write_text("{}")
    problems = check(sealed, copy, keyed=False)
    assert any(str(fake) in p and "no run of this campaign" in p for p in problems), problems


@pytest.mark.parametrize("forge", ["record", "outbox", "index"])
def test_forged_campaign_files(sealed: dict, copy: Path, forge: str) -> None:
    if forge == "record":  # not-ready turned ready, its self-hash recomputed
        path = copy / "records" / "readiness.json"
        record = json.loads(path.read_text())
        record["data"] = {"ready": True, "blockers": 0}
        record["sha256"] = records.content_hash(record["data"])
        path.write_text(json.dumps(record))
        assert records.latest(copy, "readiness")["data"]["ready"] is True  # the self-hash alone accepts it
        expected = f"{path}: changed since the campaign's seal"
    elif forge == "outbox":
        path = copy / "outbox" / "20260101T000000000000Z-notice.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text("Subject: all clear\n")
        expected = f"{path}: not covered by the campaign's seal"
    else:
        path = copy / "index.html"
        path.write_text(path.read_text().replace("sealed runs", "sealed runs, all approved"))
        expected = f"{path}: changed since the campaign's seal"
    assert any(p.startswith(expected) for p in check(sealed, copy, keyed=False))
    # re-sealing the campaign's files without the key moves the problem to the seal's signature
    reseal_unsigned(copy)
    assert check(sealed, copy, keyed=False) == []
    assert any("campaign.json: not signed by a key of" in p for p in check(sealed, copy))


def test_a_signoff_typed_into_the_file_does_not_count(sealed: dict, copy: Path) -> None:
    params = sealed["params"]
    (copy / "records" / "phase1.json").write_text((copy / "records" / "readiness.json").read_text())
    bound = signoffs.binding(copy)
    role = params.policy.signoffs_required_before_migration[0]
    forged = {"role": role, "name": "alice", "note": "", "at": "2026-12-06T10:00:00+00:00", **bound}
    with (copy / signoffs.FILE).open("a") as fh:
        fh.write(json.dumps(forged) + "\n")
    trusted = signing.trusted_for(params)
    assert role not in signoffs.missing(copy, params.policy)  # free text counts without the keys
    assert role in signoffs.missing(copy, params.policy, trusted=trusted)
    # alice's own key makes it count; the operator's key under alice's name does not
    alice = signing.Signer.from_pem((sealed["base"] / "keys" / "alice.key").read_text(), "alice.key")
    operator = signing.signer_for(params)
    with pytest.raises(signoffs.SignoffError, match="not listed under 'alice'"):
        signoffs.record(copy, params.policy, role, "alice", signer=operator, trusted=trusted)
    with pytest.raises(signoffs.SignoffError, match="must be signed"):
        signoffs.record(copy, params.policy, role, "alice", trusted=trusted)
    signoffs.record(copy, params.policy, role, "alice", signer=alice, trusted=trusted)
    assert role not in signoffs.missing(copy, params.policy, trusted=trusted)


def test_verify_never_reads_a_link_leading_out(sealed: dict, copy: Path, tmp_path: Path) -> None:
    last = sealed["runs"][-1]
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("outside")
    (copy / last / "journal.jsonl").unlink()
    (copy / last / "journal.jsonl").symlink_to(outside)
    problems = check(sealed, copy, keyed=False)
    assert any("'journal.jsonl', which is not a file inside its run folder" in p for p in problems), problems
    # a link that stays inside the run folder is still no sealed file
    (copy / last / "journal.jsonl").unlink()
    (copy / last / "journal.jsonl").symlink_to(copy / last / "params.json")
    problems = check(sealed, copy, keyed=False)
    assert any("journal.jsonl: not a regular file" in p for p in problems), problems


@pytest.mark.parametrize("where", ["records", "chain.jsonl", "campaign.json", "manifest.json", "run"])
def test_a_link_in_the_campaign_is_named_and_never_followed(sealed: dict, copy: Path, tmp_path: Path,
                                                            where: str) -> None:
    """Links put where verify reads by fixed names: each is named; verify reads nothing through it (the
    outside folder holds a pipe, which would block a read, and a file verify would otherwise hash)."""
    import os

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "looks-like-a-record.json").write_text("{}")
    os.mkfifo(outside / "pipe")
    last = copy / sealed["runs"][-1]
    if where == "records":
        shutil.rmtree(copy / "records")
        (copy / "records").symlink_to(outside)
        link = copy / "records"
    elif where == "run":
        shutil.move(str(last), str(outside / last.name))
        last.symlink_to(outside / last.name)
        link = last
    else:
        link = copy / where if where != "manifest.json" else last / where
        link.unlink()
        link.symlink_to(outside / "pipe")
    problems = check(sealed, copy, keyed=False)
    assert f"{link}: a link (an archive holds no links; not followed)" in problems, problems
    assert not any("looks-like-a-record" in p for p in problems), problems


def test_a_crafted_chain_or_manifest_is_reported_not_a_traceback(sealed: dict, copy: Path) -> None:
    entries = chain(copy)
    entries[0]["run_id"] = ["not", "a", "name"]
    write_chain(copy, entries)
    problems = check(sealed, copy)
    assert any("entry 1 names no run folder inside the campaign" in p for p in problems), problems
    # a manifest that is no JSON, with its hash set to match (possible without the key)
    entries = chain(copy)
    entries[0]["run_id"] = sealed["runs"][0]
    manifest = copy / sealed["runs"][-1] / "manifest.json"
    manifest.write_bytes(b"\xff not json")
    entries[-1]["manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    write_chain(copy, entries)
    assert f"{manifest}: not a manifest" in check(sealed, copy, keyed=False)
