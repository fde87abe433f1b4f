"""The rollback runbook after a logical cutover: minutes from the decision to the notice, and how long
the application's pool stayed paused, median of N runs. Targets: within the policy's 30 minutes; the pool
paused at most 0.2 s (one critical section); nothing lost (the consistency check finds no table differing).

Each run: a logical phase 2 into a campaign whose gates are written directly (bench_cutover's
signed_campaign), a write through the pool on the new cluster, then the rollback runbook with a
reason; the new cluster is emptied afterwards.

usage: .venv/bin/python tests/bench/bench_rollback.py [--runs 3] [--params parameters/sandbox.yaml]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cutover import signed_campaign  # noqa: E402
from benchutil import arguments, median, save  # noqa: E402

from runbook_lib.config.params import load_params  # noqa: E402
from runbook_lib.ops import fallback, migration
from runbook_lib.run import runner  # noqa: E402


def one_rollback(params_file: str, outputs: Path, i: int) -> dict:
    campaign = signed_campaign(outputs, f"bench-rollback-{i}", params_file)
    params = load_params(params_file)
    try:
        cutover = runner.run("phase2_migration", params_file, outputs_dir=outputs, campaign=campaign.name, echo=False)
        if cutover.exit_code != 0:
            raise SystemExit(f"phase 2 failed: {cutover.message}")
        report = runner.run("rollback", params_file, outputs_dir=outputs, campaign=campaign.name, echo=False,
                            overrides=["rollback.reason=benchmark"])
        if report.exit_code != 0:
            raise SystemExit(f"rollback failed: {report.message}")
        steps = {s["name"]: s for s in json.loads((report.run_dir / "manifest.json").read_text())["steps"]}
        return {"rollback_min": steps["completion"]["metrics"]["rollback_min"],
                "pool_paused_s": steps["stop_or_detach_new"]["metrics"]["pool_paused_s"],
                "apply_wait_s": steps["stop_or_detach_new"]["metrics"]["apply_wait_s"],
                "tables_differing": steps["consistency_check"]["metrics"]["tables_differing"],
                "consistency_check_s": steps["consistency_check"]["seconds"],
                "tables_compared": steps["consistency_check"]["metrics"]["tables_compared"],
                "run_s": round(report.seconds, 1)}
    finally:
        fallback.to_legacy(migration.route(params), accept_loss=True)
        fallback.clear_new(migration.route(params))


def main() -> int:
    args = arguments(runs=3).parse_args()
    outputs = Path(tempfile.mkdtemp(prefix="runbook-bench-rollback-"))
    runs = [one_rollback(args.params, outputs, i) for i in range(args.runs)]
    budget_min = load_params(args.params).policy.rollback_completion_max / 60
    figures = {"runs": runs, "median_rollback_min": median([r["rollback_min"] for r in runs]),
               "median_pool_paused_s": median([r["pool_paused_s"] for r in runs]),
               "median_run_s": median([r["run_s"] for r in runs]), "target_min": budget_min,
               "target_pool_paused_s": 0.2}
    figures["within_target"] = {"rollback_min": figures["median_rollback_min"] <= budget_min,
                                "pool_paused": figures["median_pool_paused_s"] <= 0.2,
                                "nothing_lost": all(r["tables_differing"] == 0 for r in runs)}
    save("rollback", figures)
    return 0 if all(figures["within_target"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
