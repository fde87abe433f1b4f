"""The archived HTML, opened offline in headless Chromium, shows the plotly charts."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from runbook_lib.run import runner
from tests.conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000"]


def chromium(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="runbook-chromium-")
    try:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed (.ci/run installs it)")
def test_html_export_renders_plotly_offline(params_file: Path, outputs: Path) -> None:
    report = runner.run("status", str(params_file), outputs_dir=outputs, echo=False)
    assert report.exit_code == 0, report.message
    html_path = report.run_dir / "status.html"
    page = html_path.read_text()
    assert not re.search(r"<script[^>]+src=\"https?://", page), "the export still loads a script from the network"
    dom = chromium("--dump-dom", html_path.as_uri()).stdout
    # plotly draws each chart as an SVG with class main-svg inside the figure's div
    assert dom.count('class="plotly-graph-div') >= 2, "no plotly figure div in the rendered page"
    assert dom.count("main-svg") >= 2, "plotly.js did not render the charts"
    assert "Database sizes by endpoint" in dom and "Connections by state" in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-html.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,2400", html_path.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000
