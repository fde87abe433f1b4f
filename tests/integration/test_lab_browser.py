"""An interactive run in a real browser: headless Chromium, driven over its DevTools protocol, opens a runbook
in `runbook lab`, runs every cell, saves the notebook; `runbook archive add` then seals the saved notebook.

JupyterLab's own browser tests (Galata) drive it the same way: the page exposes the application
(LabApp.expose_app_in_browser) and the test calls its commands, as the Run menu and Ctrl-S do.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests
import websocket

from tests.conftest import ARTIFACTS, free_port
from tests.system.test_html_export import CHROMIUM

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "browser-test-token"
NOTEBOOK = "status.ipynb"


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll until check() gives something true; bounded, and says what never came."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s (last: {value!r})")
        time.sleep(0.5)


class DevTools:
    """One page of a headless Chromium over the DevTools protocol (commands answered by id; events skipped)."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=120, suppress_origin=True)
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call = next(self.ids)
        self.ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited); an exception fails the test."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:80]}: {result['exceptionDetails'].get('exception', {})}")
        return result.get("result", {}).get("value")


@pytest.fixture
def lab(tmp_path: Path, params_file: Path, outputs: Path) -> Iterator[tuple[int, Path]]:
    """`runbook lab` serving a folder holding the status runbook, its parameters cell edited as an operator
    would (this target's parameters, these outputs)."""
    folder = tmp_path / "runbooks"
    folder.mkdir()
    nb = nbformat.read(ROOT / "runbooks" / NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace('"../parameters/sandbox.yaml"', repr(str(params_file)))
    cell.source = cell.source.replace("outputs_dir = None", f"outputs_dir = {str(outputs)!r}")
    nbformat.write(nb, folder / NOTEBOOK)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "runbook_lib.cli", "lab", "--port", str(port),
                               f"--ServerApp.token={TOKEN}", "--notebook-dir", str(folder),
                               "--LabApp.expose_app_in_browser=True"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            assert server.poll() is None, "runbook lab exited"
            try:
                return requests.get(f"http://127.0.0.1:{port}/api/status", params={"token": TOKEN},
                                    timeout=5).status_code == 200
            except requests.ConnectionError:
                return False
        wait_for("JupyterLab answering", answers, 180)
        yield port, folder
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture
def browser() -> Iterator[DevTools]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    profile = tempfile.mkdtemp(prefix="runbook-chromium-")
    port = free_port()
    chrome = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
                               f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def page() -> str | None:
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            except requests.ConnectionError:
                return None
            return next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)
        tools = DevTools(wait_for("Chromium's DevTools endpoint", page, 60))
        yield tools
        tools.ws.close()
    finally:
        chrome.terminate()
        try:
            chrome.wait(timeout=30)
        except subprocess.TimeoutExpired:
            chrome.kill()
        shutil.rmtree(profile, ignore_errors=True)


PANEL = f"Array.from(jupyterapp.shell.widgets('main')).find(w => w.context?.path === '{NOTEBOOK}')"
KERNEL_IDLE = f"{PANEL}?.sessionContext?.session?.kernel?.status === 'idle'"
CODE_CELLS = f"{PANEL}.content.widgets.filter(c => c.model.type === 'code')"
ERRORS = (f"{CODE_CELLS}.flatMap(c => c.model.outputs.toJSON()).filter(o => o.output_type === 'error')"
          ".map(o => o.ename + ': ' + o.evalue)")


def test_a_runbook_run_in_the_browser_is_saved_and_sealed(lab: tuple[int, Path], browser: DevTools,
                                                          outputs: Path) -> None:
    port, folder = lab
    browser.send("Page.enable")
    browser.send("Page.navigate", url=f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={TOKEN}")
    wait_for("the runbook open with its kernel idle",
             lambda: browser.js(f"typeof jupyterapp !== 'undefined' && {KERNEL_IDLE}"), 240)
    browser.js(f"jupyterapp.shell.activateById({PANEL}.id)")  # the tab in front: the menus act on it
    cells = browser.js(f"{CODE_CELLS}.length")
    assert cells >= 3, cells

    # the Run menu's entry, not awaited here: a cell that fails stops the run, so the wait below ends on every
    # cell run or on the first error, whichever comes
    browser.js("jupyterapp.commands.execute('notebook:run-all-cells'); true")
    wait_for("every cell run (or one failed) and the kernel idle again",
             lambda: browser.js(f"({CODE_CELLS}.every(c => c.model.executionCount !== null) || {ERRORS}.length > 0)"
                                f" && {KERNEL_IDLE}"), 300)
    assert browser.js(ERRORS) == []
    last = browser.js(f"JSON.stringify({CODE_CELLS}.at(-1).model.outputs.toJSON())")  # rb.finish()'s answer
    assert "runbook archive add" in last and "succeeded" in last, last[:2000]

    # Ctrl-S (docmanager:save) saves the focused tab's document context; a headless window has no focus,
    # so the open notebook's context is saved directly
    browser.js(f"{PANEL}.context.save().then(() => true)")
    saved = folder / NOTEBOOK
    wait_for("the notebook saved with its outputs", lambda: any(
        c.get("outputs") for c in nbformat.read(saved, as_version=4).cells if c.cell_type == "code"), 60)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
    (ARTIFACTS / "lab-interactive-run.png").write_bytes(shot)
    assert len(shot) > 10_000

    sealed = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "archive", "add", str(saved), "--outputs",
                             str(outputs)], capture_output=True, text=True, timeout=120)
    assert sealed.returncode == 0, sealed.stderr
    run_dir = next(d for d in (outputs / "test").iterdir() if d.is_dir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["sealed"] is True and manifest["status"] == "succeeded" and manifest["interactive"] is True
    assert {NOTEBOOK, "status.html", "journal.jsonl"} <= set(manifest["files"])
