"""The audit archive: sealed run folders, a hash chain per campaign, verify and index.

outputs/<campaign>/<run-id>/ holds the executed notebook, its offline HTML
export, the journal, the parameters (references only) and manifest.json. Each
sealed manifest carries the hash of the previous one in chain.jsonl, so any
changed or missing byte is found by `verify`. Before sealing, every archived
file is scanned for the resolved secret values of the run; a hit fails the run
and the value is masked in place, so it never stays in the archive.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import html
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from runbook_lib.config import redact, signing
from runbook_lib.config.params import Params
from runbook_lib.config.secrets import SecretError, SecretRef
from runbook_lib.errors import RunbookError
from runbook_lib.run import anchor, htmlexport, runinfo, timeline
from runbook_lib.run.journal import JOURNAL, read_events
from runbook_lib.values import now

CHAIN = "chain.jsonl"
INDEX = "index.html"
SIGNOFFS = "signoffs.jsonl"  # written by campaign.signoffs; the index lists it
CAMPAIGN_SEAL = "campaign.json"  # hashes (and signature) of the campaign's own files: records, outbox, ...
CAMPAIGN_FOLDERS = ("records", "outbox")  # the campaign's own folders; every other folder is a run
_UNCOVERED = {CHAIN, CAMPAIGN_SEAL, ".chain.lock", ".lock"}


class ArchiveError(RunbookError):
    pass


@dataclass
class Sealed:
    manifest: dict[str, Any]
    secret_hits: list[str] = field(default_factory=list)

    @property
    def step_seconds(self) -> float:
        return sum(s.get("seconds") or 0 for s in self.manifest.get("steps", []) if s.get("status") != "skipped")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, body: bytes) -> None:
    tmp = path.with_name(path.name + ".sealing")
    with tmp.open("wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


@contextmanager
def _campaign_lock(campaign_dir: Path) -> Iterator[None]:
    campaign_dir.mkdir(parents=True, exist_ok=True)
    with (campaign_dir / ".chain.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def chain_entries(campaign_dir: Path) -> list[dict[str, Any]]:
    path = campaign_dir / CHAIN
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- sealing


def secret_values(refs: list[str]) -> tuple[set[str], list[str]]:
    """Resolve the run's references for the scan; unresolvable ones are listed, not fatal."""
    values: set[str] = set(redact.known_values())
    unresolved = []
    for ref in refs:
        try:
            values.add(SecretRef(ref).resolve().reveal())
        except SecretError as exc:
            unresolved.append(str(exc))
    return {v for v in values if len(v) >= 4}, unresolved


def secret_forms(values: set[str]) -> set[str]:
    """Each value as it may appear in an archived file: raw, JSON-escaped, HTML-escaped, URL-encoded, hex,
    and base64 at each of the three alignments it can take inside a longer base64 text (a Basic header)."""
    forms = set(values)
    forms |= {json.dumps(v)[1:-1] for v in values} | {json.dumps(v, ensure_ascii=False)[1:-1] for v in values}
    forms |= {html.escape(f, quote=q) for f in list(forms) for q in (True, False)}
    for v in values:
        raw = v.encode()
        forms |= {quote(v, safe=""), quote_plus(v, safe=""), raw.hex(), raw.hex().upper()}
        forms |= {core for k in range(3) for alphabet in (base64.b64encode, base64.urlsafe_b64encode)
                  if len(core := _base64_core(raw, k, alphabet)) >= 8}
    return {f for f in forms if f}


