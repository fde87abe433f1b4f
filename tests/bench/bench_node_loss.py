"""The sandbox's stacks on a Swarm of three nodes (`sandbox up -f parameters/sandbox-nodes.yaml`) and the loss
of the leader's whole node under writes: seconds to bring every stack up on the nodes (from no node at all,
or with --warm on the nodes as they are), the memory of everything on the nodes (engines and tasks: every process in the nodes' network
namespaces), then per run a power cut of the leader's node (SIGKILL to all its processes) while a writer
inserts through the write endpoint every 50 ms, and the node restarted: seconds to a new leader and to writes
back (RTO), acknowledged writes lost (RPO), and whether the old leader streams again. Median of --runs. Prints
the figures and writes JSON under tests/bench/results/.

usage: .venv/bin/python tests/bench/bench_node_loss.py [--runs 3] [--warm] [--keep]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runbook_lib.config.params import load_params  # noqa: E402
from runbook_lib.ops import drills  # noqa: E402
from runbook_lib.sandbox import health, lifecycle, nodes, placement, stacks  # noqa: E402
from runbook_lib.sandbox.context import load  # noqa: E402
from tests.bench.benchutil import arguments, median, save  # noqa: E402
from tests.nodes.test_stacks_on_nodes import power_cut, restart  # noqa: E402

PARAMS = "parameters/sandbox-nodes.yaml"


def nodes_rss_mib(present: list[nodes.Node]) -> float:
    """Resident memory of every process in the nodes' network namespaces: engines, containerd, shims, tasks."""
    total = 0
    for node in present:
        pids = subprocess.run(["ip", "netns", "pids", node.name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += int(next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0"))
    return round(total / 1024, 1)


def main() -> None:
    parser = arguments(runs=3)
    parser.add_argument("--keep", action="store_true", help="leave the nodes and their stacks up")
    parser.add_argument("--warm", action="store_true", help="time `up` on nodes already up (default: from none)")
    args = parser.parse_args()
    sb = load(PARAMS)
    params = load_params(PARAMS)
    assert params.target.patroni is not None
    if not args.warm:
        nodes.down(purge=True)
    start = time.monotonic()
    lifecycle.up(sb)
    up_s = round(time.monotonic() - start, 1)
    rss = nodes_rss_mib(nodes.plan(sb.spec.nodes))
    print(f"stacks up on {sb.spec.nodes} nodes in {up_s} s; {rss} MiB resident on the nodes")
    placed = str(stacks.members(sb)[placement.LEADER_MEMBER]["name"])
    bounds = params.drills
    write_endpoint = params.endpoints.db(params.readiness.primary or "dpg-rw")
    runs: list[dict[str, float]] = []
    for run in range(args.runs):
        health.lead_from(sb, placed, 120)  # off the manager's node, whose loss also takes HAProxy
        with drills.DrillWrites(write_endpoint, bounds.write_database, 0.05, f"bench-node-loss-{run}") as writes:
            result = drills.node_loss(params.target.patroni, params.target.swarm, write_endpoint,
                                      power_cut, restart, rejoin_timeout=bounds.rejoin_max)
        judged = drills.verdict(drills.with_writes(result, writes), bounds.rto_max, bounds.rpo_max_rows)
        figures = {"new_leader_s": judged.seconds_to_new_leader or -1.0,
                   "writes_back_s": judged.seconds_write_endpoint_back or -1.0,
                   "writes_acknowledged": float(judged.writes_acknowledged or 0),
                   "writes_lost": float(-1 if judged.writes_lost is None else judged.writes_lost),
                   "rejoined": float(judged.member_rejoined), "passed": float(judged.passed)}
        print(f"run {run + 1}: {judged.old_leader} -> {judged.new_leader} ({judged.note or 'passed'}): "
              + ", ".join(f"{k}={v:g}" for k, v in figures.items()))
        runs.append(figures)
        lifecycle.wait_healthy(sb, 240)
    save("node_loss", {"nodes": sb.spec.nodes, "warm": args.warm, "stacks_up_s": up_s, "nodes_rss_mib": rss, "runs": runs,
                       "median": {key: median([r[key] for r in runs]) for key in runs[0]}})
    if not args.keep:
        nodes.down(purge=True)


if __name__ == "__main__":
    main()
