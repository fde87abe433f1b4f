"""The status notebook run cell by cell as JupyterLab would (no papermill), then sealed with `archive add`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from runbook_lib.run import archive

ROOT = Path(__file__).resolve().parents[2]


def test_interactive_run_journals_as_it_goes_and_seals(params_file: Path, outputs: Path, tmp_path: Path) -> None:
    nb = nbformat.read(ROOT / "runbooks" / "status.ipynb", as_version=4)
    params_cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    # what an operator edits in the parameters cell; everything else runs as committed
    params_cell.source = params_cell.source.replace('"../parameters/sandbox.yaml"', repr(str(params_file)))
    params_cell.source = params_cell.source.replace("outputs_dir = None", f"outputs_dir = {str(outputs)!r}")
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "runbooks")}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells[:6]):
            client.execute_cell(cell, index)
        run_dir = next((outputs / "test").iterdir())
        draft = json.loads((run_dir / "manifest.json").read_text())
        assert draft["sealed"] is False and draft["status"] == "running"
        assert [s["name"] for s in draft["steps"]] == ["reachability"]  # written as it goes
        for index, cell in enumerate(nb.cells[6:], start=6):
            client.execute_cell(cell, index)
    saved = tmp_path / "status.ipynb"
    nbformat.write(nb, saved)
    last = nb.cells[-1].outputs[-1]["data"]["text/plain"]
    assert "runbook archive add" in last and "succeeded" in last

    result = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "archive", "add", str(saved), "--outputs",
                             str(outputs)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["sealed"] is True and manifest["status"] == "succeeded" and manifest["interactive"] is True
    assert manifest["parameters"]["target"]["name"] == "localtest"
    assert {"status.ipynb", "status.html", "journal.jsonl"} <= set(manifest["files"])
    assert archive.verify(outputs / "test") == []
    again = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "archive", "add", str(saved), "--outputs",
                            str(outputs)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already sealed" in again.stderr


def test_runbook_lab_takes_jupyterlab_arguments_and_stops_with_it() -> None:
    import signal
    import time

    import psutil
    import requests

    from tests.conftest import free_port

    port = free_port()
    lab = subprocess.Popen([sys.executable, "-m", "runbook_lib.cli", "lab", "--port", str(port),
                            "--ServerApp.token=lab-test-token", "--", "--ServerApp.password="],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/status"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(url, params={"token": "lab-test-token"}, timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert lab.poll() is None and time.monotonic() < deadline, "JupyterLab never answered"
            time.sleep(0.5)
        assert requests.get(url, timeout=5).status_code == 403  # the token given after `lab` reached JupyterLab
        children = psutil.Process(lab.pid).children(recursive=True)
        assert children, "no JupyterLab process under runbook lab"
    finally:
        lab.send_signal(signal.SIGTERM)
        lab.wait(timeout=60)
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"JupyterLab left running: {[p.pid for p in alive]}"
    try:
        requests.get(url, timeout=2)
        answered = True
    except requests.ConnectionError:
        answered = False
    assert not answered, "the JupyterLab port still answers after runbook lab stopped"
