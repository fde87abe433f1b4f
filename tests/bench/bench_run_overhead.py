"""Overhead of `runbook run status`: total wall time minus the time its steps report. Median of N runs.

Target: under 5 s per run on a 2-core machine. Usage:
    .venv/bin/python tests/bench/bench_run_overhead.py [--runs 5] [--params FILE]
Without --params it starts a throwaway PostgreSQL from the host's binaries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runbook_lib.sandbox.localpg import LocalPostgres  # noqa: E402
from tests.conftest import free_port, write_params  # noqa: E402


def one_run(params: Path, outputs: Path) -> dict:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "run", "status", "--params", str(params),
                             "--outputs", str(outputs), "--json"], capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"run failed: {result.stderr[-2000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    manifest = json.loads((Path(report["run_dir"]) / "manifest.json").read_text())
    steps = sum(s["seconds"] or 0 for s in manifest["steps"])
    return {"wall_s": round(wall, 3), "steps_s": round(steps, 3), "overhead_s": round(wall - steps, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--params")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runbook-bench-"))
    work.chmod(0o755)  # the server runs as the postgres user
    pg = None
    if args.params:
        params = Path(args.params)
    else:
        pg = LocalPostgres(work / "pg", port=free_port())
        pg.start()
        params = write_params(work / "params.yaml", pg)
    try:
        runs = [one_run(params, work / "outputs") for _ in range(args.runs)]
    finally:
        if pg:
            pg.destroy()
    figures = {
        "benchmark": "run_overhead", "runs": runs,
        "median_overhead_s": statistics.median(r["overhead_s"] for r in runs),
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "target_overhead_s": 5.0,
    }
    for i, r in enumerate(runs, 1):
        print(f"run {i}: wall {r['wall_s']:.2f} s, steps {r['steps_s']:.2f} s, overhead {r['overhead_s']:.2f} s")
    print(f"median overhead {figures['median_overhead_s']:.2f} s (target < 5 s), "
          f"median wall {figures['median_wall_s']:.2f} s")
    out = ROOT / "tests" / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_overhead.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
