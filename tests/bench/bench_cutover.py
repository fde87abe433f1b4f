"""Write unavailability at cutover: both phase 2 strategies at two data sizes, median of N runs.

Targets (logical): the write probe's longest gap across the pool's pauses (the validation cut's and
the cutover's, each measured from the last write done before PAUSE to the first done after RESUME) at
most 0.2 s at every size, the 10x figure within 1.2 times the 1x one, no failed probe write and no
error in the application's own metrics. Printed beside it: the longest gap over the whole window (slow
writes while the copy, the backup and the checksums load this shared machine count there too), and
dump-restore's figures with the ratio (dump-restore is expected to grow with the data). Each size re-creates the sandbox's data
(`reset` + `up --scale N`), each run is rolled back and the new cluster emptied afterwards.

The gates are not what is measured here: each run gets a campaign whose readiness and phase 1
records, window and sign-offs are written directly (the tests prove the gates themselves).

usage: .venv/bin/python tests/bench/bench_cutover.py [--runs 3] [--scales 1,10] [--params parameters/sandbox.yaml]
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import arguments, median, save  # noqa: E402

from runbook_lib import rehearse  # noqa: E402
from runbook_lib.campaign import records, window  # noqa: E402
from runbook_lib.config.params import load_params  # noqa: E402
from runbook_lib.ops import fallback, migration
from runbook_lib.run import runner
from runbook_lib.sandbox import context, lifecycle  # noqa: E402

STRATEGIES = ("logical", "dump-restore")


def signed_campaign(outputs: Path, name: str, params_file: str) -> Path:
    campaign = outputs / name
    records.save(campaign, "readiness", {"target": "sandbox", "items": [], "verdict": {
        "score": 1.0, "failing_blockers": [], "ready": True}, "note": "benchmark campaign"})
    records.save(campaign, "phase1", {"note": "benchmark campaign"})
    start = datetime.now(UTC)
    window.lock(campaign, start, start + timedelta(hours=4), None)
    rehearse.approve_as_rehearsal(campaign, load_params(params_file))  # signed by the sandbox operator's key
    return campaign


def one_cutover(params_file: str, outputs: Path, strategy: str, i: int) -> dict:
    campaign = signed_campaign(outputs, f"bench-{strategy}-{i}", params_file)
    report = runner.run("phase2_migration", params_file, outputs_dir=outputs, campaign=campaign.name, echo=False,
                        overrides=[f"migration.strategy={strategy}"])
    params = load_params(params_file)
    try:
        if report.exit_code != 0:
            raise SystemExit(f"phase 2 ({strategy}) failed: {report.message}")
        steps = {s["name"]: s for s in json.loads((report.run_dir / "manifest.json").read_text())["steps"]}
        probe = steps["probe_report"]["metrics"]
        cut = steps["cutover"].get("metrics") or {}
        check = steps["validate_cut"].get("metrics") or {}
        pauses = [v for v in (cut.get("probe_longest_gap_s"), check.get("probe_longest_gap_s")) if v is not None]
        return {"gap_at_pauses_s": max(pauses) if pauses else probe["write_unavailable_s"],
                "longest_write_gap_s": probe["write_unavailable_s"], "failed_writes": probe["failed_writes"],
                "validate_cut_paused_s": check.get("pool_paused_s"),
                "write_unavailable_total_s": probe["write_unavailable_total_s"],
                "unavailable_spans": probe["unavailable_spans"], "attempts": probe["attempts"],
                "app_errors": probe.get("app_errors"), "app_requests": probe.get("app_requests"),
                "pool_paused_s": cut.get("pool_paused_s"), "probe_gap_at_cutover_s": cut.get("probe_longest_gap_s"),
                "run_s": round(report.seconds, 1),
                "dump_restore_s": (steps["move_data"].get("metrics") or {}).get("dump_restore_s")}
    finally:
        fallback.to_legacy(migration.route(params), accept_loss=True)
        fallback.clear_new(migration.route(params))


def main() -> int:
    parser = arguments(runs=3)
    parser.add_argument("--scales", default="1,10")
    args = parser.parse_args()
    outputs = Path(tempfile.mkdtemp(prefix="runbook-bench-cutover-"))
    figures: dict = {"runs": {}, "median_gap_at_pauses_s": {}, "median_longest_write_gap_s": {},
                     "median_pool_paused_s": {}}
    scales = [int(s) for s in args.scales.split(",")]
    for scale in scales:
        sb = context.load(args.params)
        print(f"== data scale {scale}: reset and up")
        lifecycle.down(sb, volumes=True)
        lifecycle.up(sb, scale=scale)
        for strategy in STRATEGIES:
            key = f"{strategy}@{scale}x"
            runs = [one_cutover(args.params, outputs, strategy, f"{scale}-{i}") for i in range(args.runs)]
            figures["runs"][key] = runs
            figures["median_gap_at_pauses_s"][key] = median([r["gap_at_pauses_s"] for r in runs])
            figures["median_longest_write_gap_s"][key] = median([r["longest_write_gap_s"] for r in runs])
            if strategy == "logical":
                figures["median_pool_paused_s"][key] = median([r["pool_paused_s"] for r in runs])
            print(f"{key}: write gap at the pauses {[r['gap_at_pauses_s'] for r in runs]} s, median "
                  f"{figures['median_gap_at_pauses_s'][key]} s; longest over the window "
                  f"{[r['longest_write_gap_s'] for r in runs]} s; failed writes "
                  f"{[r['failed_writes'] for r in runs]}, application errors {[r['app_errors'] for r in runs]}")
    if scales != [1]:
        sb = context.load(args.params)
        lifecycle.down(sb, volumes=True)
        lifecycle.up(sb, scale=1)
    med = figures["median_gap_at_pauses_s"]
    logical = [med[f"logical@{s}x"] for s in scales]
    figures["dump_restore_over_logical"] = {f"{s}x": round(med[f"dump-restore@{s}x"] / max(med[f"logical@{s}x"], 1e-3), 1)
                                            for s in scales}
    logical_runs = [r for s in scales for r in figures["runs"][f"logical@{s}x"]]
    figures["targets"] = {"logical_gap_at_pauses_max_s": 0.2, "logical_growth_max": 1.2}
    figures["within_target"] = {
        "logical_gap": all(v <= 0.2 for v in logical),
        "logical_growth": (logical[-1] <= 1.2 * logical[0]) if len(logical) > 1 else None,
        "no_failed_writes": all(r["failed_writes"] == 0 for r in logical_runs),
        "no_application_errors": all(not r["app_errors"] for r in logical_runs)}
    save("cutover", figures)
    return 0 if all(v is not False for v in figures["within_target"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
