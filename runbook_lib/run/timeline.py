"""The campaign on one time axis, as inline SVG for its page: each run a bar on its runbook's row, coloured by
outcome, with the reason on hover; each cutover and rollback marked; the readiness score over time.

Why SVG and not plotly: the campaign page must open offline years later and stay small; a few hundred
rectangles need no charting library.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

COLOURS = {"succeeded": "#1a7f37", "planned": "#0969da"}  # anything else is a failure of some kind: red
FAILED = "#cf222e"
WIDTH, LABEL, ROW, TOP = 1100, 170, 22, 26


def _t(value: str | None) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp() if value else None
    except ValueError:
        return None


def bars(manifests: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """One bar per run that has a start: runbook row, start and end (epoch), colour, tooltip text."""
    rows = [b for b in order if any(m.get("runbook") == b for m in manifests)]
    rows += sorted({m.get("runbook", "?") for m in manifests} - set(rows))
    out = []
    for m in manifests:
        start = _t(m.get("started"))
        if start is None:
            continue
        end = _t(m.get("finished")) or start + float(m.get("wall_seconds") or 0)
        status = m.get("status", "")
        why = m.get("message") if status not in COLOURS else ""
        out.append({"row": rows.index(m.get("runbook", "?")), "runbook": m.get("runbook", "?"), "start": start,
                    "end": max(end, start), "colour": COLOURS.get(status, FAILED),
                    "title": f"{m.get('runbook')} {m.get('run_id')}: {status}" + (f": {why}" if why else "")})
    return out


MARKS = {"phase2_migration": "cutover", "rollback": "rollback"}  # a run that succeeded moved the traffic


def marks(manifests: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """Vertical marks where the traffic moved: the end of each phase 2 and each rollback that succeeded."""
    found = []
    for m in manifests:
        end = _t(m.get("finished"))
        if m.get("runbook") in MARKS and m.get("status") == "succeeded" and end is not None:
            found.append((end, MARKS[m["runbook"]]))
    return sorted(found)


def svg(manifests: list[dict[str, Any]], order: list[str]) -> str:
    """The timeline as an <svg> element (empty string without any run)."""
    drawn = bars(manifests, order)
    if not drawn:
        return ""
    lines = marks(manifests)
    t0 = min(b["start"] for b in drawn)
    t1 = max([b["end"] for b in drawn] + [t for t, _ in lines])
    span = max(t1 - t0, 1.0)
    rows = sorted({(b["row"], b["runbook"]) for b in drawn})
    height = TOP + ROW * (max(r for r, _ in rows) + 1) + 24

    def x(t: float) -> float:
        return LABEL + (WIDTH - LABEL - 10) * (t - t0) / span

    parts = [f"<svg class='runbook-timeline' xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
             "font-family='sans-serif' font-size='12'>"]
    for row, name in rows:
        y = TOP + ROW * row
        parts.append(f"<text x='4' y='{y + 14}'>{html.escape(name)}</text>"
                     f"<line x1='{LABEL}' x2='{WIDTH - 10}' y1='{y + ROW - 2}' y2='{y + ROW - 2}' stroke='#eee'/>")
    for b in drawn:
        left, right = x(b["start"]), x(b["end"])
        parts.append(f"<rect class='run-bar' x='{left:.1f}' y='{TOP + ROW * b['row'] + 3}' "
                     f"width='{max(right - left, 3):.1f}' height='{ROW - 8}' fill='{b['colour']}'>"
                     f"<title>{html.escape(b['title'][:400])}</title></rect>")
    for t, label in lines:
        colour = "#8250df" if label == "cutover" else "#bf8700"
        near_end = x(t) > WIDTH - 90  # the label goes left of a mark at the right edge
        parts.append(f"<line class='mark-{label}' x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{TOP - 8}' y2='{height - 20}' "
                     f"stroke='{colour}' stroke-dasharray='4 3'/><text x='{x(t) + (-3 if near_end else 3):.1f}' "
                     f"y='{TOP - 12}' text-anchor='{'end' if near_end else 'start'}' fill='{colour}'>{label}</text>")
    for t, anchor in ((t0, "start"), (t1, "end")):
        stamp = datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M")
        parts.append(f"<text x='{x(t):.1f}' y='{height - 6}' text-anchor='{anchor}' fill='#57606a'>{stamp}</text>")
    parts.append("</svg>")
    return "".join(parts)


def trend(points: list[tuple[str, float]], css: str) -> str:
    """A small line of values between 0 and 1 over time (the readiness score), empty with fewer than two."""
    timed = [(t, v) for t, v in ((_t(when), value) for when, value in points) if t is not None]
    if len(timed) < 2:
        return ""
    t0, span = timed[0][0], max(timed[-1][0] - timed[0][0], 1.0)
    at = [(20 + 360 * (t - t0) / span, 90 - 80 * v, v) for t, v in timed]
    dots = "".join(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='#0969da'><title>{v:.2f}</title></circle>"
                   for x, y, v in at)
    return (f"<svg class='{css}' xmlns='http://www.w3.org/2000/svg' width='400' height='100' font-family='sans-serif' "
            f"font-size='11'><polyline points='{' '.join(f'{x:.1f},{y:.1f}' for x, y, _ in at)}' fill='none' "
            f"stroke='#0969da'/>{dots}<text x='2' y='12'>1.0</text><text x='2' y='94'>0</text></svg>")


STATUS_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "missing": "#8c959f"}


def status_grid(checkpoints: list[tuple[str, str, list[dict[str, Any]]]], css: str) -> str:
    """Each criterion (a row) at each checkpoint (a column, headed by its time and verdict): a cell coloured by
    its status, the observed value written in it. Empty without a checkpoint."""
    if not checkpoints:
        return ""
    checkpoints = [(when, verdict, [r for r in rows if isinstance(r, dict) and r.get("name") is not None])
                   for when, verdict, rows in checkpoints]
    names = list(dict.fromkeys(str(row["name"]) for _, _, rows in checkpoints for row in rows))
    head = "".join(f"<th>{html.escape(when[:16].replace('T', ' '))}<br>{html.escape(verdict)}</th>"
                   for when, verdict, _ in checkpoints)
    body = []
    for name in names:
        cells = []
        for _, _, rows in checkpoints:
            row = next((r for r in rows if str(r["name"]) == name), None)
            if row is None:
                cells.append("<td></td>")
                continue
            status = str(row.get("status", "missing"))
            observed = row.get("observed")
            shown = "" if observed is None else f"{observed:.4g}" if isinstance(observed, float) else str(observed)
            cells.append(f"<td class='{html.escape(status)}' title='{html.escape(status)}' style='color:#fff;"
                         f"background:{STATUS_COLOURS.get(status, '#8c959f')}'>{html.escape(shown or status)}</td>")
        body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return f"<table class='{css}'><tr><th>criterion</th>{head}</tr>{''.join(body)}</table>"
