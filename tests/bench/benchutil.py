"""What every benchmark does at the end: print the figures and keep them as JSON under tests/bench/results/."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def arguments(runs: int) -> argparse.ArgumentParser:
    """--runs and --params, shared by the sandbox benchmarks; add more before parse_args()."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--params", default="parameters/sandbox.yaml")
    return parser


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def save(name: str, figures: dict[str, Any]) -> Path:
    figures = {"benchmark": name, "at": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": machine(), **figures}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, indent=2, default=str))
    print(f"written {path}")
    return path
