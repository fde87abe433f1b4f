"""Packaging stays consistent: environment.yml mirrors pyproject.toml; notebooks are committed clean."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_environment_pip_section_mirrors_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) - {"-e ."} == wanted


def test_source_runbooks_have_no_outputs_and_a_parameters_cell() -> None:
    books = sorted((ROOT / "runbooks").glob("*.ipynb"))
    assert books
    for path in books:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path.name
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), path.name
        assert "runbook" in nb["metadata"], f"{path.name}: metadata.runbook (title, mutating) is missing"
