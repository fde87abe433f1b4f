"""Time to refuse each class of hostile parameters file with `runbook params check` in a fresh process
(interpreter start included). Target: every refusal under 2 s, exit 2, one line. Median of N runs.

    .venv/bin/python tests/bench/bench_hostile_params.py [--runs 5]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.benchutil import arguments, median, save  # noqa: E402
from tests.unit.test_hostile_input import alias_bomb  # noqa: E402

BASE = "target: {name: t, environment: sandbox, databases: {m: {host: h, user: u, password: 'env:P'}}}\n"
CASES: dict[str, bytes] = {
    "non-utf8": b'campaign: "\xff"\n',
    "deep-nesting": ("a: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
    "alias-bomb": alias_bomb().encode(),
    "oversized-4MB": b"evidence:\n" + b"".join(b"  k%d: '%s'\n" % (i, b"x" * 100) for i in range(40000)),
    "duplicate-key": b"campaign: a\ncampaign: b\n",
    "nan-duration": (BASE + "drills: {rto_max: .nan}\n").encode(),
    "loosened-cidr": (BASE + "readiness: {allowed_cidrs: [0.0.0.0/0]}\n").encode(),
    "shadow-reference": BASE.replace("env:P", "file:../../../../etc/shadow").encode(),
}


def main() -> None:
    args = arguments(runs=5).parse_args()
    figures: dict[str, dict[str, float | int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in CASES.items():
            path = Path(tmp) / f"{name}.yaml"
            path.write_bytes(content)
            times, codes, lines = [], set(), set()
            for _ in range(args.runs):
                started = time.monotonic()
                done = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "params", "check", str(path)],
                                      capture_output=True, text=True, timeout=120)
                times.append(time.monotonic() - started)
                codes.add(done.returncode)
                lines.add(len(done.stderr.strip().splitlines()))
            figures[name] = {"median_s": median(times), "max_s": round(max(times), 3),
                             "exit": max(codes), "stderr_lines": max(lines)}
    save("hostile_params", {"runs": args.runs, "cases": figures})


if __name__ == "__main__":
    main()
