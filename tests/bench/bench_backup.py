"""Phase 1's backup, verify and restore test of the sandbox's legacy data: wall time and throughput,
median of N runs (each backup is removed afterwards).

usage: .venv/bin/python tests/bench/bench_backup.py [--runs 3] [--params parameters/sandbox.yaml]
The sandbox must be up (`runbook sandbox up`; `--scale N` there for bigger data).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import arguments, median, save  # noqa: E402

from runbook_lib.config.params import load_params  # noqa: E402
from runbook_lib.ops import backup  # noqa: E402


def main() -> int:
    parser = arguments(runs=3)
    args = parser.parse_args()
    params = load_params(args.params)
    runs = []
    for i in range(args.runs):
        t0 = time.monotonic()
        result = backup.take(params)
        t1 = time.monotonic()
        backup.verify(params, result.path)
        t2 = time.monotonic()
        checks = backup.restore_test(params, result)
        t3 = time.monotonic()
        shutil.rmtree(result.path, ignore_errors=True)
        if not checks["passed"]:
            raise SystemExit(f"restore test failed: {checks}")
        run = {"bytes": result.bytes, "backup_s": round(t1 - t0, 2), "verify_s": round(t2 - t1, 2),
               "restore_test_s": round(t3 - t2, 2), "total_s": round(t3 - t0, 2),
               "total_mb_per_s": round(result.bytes / 1e6 / (t3 - t0), 1),
               "backup_mb_per_s": round(result.bytes / 1e6 / (t1 - t0), 1)}
        runs.append(run)
        print(f"run {i + 1}: {result.bytes / 1e6:.0f} MB; backup {run['backup_s']} s, verify {run['verify_s']} s, "
              f"restore test {run['restore_test_s']} s; {run['total_mb_per_s']} MB/s overall")
    save("backup_verify_restore", {
        "runs": runs, "median_total_s": median([r["total_s"] for r in runs]),
        "median_total_mb_per_s": median([r["total_mb_per_s"] for r in runs]),
        "median_backup_mb_per_s": median([r["backup_mb_per_s"] for r in runs])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
