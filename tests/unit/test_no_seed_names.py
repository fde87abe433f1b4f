"""The general case: nothing in runbook_lib outside sandbox/ names the sandbox seed's tables, columns or
extension in SQL; checks derive what they need from the catalog or read it from the parameters."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "runbook_lib"
SEED = r"(accounts|entries|collections|entry_tags|events|sandbox_seed)"
PATTERNS = [
    re.compile(rf"\b(FROM|JOIN|INTO|UPDATE|TABLE)\s+(public\.)?{SEED}\b"),  # SQL is written upper-case here
    re.compile(rf"\b{SEED}\.(embedding|id)\b"),
    re.compile(r"[\"'](accounts|entries|embedding|collections|sandbox_seed)[\"']"),
    re.compile(r"extname\s*=\s*'vector'"),
]


def test_no_seed_name_outside_the_sandbox() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "sandbox" in path.relative_to(PACKAGE).parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if any(p.search(line) for p in PATTERNS):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_patterns_catch_a_seed_name() -> None:
    assert any(p.search("SELECT id FROM entries ORDER BY embedding") for p in PATTERNS)
    assert any(p.search("cur.execute(\"INSERT INTO public.accounts (email) VALUES (%s)\")") for p in PATTERNS)
