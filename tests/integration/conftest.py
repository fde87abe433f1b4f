"""The drill runbook the runner tests execute, steered by marker files in DRILL_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest

DRILL = Path(__file__).parent / "drill" / "drill.ipynb"


@pytest.fixture
def drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "drill"
    d.mkdir()
    monkeypatch.setenv("DRILL_DIR", str(d))
    (d / "go").touch()
    return d