def _base64_core(raw: bytes, offset: int, encode: Callable[[bytes], bytes]) -> str:
    """The base64 characters that depend only on `raw` when it starts `offset` bytes into a longer text."""
    text = encode(b"\0" * offset + raw).decode().rstrip("=")
    bits = 8 * (offset + len(raw))
    end = bits // 6  # a last character that also holds the next byte's bits is not the secret's own
    return text[(4 * offset + 2) // 3:end]


def scan_and_mask(run_dir: Path, values: set[str]) -> list[str]:
    """Files that contained a secret value in any archived form; occurrences are masked in place."""
    forms = secret_forms(values)
    hits = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found = [f for f in forms if f.encode() in data]
        if found:
            hits.append(path.name)
            for form in sorted(found, key=len, reverse=True):
                data = data.replace(form.encode(), redact.MASK.encode())
            path.write_bytes(data)
    return hits


def seal(run_dir: Path, *, params: Params | None, info: runinfo.RunInfo, outcome: str, message: str = "",
         wall_seconds: float | None = None, secret_refs: list[str] | None = None,
         draft: dict[str, Any] | None = None, signing_from: Params | None = None) -> Sealed:
    """Export, scan, hash, sign, chain and anchor a finished run folder; returns the sealed manifest.
    The operator's key and the anchor come from `params` (or `signing_from`, for an interactive run whose
    parameters the kernel held)."""
    notebook = run_dir / f"{info.runbook}.ipynb"
    notes = []
    signer, repo = None, None
    keys_from = params or signing_from
    if keys_from is not None:
        repo = signing.anchor_for(keys_from)
        try:
            signer = signing.signer_for(keys_from)
        except (signing.SigningError, SecretError) as exc:
            notes.append(f"not signed: {exc}")
    refs = secret_refs if secret_refs is not None else [str(r) for r in (params.scan_refs() if params else [])]
    values, unresolved = secret_values(refs)
    hits = scan_and_mask(run_dir, values)  # before the export, so the HTML is made from masked files
    if notebook.exists():
        try:
            htmlexport.export(notebook, run_dir / f"{info.runbook}.html")
        except Exception as exc:  # a broken export must not lose the run
            notes.append(f"HTML export failed: {type(exc).__name__}: {exc}")
    else:
        notes.append("no executed notebook was produced")
    hits = sorted(set(hits) | set(scan_and_mask(run_dir, values)))
    manifest = runinfo.draft_manifest(run_dir, info, params, status=outcome)  # from the masked journal
    if draft and params is None:  # an interactive run: the kernel recorded the parameters
        manifest.update(parameters=draft.get("parameters"), policy_loosening=draft.get("policy_loosening", []))
    if hits:
        manifest["status"] = "secret-leak"
        notes.append("secret values found and masked in: " + ", ".join(hits))
    manifest.update(
        message=redact.text(message), notes=notes, secret_refs=refs,
        secret_scan={"values_checked": len(values), "unresolved_refs": unresolved, "hits": hits},
        wall_seconds=round(wall_seconds, 3) if wall_seconds is not None else None,
        finished=now().isoformat(), sealed=True,
    )
    campaign_dir = run_dir.parent
    with _campaign_lock(campaign_dir):
        manifest["files"] = {p.relative_to(run_dir).as_posix(): sha256_file(p)
                             for p in sorted(run_dir.rglob("*"))
                             if p.is_file() and p.name not in (runinfo.MANIFEST, runinfo.MANIFEST + ".tmp")}
        entries = chain_entries(campaign_dir)
        manifest["prev_manifest_sha256"] = entries[-1]["manifest_sha256"] if entries else None
        manifest = redact.obj(manifest)
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        _write_atomically(run_dir / runinfo.MANIFEST, body)
        (run_dir / (runinfo.MANIFEST + ".tmp")).unlink(missing_ok=True)
        entry: dict[str, Any] = {"run_id": info.run_id, "manifest_sha256": hashlib.sha256(body).hexdigest(),
                                 "prev": manifest["prev_manifest_sha256"], "sealed_at": manifest["finished"]}
        if signer:
            entry.update(signer.sign(_signed_fields(entry)))
        if repo is not None:
            try:
                anchor.record(repo, campaign_dir.name, entries[0]["run_id"] if entries else info.run_id, entry)
            except anchor.AnchorError as exc:
                entry["anchor_error"] = str(exc)  # verify names it; the run itself is kept
        with (campaign_dir / CHAIN).open("a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        write_index(campaign_dir)
        _cover_locked(campaign_dir, signer)
    return Sealed(manifest, hits)


def _signed_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """What a chain entry's signature covers: the run, its manifest's hash and its link to the one before."""
    return {"run_id": entry.get("run_id"), "manifest_sha256": entry.get("manifest_sha256"), "prev": entry.get("prev")}


def campaign_files(campaign_dir: Path) -> dict[str, str]:
    """The campaign's own files (its records, outbox, sign-offs, index), each with its hash; run folders and
    the chain are covered by the manifests and the chain itself."""
    files: dict[str, str] = {}
    own = [*campaign_dir.iterdir(), *(p for folder in CAMPAIGN_FOLDERS for p in _files_below(campaign_dir / folder))]
    for path in sorted(own):  # the run folders are not walked: a long campaign has thousands of files there
        if path.is_symlink():
            files[path.relative_to(campaign_dir).as_posix()] = "link"  # never followed
        elif path.is_file() and path.name not in _UNCOVERED and path.suffix != ".tmp":
            files[path.relative_to(campaign_dir).as_posix()] = sha256_file(path)
    return files


def refresh(campaign_dir: Path, signer: signing.Signer | None) -> None:
    """Rewrite the index and re-seal the campaign's own files after a write outside a run (a sign-off, a
    failure notice), so that forging a record, a notice or the index is found by verify."""
    with _campaign_lock(campaign_dir):
        write_index(campaign_dir)
        _cover_locked(campaign_dir, signer)


def signed_campaign(campaign_dir: Path) -> bool:
    """Whether the campaign's own files were last sealed with a key (a rewrite without one breaks that)."""
    try:
        return "signature" in json.loads(_regular(campaign_dir / CAMPAIGN_SEAL))
    except (OSError, ValueError, TypeError):
        return False


def _cover_locked(campaign_dir: Path, signer: signing.Signer | None) -> None:
    entries = chain_entries(campaign_dir)
    seal_body: dict[str, Any] = {"chain_head": entries[-1]["manifest_sha256"] if entries else None,
                                 "files": campaign_files(campaign_dir)}
    if signer:
        seal_body.update(signer.sign(seal_body))
    seal_body["covered_at"] = now().isoformat()
    _write_atomically(campaign_dir / CAMPAIGN_SEAL, json.dumps(seal_body, indent=2, sort_keys=True).encode())


def add(notebook_path: Path, outputs_root: Path | None = None,
        params: Params | None = None) -> tuple[Sealed, Path]:
    """Seal an interactively executed and saved notebook into its run folder (signed and anchored by the
    signing section of `params`, when given)."""
    nb = json.loads(Path(notebook_path).read_text())
    found = [out["data"][runinfo.RUN_MIME] for cell in nb.get("cells", []) for out in cell.get("outputs", [])
             if runinfo.RUN_MIME in out.get("data", {})]
    if not found:
        raise ArchiveError(f"{notebook_path}: no run header found; run the notebook's first cells "
                           "(session.start ... rb) and save it before sealing")
    run = found[-1]
    root = outputs_root or runinfo.outputs_root()
    run_dir = root / run["campaign"] / run["run_id"]
    draft_path = run_dir / runinfo.MANIFEST
    if not draft_path.exists():
        raise ArchiveError(f"{notebook_path}: run folder {run_dir} is missing its draft manifest")
    draft = json.loads(draft_path.read_text())
    if draft.get("sealed"):
        raise ArchiveError(f"run {run['run_id']} is already sealed; it cannot be sealed twice")
    info = runinfo.RunInfo(**{k: run[k] for k in runinfo.RunInfo.__dataclass_fields__ if k in run})
    shutil.copyfile(notebook_path, run_dir / f"{info.runbook}.ipynb")
    ends = [e for e in read_events(run_dir / JOURNAL) if e.get("event") == "run_end"]
    outcome = ends[-1]["outcome"] if ends else "incomplete"
    sealed = seal(run_dir, params=None, info=info, outcome=outcome, secret_refs=draft.get("secret_refs", []),
                  message="" if ends else "the notebook's last cell (rb.finish()) was not run", draft=draft,
                  signing_from=params)
    return sealed, run_dir


# ---------------------------------------------------------------- verify


def verify(campaign_dir: Path, trusted: signing.TrustedKeys | None = None,
           anchor_repo: Path | None = None) -> list[str]:
    """Every problem in a campaign's archive, each naming the file; empty when it verifies.

    Without `trusted` keys the hashes and links are checked, which holds only against careless edits;
    with them every chain entry and the campaign's own files must carry a valid signature of a team
    member; with `anchor_repo` the chain must agree with the heads committed there (runs removed from
    the end are found). Nothing outside campaign_dir (and the anchor repository) is read: no link is
    followed (each is named) and only regular files are read."""
    links = _links(campaign_dir)
    try:
        entries = [json.loads(line) for line in _regular(campaign_dir / CHAIN).decode().splitlines() if line.strip()]
    except FileNotFoundError:
        entries = []
    except (ValueError, OSError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return [*links, f"{campaign_dir / CHAIN}: not a chain of JSON lines (rewritten, damaged or a link)"]
    if not all(isinstance(e, dict) for e in entries):
        return [f"{campaign_dir / CHAIN}: a line is not a chain entry (rewritten or damaged)"]
    if not entries:
        return [f"{campaign_dir / CHAIN}: no sealed runs (missing or empty chain)"]
    problems = links + _verify_chain(campaign_dir, entries, trusted)
    problems += _verify_folders(campaign_dir, entries)
    problems += _verify_campaign_files(campaign_dir, entries, trusted)
    if anchor_repo is not None:
        problems += _verify_anchor(campaign_dir, entries, anchor_repo)
    return problems


def _links(campaign_dir: Path) -> list[str]:
    """Every symbolic link in the campaign (an archive holds none), named; none is followed."""
    found = []
    for root, dirs, files in os.walk(campaign_dir, followlinks=False):
        found += [f"{Path(root) / name}: a link (an archive holds no links; not followed)"
                  for name in (*dirs, *files) if (Path(root) / name).is_symlink()]
    return sorted(found)


def _regular(path: Path) -> bytes:
    """A regular file's bytes, never through a link at its last component and never from a device or a pipe
    (a link higher up is refused by _links and by the callers' is_symlink checks)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read()
    finally:
        os.close(fd)


def _files_below(folder: Path) -> list[Path]:
    """Regular files and links below folder, without following a link into another folder."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    out = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        out += [Path(root) / n for n in files] + [Path(root) / d for d in dirs if (Path(root) / d).is_symlink()]
    return sorted(out)


def _verify_chain(campaign_dir: Path, entries: list[dict[str, Any]], trusted: signing.TrustedKeys | None) -> list[str]:
    problems: list[str] = []
    prev = None
    for i, entry in enumerate(entries):
        run_dir = _inside(campaign_dir, entry.get("run_id"))
        if run_dir is None or not isinstance(entry.get("manifest_sha256"), str):
            problems.append(f"{campaign_dir / CHAIN}: entry {i + 1} names no run folder inside the campaign "
                            f"({str(entry.get('run_id'))[:80]!r}) or no manifest hash")
            continue
        if run_dir.is_symlink():
            continue  # named by _links, never entered
        manifest_path = run_dir / runinfo.MANIFEST
        if entry.get("prev") != prev:
            problems.append(f"{campaign_dir / CHAIN}: entry {entry['run_id']} does not link to the previous one")
        prev = entry["manifest_sha256"]
        if trusted is not None and not trusted.signer_of(_signed_fields(entry), entry):
            what = "is not signed" if "signature" not in entry else \
                f"carries a signature no key of {trusted.source} made (forged, or re-signed by an unknown key)"
            problems.append(f"{campaign_dir / CHAIN}: entry {entry['run_id']} {what}")
        if entry.get("anchor_error"):
            problems.append(f"{campaign_dir / CHAIN}: entry {entry['run_id']} was not anchored: {entry['anchor_error']}")
        if not manifest_path.exists():
            problems.append(f"{manifest_path}: missing")
            continue
        problems += _verify_run(run_dir, manifest_path, entry)
    return problems


def _verify_run(run_dir: Path, manifest_path: Path, entry: dict[str, Any]) -> list[str]:
    try:
        body = _regular(manifest_path)
    except OSError:
        return [f"{manifest_path}: not a regular file"]
    if hashlib.sha256(body).hexdigest() != entry["manifest_sha256"]:
        return [f"{manifest_path}: changed since it was sealed"]
    try:
        manifest = json.loads(body)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        return [f"{manifest_path}: not a manifest"]
    problems = []
    if manifest.get("prev_manifest_sha256") != entry.get("prev"):
        problems.append(f"{manifest_path}: its link to the previous manifest disagrees with the chain")
    for name, digest in manifest.get("files", {}).items():
        path = _inside(run_dir, name)
        if path is None:
            problems.append(f"{manifest_path}: lists {str(name)[:200]!r}, which is not a file inside its run folder")
        elif path.is_symlink() or (path.exists() and not path.is_file()):
            problems.append(f"{path}: not a regular file (a link or a folder stands where a sealed file was)")
        elif not path.exists():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: changed since it was sealed")
    listed = set(manifest.get("files", {})) | {runinfo.MANIFEST}
    problems += [f"{p}: not part of the sealed run" for p in _files_below(run_dir)
                 if p.relative_to(run_dir).as_posix() not in listed]
    return problems


def _verify_folders(campaign_dir: Path, entries: list[dict[str, Any]]) -> list[str]:
    """Every folder of the campaign is a chained run or one of its own folders."""
    chained = {str(e.get("run_id")) for e in entries}
    problems = []
    for folder in sorted(p for p in campaign_dir.iterdir() if p.is_dir() and not p.is_symlink()):
        if folder.name in chained or folder.name in CAMPAIGN_FOLDERS:
            continue
        manifest_path = folder / runinfo.MANIFEST
        try:
            draft = json.loads(_regular(manifest_path))
        except (OSError, ValueError):
            draft = None
        if draft is None or not isinstance(draft, dict):
            problems.append(f"{folder}: a folder that is no run of this campaign (no manifest)")
        elif draft.get("sealed"):
            problems.append(f"{manifest_path}: a sealed run that the chain does not list")
        else:
            problems.append(f"{folder}: a run that was never sealed (an interactive run not yet added with "
                            "`runbook archive add`, or one still running)")
    return problems


def _verify_campaign_files(campaign_dir: Path, entries: list[dict[str, Any]],
                           trusted: signing.TrustedKeys | None) -> list[str]:
    path = campaign_dir / CAMPAIGN_SEAL
    try:
        sealed = json.loads(_regular(path))
    except FileNotFoundError:
        return [f"{path}: missing; the campaign's records, outbox, sign-offs and index are not covered"]
    except (OSError, ValueError):
        return [f"{path}: unreadable"]
    if not isinstance(sealed, dict) or not isinstance(sealed.get("files"), dict):
        return [f"{path}: not a campaign seal"]
    problems = []
    if sealed.get("chain_head") != entries[-1].get("manifest_sha256"):
        problems.append(f"{path}: covers another chain head than the chain's last run")
    if trusted is not None:
        body = {"chain_head": sealed.get("chain_head"), "files": sealed["files"]}
        if not trusted.signer_of(body, sealed):
            problems.append(f"{path}: not signed by a key of {trusted.source}")
    current = campaign_files(campaign_dir)
    for name in sorted(set(current) | set(sealed["files"])):
        if name not in sealed["files"]:
            problems.append(f"{campaign_dir / name}: not covered by the campaign's seal (added after it)")
        elif name not in current:
            problems.append(f"{campaign_dir / name}: missing (the campaign's seal lists it)")
        elif current[name] != sealed["files"][name]:
            problems.append(f"{campaign_dir / name}: changed since the campaign's seal")
    return problems


def _verify_anchor(campaign_dir: Path, entries: list[dict[str, Any]], repo: Path) -> list[str]:
    try:
        anchored = anchor.entries(repo, campaign_dir.name, str(entries[0].get("run_id")))
    except anchor.AnchorError as exc:
        return [str(exc)]
    chained = {str(e.get("run_id")): e.get("manifest_sha256") for e in entries}
    problems = []
    for item in anchored:
        run_id = item.get("run_id")
        if run_id not in chained:
            problems.append(f"{campaign_dir / CHAIN}: run {run_id} is anchored in {repo} but missing from the chain "
                            "(removed?)")
        elif chained[run_id] != item.get("manifest_sha256"):
            problems.append(f"{campaign_dir / CHAIN}: run {run_id}'s manifest hash differs from the one anchored in "
                            f"{repo}")
    known = {item.get("run_id") for item in anchored}
    problems += [f"{campaign_dir / CHAIN}: run {run_id} is not anchored in {repo} (added to the archive by hand?)"
                 for run_id in chained if run_id not in known]
    return problems


def _inside(folder: Path, name: object) -> Path | None:
    """folder/name when name is a relative path that stays inside folder (no .., no absolute path, no link
    leading out), else None: verify reads nothing outside the campaign it was given."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    path = folder / name
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return None
    return path


def chain_head(campaign_dir: Path) -> str | None:
    """The newest manifest hash: keep it outside the archive (ticket, sign-off) to anchor the chain."""
    entries = chain_entries(campaign_dir)
    return entries[-1]["manifest_sha256"] if entries else None


# ---------------------------------------------------------------- index


# the figures each runbook is judged by in a campaign: (step, metric, label)
HEADLINES: dict[str, list[tuple[str, str, str]]] = {
    "load_test": [("load_test", "tps", "TPS"), ("load_test", "peak_clients", "clients"), ("load_test", "p95_ms", "p95 ms")],
    "failover_drill": [("automatic_failover", "seconds_to_new_leader", "failover s"),
                       ("automatic_failover", "seconds_write_endpoint_back", "writes back s")],
    "readiness": [("check_items", "score", "readiness score"), ("check_items", "fail", "failing items")],
    "phase1_pre_migration": [("verify_backup", "verified", "backup verified"),
                             ("restore_test", "passed", "restore test passed")],
    "phase2_migration": [("preflight", "strategy", "strategy"),
                         ("probe_report", "write_unavailable_s", "write-unavailable s"),
                         ("cutover", "pool_paused_s", "pool paused s"),
                         ("validate_cut", "tables_validated", "tables compared"),
                         ("validate_new", "tables_validated", "tables compared"),
                         ("probe_report", "failed_writes", "failed writes")],
    "phase3_verification": [("watch_metrics", "error_rate", "error rate"),
                            ("watch_metrics", "latency_p95", "p95 s")],
    "validation": [("checkpoint", "verdict", "verdict")],
    "rollback": [("completion", "rollback_min", "rollback min"),
                 ("consistency_check", "tables_differing", "tables differing")],
}


def headline(manifest: dict[str, Any]) -> dict[str, Any]:
    """The run's headline figures (label -> value), as far as its steps recorded them."""
    metrics = {s["name"]: s.get("metrics") or {} for s in manifest.get("steps", [])}
    return {label: metrics[step][key] for step, key, label in HEADLINES.get(manifest.get("runbook", ""), [])
            if key in metrics.get(step, {})}


def figures_text(figures: dict[str, Any]) -> str:
    """Headline figures as one line: 'label: value, ...' (floats without trailing noise)."""
    return ", ".join(f"{k}: {v:g}" if isinstance(v, float) else f"{k}: {v}" for k, v in figures.items())


def _key_figures(manifest: dict[str, Any], limit: int = 6) -> str:
    figures = [figures_text({label: value}) for label, value in headline(manifest).items()]
    for step_record in manifest.get("steps", []) if not figures else []:
        for key, value in (step_record.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                figures.append(f"{key}={value:g}")
    return ", ".join(figures[:limit])


def manifests(campaign_dir: Path) -> list[dict[str, Any]]:
    """The campaign's sealed manifests in chain order (unreadable ones left out)."""
    found = []
    for entry in chain_entries(campaign_dir):
        try:
            found.append(json.loads((campaign_dir / entry["run_id"] / runinfo.MANIFEST).read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return found


def _reason(manifest: dict[str, Any]) -> str:
    """Why a run did not succeed, first in its row: a failed run's figures alone would look healthy."""
    if manifest.get("status") in ("succeeded", "planned") or not manifest.get("message"):
        return ""
    return f"<span style='color:#cf222e'>{html.escape(str(manifest['message'])[:400])}</span><br>"


def _glance(sealed: list[dict[str, Any]]) -> str:
    """The latest run of each runbook with its headline figures, in the rollout's order."""
    latest = {m["runbook"]: m for m in sealed}
    items = []
    for book in [b for b in HEADLINES if b in latest] + [b for b in latest if b not in HEADLINES]:
        m = latest[book]
        figures = figures_text(headline(m))
        items.append(f"<li><b>{html.escape(book)}</b> {html.escape(m.get('status', ''))} "
                     f"({m.get('wall_seconds') or 0:.0f} s){': ' + html.escape(figures) if figures else ''}</li>")
    return f"<h2>At a glance (latest run of each)</h2><ul>{''.join(items)}</ul>" if items else ""


def _signoff_rows(campaign_dir: Path) -> str:
    path = campaign_dir / SIGNOFFS
    if not path.exists():
        return ""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            e = json.loads(line)
            kind = "<b style='color:#9a6700'>rehearsal approval (sandbox)</b>" if e.get("rehearsal") else "person"
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
                html.escape(e.get("at", "")[:19].replace("T", " ")), html.escape(e.get("role", "")),
                html.escape(e.get("name", "")), kind, html.escape(str(e.get("readiness_sha256", ""))[:12]),
                html.escape(str(e.get("phase1_sha256", ""))[:12]))) + "</tr>")
    return ("<h2>Sign-offs</h2><table><tr><th>at (UTC)</th><th>role</th><th>by</th><th>kind</th>"
            f"<th>readiness record</th><th>phase 1 record</th></tr>{''.join(rows)}</table>")


def _timeline(sealed: list[dict[str, Any]]) -> str:
    """The runs on one time axis (each a bar, coloured by outcome), the moves of traffic marked, and the
    readiness score over time."""
    bars = timeline.svg(sealed, list(HEADLINES))
    scores = timeline.trend([(m.get("started", ""), v) for m in sealed if m.get("runbook") == "readiness"
                             for v in [headline(m).get("readiness score")] if isinstance(v, (int, float))],
                            "readiness-trend")
    return ((f"<h2>Timeline</h2>{bars}" if bars else "") +
            (f"<h3>Readiness score over time</h3>{scores}" if scores else ""))


def _validation_trend(campaign_dir: Path, sealed: list[dict[str, Any]]) -> str:
    """Every success criterion at each checkpoint of the 72-hour validation, as each run's journal recorded
    them: a criterion that breaks shows as a red cell in its row, from the checkpoint that saw it on."""
    checkpoints = []
    for m in sealed:
        if m.get("runbook") != "validation":
            continue
        try:  # a page is written at every seal: an unreadable journal leaves its column out, never the seal
            rows = [e.get("evidence") or [] for e in read_events(campaign_dir / str(m.get("run_id")) / JOURNAL)
                    if e.get("event") == "step" and e.get("name") == "checkpoint"]
        except (OSError, ValueError):
            continue
        if rows and rows[-1]:
            checkpoints.append((m.get("started", ""), str(headline(m).get("verdict", m.get("status", ""))), rows[-1]))
    grid = timeline.status_grid(checkpoints, "validation-trend")
    return f"<h3>Validation: the success criteria at each checkpoint</h3>{grid}" if grid else ""


def write_index(campaign_dir: Path) -> Path:
    """index.html: the campaign at a glance, its runs in order (status, duration, key figures, links) and
    its sign-offs."""
    rows, sealed = [], []  # each manifest read once, for the rows and the glance
    for entry in chain_entries(campaign_dir):
        run_dir = campaign_dir / entry["run_id"]
        try:
            m = json.loads((run_dir / runinfo.MANIFEST).read_text())
        except (OSError, json.JSONDecodeError):
            rows.append(f"<tr><td colspan=8>{html.escape(entry['run_id'])}: manifest unreadable</td></tr>")
            continue
        sealed.append(m)
        colour = {"succeeded": "#1a7f37", "planned": "#0969da"}.get(m.get("status"), "#cf222e")
        links = " ".join(f"<a href='{html.escape(entry['run_id'])}/{html.escape(f)}'>{html.escape(f.rsplit('.', 1)[-1])}</a>"
                         for f in (f"{m['runbook']}.html", f"{m['runbook']}.ipynb", runinfo.MANIFEST, JOURNAL)
                         if (run_dir / f).exists())
        rows.append(
            "<tr>" + "".join(f"<td>{c}</td>" for c in (
                html.escape(m.get("started", "")[:19].replace("T", " ")), html.escape(m["run_id"]),
                html.escape(m["runbook"]), html.escape(m.get("operator", "")),
                f"<b style='color:{colour}'>{html.escape(m.get('status', ''))}</b>",
                f"{m.get('wall_seconds') or 0:.1f} s", _reason(m) + html.escape(_key_figures(m)), links)) + "</tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Campaign {html.escape(campaign_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;
padding:4px 10px;text-align:left;vertical-align:top}}</style></head><body>
<h1>Campaign {html.escape(campaign_dir.name)}</h1><p>{len(rows)} sealed runs, oldest first. Generated {now().isoformat()[:19]}Z.
Check integrity with <code>runbook archive verify {html.escape(campaign_dir.name)}</code>.</p>
{_glance(sealed)}{_timeline(sealed)}{_validation_trend(campaign_dir, sealed)}<h2>Runs</h2>
<table><tr><th>started (UTC)</th><th>run</th><th>runbook</th><th>operator</th><th>status</th><th>duration</th>
<th>key figures</th><th>files</th></tr>{''.join(rows)}</table>{_signoff_rows(campaign_dir)}</body></html>"""
    path = campaign_dir / INDEX
    path.write_text(page)
    return path
