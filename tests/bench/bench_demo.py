"""`make demo` with the sandbox image already built: the wall time of `runbook sandbox up` plus the whole
rehearsal (`runbook rehearse --with-rollback`, a fresh campaign each run), and of each leg. Median of N runs.

Target: at most 6 minutes on this 2-core machine. Usage:
    .venv/bin/python tests/bench/bench_demo.py [--runs 3] [--params parameters/sandbox.yaml]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runbook_lib.run import archive  # noqa: E402
from tests.bench.benchutil import arguments, median, save  # noqa: E402

RUNBOOK = [sys.executable, "-m", "runbook_lib.cli"]


def one_demo(params: str, outputs: Path, n: int) -> dict:
    started = time.monotonic()
    subprocess.run([*RUNBOOK, "sandbox", "up", "--params", params], check=True, capture_output=True, cwd=ROOT)
    up_s = time.monotonic() - started
    campaign = f"bench-demo-{n}"
    done = subprocess.run([*RUNBOOK, "rehearse", "--params", params, "--campaign", campaign, "--with-rollback",
                           "--outputs", str(outputs)], capture_output=True, text=True, cwd=ROOT)
    total = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"rehearsal failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    legs = {m["runbook"]: m.get("wall_seconds") for m in archive.manifests(outputs / campaign)}
    return {"total_s": round(total, 1), "sandbox_up_s": round(up_s, 1), "legs_s": legs}


def main() -> None:
    args = arguments(runs=3).parse_args()
    outputs = Path(tempfile.mkdtemp(prefix="runbook-bench-demo-"))
    runs = [one_demo(args.params, outputs, n) for n in range(args.runs)]
    for n, r in enumerate(runs):
        print(f"run {n + 1}: {r['total_s']} s (sandbox up {r['sandbox_up_s']} s)", flush=True)
    save("demo", {"runs": runs, "median_total_s": median([r["total_s"] for r in runs]),
                  "target_s": 360, "image": "already built"})


if __name__ == "__main__":
    main()
