"""Sandbox budgets on this machine: image build, `up` to all healthy, memory while the app runs,
failover time of the chosen Patroni timings (median of 3). Prints them and writes JSON under
tests/bench/results/.

usage: .venv/bin/python tests/bench/bench_sandbox.py [--skip-build] [--keep] [--params FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from runbook_lib.sandbox import build, docker_cli, lifecycle
from runbook_lib.sandbox.context import STACKS, load
from tests import sandboxes

BUDGETS = {"image_build_s": 180, "up_to_healthy_s": 90, "memory_total_mib": 4096}
_UNITS = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "kB": 1e3 / 2**20, "MB": 1e6 / 2**20, "GB": 1e9 / 2**20}


def memory_mib(sb) -> tuple[float, dict[str, float]]:
    """Sum of the memory use of every container of the sandbox's stacks (docker stats)."""
    names = {sb.stack_name(s) for s in STACKS}
    per: dict[str, float] = {}
    for row in docker_cli.json_lines("stats", "--no-stream"):
        name = row["Name"]
        if name.split("_", 1)[0] not in names:
            continue
        m = re.match(r"([\d.]+)\s*([A-Za-z]+)", row["MemUsage"])
        if m:
            per[name.split(".")[0]] = per.get(name.split(".")[0], 0) + float(m.group(1)) * _UNITS.get(m.group(2), 1)
    return sum(per.values()), per


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-build", action="store_true", help="do not force an image rebuild")
    ap.add_argument("--keep", action="store_true", help="leave the sandbox up at the end")
    ap.add_argument("--params", default=None)
    args = ap.parse_args()
    sb = load(args.params)
    res: dict[str, object] = {"started": datetime.now(UTC).isoformat(), "machine": _machine()}
    if not args.skip_build:
        lifecycle.prepare_engine(sb)
        _, res["image_build_s"] = build.build_image(sb, force=True)
    lifecycle.down(sb, volumes=True) if _engine_up(sb) else None
    res["up_to_healthy_s"] = lifecycle.up(sb)
    time.sleep(30)  # let the application run
    total, per = memory_mib(sb)
    res["memory_total_mib"], res["memory_by_service_mib"] = round(total, 1), {k: round(v, 1) for k, v in sorted(per.items())}
    runs = []
    for _ in range(3):
        sandboxes.wait_cluster_healthy(sb, 180)
        time.sleep(sb.spec.patroni.loop_wait * 2)
        r = sandboxes.failover(sb, timeout=90)
        runs.append(r)
        print(f"  failover {r['old_leader']} -> {r['new_leader']}: {r['seconds']:.2f}s")
    sandboxes.wait_cluster_healthy(sb, 180)
    res["failover_runs_s"] = [round(float(r["seconds"]), 2) for r in runs]
    res["failover_median_s"] = round(statistics.median(float(r["seconds"]) for r in runs), 2)
    res["patroni_timings"] = sb.spec.patroni.model_dump()
    res["budgets"] = BUDGETS
    res["within_budget"] = {k: (res[k] <= v) for k, v in BUDGETS.items() if k in res}
    if not args.keep:
        lifecycle.down(sb)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"sandbox-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "memory_by_service_mib"}, indent=2))
    print(f"written {path}")
    return 0 if all(res["within_budget"].values()) else 1


def _engine_up(sb) -> bool:
    from runbook_lib.sandbox import dockerd
    docker_cli.set_env(sb.docker_env())
    return dockerd.server_version() is not None


def _machine() -> dict[str, object]:
    import os
    return {"cpus": os.cpu_count(), "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


if __name__ == "__main__":
    sys.exit(main())
