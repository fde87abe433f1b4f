"""A throwaway team for tests: an operator key, a keys file listing it (and any approvers), an anchor
repository, and the parameter overrides that point a parameters file at them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runbook_lib.config import signing


def team(folder: Path, *people: str, operator: str = "operator", anchor: bool = True,
         secret_dirs: tuple[str, ...] = ()) -> list[str]:
    """Keys for the operator and each person under folder/keys; returns `-p` overrides for `signing` and
    `secret_dirs` (the keys folder added to the given ones)."""
    keys = folder / "keys"
    lines = [signing.init(name, keys)[1] for name in (operator, *people)]
    (keys / "team.pub").write_text("\n".join(lines) + "\n")
    repo = folder / "anchor"
    if anchor:
        subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=60)
    section = f"{{key: 'file:{keys / (operator + '.key')}', trusted_keys: '{keys / 'team.pub'}'"
    section += f", anchor_repo: '{repo}'}}" if anchor else "}"
    dirs = ", ".join(f"'{d}'" for d in (*secret_dirs, keys))
    return [f"signing={section}", f"secret_dirs=[{dirs}]"]
