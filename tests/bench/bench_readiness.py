"""Wall time of every automated readiness item against the sandbox, median of N runs (target: under 10 s).

usage: .venv/bin/python tests/bench/bench_readiness.py [--runs 5] [--params parameters/sandbox.yaml]
The sandbox must be up (`runbook sandbox up`).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import arguments, median, save  # noqa: E402

from runbook_lib.config.params import load_params  # noqa: E402
from runbook_lib.readiness import engine  # noqa: E402

TARGET_S = 10.0


def main() -> int:
    parser = arguments(runs=5)
    args = parser.parse_args()
    params = load_params(args.params)
    runs = []
    for i in range(args.runs):
        started = time.monotonic()
        results = engine.run(params)
        wall = time.monotonic() - started
        slowest = sorted(results, key=lambda r: r.seconds or 0, reverse=True)[:3]
        runs.append({"wall_s": round(wall, 3), "items": len(results),
                     "outcomes": dict(Counter(r.outcome for r in results)),
                     "slowest": {r.id: round(r.seconds or 0, 2) for r in slowest}})
        print(f"run {i + 1}: {wall:.2f} s for {len(results)} items; slowest {runs[-1]['slowest']}")
    figures = {"runs": runs, "median_wall_s": median([r["wall_s"] for r in runs]), "target_s": TARGET_S}
    save("readiness", figures)
    return 0 if figures["median_wall_s"] < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
