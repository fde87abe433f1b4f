"""ruff over the package and the tests, and mypy over the package (strict on run/, config/, clients/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed: `make setup` installs the test extras"
    return found


def test_ruff() -> None:
    result = subprocess.run([_tool("ruff"), "check", "runbook_lib", "tests"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy() -> None:
    result = subprocess.run([_tool("mypy"), "runbook_lib"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
