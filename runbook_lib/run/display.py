"""How results look in a notebook: one rendering for every runbook.

Each figure is emitted as its own output carrying both the plotly MIME type
(rendered live by JupyterLab) and an HTML fragment without plotly.js, which the
archive's HTML export renders offline with one inlined copy of plotly.js.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

from runbook_lib.config import redact
from runbook_lib.run.step import StepResult

PLOTLY_MIME = "application/vnd.plotly.v1+json"
_COLOURS = {"ok": "#1a7f37", "failed": "#cf222e", "skipped": "#6e7781", "waived": "#9a6700", "planned": "#0969da"}


def badge(status: str) -> str:
    colour = _COLOURS.get(status, "#6e7781")
    return (f'<span style="background:{colour};color:white;padding:1px 8px;border-radius:8px;'
            f'font-weight:600">{html.escape(status.upper())}</span>')


def frame_html(frame: pd.DataFrame, max_rows: int = 50) -> str:
    shown = frame.head(max_rows)
    body = redact.text(shown.to_html(index=False, border=0, classes="runbook-table", na_rep=""))
    more = f"<p><i>{len(frame) - max_rows} more rows in the journal</i></p>" if len(frame) > max_rows else ""
    return body + more


def metrics_html(metrics: dict[str, Any]) -> str:
    if not metrics:
        return ""
    cells = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in metrics.items())
    return redact.text(f"<table class='runbook-metrics'>{cells}</table>")


def step_html(result: StepResult) -> str:
    title = html.escape(result.title or result.name)
    parts = [f"<h4 style='margin:4px 0'>{badge(result.status)} {title} "
             f"<small style='color:#6e7781'>({html.escape(result.name)}, {result.seconds:.2f} s)</small></h4>",
             f"<p>{html.escape(result.summary)}</p>"]
    if result.recorded_in:
        parts.append(f"<p><i>Completed earlier in run {html.escape(result.recorded_in)}; recorded result shown.</i></p>")
    if result.error and result.status == "failed":
        parts.append(f"<pre style='color:#cf222e'>{html.escape(result.error)}</pre>")
    parts.append(metrics_html(result.metrics))
    if result.evidence is not None and len(result.evidence):
        parts.append(frame_html(result.evidence))
    return redact.text("\n".join(parts))


def step_text(result: StepResult) -> str:
    lines = [f"[{result.status.upper()}] {result.title or result.name} ({result.seconds:.2f} s): {result.summary}"]
    lines += [f"  {k}: {v}" for k, v in result.metrics.items()]
    if result.error and result.status == "failed":
        lines.append(f"  error: {result.error}")
    return redact.text("\n".join(lines))


def step_bundle(result: StepResult) -> dict[str, Any]:
    return {"text/html": step_html(result), "text/plain": step_text(result)}


def figure_bundle(fig: Any) -> dict[str, Any]:
    spec = json.loads(redact.text(fig.to_json()))
    fragment = fig.to_html(include_plotlyjs=False, full_html=False, config={"displaylogo": False})
    return {PLOTLY_MIME: spec, "text/html": redact.text(fragment),
            "text/plain": f"<plotly figure: {fig.layout.title.text or 'untitled'}>"}


def show(result: StepResult) -> None:
    """Display a step result and then each of its figures as separate outputs."""
    from IPython.display import display

    display(step_bundle(result), raw=True)  # type: ignore[no-untyped-call]
    for fig in result.figures:
        display(figure_bundle(fig), raw=True)  # type: ignore[no-untyped-call]


def register() -> None:
    """In IPython, show every StepResult a cell returns as its step panel (the step model knows no renderer)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.ipython_display_formatter.for_type(StepResult, show)


def outcome_html(outcome: str, runbook: str, run_id: str, steps: int, failed: list[str], hint: str) -> str:
    """The run's outcome as the last thing a reader sees: status, failed steps, what to do next."""
    status = {"succeeded": "ok", "planned": "planned"}.get(outcome, "failed")
    lines = [f"<h3 style='margin:4px 0'>{badge(status)} {html.escape(runbook)} {html.escape(outcome)}</h3>",
             f"<p>run <code>{html.escape(run_id)}</code>: {steps} steps"
             + (f"; failed: <b>{html.escape(', '.join(failed))}</b>" if failed else "") + "</p>"]
    if hint:
        lines.append(f"<p>{html.escape(hint)}</p>")
    return "\n".join(lines)
