"""A Swarm of three engines on this machine (`runbook sandbox nodes up --nodes 3`): time from nothing to three
ready managers with the image on each (and each stage), memory of the nodes' engines, and a whole node's
loss, its engine stopped and by a power cut (SIGKILL to all its processes): seconds until the Swarm sees
it down, and after its engine restarts until it is ready and its task serves again. Median of --runs. Prints the figures and writes JSON under tests/bench/results/.

usage: .venv/bin/python tests/bench/bench_nodes.py [--runs 3] [--nodes 3] [--keep]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runbook_lib.sandbox import build, nodes  # noqa: E402
from runbook_lib.sandbox.context import load  # noqa: E402
from tests.bench.benchutil import arguments, median, save  # noqa: E402
from tests.campaign import wait_until  # noqa: E402
from tests.nodes.test_three_nodes import members, probing, serves  # noqa: E402


def engines_rss_mib(present: list[nodes.Node]) -> float:
    """Resident memory of each node's dockerd and the containerd it supervises."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if any(str(n.run_dir) in cmdline or str(n.data_root) in cmdline for n in present):
            rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
            total += int(rss)
    return round(total / 1024, 1)


def node_loss(present: list[nodes.Node], image: str, abrupt: bool) -> dict[str, float]:
    first, second = present[0], present[1]
    with probing(image, second, "rbk-bench-probe", manager=first) as (lead, _):
        try:
            start = time.monotonic()
            nodes.power_off(second) if abrupt else nodes.stop_engine(second)
            wait_until("down", lambda: members(lead)[second.name]["Status"]["State"] == "down", 120, interval=0.5)
            seen_down = time.monotonic() - start  # from the loss, not from the end of the stop
            start = time.monotonic()
            nodes.start_engine(second)
            wait_until("ready", lambda: members(lead)[second.name]["Status"]["State"] == "ready", 120, interval=0.5)
            ready = time.monotonic() - start
            wait_until("serving", lambda: serves(second.address), 120, interval=0.5)
            serving = time.monotonic() - start
        finally:
            nodes.start_engine(second)
    kind = "power_cut" if abrupt else "engine_stop"
    return {f"{kind}_seen_down_s": seen_down, f"{kind}_ready_after_restart_s": ready,
            f"{kind}_task_serving_after_restart_s": serving}


def main() -> None:
    parser = arguments(runs=3)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the last run's nodes up")
    args = parser.parse_args()
    sb = load(args.params)
    build.build_image(sb)
    image = build.tag(sb)
    runs: list[dict[str, float]] = []
    for run in range(args.runs):
        nodes.down(purge=True)
        start = time.monotonic()
        stages = nodes.up(args.nodes, image, source_env=sb.host_env())["seconds"]
        total = time.monotonic() - start
        present = nodes.plan(args.nodes)
        figures = {"up_s": total, "image_copy_s": next(v for k, v in stages.items() if k.startswith("image")),
                   "engines_rss_mib": engines_rss_mib(present), **node_loss(present, image, abrupt=False),
                   **node_loss(present, image, abrupt=True)}
        print(f"run {run + 1}: " + ", ".join(f"{k}={v:.1f}" for k, v in figures.items()))
        runs.append(figures)
        if run < args.runs - 1 or not args.keep:
            nodes.down(purge=True)
    save("nodes", {"nodes": args.nodes, "runs": runs,
                   "median": {key: median([r[key] for r in runs]) for key in runs[0]}})


if __name__ == "__main__":
    main()
