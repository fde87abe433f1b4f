"""The 72-hour validation's verdict over a real 72 hours of series (tests/history.py, a scratch Prometheus):
how long the checkpoint (every criterion's PromQL over the window) takes, and how big the executed notebook
and its HTML export are. Targets: verdict under 10 s, notebook under 5 MB. Median of N runs.

    .venv/bin/python tests/bench/bench_validation_history.py [--runs 3] [--params parameters/sandbox.yaml]
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchutil import arguments, median, save  # noqa: E402

from runbook_lib.run import runner  # noqa: E402
from runbook_lib.sandbox import context  # noqa: E402
from tests.history import History, scratch_prometheus  # noqa: E402
from tests.phase3.test_validation_history import STATED, campaign_with_drills_tested  # noqa: E402


def main() -> None:
    args = arguments(runs=3).parse_args()
    sandbox = context.load(args.params)
    checkpoint_s, wall_s, notebook_mb, html_mb, verdicts = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, scratch_prometheus(sandbox, History(), Path(tmp) / "prom") as (url, end):
        started = datetime.fromtimestamp(end, UTC) - timedelta(hours=72, minutes=1)
        for i in range(args.runs):
            folder = Path(tmp) / f"run{i}"
            campaign = campaign_with_drills_tested(folder)
            report = runner.run("validation", args.params, outputs_dir=folder, campaign=campaign.name, echo=False,
                                overrides=[f"target.prometheus.url={url}", "target.prometheus.access=null",
                                           f"validation.started={started.isoformat()}",
                                           *STATED])
            steps = {s["name"]: s for s in json.loads((report.run_dir / "manifest.json").read_text())["steps"]}
            checkpoint_s.append(steps["checkpoint"]["seconds"])
            wall_s.append(report.seconds)
            notebook_mb.append((report.run_dir / "validation.ipynb").stat().st_size / 1e6)
            html_mb.append((report.run_dir / "validation.html").stat().st_size / 1e6)
            verdicts.append(steps["checkpoint"]["metrics"]["verdict"])
    save("validation_history", {
        "runs": args.runs, "history_hours": History().hours, "verdicts": verdicts,
        "checkpoint_s_median": median(checkpoint_s), "checkpoint_s": checkpoint_s,
        "run_wall_s_median": median(wall_s), "notebook_mb_median": median(notebook_mb),
        "html_mb_median": median(html_mb), "targets": {"checkpoint_s": 10, "notebook_mb": 5}})


if __name__ == "__main__":
    main()
