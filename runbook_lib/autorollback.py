"""Automatic rollback, when the policy asks for it: Alertmanager's action=rollback alerts start the rollback.

`runbook autorollback` listens for Alertmanager's webhook. A firing alert labelled action=rollback starts
the rollback runbook (a full papermill run: its own target lock, journal and archive) when
`rollback.automatic` is set and the campaign is inside its window: a cutover is recorded, the policy's
validation window since it has not passed, and the campaign is neither rolled back nor finalized.
Outside that window the alert starts nothing (the receiver inhibits it). Every alert it receives is
recorded in the campaign with what was decided, and every rollback it starts with the alert that caused it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from runbook_lib.campaign import records
from runbook_lib.config.params import Params, load_params
from runbook_lib.run import runinfo, runner

RECORD = "auto_rollback"


@dataclass
class Decision:
    alert: str
    fingerprint: str
    act: bool
    why: str
    run_id: str | None = None
    outcome: str | None = None


def window_reason(params: Params, campaign_dir: Path, now: datetime | None = None) -> str | None:
    """None inside the campaign's rollback window, else why the automatic rollback does not act."""
    now = now or datetime.now(UTC)
    if not params.rollback.automatic:
        return "rollback.automatic is off: the alert pages people, the rollback is theirs to start"
    cutover = records.latest(campaign_dir, "cutover")
    if cutover is None:
        return "no cutover is recorded in this campaign: nothing to roll back"
    at = datetime.fromisoformat(cutover["data"]["at"])
    for kind, what in (("finalized", "the campaign is finalized"), ("rollback", "the campaign was rolled back")):
        done = records.latest(campaign_dir, kind)
        if done and datetime.fromisoformat(done["recorded_at"]) >= at:
            return f"{what} (run {done['run_id']})"
    end = at + timedelta(seconds=params.policy.success_criteria.window)
    if now > end:
        return f"the campaign's window ended at {end.isoformat()}"
    return None


class Receiver:
    """Decides on each alert, starts at most one rollback at a time, and records everything."""

    def __init__(self, params_path: str, campaign: str | None, outputs: Path | None) -> None:
        self.params_path = params_path
        self.params = load_params(params_path)
        self.campaign = campaign or self.params.campaign
        self.outputs = outputs or runinfo.outputs_root()
        self.campaign_dir = self.outputs / self.campaign
        self._busy = threading.Lock()
        self.threads: list[threading.Thread] = []

    def receive(self, payload: dict[str, Any]) -> list[Decision]:
        decisions = []
        for alert in payload.get("alerts", []):
            labels = alert.get("labels", {})
            if labels.get("action") != "rollback" or alert.get("status") != "firing":
                continue
            decisions.append(self._decide(labels.get("alertname", "?"), alert))
        return decisions

    def _decide(self, name: str, alert: dict[str, Any]) -> Decision:
        summary = alert.get("annotations", {}).get("summary", "")
        decision = Decision(name, str(alert.get("fingerprint", "")), False, "")
        reason = window_reason(self.params, self.campaign_dir)
        only = self.params.rollback.automatic_only
        metric = alert.get("labels", {}).get("metric", "")
        if not reason and only is not None and metric not in only:
            reason = f"trigger {metric or name} is not among rollback.automatic_only ({', '.join(only)})"
        if reason:
            decision.why = f"inhibited: {reason}"
        elif not self._busy.acquire(blocking=False):
            decision.why = "a rollback this receiver started is still running"
        else:
            decision.act, decision.why = True, f"rollback started by {name}: {summary}"
            thread = threading.Thread(target=self._roll_back, args=(decision,), name="auto-rollback", daemon=True)
            self.threads.append(thread)
            thread.start()
            return decision
        self._record(decision)
        return decision

    def _roll_back(self, decision: Decision) -> None:
        try:
            self._record(decision)
            report = runner.run("rollback", self.params_path, campaign=self.campaign, outputs_dir=self.outputs,
                                echo=False, overrides=[f"rollback.reason=automatic: {decision.why}"])
            decision.run_id, decision.outcome = report.run_id, f"{report.outcome} (exit {report.exit_code})"
            self._record(decision)
        finally:
            self._busy.release()

    def _record(self, decision: Decision) -> None:
        records.save(self.campaign_dir, RECORD, asdict(decision), decision.run_id)


def serve(receiver: Receiver, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for Alertmanager's webhook (POST any path); the caller runs serve_forever()."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                decisions = receiver.receive(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                self.send_response(400)
                self.end_headers()
                self.wfile.write(str(exc).encode())
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps([asdict(d) for d in decisions]).encode())

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    return ThreadingHTTPServer((host, port), Handler)
