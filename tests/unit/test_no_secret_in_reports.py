"""A failing test's report never shows a resolved password, even when the command line asks for long
tracebacks and locals: a driver's frame holds it (psycopg.connect's conninfo) and reports land in CI logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "not-a-real-password-7f3a9c"


def test_a_failed_connect_report_does_not_print_the_password(tmp_path: Path) -> None:
    (tmp_path / "test_fails.py").write_text(
        "import os\n\nimport psycopg\n\n"
        "def test_connect():\n"  # resolved at run time, as a secret reference is: not in the test's source
        f"    psycopg.connect(host='127.0.0.1', port={free_port()}, user='u', password=os.environ['SECRET'], "
        "connect_timeout=2)\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "--tb=long", "-l", "-p",
                           "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_fails.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "SECRET": SECRET})
    assert proc.returncode == 1, proc.stdout[-2000:]  # it failed, and reported the failure
    assert "OperationalError" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
